//! `C (+)= A B` with `B` packed once and reused: the blocked driver around the micro-kernels.
//!
//! Loop nest (GotoBLAS/BLIS order), for one thread's share of the columns of `C`:
//!
//! ```text
//! for k0 in 0..k step KC            // B sub-panels of KC x NR (16 KiB f32): stay in L1
//!   for m0 in 0..m step MC          // pack A[m0.., k0..] (MC x KC, 72 KiB f32): stays in L2
//!     for each B panel (NR columns)
//!       for each MR-row block of the packed A
//!         micro-kernel: MR x NR tile of C, kc steps, C touched once
//! ```
//!
//! The packed `A` block lives on the stack, so a call allocates nothing.

use std::mem::MaybeUninit;

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use super::kernel::{Kernels, MR, NR};
use super::Float;

/// Depth of one pass over the inner dimension: a `KC x NR` panel of `B` is 16 KiB in f32.
pub(crate) const KC: usize = 256;
/// Rows of `A` packed at once (a multiple of [`MR`]); covers a whole batch of 64 in one block.
pub(crate) const MC: usize = 72;
/// Products with fewer multiply-adds than this run on the calling thread (see BENCHMARKS.md,
/// "GEMM choice": a rayon fork-join costs a few microseconds).
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 20;
/// Values of padding so that the packed data can start on a 64-byte line.
const ALIGN_PAD: usize = 64;

/// The right-hand operand `B` (k, n) of `C = A B`, packed once for many products.
///
/// The layout is `ceil(n / 16)` panels of 16 columns, each panel `k` rows of 16 contiguous
/// values (K-major), zero-padded past column `n`, and aligned on a cache line: exactly what the
/// micro-kernel streams. A recurrent layer packs `W_hh^T` (forward, `H W_hh^T`) or `W_hh`
/// (backward, `dHW W_hh`) once per call and reuses it for every time step:
///
/// ```
/// use ndarray::Array2;
/// use rnn::linalg::{matmul_packed, matmul_reference, PackedWeights};
///
/// let w_hh = Array2::from_shape_fn((8, 3), |(i, j)| (i * 3 + j) as f32 / 10.0); // (G*H, H)
/// let h = Array2::from_shape_fn((2, 3), |(i, j)| (i + j) as f32); // (batch, H)
/// let packed = PackedWeights::transposed(&w_hh.view()); // B = W_hh^T, (H, G*H)
/// let mut hw = Array2::zeros((2, 8));
/// matmul_packed(&mut hw.view_mut(), &h.view(), &packed, false); // HW = H W_hh^T
/// let mut expected = Array2::zeros((2, 8));
/// matmul_reference(&mut expected.view_mut(), &h.view(), &w_hh.t(), false);
/// assert!((&hw - &expected).iter().all(|d| d.abs() < 1e-5));
/// ```
#[derive(Clone, Debug, Default)]
pub struct PackedWeights<F> {
    k: usize,
    n: usize,
    /// Offset of the first packed value in `data` (for 64-byte alignment).
    start: usize,
    data: Vec<F>,
}

impl<F: Float> PackedWeights<F> {
    /// Packs `b` (k, n), the right-hand operand of `C = A B`; any strides (e.g. `w.t()`).
    pub fn new(b: &ArrayView2<'_, F>) -> Self {
        let mut packed = PackedWeights {
            k: 0,
            n: 0,
            start: 0,
            data: Vec::new(),
        };
        packed.repack(b);
        packed
    }

    /// Packs `w.t()` for `w` (n, k) in PyTorch's (out, in) layout: the operand of `A W^T`.
    pub fn transposed(w: &ArrayView2<'_, F>) -> Self {
        Self::new(&w.t())
    }

    /// Packs new values of `b` (k, n) into this buffer, reallocating only when it must grow.
    pub fn repack(&mut self, b: &ArrayView2<'_, F>) {
        let (k, n) = b.dim();
        let len = n.div_ceil(NR) * k * NR;
        if self.data.len() < len + ALIGN_PAD {
            self.data = vec![F::zero(); len + ALIGN_PAD];
        }
        let align = self.data.as_ptr().align_offset(64);
        self.start = if align < ALIGN_PAD { align } else { 0 };
        self.k = k;
        self.n = n;
        let data = &mut self.data[self.start..self.start + len];
        let (rs, cs) = (b.strides()[0], b.strides()[1]);
        for (p, panel) in data.chunks_exact_mut((k * NR).max(1)).enumerate() {
            let cols = NR.min(n - p * NR);
            let src = b.slice(ndarray::s![.., p * NR..p * NR + cols]);
            if cs.unsigned_abs() <= rs.unsigned_abs() {
                // Row-major source (A W): each row of the panel is contiguous in `b`.
                for (dst, row) in panel.chunks_exact_mut(NR).zip(src.rows()) {
                    for (d, &v) in dst.iter_mut().zip(row.iter()) {
                        *d = v;
                    }
                    dst[cols..].fill(F::zero());
                }
            } else {
                // Column-major source (W^T): walk each column of `b` (a row of `W`).
                for (j, col) in src.columns().into_iter().enumerate() {
                    for (d, &v) in panel[j..].iter_mut().step_by(NR).zip(col.iter()) {
                        *d = v;
                    }
                }
                for row in panel.chunks_exact_mut(NR) {
                    row[cols..].fill(F::zero());
                }
            }
        }
    }

    /// The inner dimension `k` (rows of `B`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The number of columns `n` of `B` (and of `C`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Panel `p`: `k` rows of [`NR`] values.
    fn panel(&self, p: usize) -> &[F] {
        let size = self.k * NR;
        &self.data[self.start + p * size..self.start + (p + 1) * size]
    }
}

/// `C = A B` (or `C += A B` when `accumulate`) with `B` packed by [`PackedWeights`].
///
/// Shapes: `a` (m, k), `b` (k, n), `c` (m, n); `a` and `c` may have any strides. Panics if
/// the shapes disagree (callers check user shapes first). Allocates nothing. Uses the AVX2 +
/// FMA kernel for f32 when the CPU has it, portable loops otherwise, and splits the columns
/// over rayon's threads when `m * n * k` reaches about a million multiply-adds.
pub fn matmul_packed<F: Float>(
    c: &mut ArrayViewMut2<'_, F>,
    a: &ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    matmul_packed_with(&super::kernel::kernels(), threads, c, a, b, accumulate);
}

/// [`matmul_packed`] with the kernels and the thread budget given (for tests and benchmarks).
pub(crate) fn matmul_packed_with<F: Float>(
    kernels: &Kernels<F>,
    threads: usize,
    c: &mut ArrayViewMut2<'_, F>,
    a: &ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    assert_eq!(k, b.k(), "matmul_packed: inner dimensions differ");
    assert_eq!(c.dim(), (m, b.n()), "matmul_packed: output shape");
    if m == 0 || b.n() == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(F::zero());
        }
        return;
    }
    split(kernels, threads, c.view_mut(), a.view(), b, 0, accumulate);
}

/// Splits `C` (whose column 0 is column `p0 * NR` of `B`) between `threads` threads: by panels
/// of columns when there are enough, by rows otherwise.
fn split<F: Float>(
    kernels: &Kernels<F>,
    threads: usize,
    c: ArrayViewMut2<'_, F>,
    a: ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    p0: usize,
    accumulate: bool,
) {
    let (m, n) = c.dim();
    let panels = n.div_ceil(NR);
    let row_blocks = m.div_ceil(MR);
    if threads < 2 || m * n * a.ncols() < PARALLEL_MIN_WORK || panels.max(row_blocks) < 2 {
        serial(kernels, c, a, b, p0, accumulate);
        return;
    }
    let left_threads = threads / 2;
    let right_threads = threads - left_threads;
    if panels >= row_blocks.min(2 * threads) {
        let left = (panels * left_threads / threads).max(1);
        let (cl, cr) = c.split_at(Axis(1), left * NR);
        rayon::join(
            || split(kernels, left_threads, cl, a, b, p0, accumulate),
            || split(kernels, right_threads, cr, a, b, p0 + left, accumulate),
        );
    } else {
        let left = (row_blocks * left_threads / threads).max(1) * MR;
        let (cl, cr) = c.split_at(Axis(0), left);
        let (al, ar) = a.split_at(Axis(0), left);
        rayon::join(
            || split(kernels, left_threads, cl, al, b, p0, accumulate),
            || split(kernels, right_threads, cr, ar, b, p0, accumulate),
        );
    }
}

/// The packed-`A` block: [`MC`] x [`KC`] values on the stack, cache-line aligned.
#[repr(C, align(64))]
struct ABlock<F>([MaybeUninit<F>; MC * KC]);

/// One thread's product, blocked as in the module docs.
fn serial<F: Float>(
    kernels: &Kernels<F>,
    mut c: ArrayViewMut2<'_, F>,
    a: ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    p0: usize,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let n = c.ncols();
    let (rsc, csc) = (c.strides()[0], c.strides()[1]);
    let c_ptr = c.as_mut_ptr();
    let mut block = ABlock([MaybeUninit::<F>::uninit(); MC * KC]);
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let acc = accumulate || k0 > 0;
        for m0 in (0..m).step_by(MC) {
            let mc = MC.min(m - m0);
            pack_a(&mut block, a.slice(ndarray::s![m0..m0 + mc, k0..k0 + kc]));
            let a_ptr = block.0.as_ptr().cast::<F>();
            for p in 0..n.div_ceil(NR) {
                let b_panel = &b.panel(p0 + p)[k0 * NR..(k0 + kc) * NR];
                let cols = NR.min(n - p * NR);
                for r0 in (0..mc).step_by(MR) {
                    let rows = MR.min(mc - r0);
                    let kernel = kernels.by_rows[rows - 1];
                    // SAFETY: `pack_a` wrote rows `r0..r0 + rows` of the block, `kc` values
                    // each, at `r0 * kc + p * MR + i` (p < kc, i < rows); `b_panel` holds
                    // `kc * NR` values; the C tile (rows `m0 + r0..+rows`, columns
                    // `p*NR..+cols`) lies inside `c`, which is borrowed mutably and so aliases
                    // neither `a`'s copy on the stack nor `b`.
                    unsafe {
                        let c_tile =
                            c_ptr.offset((m0 + r0) as isize * rsc + (p * NR) as isize * csc);
                        kernel(
                            kc,
                            a_ptr.add(r0 * kc),
                            1,
                            MR as isize,
                            b_panel.as_ptr(),
                            c_tile,
                            rsc,
                            csc,
                            cols,
                            acc,
                        );
                    }
                }
            }
        }
    }
}

/// Packs `a` (mc <= MC, kc <= KC) into `block`: micro-panels of [`MR`] rows, value `(i, p)` of
/// the panel starting at row `r0` stored at `r0 * kc + p * MR + (i - r0)`.
fn pack_a<F: Float>(block: &mut ABlock<F>, a: ArrayView2<'_, F>) {
    let (mc, kc) = a.dim();
    for (r, row) in a.rows().into_iter().enumerate() {
        let (panel, i) = (r / MR, r % MR);
        let dst = &mut block.0[panel * MR * kc + i..];
        for (d, &v) in dst.iter_mut().step_by(MR).zip(row.iter()) {
            d.write(v);
        }
    }
    debug_assert!(mc <= MC && kc <= KC);
}
