//! What the reduced-precision products ([`super::bf16`], [`super::int8`]) share: the packed
//! panels of `B` and the blocked, threaded driver around their micro-kernels.
//!
//! Layout of a packed `B` (k, n) with `G` values of the inner dimension per group (2 for bf16:
//! the pairs one `vdpbf16ps` lane multiplies; 4 for int8: the quads of `vpdpbusd`): panels of
//! [`NRL`] = 32 columns (zero-padded past `n`), panel-major; inside a panel, `k.div_ceil(G)`
//! groups (rows past `k` zero); inside a group, column `j`'s `G` values side by side:
//!
//! ```text
//! value (kk, j) of B  ->  panel j / 32, group kk / G, offset (j % 32) * G + kk % G
//! ```
//!
//! so that one group of a panel is 64 bytes (bf16: 16 columns x 2 values; int8: 16 x 4) per
//! 16 columns: one `zmm` load per 16 columns and group.
//!
//! Driver (one thread's share of the panels; no blocking along `k`, so that each value of `C`
//! is one sum from the first to the last group: the int8 sums must stay in i32 until the end):
//!
//! ```text
//! for m0 in 0..m step MC           // A rows prepared (rounded / quantized) into a buffer
//!   for each panel (or 4 panels for a one-row block: independent chains)
//!     for each tile of up to MR rows
//!       micro-kernel: the tile of C, all k groups, C touched once
//! ```
//!
//! The product is split over rayon's threads by panels of columns from
//! [`super::parallel_min_work`] multiply-adds; each thread prepares the rows of `A` it reads.

use std::mem::MaybeUninit;

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

/// Columns of one panel of a reduced-precision packed `B`.
pub const NRL: usize = 32;
/// Rows of `A` prepared at once: 120 rows of k = 1024 widened to f32 are 480 KiB (L2).
const MC: usize = 120;
/// Values of padding so that the packed data can start on a 64-byte line.
const ALIGN_PAD: usize = 64;

/// `B` cut into panels of [`NRL`] columns of groups of `G` values (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct Panels<E> {
    k: usize,
    n: usize,
    group: usize,
    /// Offset of the first value in `data` (64-byte alignment).
    start: usize,
    data: Vec<E>,
}

impl<E: Copy + Default + Send + Sync> Panels<E> {
    /// Packs `B` (k, n) with `group` values per group: `value(kk, j)` is `B[kk, j]`. Panels are
    /// filled by rayon's threads.
    pub fn pack(
        k: usize,
        n: usize,
        group: usize,
        value: &(dyn Fn(usize, usize) -> E + Sync),
    ) -> Self {
        let len = n.div_ceil(NRL) * Self::panel_len_of(k, group);
        let mut data = vec![E::default(); len + ALIGN_PAD];
        let align = data.as_ptr().align_offset(64);
        let start = if align < ALIGN_PAD { align } else { 0 };
        let panel_len = Self::panel_len_of(k, group);
        let fill = |(p, panel): (usize, &mut [E])| {
            let cols = NRL.min(n - p * NRL);
            for jj in 0..cols {
                for kk in 0..k {
                    panel[(kk / group) * NRL * group + jj * group + kk % group] =
                        value(kk, p * NRL + jj);
                }
            }
        };
        if panel_len > 0 {
            let region = &mut data[start..start + len];
            if len * size_of::<E>() >= super::PACK_PARALLEL_MIN_BYTES {
                use rayon::prelude::*;
                region.par_chunks_mut(panel_len).enumerate().for_each(fill);
            } else {
                region.chunks_mut(panel_len).enumerate().for_each(fill);
            }
        }
        Panels {
            k,
            n,
            group,
            start,
            data,
        }
    }

    fn panel_len_of(k: usize, group: usize) -> usize {
        k.div_ceil(group) * NRL * group
    }

    /// The inner dimension `k`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The columns `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Groups along `k` (`k / G`, rounded up).
    pub fn groups(&self) -> usize {
        self.k.div_ceil(self.group)
    }

    /// Values between two panels.
    pub fn panel_len(&self) -> usize {
        Self::panel_len_of(self.k, self.group)
    }

    /// Panels `p..`: panel `p` first, [`Panels::panel_len`] values each.
    pub fn panels_from(&self, p: usize) -> &[E] {
        let len = self.panel_len();
        let end = self.start + self.n.div_ceil(NRL) * len;
        &self.data[self.start + p * len..end]
    }

    /// Value `(kk, j)` of `B` (tests, file writers).
    pub fn get(&self, kk: usize, j: usize) -> E {
        let g = self.group;
        self.panels_from(j / NRL)[(kk / g) * NRL * g + (j % NRL) * g + kk % g]
    }

    /// Bytes of the packed values (without the alignment padding).
    pub fn bytes(&self) -> usize {
        self.n.div_ceil(NRL) * self.panel_len() * size_of::<E>()
    }
}

/// One reduced-precision product as the driver sees it: how rows of `A` are prepared, and the
/// micro-kernels over the packed `B`.
pub(crate) trait Product: Sync {
    /// Values of a prepared row of `A` (bf16 pairs, rounded f32, u8 or i16).
    type AElem: Copy + Default + Send;
    /// What the kernel needs per row besides its values (int8: scale and zero point).
    type RowInfo: Copy + Default + Send;
    /// Tile rows of the kernels (1 to this).
    fn mr(&self) -> usize;
    /// Panels a one-row tile runs at once (1 to this).
    fn one_row_panels(&self) -> usize;
    /// Prepared values per row of `A`.
    fn a_len(&self) -> usize;
    /// Prepares the rows of `a` (rows, k) into `buf` (rows x [`Product::a_len`]) and `info`.
    fn prepare(&self, a: ArrayView2<'_, f32>, buf: &mut [Self::AElem], info: &mut [Self::RowInfo]);
    /// `C (+)= A B` for a tile of `rows` rows and `panels` panels from panel `p`: `cols`
    /// columns of `C` from `c`.
    ///
    /// # Safety
    /// `a` holds `rows` prepared rows `lda` values apart and `info` their `rows` infos; `p +
    /// panels` panels exist; `c + i*rsc + j*csc` is writable for `i < rows`, `j < cols <=
    /// panels * NRL`, and aliases neither.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        rows: usize,
        panels: usize,
        a: *const Self::AElem,
        info: *const Self::RowInfo,
        p: usize,
        c: *mut f32,
        rsc: isize,
        csc: isize,
        cols: usize,
        accumulate: bool,
    );
}

/// A `B` packed in one reduced precision ([`super::bf16`]'s [`PackedBf16`](super::PackedBf16),
/// [`super::int8`]'s [`PackedInt8`](super::PackedInt8)): it makes the driver's [`Product`] on
/// a kernel, and the entry points below are written once for every precision.
pub(crate) trait Packed: Sync {
    /// Values of a prepared row of `A`.
    type AElem: Copy + Default + Send;
    /// What the kernel needs per row besides its values.
    type RowInfo: Copy + Default + Send;
    /// The precision's kernels, by instruction set.
    type Kind: Copy;
    /// The driver's view of `C (+)= A B` on one kernel.
    type Product<'b>: Product<AElem = Self::AElem, RowInfo = Self::RowInfo>
    where
        Self: 'b;
    /// The public entry point's name, for messages (`matmul_bf16`).
    const NAME: &'static str;
    /// The product on `kind`'s kernels.
    fn product(&self, kind: Self::Kind) -> Self::Product<'_>;
    /// The kernels this CPU runs.
    fn kind() -> Self::Kind;
    /// The inner dimension `k`.
    fn k(&self) -> usize;
    /// The columns `n`.
    fn n(&self) -> usize;
}

/// `C = A B` (or `C += A B` when `accumulate`) with `b` on `kind`'s kernels, split over
/// `threads` from `min_work` multiply-adds. Panics if the shapes disagree.
pub(crate) fn matmul_with<W: Packed>(
    kind: W::Kind,
    threads: usize,
    min_work: usize,
    c: &mut ArrayViewMut2<'_, f32>,
    a: &ArrayView2<'_, f32>,
    b: &W,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    assert_eq!(k, b.k(), "{}: inner dimensions differ", W::NAME);
    assert_eq!(c.dim(), (m, b.n()), "{}: output shape", W::NAME);
    run(
        &b.product(kind),
        threads,
        min_work,
        c.view_mut(),
        a.view(),
        accumulate,
    );
}

/// [`matmul_with`] on this CPU's kernels, split over rayon's threads from
/// [`super::parallel_min_work`] multiply-adds.
pub(crate) fn matmul<W: Packed>(
    c: &mut ArrayViewMut2<'_, f32>,
    a: &ArrayView2<'_, f32>,
    b: &W,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    let min_work = super::parallel_min_work();
    matmul_with(W::kind(), threads, min_work, c, a, b, accumulate);
}

/// [`matmul_with`] on this CPU's kernels and the calling thread only (the engine's blocks).
pub(crate) fn matmul_serial<W: Packed>(
    c: &mut ArrayViewMut2<'_, f32>,
    a: &ArrayView2<'_, f32>,
    b: &W,
    accumulate: bool,
) {
    matmul_with(W::kind(), 1, usize::MAX, c, a, b, accumulate);
}

/// Values per prepared row of `A` for products with `b` (or any `B` of its `k`) on this
/// CPU's kernels.
pub(crate) fn prepared_len<W: Packed>(b: &W) -> usize {
    b.product(W::kind()).a_len()
}

/// Prepares the rows of `a` (rows, k) once for several products with `B`s of `b`'s `k`
/// ([`matmul_prepared`]): `buf` holds rows [`prepared_len`] apart, `info` one per row.
pub(crate) fn prepare_rows<W: Packed>(
    b: &W,
    a: &ArrayView2<'_, f32>,
    buf: &mut [W::AElem],
    info: &mut [W::RowInfo],
) {
    assert_eq!(
        a.ncols(),
        b.k(),
        "{}: prepared rows: inner dimension",
        W::NAME
    );
    b.product(W::kind()).prepare(a.view(), buf, info);
}

/// `C (+)= A B` on this thread for the rows of `A` prepared by [`prepare_rows`]
/// (`c.nrows()` of them): the same bits as [`matmul_with`] on this CPU's kernels.
pub(crate) fn matmul_prepared<W: Packed>(
    c: &mut ArrayViewMut2<'_, f32>,
    buf: &[W::AElem],
    info: &[W::RowInfo],
    b: &W,
    accumulate: bool,
) {
    assert_eq!(c.ncols(), b.n(), "{}: prepared rows: output shape", W::NAME);
    if b.k() == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    serial_prepared(&b.product(W::kind()), c.view_mut(), buf, info, accumulate);
}

/// `C (+)= A B` for `a` (m, k) and `c` (m, n) of any strides, split over `threads` from
/// `min_work` multiply-adds.
pub(crate) fn run<P: Product>(
    prod: &P,
    threads: usize,
    min_work: usize,
    c: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let n = c.ncols();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            let mut c = c;
            c.fill(0.0);
        }
        return;
    }
    let how = Split {
        prod,
        min_work,
        accumulate,
    };
    split(&how, threads, c, a, 0, m * n * k);
}

/// What every share of a split product needs.
struct Split<'p, P> {
    prod: &'p P,
    min_work: usize,
    accumulate: bool,
}

/// Splits `C` (whose column 0 is column `p0 * NRL` of `B`; `work` multiply-adds) between
/// `threads` threads by panels of columns; runs shares below `min_work` on the calling thread.
fn split<P: Product>(
    how: &Split<'_, P>,
    threads: usize,
    c: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    p0: usize,
    work: usize,
) {
    let panels = c.ncols().div_ceil(NRL);
    if threads < 2 || work < how.min_work || panels < 2 {
        serial(how.prod, c, a, p0, how.accumulate);
        return;
    }
    let left_threads = threads / 2;
    let left = (panels * left_threads / threads).max(1);
    let (cl, cr) = c.split_at(Axis(1), left * NRL);
    let wl = work / panels * left;
    rayon::join(
        || split(how, left_threads, cl, a, p0, wl),
        || split(how, threads - left_threads, cr, a, p0 + left, work - wl),
    );
}

/// One thread's share: panels `p0..` of `B` into the columns of `c`.
fn serial<P: Product>(
    prod: &P,
    mut c: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    p0: usize,
    accumulate: bool,
) {
    let m = c.nrows();
    let lda = prod.a_len();
    let mc_max = MC.min(m);
    let mut buf = vec![P::AElem::default(); mc_max * lda];
    let mut info = vec![P::RowInfo::default(); mc_max];
    for m0 in (0..m).step_by(MC) {
        let mc = MC.min(m - m0);
        prod.prepare(
            a.slice(ndarray::s![m0..m0 + mc, ..]),
            &mut buf[..mc * lda],
            &mut info[..mc],
        );
        tiles(
            prod,
            c.slice_mut(ndarray::s![m0..m0 + mc, ..]),
            &buf[..mc * lda],
            &info[..mc],
            p0,
            accumulate,
        );
    }
}

/// `C (+)= A B` on this thread for rows of `A` already prepared: `buf` holds `c.nrows()`
/// rows [`Product::a_len`] apart, `info` their infos.
pub(crate) fn serial_prepared<P: Product>(
    prod: &P,
    c: ArrayViewMut2<'_, f32>,
    buf: &[P::AElem],
    info: &[P::RowInfo],
    accumulate: bool,
) {
    let m = c.nrows();
    assert!(
        buf.len() >= m * prod.a_len() && info.len() >= m,
        "prepared rows"
    );
    if m == 0 || c.ncols() == 0 {
        return;
    }
    tiles(prod, c, buf, info, 0, accumulate);
}

/// The tiles of `c` from prepared rows (`buf`, `info`: `c.nrows()` of them) and panels
/// `p0..` of `B`.
fn tiles<P: Product>(
    prod: &P,
    mut c: ArrayViewMut2<'_, f32>,
    buf: &[P::AElem],
    info: &[P::RowInfo],
    p0: usize,
    accumulate: bool,
) {
    let (mc, n) = c.dim();
    let (rsc, csc) = (c.strides()[0], c.strides()[1]);
    let c_ptr = c.as_mut_ptr();
    let lda = prod.a_len();
    let panels = n.div_ceil(NRL);
    let mr = prod.mr();
    let group = if mc == 1 { prod.one_row_panels() } else { 1 };
    for p in (0..panels).step_by(group) {
        let g = group.min(panels - p);
        let cols = (n - p * NRL).min(g * NRL);
        for r0 in (0..mc).step_by(mr) {
            let rows = mr.min(mc - r0);
            // SAFETY: rows `r0..r0 + rows` of the prepared block (checked by the callers),
            // panels `p0 + p..+g` of `B` (the caller's share), and the matching tile of `c`,
            // borrowed mutably so that it aliases neither.
            unsafe {
                prod.tile(
                    rows,
                    g,
                    buf.as_ptr().add(r0 * lda),
                    info.as_ptr().add(r0),
                    p0 + p,
                    c_ptr.offset(r0 as isize * rsc + (p * NRL) as isize * csc),
                    rsc,
                    csc,
                    cols,
                    accumulate,
                )
            };
        }
    }
}

/// Values per row of a [`TileBuf`]: four panels.
pub(crate) const TILE_ROW: usize = 4 * NRL;

/// A kernel's finished tile on the stack (up to 8 rows of [`TILE_ROW`] values, 64-byte
/// aligned), left uninitialised: a kernel writes what it reads back. Zeroing it cost ~10% of a
/// tile of 512 steps; keeping the sums in an array whose address is taken made the compiler
/// store them at every step.
#[repr(C, align(64))]
pub(crate) struct TileBuf<T>(MaybeUninit<[[T; TILE_ROW]; 8]>);

impl<T> TileBuf<T> {
    #[inline(always)]
    pub fn new() -> Self {
        TileBuf(MaybeUninit::uninit())
    }

    /// Value `(0, 0)`; value `(i, j)` is `i * TILE_ROW + j` further.
    #[inline(always)]
    pub fn ptr(&mut self) -> *mut T {
        self.0.as_mut_ptr().cast()
    }
}

/// Stores `rows x cols` values of a tile (row `i` at `tile + i * TILE_ROW`) into `C`:
/// `C = v` or `C += v`.
///
/// # Safety
/// The tile's values are written; `c + i*rsc + j*csc` writable for `i < rows`, `j < cols`.
#[inline(always)]
pub(crate) unsafe fn store(
    tile: *const f32,
    rows: usize,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    cols: usize,
    accumulate: bool,
) {
    for i in 0..rows {
        for j in 0..cols {
            // SAFETY: inside the tile and the part of C the caller vouched for.
            unsafe {
                let v = *tile.add(i * TILE_ROW + j);
                let p = c.offset(i as isize * rsc + j as isize * csc);
                *p = if accumulate { *p + v } else { v };
            }
        }
    }
}
