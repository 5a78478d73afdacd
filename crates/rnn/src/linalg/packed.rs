//! `C (+)= A B` with `B` packed once and reused: the blocked driver around the micro-kernels.
//!
//! Loop nest (GotoBLAS/BLIS order), for one thread's share of `C` (a range of column panels
//! for the wide per-step products, a range of rows for the tall ones):
//!
//! ```text
//! for k0 in 0..k step KC            // B sub-panels of KC x NR (16 KiB f32): L1
//!   for m0 in 0..m step MC          // A[m0.., k0..] (MC x KC, 144 KiB f32): stays in L2
//!     for each B panel (NR columns) // or two (pair kernels); in memory order, the next
//!                                   // ones prefetched into L2
//!       for each MR-row block of A
//!         micro-kernel: MR x NR tile of C, kc steps, C touched once
//! ```
//!
//! When `A` is read in place, a block that would end in a tile of 1 or 2 rows ends in two
//! tiles of 3 or 4 instead ([`row_tiles`]): the small kernels leave the FMA pipes half idle.
//!
//! `A` is read in place when its rows are contiguous (`H`, `dHW`, `X`); otherwise (`dXW^T`)
//! each MC x KC block is packed into a buffer on the stack. A call allocates nothing.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{s, ArrayView2, ArrayViewMut2, Axis, CowArray};

use super::kernel::{Kernels, Prefetch, MR, NR, ONE_ROW_PANELS};
use super::Float;

/// Depth of one pass over the inner dimension: a `KC x NR` panel of `B` is 16 KiB in f32, the
/// two panels of a pair kernel ([`Kernels::pair`]) 32 KiB, so that they stay in L1 while every
/// row tile of `A` streams past them. 256 since 2026-12-07 (the pair kernels); 512 before
/// (commit 032cef3, Zen 4, one-panel kernels: +1.8-3.6%). On the Intel Xeon guest (2 threads,
/// `tools/bench_ab.py`, 3 rounds, medians), pair kernels with KC 512 against the one-panel
/// kernels: medium LSTM 1.29x infer / 1.17x train; with KC 256: 1.45x / 1.22x, GRU 1.41x /
/// 1.56x, RNN 1.33x / 0.97x (within noise), large LSTM 1.66x / 1.30x.
pub(crate) const KC: usize = 256;
/// Rows of `A` packed at once (a multiple of [`MR`]); covers a whole batch of 64 in one block.
pub(crate) const MC: usize = 72;
/// Default of [`set_parallel_min_work`] (see BENCHMARKS.md, "GEMM choice").
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 22;
static PARALLEL_MIN_WORK_NOW: AtomicUsize = AtomicUsize::new(PARALLEL_MIN_WORK);

/// Sets the size (`m * n * k` multiply-adds) from which [`matmul_packed`] and
/// [`super::matmul`] split a product over rayon's threads; smaller ones run on the calling
/// thread, because a fork-join costs a few microseconds, and waking a sleeping worker (between
/// two time steps) tens of them. The default, 4M (2^22), was measured on a 2-core AVX2 machine
/// (BENCHMARKS.md, "GEMM choice"); `usize::MAX` keeps every product on one thread, 0 splits
/// every product that has at least two tiles. Process-wide.
pub fn set_parallel_min_work(work: usize) {
    PARALLEL_MIN_WORK_NOW.store(work, Ordering::Relaxed);
}

/// The current value of [`set_parallel_min_work`].
pub fn parallel_min_work() -> usize {
    PARALLEL_MIN_WORK_NOW.load(Ordering::Relaxed)
}

/// Values of padding so that the packed data can start on a 64-byte line.
const ALIGN_PAD: usize = 64;

/// The right-hand operand `B` (k, n) of `C = A B`, packed once for many products.
///
/// The layout is what the micro-kernel streams: `B` cut into panels of 16 columns (zero-padded
/// past column `n`), each panel stored K-major (rows of 16 contiguous values); the rows are
/// grouped in blocks of 512 (the blocking depth), block-major, so that one pass of the driver
/// over all panels for one block reads memory in order; the start is cache-line aligned. A
/// recurrent layer packs `W_hh^T` (forward, `H W_hh^T`) or `W_hh` (backward, `dHW W_hh`) once
/// per call and reuses it for every time step:
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
#[derive(Debug, Default)]
pub struct PackedWeights<F> {
    k: usize,
    n: usize,
    /// Offset of the first packed value in `data` (for 64-byte alignment).
    start: usize,
    /// `data[start..start + panels * k * NR]` is written by every packing before it is read;
    /// the rest is never read. Not zero-filled on allocation: packing writes every value.
    data: Vec<MaybeUninit<F>>,
}

impl<F: Copy> Clone for PackedWeights<F> {
    fn clone(&self) -> Self {
        PackedWeights {
            k: self.k,
            n: self.n,
            start: self.start,
            data: self.data.clone(),
        }
    }
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

    /// Packs `[b_1 | b_2 | ...]`, the side-by-side concatenation of matrices with the same
    /// number of rows `k`: one product `A [B_1 | B_2]` then gives `A B_1` and `A B_2` as
    /// column ranges of its result, for one pass over `A` (the weight gradients
    /// `dXW^T [X | H_prev]`). Panics if the row counts differ.
    pub fn concat(parts: &[ArrayView2<'_, F>]) -> Self {
        let mut packed = PackedWeights::default();
        packed.repack_concat(parts);
        packed
    }

    /// Packs `[b_1 | b_2 | ...]` (see [`PackedWeights::concat`]) into this buffer,
    /// reallocating only when it must grow.
    pub fn repack_concat(&mut self, parts: &[ArrayView2<'_, F>]) {
        let k = parts.first().map_or(0, |b| b.nrows());
        assert!(
            parts.iter().all(|b| b.nrows() == k),
            "PackedWeights::concat: row counts differ"
        );
        if parts.iter().all(|b| b.strides()[1] == 1 || b.ncols() <= 1) {
            // The engine's case (X, H_prev): no copy, and no allocation but growing the buffer.
            self.pack_rows(parts);
            return;
        }
        // Sources whose rows are not contiguous are copied to row-major first.
        let rows: Vec<_> = parts
            .iter()
            .map(|b| {
                if b.strides()[1] == 1 || b.ncols() <= 1 {
                    CowArray::from(b.view())
                } else {
                    CowArray::from(b.as_standard_layout().into_owned())
                }
            })
            .collect();
        let views: Vec<_> = rows.iter().map(|b| b.view()).collect();
        self.pack_rows(&views);
    }

    /// Packs new values of `b` (k, n) into this buffer, reallocating only when it must grow.
    pub fn repack(&mut self, b: &ArrayView2<'_, F>) {
        if b.strides()[1] == 1 || b.ncols() == 1 {
            self.pack_rows(std::slice::from_ref(b));
            return;
        }
        let (k, n) = b.dim();
        let data = self.reserve(k, n);
        for_each_block(data, k, n, &|k0, kc, block| {
            for (p, sub_panel) in block.chunks_exact_mut(kc * NR).enumerate() {
                let cols = NR.min(n - p * NR);
                pack_panel(sub_panel, b.slice(s![k0..k0 + kc, p * NR..p * NR + cols]));
            }
        });
    }

    /// Sizes the buffer for `B` (k, n), reallocating only when it must grow, and returns the
    /// (aligned) packed region.
    fn reserve(&mut self, k: usize, n: usize) -> &mut [MaybeUninit<F>] {
        let len = n.div_ceil(NR) * k * NR;
        if self.data.len() < len + ALIGN_PAD {
            self.data = Vec::with_capacity(len + ALIGN_PAD);
            // SAFETY: `MaybeUninit` values need no initialisation.
            unsafe { self.data.set_len(len + ALIGN_PAD) };
        }
        let align = self.data.as_ptr().align_offset(64);
        self.start = if align < ALIGN_PAD { align } else { 0 };
        self.k = k;
        self.n = n;
        &mut self.data[self.start..self.start + len]
    }

    /// Packs `[b_1 | b_2 | ...]` from sources with contiguous rows (row-major: `A W`, `X`,
    /// `H`): each row is read once, in order, and dealt out to the panels (one sequential
    /// write stream per panel); a panel may straddle two sources.
    fn pack_rows(&mut self, parts: &[ArrayView2<'_, F>]) {
        let k = parts.first().map_or(0, |b| b.nrows());
        let n: usize = parts.iter().map(|b| b.ncols()).sum();
        let data = self.reserve(k, n);
        for_each_block(data, k, n, &|k0, kc, block| {
            for kk in 0..kc {
                let mut col = 0;
                for b in parts {
                    let row = b.row(k0 + kk);
                    let mut row = row.to_slice().expect("contiguous rows");
                    while !row.is_empty() {
                        let (p, q) = (col / NR, col % NR);
                        let take = row.len().min(NR - q);
                        write_copy(&mut block[(p * kc + kk) * NR + q..][..take], &row[..take]);
                        row = &row[take..];
                        col += take;
                    }
                }
                if col % NR != 0 {
                    let (p, q) = (col / NR, col % NR);
                    fill_zero(&mut block[(p * kc + kk) * NR + q..(p * kc + kk + 1) * NR]);
                }
            }
        });
    }

    /// The inner dimension `k` (rows of `B`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The number of columns `n` of `B` (and of `C`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Rows `k0..k0 + KC` (fewer in the last block) of panel `p`: `kc` rows of [`NR`] values.
    fn sub_panel(&self, k0: usize, p: usize) -> &[F] {
        let (kc, panels) = (KC.min(self.k - k0), self.n.div_ceil(NR));
        let base = self.start + k0 * NR * panels + p * kc * NR;
        let values = &self.data[base..base + kc * NR];
        // SAFETY: every packing writes all of `start..start + panels * k * NR` (the panels'
        // values and their zero padding) before the buffer is read.
        unsafe { &*(values as *const [MaybeUninit<F>] as *const [F]) }
    }
}

/// Packing splits over rayon's threads from this many bytes of `B`: a single thread copies
/// ~3 GB/s, so the weight gradients' `[X | H_prev]` (6 MiB per slice at the medium preset)
/// kept the other thread idle for ~2 ms. The engine packs a layer's blocks of weights on
/// several threads from the same size (`engine/packing.rs`).
pub(crate) const PACK_PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Packs rows `k0..k0 + kc` (all panels) into a block: `pack(k0, kc, block)`.
type PackBlock<'a, F> = dyn Fn(usize, usize, &mut [MaybeUninit<F>]) + Sync + 'a;

/// Runs `pack(k0, kc, block)` for every block of [`KC`] rows of the packed region `data` of
/// `B` (k, n): `block` holds rows `k0..k0 + kc` of all the panels. The blocks are disjoint,
/// so large `B` are packed by all of rayon's threads.
fn for_each_block<F: Float>(
    data: &mut [MaybeUninit<F>],
    k: usize,
    n: usize,
    pack: &PackBlock<'_, F>,
) {
    let block_len = KC * n.div_ceil(NR) * NR;
    if block_len == 0 {
        return;
    }
    let run = |(b, block): (usize, &mut [MaybeUninit<F>])| {
        let k0 = b * KC;
        pack(k0, KC.min(k - k0), block)
    };
    if k * n * size_of::<F>() >= PACK_PARALLEL_MIN_BYTES
        && k > KC
        && rayon::current_num_threads() > 1
    {
        use rayon::prelude::*;
        data.par_chunks_mut(block_len).enumerate().for_each(run);
    } else {
        data.chunks_mut(block_len).enumerate().for_each(run);
    }
}

/// Packs `src` (kc, cols <= NR), rows `k0..k0 + kc` of one panel of `B`, into `dst`: `kc` rows
/// of [`NR`] values, zero past `cols`.
fn pack_panel<F: Float>(dst: &mut [MaybeUninit<F>], src: ArrayView2<'_, F>) {
    let (kc, cols) = src.dim();
    let (rs, cs) = (src.strides()[0], src.strides()[1]);
    let mut cols_of_b: [&[F]; NR] = [&[]; NR];
    let columns_contiguous = cs.unsigned_abs() > rs.unsigned_abs()
        && src
            .columns()
            .into_iter()
            .zip(cols_of_b.iter_mut())
            .all(|(col, slot)| col.to_slice().map(|col| *slot = col).is_some());
    if columns_contiguous {
        // Column-major source (A W^T: the columns of `b` are the rows of `W`). Blocks of 8
        // rows: 8 contiguous reads from each column of `b`, written down a column of the
        // panel, so that the 8 destination lines stay in L1.
        let mut blocks = dst.chunks_exact_mut(8 * NR);
        for (k0, block) in (0..kc).step_by(8).zip(&mut blocks) {
            for (j, col) in cols_of_b[..cols].iter().enumerate() {
                let col: &[F; 8] = col[k0..k0 + 8].try_into().expect("8 values");
                for (r, &v) in col.iter().enumerate() {
                    block[r * NR + j].write(v);
                }
            }
        }
        let k0 = kc - kc % 8;
        for (kk, row) in (k0..kc).zip(blocks.into_remainder().chunks_exact_mut(NR)) {
            for (d, col) in row.iter_mut().zip(&cols_of_b[..cols]) {
                d.write(col[kk]);
            }
        }
    } else {
        // Any other strides: row by row.
        for (row_dst, row) in dst.chunks_exact_mut(NR).zip(src.rows()) {
            match row.to_slice() {
                Some(row) => write_copy(&mut row_dst[..cols], row),
                None => row_dst.iter_mut().zip(row.iter()).for_each(|(d, &v)| {
                    d.write(v);
                }),
            }
        }
    }
    for row in dst.chunks_exact_mut(NR) {
        fill_zero(&mut row[cols..]);
    }
}

/// Copies `src` into `dst` (of the same length, at most [`NR`]: one row of a panel). A whole
/// row is a fixed-size copy that the compiler inlines as vector moves. (Packing, 6% of a medium
/// RNN's training step, called `memcpy` for every 64 bytes.) The partial rows go through a
/// function of their own: written inline, the compiler merged both ways into one `memcpy` call
/// of variable length.
#[inline(always)]
fn write_copy<F: Float>(dst: &mut [MaybeUninit<F>], src: &[F]) {
    assert_eq!(dst.len(), src.len(), "write_copy: lengths differ");
    match (
        <&mut [MaybeUninit<F>; NR]>::try_from(&mut *dst),
        <&[F; NR]>::try_from(src),
    ) {
        (Ok(dst), Ok(src)) => {
            // SAFETY: a `[F; NR]` and a `[MaybeUninit<F>; NR]` have the same layout.
            unsafe {
                (dst as *mut [MaybeUninit<F>; NR])
                    .cast::<[F; NR]>()
                    .write(*src)
            }
        }
        _ => write_copy_partial(dst, src),
    }
}

/// [`write_copy`] for fewer than [`NR`] values.
#[inline(never)]
fn write_copy_partial<F: Float>(dst: &mut [MaybeUninit<F>], src: &[F]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
    }
}

/// Writes zeros (the padding of a panel's last columns).
fn fill_zero<F: Float>(values: &mut [MaybeUninit<F>]) {
    for v in values {
        v.write(F::zero());
    }
}

/// `C = A B` (or `C += A B` when `accumulate`) with `B` packed by [`PackedWeights`].
///
/// Shapes: `a` (m, k), `b` (k, n), `c` (m, n); `a` and `c` may have any strides. Panics if
/// the shapes disagree (callers check user shapes first). Allocates nothing. Uses the AVX-512
/// or AVX2 + FMA kernel for f32 when the CPU has it ([`super::isa()`]), portable loops otherwise,
/// and splits the product over rayon's threads (`rayon::current_num_threads()`) from
/// [`parallel_min_work`] multiply-adds: by columns when `C` is wide (the per-step products), by
/// rows when tall.
pub fn matmul_packed<F: Float>(
    c: &mut ArrayViewMut2<'_, F>,
    a: &ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    accumulate: bool,
) {
    let (kernels, threads) = (super::kernel::kernels(), rayon::current_num_threads());
    matmul_packed_with(&kernels, threads, parallel_min_work(), c, a, b, accumulate);
}

/// [`matmul_packed`] with the kernels, the thread budget and the parallel threshold given.
pub(crate) fn matmul_packed_with<F: Float>(
    kernels: &Kernels<F>,
    threads: usize,
    min_work: usize,
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
    let split_work = Split {
        kernels,
        min_work,
        accumulate,
    };
    split(&split_work, threads, c.view_mut(), a.view(), b, 0);
}

/// What every share of a split product needs.
struct Split<'k, F> {
    kernels: &'k Kernels<F>,
    min_work: usize,
    accumulate: bool,
}

/// Splits `C` (whose column 0 is column `p0 * NR` of `B`) between `threads` threads along its
/// longer side: by panels of columns for the wide per-step products (each thread then reads
/// all of the small `A`), by rows for the tall ones and whenever `A` has to be packed (each
/// thread packs only its rows of `A`); runs shares below `min_work` multiply-adds on the
/// calling thread.
fn split<F: Float>(
    how: &Split<'_, F>,
    threads: usize,
    c: ArrayViewMut2<'_, F>,
    a: ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    p0: usize,
) {
    let (m, n) = c.dim();
    let panels = n.div_ceil(NR);
    let row_blocks = m.div_ceil(MR);
    if threads < 2 || m * n * a.ncols() < how.min_work || panels.max(row_blocks) < 2 {
        serial(how.kernels, c, a, b, p0, how.accumulate);
        return;
    }
    let left_threads = threads / 2;
    let right_threads = threads - left_threads;
    // A split by columns has every thread pack all of A when A is not read in place: fine for
    // the small A of a per-step product, not for the transposed dXW^T of a weight gradient.
    let a_packed = a.strides()[1] != 1 && a.ncols() > 1;
    if panels >= 2 && (row_blocks < 2 || (n > m && !a_packed)) {
        let left = (panels * left_threads / threads).max(1);
        let (cl, cr) = c.split_at(Axis(1), left * NR);
        rayon::join(
            || split(how, left_threads, cl, a, b, p0),
            || split(how, right_threads, cr, a, b, p0 + left),
        );
    } else {
        let left = (row_blocks * left_threads / threads).max(1) * MR;
        let (cl, cr) = c.split_at(Axis(0), left);
        let (al, ar) = a.split_at(Axis(0), left);
        rayon::join(
            || split(how, left_threads, cl, al, b, p0),
            || split(how, right_threads, cr, ar, b, p0),
        );
    }
}

/// The packed-`A` block: [`MC`] x [`KC`] values on the stack, cache-line aligned.
#[repr(C, align(64))]
struct ABlock<F>([MaybeUninit<F>; MC * KC]);

/// One thread's product, blocked as in the module docs.
///
/// Rows of `A` contiguous (H, dHW, X): the kernel reads them in place, which saves a copy of A
/// per call; otherwise (dXW^T) each MC x KC block is packed into a buffer on the stack, which
/// only [`serial_packing_a`] reserves (probing its pages, 72 KiB then, took a quarter of a tiny
/// product's time).
fn serial<F: Float>(
    kernels: &Kernels<F>,
    c: ArrayViewMut2<'_, F>,
    a: ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    p0: usize,
    accumulate: bool,
) {
    if a.strides()[1] == 1 {
        serial_blocks(kernels, c, a, b, p0, accumulate, None);
    } else {
        serial_packing_a(kernels, c, a, b, p0, accumulate);
    }
}

/// [`serial`] with `A` packed block by block into a buffer on this function's stack.
#[inline(never)]
fn serial_packing_a<F: Float>(
    kernels: &Kernels<F>,
    c: ArrayViewMut2<'_, F>,
    a: ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    p0: usize,
    accumulate: bool,
) {
    let mut block = ABlock([MaybeUninit::<F>::uninit(); MC * KC]);
    serial_blocks(kernels, c, a, b, p0, accumulate, Some(&mut block));
}

/// The blocked loops of [`serial`]: `A` read in place without `block`, packed into it with.
fn serial_blocks<F: Float>(
    kernels: &Kernels<F>,
    mut c: ArrayViewMut2<'_, F>,
    a: ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    p0: usize,
    accumulate: bool,
    mut block: Option<&mut ABlock<F>>,
) {
    let (m, k) = a.dim();
    let n = c.ncols();
    let (rsc, csc) = (c.strides()[0], c.strides()[1]);
    let c_ptr = c.as_mut_ptr();
    let in_place = block.is_none();
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let acc = accumulate || k0 > 0;
        for m0 in (0..m).step_by(MC) {
            let mc = MC.min(m - m0);
            // (first value, step between rows, step along k, step between row panels)
            let (a_ptr, rsa, csa, panel_step) = match block.as_deref_mut() {
                None => {
                    // Pointer arithmetic rather than `a.slice(..)`: slicing cost more than
                    // the kernels in the first lesson's products.
                    let rsa = a.strides()[0];
                    let first = a.as_ptr().wrapping_offset(m0 as isize * rsa + k0 as isize);
                    (first, rsa, 1, MR as isize * rsa)
                }
                Some(block) => {
                    pack_a(block, a.slice(s![m0..m0 + mc, k0..k0 + kc]));
                    (
                        block.0.as_ptr().cast::<F>(),
                        1,
                        MR as isize,
                        (MR * kc) as isize,
                    )
                }
            };
            // Packed A comes in panels of MR rows, so only A read in place can be tiled freely.
            let tiles = row_tiles(mc, in_place);
            let panels = n.div_ceil(NR);
            if mc == 1 {
                // One row (a batch of one): several panels at once.
                for p in (0..panels).step_by(ONE_ROW_PANELS) {
                    let group = ONE_ROW_PANELS.min(panels - p);
                    let first = b.sub_panel(k0, p0 + p).as_ptr();
                    // SAFETY: the `group` panels from `p0 + p` are consecutive in `b`'s block
                    // of rows `k0..`, `kc * NR` values apart ([`PackedWeights::sub_panel`]);
                    // row `m0` of `A` is read for `kc` steps as by the kernels below; columns
                    // `p * NR..` (`cols` of them) of row `m0` of `C` lie inside `c`.
                    unsafe {
                        kernels.one_row[group - 1](
                            kc,
                            a_ptr,
                            csa,
                            first,
                            kc * NR,
                            c_ptr.offset(m0 as isize * rsc + (p * NR) as isize * csc),
                            csc,
                            (n - p * NR).min(group * NR),
                            acc,
                        );
                    }
                }
                continue;
            }
            let tile_count = tiles.clone().count();
            // Panels one at a time, or two at once where the kernels have a pair kernel.
            let mut p = 0;
            while p < panels {
                let (width, by_rows) = match &kernels.pair {
                    Some(pair) if p + 1 < panels => (2, pair),
                    _ => (1, &kernels.by_rows),
                };
                let b_panel = b.sub_panel(k0, p0 + p);
                // The panels after these in memory, in 64-byte lines, dealt out to the tiles.
                let next = b_panel.as_ptr().wrapping_add(width * kc * NR);
                let lines = width * kc * NR * size_of::<F>() / 64;
                let cols = (width * NR).min(n - p * NR);
                for (tile, (r0, rows)) in tiles.clone().enumerate() {
                    let kernel = by_rows[rows - 1];
                    let first = lines * tile / tile_count;
                    let prefetch = Prefetch {
                        start: next.wrapping_add(first * 64 / size_of::<F>()),
                        lines: lines * (tile + 1) / tile_count - first,
                    };
                    // SAFETY: `a_ptr + (r0 / MR) * panel_step + (r0 % MR) * rsa + i * rsa
                    // + q * csa` is value (m0 + r0 + i, k0 + q) of `a` (i < rows, q < kc): in
                    // place, by its strides (panel_step = MR * rsa, column stride 1); packed,
                    // as `pack_a` wrote it (r0 is then a multiple of MR). `b_panel` starts
                    // `width` panels of `kc * NR` values, consecutive in `b`'s block of rows
                    // `k0..` ([`PackedWeights::sub_panel`]). The C tile (rows `m0 + r0..+rows`,
                    // columns `p*NR..+cols`) lies inside `c`, which is borrowed mutably and so
                    // aliases neither `a` nor `b`.
                    unsafe {
                        let c_tile =
                            c_ptr.offset((m0 + r0) as isize * rsc + (p * NR) as isize * csc);
                        kernel(
                            kc,
                            a_ptr
                                .offset((r0 / MR) as isize * panel_step + (r0 % MR) as isize * rsa),
                            rsa,
                            csa,
                            b_panel.as_ptr(),
                            c_tile,
                            rsc,
                            csc,
                            cols,
                            acc,
                            prefetch,
                        );
                    }
                }
                p += width;
            }
        }
    }
}

/// The row tiles `(first row, rows)` of an `mc`-row block: [`MR`] rows each, except that
/// with `balance` a last tile of 1 or 2 rows shares the rows of the tile before it (6 + 2 rows
/// become 4 + 4): a kernel of 1 or 2 rows has too few accumulator chains to keep the FMA pipes
/// busy, so 32 rows run as 4 x 6 + 2 x 4 instead of 5 x 6 + 2.
pub(super) fn row_tiles(mc: usize, balance: bool) -> impl Iterator<Item = (usize, usize)> + Clone {
    let rem = mc % MR;
    let split = balance && mc > MR && (rem == 1 || rem == 2);
    let full = if split { mc / MR - 1 } else { mc.div_ceil(MR) };
    let tail = if split { MR + rem } else { 0 };
    let head = (0..full).map(move |t| (t * MR, MR.min(mc - t * MR)));
    let first = tail.div_ceil(2);
    let tail_tiles = [(full * MR, first), (full * MR + first, tail - first)];
    head.chain(tail_tiles.into_iter().filter(move |_| split))
}

/// Packs `a` (mc <= MC, kc <= KC) into `block`: micro-panels of [`MR`] rows, value `(i, q)` of
/// the panel starting at row `r0` stored at `r0 * kc + q * MR + (i - r0)`.
///
/// When the columns of `a` are contiguous (the transposed operands of the weight gradients,
/// `dXW^T`), they are copied 8 at a time into every micro-panel.
fn pack_a<F: Float>(block: &mut ABlock<F>, a: ArrayView2<'_, F>) {
    let (mc, kc) = a.dim();
    debug_assert!(mc <= MC && kc <= KC);
    let mut cols: [&[F]; KC] = [&[]; KC];
    let contiguous = a
        .columns()
        .into_iter()
        .zip(cols.iter_mut())
        .all(|(col, slot)| col.to_slice().map(|col| *slot = col).is_some());
    if !contiguous {
        for (q, col) in a.columns().into_iter().enumerate() {
            for (r, &v) in col.iter().enumerate() {
                block.0[(r / MR) * MR * kc + q * MR + r % MR].write(v);
            }
        }
        return;
    }
    // Groups of 8 columns: their lines and pages stay in L1 and the TLB while every
    // micro-panel takes its 8 x MR values.
    for (q0, group) in (0..kc).step_by(8).zip(cols[..kc].chunks(8)) {
        for r0 in (0..mc).step_by(MR) {
            let panel = &mut block.0[r0 * kc + q0 * MR..(r0 + MR) * kc];
            if r0 + MR <= mc {
                for (dst, col) in panel.chunks_exact_mut(MR).zip(group) {
                    let src: &[F; MR] = col[r0..r0 + MR].try_into().expect("MR values");
                    for (x, &v) in dst.iter_mut().zip(src) {
                        x.write(v);
                    }
                }
            } else {
                for (dst, col) in panel.chunks_exact_mut(MR).zip(group) {
                    for (x, &v) in dst.iter_mut().zip(&col[r0..]) {
                        x.write(v);
                    }
                }
            }
        }
    }
}
