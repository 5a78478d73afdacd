//! bf16 products with f32 accumulation: `C (+)= bf16(A) bf16(B)`, `B` packed once.
//!
//! # What is computed
//!
//! Both operands are rounded to bf16 (8 significant bits, f32's exponent range) to nearest,
//! ties to even, as PyTorch's `c10::BFloat16` and `vcvtne2ps2bf16` do; NaN stays NaN. The
//! product of two bf16 values is exact in f32 (16 significant bits), so every kernel adds
//! exact products into an f32 sum, one rounding per multiply-add, in the order of AVX512_BF16's
//! `vdpbf16ps`: for each pair of the inner dimension, the odd term then the even one,
//!
//! ```text
//! s = 0;  for g in 0..k/2:  s = fl(s + a[2g+1] b[2g+1]);  s = fl(s + a[2g] b[2g])
//! C = s   or   C = fl(C + s)
//! ```
//!
//! so all the kernels give the same bits (tests), up to subnormals, which `vdpbf16ps` flushes
//! to zero and the other kernels keep. The error against the exact product of the f32
//! operands is then at most `(2^-8 + 2^-16 + k 2^-24) sum_p |a_p b_p|` (each operand's
//! rounding, relative 2^-9, then the f32 sum); in practice about `2^-9 sqrt(k)` times a typical
//! term, as the operands' roundings are independent.
//!
//! # Kernels
//!
//! * `avx512bf16`: `vdpbf16ps` (16 lanes x 2 multiply-adds), through `asm!`; 6 x 32 tiles,
//!   four panels at once for one row. Chosen when the CPU reports AVX512_BF16 (`cpuid`), or
//!   when the environment variable `RNN_ASSUME_AVX512BF16=1` says the CPU runs it although
//!   `cpuid` hides it (some virtual machines do: the host's CPU executes the instruction);
//!   a CPU without it then stops the process with an illegal-instruction signal.
//! * `avx512`: AVX-512F emulation: each 64-byte group of `B` widened to f32 by a shift (even
//!   `k`) and a mask (odd `k`), then two FMAs with `A` already widened; same tiles.
//! * `avx2`: the same emulation on 8 lanes, 4 x 16 tiles.
//! * `portable`: plain loops (exact products, so plain adds are the FMAs).
//!
//! `RNN_MAX_ISA=avx2|scalar` caps the choice as for f32 ([`super::Isa`]).
//!
//! # Measured (2026-12-06, 2-vCPU Xeon under KVM that hides AVX512_BF16 from `cpuid` but runs it)
//!
//! Peaks per core (`benches/precision.rs`, 12 independent chains): f32 `vfmadd231ps` 188-196
//! GFLOP/s (2 per cycle), `vdpbf16ps` 98 GFLOP/s (one every 2 cycles: half the f32 FMA peak on
//! this CPU, although it does twice the work per instruction). So here the emulation with f32
//! FMAs, which reaches up to ~86% of the FMA peak (two widening operations per 32 columns and
//! group beside 12 FMAs), is the faster kernel when the products are in cache, and it is the
//! one `cpuid` selects; bf16's gain is the halved weight traffic (the large presets' `W_hh`
//! streams from L3: 8 MiB in bf16 against 16 in f32) and the batch-1 steps.
//!
//! Error of one layer's inference against PyTorch's f64 run of the same weights and input
//! (`tools/bench_precision.py --dump`, then `benches/precision.rs layers DIR`: products in bf16,
//! gate math and states in f32; presets small / medium / large), next to PyTorch's bf16 module
//! (which keeps `h` and `c` in bf16 too) on the same weights:
//!
//! | cell | bf16 products | PyTorch bf16 | PyTorch autocast |
//! |---|---|---|---|
//! | LSTM | 8.6e-4 / 1.1e-3 / 1.5e-3 | 1.5e-3 / 1.4e-3 / 2.0e-3 | 1.5e-3 / 1.4e-3 / 2.0e-3 |
//! | GRU | 1.6e-3 / 1.8e-3 / 2.5e-3 | 5.0e-3 / 6.0e-3 / 8.2e-3 | 3.5e-3 / 4.5e-3 / 5.4e-3 |
//! | RNN | 3.3e-3 / 4.2e-3 / 5.1e-3 | 5.9e-3 / 7.1e-3 / 8.1e-3 | 5.9e-3 / 7.1e-3 / 8.1e-3 |
//!
//! ([`round_bf16`] of the operands only, f32 elsewhere: 1.3-3.3x closer to f64 than PyTorch.)

use std::sync::OnceLock;

use ndarray::{ArrayView2, ArrayViewMut2};

use super::lowp::{self, Panels, Product, NRL};

/// Rounds `x` to the nearest bf16 (ties to even) and returns its 16 bits; NaN stays a quiet
/// NaN, infinities stay infinite, values past bf16's largest finite value round to infinity.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// `x` rounded to the nearest bf16 (see [`bf16_bits`]), as an f32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// The right-hand operand `B` (k, n) of `C = A B`, rounded to bf16 and packed once.
///
/// Layout: panels of 32 columns of pairs of `k` (see `linalg/lowp.rs`), the operand of
/// `vdpbf16ps`; half the bytes of a [`super::PackedWeights`].
///
/// ```
/// use ndarray::Array2;
/// use rnn::linalg::{matmul_bf16, round_bf16, PackedBf16};
///
/// let w = Array2::from_shape_fn((8, 3), |(i, j)| (i * 3 + j) as f32 / 10.0); // (G*H, H)
/// let h = Array2::from_shape_fn((2, 3), |(i, j)| (i + j) as f32 + 0.1); // (batch, H)
/// let packed = PackedBf16::transposed(&w.view()); // B = W^T
/// let mut hw = Array2::zeros((2, 8));
/// matmul_bf16(&mut hw.view_mut(), &h.view(), &packed, false); // HW = H W^T
/// let exact: f32 = (0..3).map(|p| h[[1, p]] * w[[5, p]]).sum();
/// assert!((hw[[1, 5]] - exact).abs() <= 8e-3 * exact.abs());
/// let rounded: f32 = (0..3).map(|p| round_bf16(h[[1, p]]) * round_bf16(w[[5, p]])).sum();
/// assert!((hw[[1, 5]] - rounded).abs() <= 1e-6 * rounded.abs());
/// ```
#[derive(Clone, Debug, Default)]
pub struct PackedBf16 {
    panels: Panels<u16>,
}

impl PackedBf16 {
    /// Rounds and packs `b` (k, n); any strides.
    pub fn new(b: &ArrayView2<'_, f32>) -> Self {
        let (k, n) = b.dim();
        PackedBf16 {
            panels: Panels::pack(k, n, 2, &|kk, j| bf16_bits(b[[kk, j]])),
        }
    }

    /// Rounds and packs `w.t()` for `w` (n, k) in PyTorch's (out, in) layout: the operand of
    /// `A W^T`.
    pub fn transposed(w: &ArrayView2<'_, f32>) -> Self {
        Self::new(&w.t())
    }

    /// Packs `w.t()` for `w` (n, k) already in bf16 (a bf16 weight file): no rounding, no
    /// round trip through f32.
    pub fn from_bf16_transposed(w: &ArrayView2<'_, half::bf16>) -> Self {
        let (n, k) = w.dim();
        PackedBf16 {
            panels: Panels::pack(k, n, 2, &|kk, j| w[[j, kk]].to_bits()),
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

    /// `B[kk, j]` as packed (rounded to bf16).
    pub fn get(&self, kk: usize, j: usize) -> f32 {
        f32::from_bits((self.panels.get(kk, j) as u32) << 16)
    }

    /// Bytes of the packed values.
    pub fn bytes(&self) -> usize {
        self.panels.bytes()
    }
}

/// The bf16 kernels, by instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512Bf16 => "avx512bf16",
        }
    }

    /// `A` is prepared as bf16 pairs (one `u32` per pair) rather than widened to f32.
    fn pairs(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kind::Avx512Bf16 {
            return true;
        }
        false
    }
}

/// Whether `vdpbf16ps` may run: `cpuid` reports AVX512_BF16, or `RNN_ASSUME_AVX512BF16=1`.
pub(crate) fn native_bf16() -> bool {
    static NATIVE: OnceLock<bool> = OnceLock::new();
    *NATIVE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            super::isa::detected() == super::Isa::Avx512
                && (is_x86_feature_detected!("avx512bf16")
                    || std::env::var("RNN_ASSUME_AVX512BF16").as_deref() == Ok("1"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// The bf16 kernels this CPU runs ([`super::isa()`], [`native_bf16`]).
pub(crate) fn kind() -> Kind {
    match super::isa() {
        #[cfg(target_arch = "x86_64")]
        super::Isa::Avx512 if native_bf16() => Kind::Avx512Bf16,
        #[cfg(target_arch = "x86_64")]
        super::Isa::Avx512 => Kind::Avx512,
        #[cfg(target_arch = "x86_64")]
        super::Isa::Avx2 => Kind::Avx2,
        _ => Kind::Portable,
    }
}

/// Every bf16 kernel this CPU runs, whatever `RNN_MAX_ISA` says (tests).
#[cfg(test)]
pub(crate) fn kinds_available() -> Vec<Kind> {
    #[allow(unused_mut)]
    let mut out = vec![Kind::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        let isa = super::isa::detected();
        if isa >= super::Isa::Avx2 {
            out.push(Kind::Avx2);
        }
        if isa >= super::Isa::Avx512 {
            out.push(Kind::Avx512);
        }
        if native_bf16() {
            out.push(Kind::Avx512Bf16);
        }
    }
    out
}

/// The bf16 kernel [`matmul_bf16`] uses on this CPU: `"avx512bf16"` (`vdpbf16ps`),
/// `"avx512"` or `"avx2"` (emulated with f32 FMAs) or `"portable"`.
pub fn bf16_kernel_name() -> &'static str {
    kind().name()
}

/// `C = A B` (or `C += A B` when `accumulate`) in bf16 products with f32 sums (module docs).
///
/// Shapes: `a` (m, k), `b` (k, n), `c` (m, n); `a` and `c` may have any strides. Panics if
/// the shapes disagree (callers check user shapes first). Splits over rayon's threads from
/// [`super::parallel_min_work`] multiply-adds.
pub fn matmul_bf16(
    c: &mut ArrayViewMut2<'_, f32>,
    a: &ArrayView2<'_, f32>,
    b: &PackedBf16,
    accumulate: bool,
) {
    lowp::matmul(c, a, b, accumulate);
}

impl lowp::Packed for PackedBf16 {
    type AElem = u32;
    type RowInfo = ();
    type Kind = Kind;
    type Product<'b> = Bf16Product<'b>;
    const NAME: &'static str = "matmul_bf16";

    fn product(&self, kind: Kind) -> Bf16Product<'_> {
        Bf16Product { b: self, kind }
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

/// A bf16 product for the driver: `A` rows rounded to bf16 (pairs, or widened to f32).
pub(crate) struct Bf16Product<'b> {
    b: &'b PackedBf16,
    kind: Kind,
}

impl Product for Bf16Product<'_> {
    type AElem = u32;
    type RowInfo = ();

    fn mr(&self) -> usize {
        match self.kind {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => 4,
            _ => 6,
        }
    }

    fn one_row_panels(&self) -> usize {
        match self.kind {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 | Kind::Avx512Bf16 => 4,
            _ => 1,
        }
    }

    fn a_len(&self) -> usize {
        let groups = self.b.panels.groups();
        if self.kind.pairs() {
            groups
        } else {
            2 * groups
        }
    }

    fn prepare(&self, a: ArrayView2<'_, f32>, buf: &mut [u32], _info: &mut [()]) {
        let lda = self.a_len();
        let pairs = self.kind.pairs();
        for (row, dst) in a.rows().into_iter().zip(buf.chunks_exact_mut(lda)) {
            dst.fill(0);
            match (row.as_slice(), pairs) {
                (Some(src), false) => {
                    for (d, &x) in dst.iter_mut().zip(src) {
                        *d = (bf16_bits(x) as u32) << 16;
                    }
                }
                (Some(src), true) => {
                    for (d, pair) in dst.iter_mut().zip(src.chunks(2)) {
                        let lo = bf16_bits(pair[0]) as u32;
                        let hi = pair.get(1).map_or(0, |&x| bf16_bits(x) as u32);
                        *d = lo | hi << 16;
                    }
                }
                (None, _) => {
                    for (kk, &x) in row.iter().enumerate() {
                        let v = bf16_bits(x) as u32;
                        if pairs {
                            dst[kk / 2] |= v << (16 * (kk % 2));
                        } else {
                            dst[kk] = v << 16;
                        }
                    }
                }
            }
        }
    }

    unsafe fn tile(
        &self,
        rows: usize,
        panels: usize,
        a: *const u32,
        _info: *const (),
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
            b: self.b.panels.panels_from(p).as_ptr(),
            panel_len: self.b.panels.panel_len(),
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
                Kind::Avx512 => x86::avx512(&t, rows, panels),
                #[cfg(target_arch = "x86_64")]
                Kind::Avx512Bf16 => x86::avx512bf16(&t, rows, panels),
            }
        }
    }
}

/// One tile's operands: `groups` pairs of `k`; `A` rows `lda` values apart (pairs or widened
/// f32 bits); `B` panels `panel_len` values apart from `b`; `cols` columns of `C`.
///
/// Safety contract of the kernels: `a` readable for the tile's rows, `b` for its panels, `c +
/// i*rsc + j*csc` writable for `i < rows`, `j < cols`, aliasing neither.
struct Tile {
    groups: usize,
    a: *const u32,
    lda: usize,
    b: *const u16,
    panel_len: usize,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    cols: usize,
    accumulate: bool,
}

/// The portable kernel (and the reference the others give the bits of): widened `A`.
///
/// # Safety
/// See [`Tile`].
unsafe fn portable(t: &Tile, rows: usize, panels: usize) {
    let mut tile = [[0.0f32; lowp::TILE_ROW]; 6];
    for q in 0..panels {
        // SAFETY: panel `q` of the tile (Tile contract).
        let b = unsafe { std::slice::from_raw_parts(t.b.add(q * t.panel_len), t.panel_len) };
        for (i, acc) in tile.iter_mut().enumerate().take(rows) {
            // SAFETY: row `i` of the tile's `A` (Tile contract).
            let a = unsafe { std::slice::from_raw_parts(t.a.add(i * t.lda), 2 * t.groups) };
            let acc = &mut acc[q * NRL..(q + 1) * NRL];
            for (g, pair) in b.chunks_exact(2 * NRL).enumerate() {
                let (a0, a1) = (f32::from_bits(a[2 * g]), f32::from_bits(a[2 * g + 1]));
                for (s, bj) in acc.iter_mut().zip(pair.chunks_exact(2)) {
                    let b0 = f32::from_bits((bj[0] as u32) << 16);
                    let b1 = f32::from_bits((bj[1] as u32) << 16);
                    *s += a1 * b1; // exact products: one rounding, as an FMA
                    *s += a0 * b0;
                }
            }
        }
    }
    // SAFETY: the Tile contract on `c`.
    unsafe {
        let tile = tile.as_ptr().cast();
        lowp::store(tile, rows, t.c, t.rsc, t.csc, t.cols, t.accumulate)
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 kernels: `vdpbf16ps`, and its emulation with AVX-512F and AVX2 FMAs.

    use std::arch::x86_64::*;

    use super::{lowp, Tile, NRL};

    /// Dispatches on the tile's rows (and panels for one row) to [`emu512`].
    ///
    /// # Safety
    /// [`Tile`]'s contract; the CPU has AVX-512F.
    pub(super) unsafe fn avx512(t: &Tile, rows: usize, panels: usize) {
        // SAFETY: forwarded.
        unsafe {
            match (rows, panels) {
                (1, 1) => emu512::<1, 1>(t),
                (1, 2) => emu512::<1, 2>(t),
                (1, 3) => emu512::<1, 3>(t),
                (1, _) => emu512::<1, 4>(t),
                (2, _) => emu512::<2, 1>(t),
                (3, _) => emu512::<3, 1>(t),
                (4, _) => emu512::<4, 1>(t),
                (5, _) => emu512::<5, 1>(t),
                _ => emu512::<6, 1>(t),
            }
        }
    }

    /// Dispatches on the tile's rows (and panels for one row) to [`dp512`].
    ///
    /// # Safety
    /// [`Tile`]'s contract; the CPU runs AVX-512F and `vdpbf16ps`.
    pub(super) unsafe fn avx512bf16(t: &Tile, rows: usize, panels: usize) {
        // SAFETY: forwarded.
        unsafe {
            match (rows, panels) {
                (1, 1) => dp512::<1, 1>(t),
                (1, 2) => dp512::<1, 2>(t),
                (1, 3) => dp512::<1, 3>(t),
                (1, _) => dp512::<1, 4>(t),
                (2, _) => dp512::<2, 1>(t),
                (3, _) => dp512::<3, 1>(t),
                (4, _) => dp512::<4, 1>(t),
                (5, _) => dp512::<5, 1>(t),
                _ => dp512::<6, 1>(t),
            }
        }
    }

    /// Dispatches on the tile's rows to [`emu256`].
    ///
    /// # Safety
    /// [`Tile`]'s contract; the CPU has AVX2 and FMA.
    pub(super) unsafe fn avx2(t: &Tile, rows: usize) {
        // SAFETY: forwarded.
        unsafe {
            match rows {
                1 => emu256::<1>(t),
                2 => emu256::<2>(t),
                3 => emu256::<3>(t),
                _ => emu256::<4>(t),
            }
        }
    }

    /// Writes the `M x P x 2` sums into `tile` (row `i` at `i * TILE_ROW`): constant indices
    /// only, so that the sums stay in registers during the loop.
    macro_rules! spill512 {
        ($acc:expr, $tile:expr) => {
            for i in 0..M {
                for q in 0..P {
                    for h in 0..2 {
                        _mm512_storeu_ps(
                            $tile.add(i * lowp::TILE_ROW + 32 * q + 16 * h),
                            $acc[i][q][h],
                        );
                    }
                }
            }
        };
    }

    /// Stores `rows` rows of `panels` panels of a tile into `C`: masked 16-lane stores when
    /// `C`'s rows are contiguous, value by value otherwise.
    ///
    /// # Safety
    /// [`Tile`]'s contract on `c`; the tile's values written; AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn store512(t: &Tile, tile: *const f32, rows: usize) {
        if t.csc != 1 {
            // SAFETY: forwarded.
            unsafe { lowp::store(tile, rows, t.c, t.rsc, t.csc, t.cols, t.accumulate) };
            return;
        }
        for i in 0..rows {
            for first in (0..t.cols).step_by(16) {
                let left = t.cols - first;
                let mask: __mmask16 = if left >= 16 { !0 } else { (1u16 << left) - 1 };
                // SAFETY: columns `first..first + 16` of row `i`, masked to `cols`.
                unsafe {
                    let v = _mm512_loadu_ps(tile.add(i * lowp::TILE_ROW + first));
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

    /// AVX-512F emulation of `vdpbf16ps`: an `M x 32P` tile, two `zmm` per row and panel.
    /// Each group of `B` (64 bytes per 16 columns) is widened once (even `k`: shift left by 16;
    /// odd `k`: mask off the low half), then `M` rows of FMAs with the widened `A` broadcast.
    ///
    /// # Safety
    /// [`Tile`]'s contract with widened `A`; AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn emu512<const M: usize, const P: usize>(t: &Tile) {
        let mut acc = [[[_mm512_setzero_ps(); 2]; P]; M];
        let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let rows: [*const f32; M] = std::array::from_fn(|i| t.a.wrapping_add(i * t.lda).cast());
        for g in 0..t.groups {
            for q in 0..P {
                // SAFETY: group `g` of panel `q`, 128 bytes; row `i`'s pair `g` (Tile).
                unsafe {
                    let b = t.b.add(q * t.panel_len + g * 2 * NRL);
                    let w0 = _mm512_loadu_si512(b.cast());
                    let w1 = _mm512_loadu_si512(b.add(32).cast());
                    let even = [
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w0)),
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w1)),
                    ];
                    let odd = [
                        _mm512_castsi512_ps(_mm512_and_si512(w0, high)),
                        _mm512_castsi512_ps(_mm512_and_si512(w1, high)),
                    ];
                    for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                        let a0 = _mm512_set1_ps(*row.add(2 * g));
                        let a1 = _mm512_set1_ps(*row.add(2 * g + 1));
                        for h in 0..2 {
                            acc[q][h] = _mm512_fmadd_ps(a1, odd[h], acc[q][h]);
                            acc[q][h] = _mm512_fmadd_ps(a0, even[h], acc[q][h]);
                        }
                    }
                }
            }
        }
        let mut tile = lowp::TileBuf::<f32>::new();
        // SAFETY: the sums into the tile buffer, then the Tile contract on `c`.
        unsafe {
            spill512!(acc, tile.ptr());
            store512(t, tile.ptr(), M);
        }
    }

    /// `vdpbf16ps!(acc, b, a)`: `acc += pairs(b) . pairs(*a)`, one `vdpbf16ps` with the `A`
    /// pair (`a: *const u32`) broadcast from memory. A macro rather than a function, so that it
    /// sits inside the kernel's `avx512f` code. Safety: `a` readable for 4 bytes; the CPU runs
    /// `vdpbf16ps`.
    macro_rules! vdpbf16ps {
        ($acc:expr, $b:expr, $a:expr) => {
            std::arch::asm!(
                "vdpbf16ps {acc}, {b}, dword ptr [{a}]{{1to16}}",
                acc = inout(zmm_reg) $acc,
                b = in(zmm_reg) $b,
                a = in(reg) $a,
                options(pure, readonly, nostack, preserves_flags),
            )
        };
    }

    /// The `vdpbf16ps` kernel: an `M x 32P` tile, two `zmm` per row and panel; each group of
    /// `B` is two loads and `2 M` instructions of 32 multiply-adds.
    ///
    /// # Safety
    /// [`Tile`]'s contract with `A` in pairs; the CPU runs AVX-512F and `vdpbf16ps`.
    #[target_feature(enable = "avx512f")]
    unsafe fn dp512<const M: usize, const P: usize>(t: &Tile) {
        let mut acc = [[[_mm512_setzero_ps(); 2]; P]; M];
        let rows: [*const u32; M] = std::array::from_fn(|i| t.a.wrapping_add(i * t.lda));
        for g in 0..t.groups {
            for q in 0..P {
                // SAFETY: group `g` of panel `q`, 128 bytes; row `i`'s pair `g` (Tile).
                unsafe {
                    let b = t.b.add(q * t.panel_len + g * 2 * NRL);
                    let w0 = _mm512_loadu_si512(b.cast());
                    let w1 = _mm512_loadu_si512(b.add(32).cast());
                    for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                        vdpbf16ps!(acc[q][0], w0, row.add(g));
                        vdpbf16ps!(acc[q][1], w1, row.add(g));
                    }
                }
            }
        }
        let mut tile = lowp::TileBuf::<f32>::new();
        // SAFETY: the sums into the tile buffer, then the Tile contract on `c`.
        unsafe {
            spill512!(acc, tile.ptr());
            store512(t, tile.ptr(), M);
        }
    }

    /// AVX2 emulation: an `M x 16` tile at a time (two halves of the panel), two `ymm` per
    /// row; each group widened once as in [`emu512`].
    ///
    /// # Safety
    /// [`Tile`]'s contract with widened `A`; AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn emu256<const M: usize>(t: &Tile) {
        let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let rows: [*const f32; M] = std::array::from_fn(|i| t.a.wrapping_add(i * t.lda).cast());
        let mut tile = lowp::TileBuf::<f32>::new();
        let out = tile.ptr();
        for half in 0..2 {
            if half * 16 >= t.cols {
                break;
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; M];
            for g in 0..t.groups {
                // SAFETY: 64 bytes of group `g` (half `half`); row `i`'s pair `g` (Tile).
                unsafe {
                    let b = t.b.add(g * 2 * NRL + half * 32);
                    let w0 = _mm256_loadu_si256(b.cast());
                    let w1 = _mm256_loadu_si256(b.add(16).cast());
                    let even = [
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w0)),
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w1)),
                    ];
                    let odd = [
                        _mm256_castsi256_ps(_mm256_and_si256(w0, high)),
                        _mm256_castsi256_ps(_mm256_and_si256(w1, high)),
                    ];
                    for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                        let a0 = _mm256_broadcast_ss(&*row.add(2 * g));
                        let a1 = _mm256_broadcast_ss(&*row.add(2 * g + 1));
                        for h in 0..2 {
                            acc[h] = _mm256_fmadd_ps(a1, odd[h], acc[h]);
                            acc[h] = _mm256_fmadd_ps(a0, even[h], acc[h]);
                        }
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: 16 floats inside row `i` of the tile buffer.
                unsafe {
                    let dst = out.add(i * lowp::TILE_ROW + 16 * half);
                    _mm256_storeu_ps(dst, acc[0]);
                    _mm256_storeu_ps(dst.add(8), acc[1]);
                }
            }
        }
        // SAFETY: the columns `< cols` of the tile were written; the Tile contract on `c`.
        unsafe { lowp::store(out, M, t.c, t.rsc, t.csc, t.cols, t.accumulate) };
    }
}
