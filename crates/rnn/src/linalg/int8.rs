//! int8 products (dynamic quantization): `C (+)= dequant(q(A) q(B))`, `B` quantized once.
//!
//! # What is computed
//!
//! * **Weights**, once: each column `j` of `B` (each output row of a weight `W` in PyTorch's
//!   (out, in) layout, `B = W^T`) symmetric in s8 with its own f32 scale,
//!   `s_j = max_p |B[p, j]| / 127`, `qb[p, j] = round(B[p, j] / s_j)` in `-127..=127`. Per
//!   output row rather than one scale per tensor: a gate whose weights are small keeps its
//!   resolution (the four gates of an LSTM are initialised alike but drift apart in training).
//! * **Activations**, at every product (every time step for the recurrent one: `h` changes):
//!   each row `i` of `A` asymmetric in u8 with its own scale and zero point over the row's range
//!   widened to include 0, `r_i = (max(hi, 0) - min(lo, 0)) / 255`,
//!   `z_i = round(-min(lo, 0) / r_i)`, `qa[i, p] = clamp(round(A[i, p] / r_i) + z_i, 0, 255)`,
//!   so that 0 is exact and `A[i, p] ~ r_i (qa[i, p] - z_i)`. u8 because `vpdpbusd` multiplies
//!   u8 by s8; asymmetric rather than s8 plus 128 because a row of `h` or of an input is often
//!   one-sided (a ReLU's output, `sigmoid`-like features) and then keeps all 256 levels. Per
//!   row (each sample of the batch its own range): a sample with small activations is not
//!   crushed by a large one elsewhere in the batch.
//! * **Products** in i32, exactly: `acc[i, j] = sum_p qa[i, p] qb[p, j]` (`vpdpbusd`: four
//!   multiply-adds per i32 lane), then the zero point comes off through the column sums of
//!   the weights kept at packing, `d = acc - z_i sum_p qb[p, j]`, and
//!   `C[i, j] (+)= (f32(d) r_i) s_j`, in that order in every kernel, so all give the same bits.
//!   `d` is exact in i32 (wrapping arithmetic, true value within `255 * 127 * k`) for
//!   `k <=` [`INT8_MAX_K`].
//!
//! Error against the exact product of the f32 operands: each operand's rounding, at most
//! `r_i / 2 sum_p |B[p, j]| + s_j / 2 sum_p |A[i, p]|` (plus the f32 roundings, relative
//! 1e-7); in practice about `sqrt(k)` times a typical term's, as the roundings are
//! independent. A row of `A` with a NaN or an infinity gives NaN in its row of `C`; a column
//! of `B` with one gives NaN in its column.
//!
//! # Kernels
//!
//! * `avx512vnni`: `vpdpbusd`, 8 x 32 tiles (16 accumulators: each group of `B` loaded once
//!   for 16 instructions), four panels at once for one row. 8 rows rather than the f32
//!   kernels' 6: in the engine (`tools/bench_ab.py`, 8 rounds in two runs, alternating) the
//!   medium LSTM and GRU ran 5-10% faster, small and large level.
//! * `avx2`: widening (u8 and s8 to i16, `vpmaddwd`), exact like `vpdpbusd`; `vpmaddubsw`
//!   would be twice as fast but saturates its i16 pair sums (255 x 127 x 2 > 32767).
//! * `portable`: plain loops.
//!
//! Chosen by [`super::isa()`] (AVX-512 with VNNI, then AVX2); `RNN_MAX_ISA` caps as for f32.
//!
//! # Measured (2026-12-06, 2-vCPU Xeon with AVX512_VNNI under KVM)
//!
//! Peak per core (`benches/precision.rs`, 12 independent chains of `vpdpbusd`): 680-768
//! GOP/s (2 per cycle, 4x the f32 FMA peak in multiply-adds per second).
//!
//! Error of one layer's inference against PyTorch's f64 run of the same weights and input
//! (`tools/bench_precision.py --dump`, then `benches/precision.rs layers DIR`; both products
//! quantized as above, the recurrent one's `h` at every step; gate math and states in f32;
//! presets small / medium / large):
//!
//! | cell | int8 products | ONNX Runtime int8 (`quantize_dynamic`) | PyTorch bf16 |
//! |---|---|---|---|
//! | LSTM | 2.0e-3 / 2.4e-3 / 4.2e-3 | 2.2e-3 / 2.4e-3 / 4.0e-3 | 1.5e-3 / 1.4e-3 / 2.0e-3 |
//! | GRU | 3.6e-3 / 4.2e-3 / 6.5e-3 | (stays f32) | 5.0e-3 / 6.0e-3 / 8.2e-3 |
//! | RNN | 8.6e-3 / 1.1e-2 / 1.4e-2 | (stays f32) | 5.9e-3 / 7.1e-3 / 8.1e-3 |
//!
//! At the level of ONNX Runtime's int8 LSTM, and within 1.8x of PyTorch's bf16 GRU and RNN.
//! With PyTorch's initialisation the weights' rounding dominates (a step of `max|w| / 127`
//! against `h`'s `range / 255`), and per-row scales gain little over one per tensor because
//! every row has about the same range; scales per group of `k` (e.g. 64 values) are the
//! lever left for trained weights with outliers. The RNN's error is the largest: its single
//! `tanh` has no sigmoid to damp it and `h` is requantized at every step.

use ndarray::{ArrayView2, ArrayViewMut2};

use super::lowp::{self, Panels, Product, NRL};

/// The largest inner dimension of an int8 product: the i32 sums stay exact up to it.
pub const INT8_MAX_K: usize = 65_536;

/// A row of `A` quantized to u8: `A[p] ~ scale * (q[p] - zero_point)` (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowQuant {
    /// The step between two levels; NaN when the row has a NaN or an infinity.
    pub scale: f32,
    /// The level of 0.
    pub zero_point: i32,
}

impl RowQuant {
    /// The scale and zero point of a row whose values span `lo..=hi` (with `lo <= 0 <= hi`);
    /// `bad` is NaN when the row holds a NaN or an infinity. `Err` for a row quantized to all
    /// zeros: a NaN scale for a bad row, 0 for a row of one value.
    fn of_range(lo: f32, hi: f32, bad: f32) -> Result<RowQuant, RowQuant> {
        if hi == lo || bad.is_nan() {
            let scale = if bad.is_nan() { f32::NAN } else { 0.0 };
            return Err(RowQuant {
                scale,
                zero_point: 0,
            });
        }
        let scale = (hi - lo) / 255.0;
        let zero_point = ((-lo / scale) + 0.5).clamp(0.0, 255.0) as i32;
        Ok(RowQuant { scale, zero_point })
    }
}

/// Quantizes `row` to u8 into `out` (same length) and returns its scale and zero point.
///
/// Every operation is exact or rounded alone (min, max, one product and one sum per value, no
/// fused multiply-add), so the AVX-512 and AVX2 compilations of the loop, chosen by
/// [`super::isa()`], give the bits of the portable one.
pub fn quantize_row(row: &[f32], out: &mut [u8]) -> RowQuant {
    assert_eq!(row.len(), out.len(), "quantize_row: lengths differ");
    #[cfg(target_arch = "x86_64")]
    match super::isa() {
        // SAFETY: the CPU has the features (`isa()` detected them).
        super::Isa::Avx512 => return unsafe { quantize_row_avx512(row, out) },
        // SAFETY: as above.
        super::Isa::Avx2 => return unsafe { quantize_row_avx2(row, out) },
        super::Isa::Scalar => {}
    }
    quantize_row_loops(row, out)
}

/// [`quantize_row_loops`] in AVX-512 intrinsics, 16 values at a time (the portable loops'
/// saturating `as u8` stays scalar even when compiled for AVX-512; this row quantization was
/// 13% of an int8 LSTM's inference then). The range uses `vminps`/`vmaxps`, which differ from
/// `f32::min` only for NaN, and a row with a NaN or an infinity is caught by the `x * 0` sum
/// before its range is used, as in the portable loops.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_row_avx512(row: &[f32], out: &mut [u8]) -> RowQuant {
    use std::arch::x86_64::*;
    const L: usize = 16;
    let mask_of = |at: usize| -> __mmask16 {
        let left = row.len() - at;
        if left >= L {
            !0
        } else {
            (1u16 << left) - 1
        }
    };
    // Four registers of each (min, max and the NaN test are exact in any order): one chain
    // each would wait 4 cycles per 16 values on the latency of the last.
    let zero = _mm512_setzero_ps();
    let (mut lo, mut hi, mut bad) = ([zero; 4], [zero; 4], [zero; 4]);
    let whole = row.len() - row.len() % (4 * L);
    for at in (0..whole).step_by(4 * L) {
        for r in 0..4 {
            // SAFETY: values `at + r L..at + (r + 1) L`, below `whole <= row.len()`.
            let x = unsafe { _mm512_loadu_ps(row.as_ptr().add(at + r * L)) };
            lo[r] = _mm512_min_ps(lo[r], x);
            hi[r] = _mm512_max_ps(hi[r], x);
            bad[r] = _mm512_add_ps(bad[r], _mm512_mul_ps(x, zero));
        }
    }
    for at in (whole..row.len()).step_by(L) {
        // SAFETY: the mask covers values `at..row.len()` only; lanes past it read as 0, which
        // leaves the range (it starts at 0) and the NaN test as they are.
        let x = unsafe { _mm512_maskz_loadu_ps(mask_of(at), row.as_ptr().add(at)) };
        lo[0] = _mm512_min_ps(lo[0], x);
        hi[0] = _mm512_max_ps(hi[0], x);
        bad[0] = _mm512_add_ps(bad[0], _mm512_mul_ps(x, zero));
    }
    let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
    let hi = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
    let bad = _mm512_add_ps(_mm512_add_ps(bad[0], bad[1]), _mm512_add_ps(bad[2], bad[3]));
    let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    let bad = _mm512_reduce_add_ps(bad);
    let RowQuant { scale, zero_point } = match RowQuant::of_range(lo, hi, bad) {
        Ok(quant) => quant,
        Err(flat) => {
            out.fill(0);
            return flat;
        }
    };
    let (inv, shift) = (
        _mm512_set1_ps(1.0 / scale),
        _mm512_set1_ps(zero_point as f32 + 0.5),
    );
    for at in (0..row.len()).step_by(L) {
        let mask = mask_of(at);
        // SAFETY: the masked load and store touch values `at..row.len()` of `row` and `out`
        // (the same length, asserted by the caller).
        unsafe {
            let x = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(at));
            // x / r + z + 1/2, clamped to [0, 255], truncated: the portable loops' operations
            // (the clamp at 255 is the unsigned saturation of the store: truncating a value
            // of at least 255 gives at least 255).
            let v = _mm512_add_ps(_mm512_mul_ps(x, inv), shift);
            let q = _mm512_cvttps_epi32(_mm512_max_ps(v, zero));
            _mm512_mask_cvtusepi32_storeu_epi8(out.as_mut_ptr().add(at).cast(), mask, q);
        }
    }
    RowQuant { scale, zero_point }
}

/// [`quantize_row_loops`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(row: &[f32], out: &mut [u8]) -> RowQuant {
    quantize_row_loops(row, out)
}

/// The loops of [`quantize_row`], inlined into each compilation.
#[inline(always)]
pub(crate) fn quantize_row_loops(row: &[f32], out: &mut [u8]) -> RowQuant {
    // 16 independent lanes (min, max and the NaN test are exact whatever the order), so
    // that the loop vectorises instead of waiting on one chain per value.
    const L: usize = 16;
    let (mut lo_l, mut hi_l, mut bad_l) = ([0.0f32; L], [0.0f32; L], [0.0f32; L]);
    let chunks = row.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..L {
            lo_l[j] = lo_l[j].min(c[j]);
            hi_l[j] = hi_l[j].max(c[j]);
            bad_l[j] += c[j] * 0.0; // NaN for a NaN or an infinity
        }
    }
    for (j, &x) in tail.iter().enumerate() {
        lo_l[j] = lo_l[j].min(x);
        hi_l[j] = hi_l[j].max(x);
        bad_l[j] += x * 0.0;
    }
    let lo = lo_l.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = hi_l.iter().fold(0.0f32, |m, &v| m.max(v));
    let bad: f32 = bad_l.iter().sum();
    let RowQuant { scale, zero_point } = match RowQuant::of_range(lo, hi, bad) {
        Ok(quant) => quant,
        Err(flat) => {
            out.fill(0);
            return flat;
        }
    };
    let (inv, shift) = (1.0 / scale, zero_point as f32 + 0.5);
    for (q, &x) in out.iter_mut().zip(row) {
        // Non-negative after the clamp, so the truncation is a floor: x / r + z rounded.
        *q = (x * inv + shift).clamp(0.0, 255.0) as u8;
    }
    RowQuant { scale, zero_point }
}

/// The right-hand operand `B` (k, n) of `C = A B`, quantized to s8 per column and packed
/// once (module docs): a quarter of the bytes of a [`super::PackedWeights`].
///
/// ```
/// use ndarray::Array2;
/// use rnn::linalg::{matmul_int8, PackedInt8};
///
/// let w = Array2::from_shape_fn((8, 3), |(i, j)| (i * 3 + j) as f32 / 10.0 - 1.0); // (G*H, H)
/// let h = Array2::from_shape_fn((2, 3), |(i, j)| (i + j) as f32 / 4.0 - 0.3); // (batch, H)
/// let packed = PackedInt8::quantize_transposed(&w.view()); // B = W^T
/// let mut hw = Array2::zeros((2, 8));
/// matmul_int8(&mut hw.view_mut(), &h.view(), &packed, false); // HW = H W^T
/// let exact: f32 = (0..3).map(|p| h[[1, p]] * w[[5, p]]).sum();
/// assert!((hw[[1, 5]] - exact).abs() < 0.02);
/// ```
#[derive(Clone, Debug, Default)]
pub struct PackedInt8 {
    panels: Panels<i8>,
    /// `s_j` for each column, then zeros up to a whole panel.
    scales: Vec<f32>,
    /// `sum_p qb[p, j]` for each column, then zeros up to a whole panel.
    col_sums: Vec<i32>,
}

impl PackedInt8 {
    /// Quantizes and packs `b` (k, n), one scale per column; any strides. Panics if `k` is
    /// over [`INT8_MAX_K`].
    pub fn quantize(b: &ArrayView2<'_, f32>) -> Self {
        let (q, scales) = quantize_rows(&b.t());
        Self::from_quantized(&q.t(), &scales)
    }

    /// Quantizes and packs `w.t()` for `w` (n, k) in PyTorch's (out, in) layout, one scale per
    /// output row: the operand of `A W^T`.
    pub fn quantize_transposed(w: &ArrayView2<'_, f32>) -> Self {
        Self::quantize(&w.t())
    }

    /// Packs already quantized values `q` (k, n) with their column scales (`n` of them): a
    /// quantized model file loads without quantizing again. Panics if the lengths disagree or
    /// `k` is over [`INT8_MAX_K`]; `-128` is taken as it is (the sums stay exact).
    pub fn from_quantized(q: &ArrayView2<'_, i8>, scales: &[f32]) -> Self {
        let (k, n) = q.dim();
        assert_eq!(scales.len(), n, "PackedInt8: one scale per column");
        assert!(k <= INT8_MAX_K, "PackedInt8: k = {k} is over {INT8_MAX_K}");
        let padded = n.div_ceil(NRL) * NRL;
        let mut col_sums: Vec<i32> = q
            .columns()
            .into_iter()
            .map(|c| c.iter().map(|&v| v as i32).sum())
            .collect();
        col_sums.resize(padded, 0);
        let mut scales = scales.to_vec();
        scales.resize(padded, 0.0);
        PackedInt8 {
            panels: Panels::pack(k, n, 4, &|kk, j| q[[kk, j]]),
            scales,
            col_sums,
        }
    }

    /// The inner dimension `k`.
    pub fn k(&self) -> usize {
        self.panels.k()
    }

    /// The columns `n` of `B` (and of `C`).
    pub fn n(&self) -> usize {
        self.panels.n()
    }

    /// The quantized value `qb[kk, j]`.
    pub fn get(&self, kk: usize, j: usize) -> i8 {
        self.panels.get(kk, j)
    }

    /// The column scales `s_j` (`n` of them).
    pub fn scales(&self) -> &[f32] {
        &self.scales[..self.n()]
    }

    /// Bytes of the packed values.
    pub fn bytes(&self) -> usize {
        self.panels.bytes()
    }
}

/// Quantizes each row of `w` (n, k) symmetric to s8 with its own scale (module docs):
/// `s_j = max_p |w[j, p]| / 127`, `q[j, p] = round(w[j, p] / s_j)` (0 for a zero row; a NaN
/// scale for a row with a NaN or an infinity). What [`PackedInt8::quantize_transposed`]
/// packs, and what a quantized model file stores.
pub fn quantize_rows(w: &ArrayView2<'_, f32>) -> (ndarray::Array2<i8>, Vec<f32>) {
    let scales: Vec<f32> = w
        .rows()
        .into_iter()
        .map(|row| {
            let max = row.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
            let bad = row.iter().fold(0.0f32, |s, &x| s + x * 0.0);
            if bad.is_nan() {
                f32::NAN
            } else {
                max / 127.0
            }
        })
        .collect();
    let q = ndarray::Array2::from_shape_fn(w.dim(), |(j, p)| {
        let s = scales[j];
        if s > 0.0 {
            (w[[j, p]] / s).round().clamp(-127.0, 127.0) as i8
        } else {
            0
        }
    });
    (q, scales)
}

/// The int8 kernels, by instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512Vnni => "avx512vnni",
        }
    }

    /// `A` is prepared as i16 (two bytes per value) rather than u8.
    fn wide(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kind::Avx2 {
            return true;
        }
        false
    }
}

/// Whether this CPU has AVX-512 with VNNI (and BW).
fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::isa::detected() == super::Isa::Avx512
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The int8 kernels this CPU runs ([`super::isa()`]).
pub(crate) fn kind() -> Kind {
    match super::isa() {
        #[cfg(target_arch = "x86_64")]
        super::Isa::Avx512 if vnni() => Kind::Avx512Vnni,
        #[cfg(target_arch = "x86_64")]
        super::Isa::Avx512 | super::Isa::Avx2 => Kind::Avx2,
        _ => Kind::Portable,
    }
}

/// Every int8 kernel this CPU runs, whatever `RNN_MAX_ISA` says (tests).
#[cfg(test)]
pub(crate) fn kinds_available() -> Vec<Kind> {
    #[allow(unused_mut)]
    let mut out = vec![Kind::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if super::isa::detected() >= super::Isa::Avx2 {
            out.push(Kind::Avx2);
        }
        if vnni() {
            out.push(Kind::Avx512Vnni);
        }
    }
    out
}

/// The int8 kernel [`matmul_int8`] uses on this CPU: `"avx512vnni"`, `"avx2"` or
/// `"portable"`.
pub fn int8_kernel_name() -> &'static str {
    kind().name()
}

/// `C = A B` (or `C += A B` when `accumulate`) with `B` quantized and `A` quantized per row on
/// the fly (module docs).
///
/// Shapes: `a` (m, k), `b` (k, n), `c` (m, n); `a` and `c` may have any strides. Panics if
/// the shapes disagree (callers check user shapes first). Splits over rayon's threads from
/// [`super::parallel_min_work`] multiply-adds.
pub fn matmul_int8(
    c: &mut ArrayViewMut2<'_, f32>,
    a: &ArrayView2<'_, f32>,
    b: &PackedInt8,
    accumulate: bool,
) {
    lowp::matmul(c, a, b, accumulate);
}

impl lowp::Packed for PackedInt8 {
    type AElem = u8;
    type RowInfo = RowQuant;
    type Kind = Kind;
    type Product<'b> = Int8Product<'b>;
    const NAME: &'static str = "matmul_int8";

    fn product(&self, kind: Kind) -> Int8Product<'_> {
        Int8Product { b: self, kind }
    }

    fn kind() -> Kind {
        kind()
    }

    fn k(&self) -> usize {
        self.k()
    }

    fn n(&self) -> usize {
        self.n()
    }
}

/// An int8 product for the driver: `A` rows quantized to u8 (or widened to i16).
pub(crate) struct Int8Product<'b> {
    b: &'b PackedInt8,
    kind: Kind,
}

impl Product for Int8Product<'_> {
    type AElem = u8;
    type RowInfo = RowQuant;

    /// 8 rows for `vpdpbusd` (see the module docs), 6 for the others.
    fn mr(&self) -> usize {
        match self.kind {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512Vnni => 8,
            _ => 6,
        }
    }

    fn one_row_panels(&self) -> usize {
        match self.kind {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512Vnni => 4,
            _ => 1,
        }
    }

    fn a_len(&self) -> usize {
        let bytes = 4 * self.b.panels.groups();
        if self.kind.wide() {
            2 * bytes
        } else {
            bytes
        }
    }

    fn prepare(&self, a: ArrayView2<'_, f32>, buf: &mut [u8], info: &mut [RowQuant]) {
        let (lda, k) = (self.a_len(), a.ncols());
        let mut row_copy = Vec::new();
        let mut narrow = vec![0u8; if self.kind.wide() { k } else { 0 }];
        for ((row, dst), info) in a
            .rows()
            .into_iter()
            .zip(buf.chunks_exact_mut(lda))
            .zip(info)
        {
            let src = match row.as_slice() {
                Some(src) => src,
                None => {
                    row_copy.clear();
                    row_copy.extend(row.iter().copied());
                    &row_copy
                }
            };
            // The values, then zeros in the padding up to whole quads.
            let values = if self.kind.wide() {
                *info = quantize_row(src, &mut narrow);
                for (d, &q) in dst.chunks_exact_mut(2).zip(&narrow) {
                    d.copy_from_slice(&(q as i16).to_ne_bytes());
                }
                2 * k
            } else {
                *info = quantize_row(src, &mut dst[..k]);
                k
            };
            dst[values..].fill(0);
        }
    }

    unsafe fn tile(
        &self,
        rows: usize,
        panels: usize,
        a: *const u8,
        info: *const RowQuant,
        p: usize,
        c: *mut f32,
        rsc: isize,
        csc: isize,
        cols: usize,
        accumulate: bool,
    ) {
        let t = Tile {
            groups: self.b.panels.groups(),
            a,
            lda: self.a_len(),
            info,
            b: self.b.panels.panels_from(p).as_ptr(),
            panel_len: self.b.panels.panel_len(),
            scales: self.b.scales[p * NRL..].as_ptr(),
            col_sums: self.b.col_sums[p * NRL..].as_ptr(),
            c,
            rsc,
            csc,
            cols,
            accumulate,
        };
        // SAFETY: the driver's contract (Product::tile) is the kernels' (Tile).
        unsafe {
            match self.kind {
                Kind::Portable => portable(&t, rows, panels),
                #[cfg(target_arch = "x86_64")]
                Kind::Avx2 => x86::avx2(&t, rows),
                #[cfg(target_arch = "x86_64")]
                Kind::Avx512Vnni => x86::avx512vnni(&t, rows, panels),
            }
        }
    }
}

/// One tile's operands: `groups` quads of `k`; `A` rows `lda` bytes apart (u8, or i16) with
/// their [`RowQuant`]s at `info`; `B` panels `panel_len` values apart from `b`, their column
/// scales and sums from `scales` and `col_sums`; `cols` columns of `C`.
///
/// Safety contract of the kernels: all of these readable for the tile's rows and panels
/// (scales and sums for whole panels); `c + i*rsc + j*csc` writable for `i < rows`,
/// `j < cols`, aliasing none of them.
struct Tile {
    groups: usize,
    a: *const u8,
    lda: usize,
    info: *const RowQuant,
    b: *const i8,
    panel_len: usize,
    scales: *const f32,
    col_sums: *const i32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    cols: usize,
    accumulate: bool,
}

/// `(f32(acc - z col_sum) r) s`: the dequantization every kernel applies (module docs).
#[inline(always)]
fn dequantize(acc: i32, row: RowQuant, col_sum: i32, scale: f32) -> f32 {
    let d = acc.wrapping_sub(row.zero_point.wrapping_mul(col_sum));
    (d as f32 * row.scale) * scale
}

/// Dequantizes the i32 sums of a tile (row `i`, column `j` at `acc + i * TILE_ROW + j`) and
/// stores them into `C`.
///
/// # Safety
/// [`Tile`]'s contract; the sums of the columns `< cols` written.
unsafe fn finish(t: &Tile, acc: *const i32, rows: usize) {
    let mut tile = lowp::TileBuf::<f32>::new();
    let out = tile.ptr();
    for i in 0..rows {
        // SAFETY: row `i`'s info, sums and tile row; the columns' scales and sums (Tile).
        unsafe {
            let row = *t.info.add(i);
            for j in 0..t.cols {
                let s = *acc.add(i * lowp::TILE_ROW + j);
                let v = dequantize(s, row, *t.col_sums.add(j), *t.scales.add(j));
                *out.add(i * lowp::TILE_ROW + j) = v;
            }
        }
    }
    // SAFETY: the Tile contract on `c`.
    unsafe { lowp::store(out, rows, t.c, t.rsc, t.csc, t.cols, t.accumulate) };
}

/// The portable kernel: i32 sums of u8 x s8, then [`dequantize`].
///
/// # Safety
/// See [`Tile`].
unsafe fn portable(t: &Tile, rows: usize, panels: usize) {
    let mut acc = [[0i32; lowp::TILE_ROW]; 6];
    for q in 0..panels {
        // SAFETY: panel `q` of the tile (Tile contract).
        let b = unsafe { std::slice::from_raw_parts(t.b.add(q * t.panel_len), t.panel_len) };
        for (i, acc) in acc.iter_mut().enumerate().take(rows) {
            // SAFETY: row `i` of the tile's `A` (Tile contract).
            let a = unsafe { std::slice::from_raw_parts(t.a.add(i * t.lda), 4 * t.groups) };
            let acc = &mut acc[q * NRL..(q + 1) * NRL];
            for (quad, group) in a.chunks_exact(4).zip(b.chunks_exact(4 * NRL)) {
                for (s, bj) in acc.iter_mut().zip(group.chunks_exact(4)) {
                    let dot: i32 = quad
                        .iter()
                        .zip(bj)
                        .map(|(&x, &y)| x as i32 * y as i32)
                        .sum();
                    *s = s.wrapping_add(dot);
                }
            }
        }
    }
    // SAFETY: forwarded.
    unsafe { finish(t, acc.as_ptr().cast(), rows) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 kernels: `vpdpbusd`, and AVX2 widening.

    use std::arch::x86_64::*;

    use super::{finish, lowp, Tile, NRL};

    /// Dispatches on the tile's rows (and panels for one row) to [`vnni512`].
    ///
    /// # Safety
    /// [`Tile`]'s contract with u8 `A`; the CPU has AVX-512F, BW and VNNI.
    pub(super) unsafe fn avx512vnni(t: &Tile, rows: usize, panels: usize) {
        // SAFETY: forwarded.
        unsafe {
            match (rows, panels) {
                (1, 1) => vnni512::<1, 1>(t),
                (1, 2) => vnni512::<1, 2>(t),
                (1, 3) => vnni512::<1, 3>(t),
                (1, _) => vnni512::<1, 4>(t),
                (2, _) => vnni512::<2, 1>(t),
                (3, _) => vnni512::<3, 1>(t),
                (4, _) => vnni512::<4, 1>(t),
                (5, _) => vnni512::<5, 1>(t),
                (6, _) => vnni512::<6, 1>(t),
                (7, _) => vnni512::<7, 1>(t),
                _ => vnni512::<8, 1>(t),
            }
        }
    }

    /// Dispatches on the tile's rows to [`widen256`].
    ///
    /// # Safety
    /// [`Tile`]'s contract with i16 `A`; the CPU has AVX2.
    pub(super) unsafe fn avx2(t: &Tile, rows: usize) {
        // SAFETY: forwarded.
        unsafe {
            match rows {
                1 => widen256::<1>(t),
                2 => widen256::<2>(t),
                3 => widen256::<3>(t),
                4 => widen256::<4>(t),
                5 => widen256::<5>(t),
                _ => widen256::<6>(t),
            }
        }
    }

    /// The `vpdpbusd` kernel: an `M x 32P` tile, two `zmm` of i32 sums per row and panel;
    /// each group (4 values of `k`) is two loads of `B`, one broadcast of `A` per row and
    /// `2 M P` instructions of 64 multiply-adds; then the dequantization on 16 lanes.
    ///
    /// # Safety
    /// [`Tile`]'s contract with u8 `A`; AVX-512F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::needless_range_loop)] // constant indices: the sums stay in registers
    unsafe fn vnni512<const M: usize, const P: usize>(t: &Tile) {
        let mut acc = [[[_mm512_setzero_si512(); 2]; P]; M];
        let rows: [*const u8; M] = std::array::from_fn(|i| t.a.wrapping_add(i * t.lda));
        for g in 0..t.groups {
            for q in 0..P {
                // SAFETY: group `g` of panel `q`, 128 bytes; row `i`'s quad `g` (Tile).
                unsafe {
                    let b = t.b.add(q * t.panel_len + g * 4 * NRL);
                    let w0 = _mm512_loadu_si512(b.cast());
                    let w1 = _mm512_loadu_si512(b.add(64).cast());
                    for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                        let a = _mm512_set1_epi32(row.add(4 * g).cast::<i32>().read_unaligned());
                        acc[q][0] = _mm512_dpbusd_epi32(acc[q][0], a, w0);
                        acc[q][1] = _mm512_dpbusd_epi32(acc[q][1], a, w1);
                    }
                }
            }
        }
        let mut sums = lowp::TileBuf::<i32>::new();
        // SAFETY: the sums into the tile buffer (constant indices: the sums stay in registers
        // during the loop), then Tile's contract.
        unsafe {
            for i in 0..M {
                for q in 0..P {
                    for h in 0..2 {
                        let dst = sums.ptr().add(i * lowp::TILE_ROW + 32 * q + 16 * h);
                        _mm512_storeu_si512(dst.cast(), acc[i][q][h]);
                    }
                }
            }
            finish512(t, sums.ptr(), M);
        }
    }

    /// [`finish`] on 16 lanes: dequantizes the tile's sums (row `i` at `acc + i *
    /// TILE_ROW`) and stores them, with masked stores when `C`'s rows are contiguous.
    ///
    /// # Safety
    /// [`Tile`]'s contract; the sums of the columns `< cols` written; AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn finish512(t: &Tile, acc: *const i32, rows: usize) {
        if t.csc != 1 {
            // SAFETY: forwarded.
            unsafe { finish(t, acc, rows) };
            return;
        }
        for i in 0..rows {
            // SAFETY: row `i`'s info and sums, the columns' scales and sums (whole panels),
            // and columns `first..first + 16` of row `i` of C masked to `cols` (Tile).
            unsafe {
                let row = *t.info.add(i);
                let (zp, r) = (_mm512_set1_epi32(row.zero_point), _mm512_set1_ps(row.scale));
                for first in (0..t.cols).step_by(16) {
                    let sums = _mm512_loadu_si512(acc.add(i * lowp::TILE_ROW + first).cast());
                    let col_sum = _mm512_loadu_si512(t.col_sums.add(first).cast());
                    let scale = _mm512_loadu_ps(t.scales.add(first));
                    let d = _mm512_sub_epi32(sums, _mm512_mullo_epi32(zp, col_sum));
                    let v = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), r), scale);
                    let left = t.cols - first;
                    let mask: __mmask16 = if left >= 16 { !0 } else { (1u16 << left) - 1 };
                    let p = t.c.offset(i as isize * t.rsc + first as isize);
                    let v = if t.accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), v)
                    } else {
                        v
                    };
                    _mm512_mask_storeu_ps(p, mask, v);
                }
            }
        }
    }

    /// AVX2 widening: 8 columns at a time (the panel's four quarters), two `ymm` of i32 pair
    /// sums per row. Each group's 32 bytes of `B` (8 columns x 4 values) are sign-extended to
    /// two `ymm` of i16; each row broadcasts its 4 values of `A` (i16) and `vpmaddwd` adds
    /// products in pairs, exactly; the pairs are summed at the end.
    ///
    /// # Safety
    /// [`Tile`]'s contract with i16 `A`; AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn widen256<const M: usize>(t: &Tile) {
        let rows: [*const u8; M] = std::array::from_fn(|i| t.a.wrapping_add(i * t.lda));
        let mut sums = lowp::TileBuf::<i32>::new();
        let out = sums.ptr();
        for quarter in 0..4 {
            if quarter * 8 >= t.cols {
                break;
            }
            let mut acc = [[_mm256_setzero_si256(); 2]; M];
            for g in 0..t.groups {
                // SAFETY: 32 bytes of group `g` (quarter `quarter`); row `i`'s quad `g`, 8
                // bytes of i16 (Tile).
                unsafe {
                    let b = t.b.add(g * 4 * NRL + quarter * 32);
                    let lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.cast()));
                    let hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(16).cast()));
                    for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                        let a = _mm256_set1_epi64x(row.add(8 * g).cast::<i64>().read_unaligned());
                        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(a, lo));
                        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(a, hi));
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                let mut pairs = [0i32; 16];
                // SAFETY: 16 i32 on the stack.
                unsafe {
                    _mm256_storeu_si256(pairs.as_mut_ptr().cast(), acc[0]);
                    _mm256_storeu_si256(pairs.as_mut_ptr().add(8).cast(), acc[1]);
                }
                for (j, pair) in pairs.chunks_exact(2).enumerate() {
                    // SAFETY: inside row `i` of the tile buffer.
                    unsafe {
                        *out.add(i * lowp::TILE_ROW + quarter * 8 + j) =
                            pair[0].wrapping_add(pair[1])
                    };
                }
            }
        }
        // SAFETY: the columns `< cols` were written (the quarters up to `cols`); forwarded.
        unsafe { finish(t, out, M) };
    }
}
