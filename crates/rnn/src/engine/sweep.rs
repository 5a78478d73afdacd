//! The time loops of one layer and direction, forward and backward, on all threads.
//!
//! Per step and block of hidden units (see [`super::blocks`]) the forward pass computes
//! `xw = x_t W_ih^T` and `hw = h W_hh^T` for the block's gate columns (two products with
//! weights packed once per call), then the block's gate math, and writes the block's part of
//! the new state. The blocks of a step are independent, so the threads meet once per step
//! ([`super::parallel`]); the state is double-buffered so that a block can write its part of
//! the new state while others still read the old one. With `proj_size` a second phase per step
//! computes `h = m W_hr^T` by blocks of output columns.
//!
//! Backward mirrors it: per step and block, the gate math turns `dL/dh'` into the gradients of
//! the pre-activations (`dXW`, stored for all steps), then, after the meeting, each block
//! computes its columns of `dL/dh = dXW W_hh` and goes straight on with its gate math of the
//! previous step. The weight gradients are a few large products over all steps afterwards
//! (for RNN and LSTM one: `[dW_ih | dW_hh] = dXW^T [X | H_prev]`).
//!
//! When the batch is wide and the weights not too large for every thread to read them at every
//! step, the threads do not meet at all: each takes a range of the batch's rows through every
//! step and block on its own, and one done early takes over half of another's remaining rows.
//!
//! The rows of the pass's inputs, outputs and saved values follow the order of its
//! [`Batches`]: time-major, or batch-major (`batch_first` as it is), where a step's rows are
//! `L` rows apart. A work item reaches them through [`Part`], as a strided view.

use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, Axis, ShapeBuilder};

use super::blocks::{gather, gather_rows, scatter, scatter_rows, Blocks};
use super::cell::{
    backward_block, fold_biases, forward_block, BackwardBlock, Cell, ForwardBlock, Rows,
};
use super::math::Activations;
use super::parallel::{run_phases, run_row_parts};
use super::{Batches, DirGrads, DirWeights};
use crate::config::CellKind;
use crate::linalg::{
    matmul, matmul_packed, matmul_packed_serial, Float, PackedWeights, PACK_PARALLEL_MIN_BYTES,
};

/// Multiply-adds per step below which a pass stays on the calling thread.
const PARALLEL_MIN_STEP_WORK: usize = 1 << 16;

/// What one layer and direction saves for backward: per row, the gate activations and the
/// cell's auxiliary values (both blocked), and the state that entered the step.
#[derive(Clone, Debug)]
pub(super) struct DirSaved<F> {
    blocks: Blocks,
    gates: Array2<F>,
    h_prev: Array2<F>,
    aux: Array2<F>,
}

/// A row-major matrix that the threads of a pass share, each touching its own rows and
/// columns of it.
#[derive(Clone, Copy, Debug)]
struct Shared<F> {
    ptr: *mut F,
    stride: usize,
}

// SAFETY: the threads of a pass access disjoint elements (see each use), and the buffers
// outlive the pass.
unsafe impl<F: Send> Send for Shared<F> {}
unsafe impl<F: Sync> Sync for Shared<F> {}

impl<F> Shared<F> {
    /// Shares `a`, whose rows must be contiguous (unit column stride).
    fn new(a: &mut ArrayViewMut2<'_, F>) -> Self {
        assert!(
            a.ncols() <= 1 || a.nrows() == 0 || a.strides()[1] == 1,
            "rows must be contiguous"
        );
        Shared {
            ptr: a.as_mut_ptr(),
            stride: a.strides()[0].max(0) as usize,
        }
    }

    /// Shares a buffer the pass writes before it reads it.
    fn uninit(a: &mut Array2<std::mem::MaybeUninit<F>>) -> Self {
        Shared {
            ptr: a.as_mut_ptr().cast::<F>(),
            stride: a.strides()[0].max(0) as usize,
        }
    }

    /// Shares a matrix the pass only reads.
    fn read_only(a: &ArrayView2<'_, F>) -> Self {
        assert!(
            a.ncols() <= 1 || a.nrows() == 0 || a.strides()[1] == 1,
            "rows must be contiguous"
        );
        Shared {
            ptr: a.as_ptr().cast_mut(),
            stride: a.strides()[0].max(0) as usize,
        }
    }

    /// The matrix of every `k`-th row of this one from row `r0`.
    fn every(self, r0: usize, k: usize) -> Self {
        Shared {
            ptr: self.ptr.wrapping_add(r0 * self.stride),
            stride: self.stride * k,
        }
    }

    /// Rows from `r0`, columns `cols`, for the cell kernels.
    fn rows(self, r0: usize, cols: std::ops::Range<usize>) -> Rows<F> {
        if cols.is_empty() {
            return Rows::empty();
        }
        Rows::new(
            self.ptr.wrapping_add(r0 * self.stride + cols.start),
            self.stride,
            cols.len(),
        )
    }

    /// Rows `r0..r0 + n`, columns `cols`, to read.
    ///
    /// # Safety
    /// Inside the matrix; nothing writes these elements meanwhile.
    unsafe fn view<'a>(
        self,
        r0: usize,
        n: usize,
        cols: std::ops::Range<usize>,
    ) -> ArrayView2<'a, F> {
        ArrayView2::from_shape_ptr(
            (n, cols.len()).strides((self.stride, 1)),
            self.ptr.add(r0 * self.stride + cols.start),
        )
    }

    /// Rows `r0..r0 + n`, columns `cols`, to write.
    ///
    /// # Safety
    /// Inside the matrix; nothing else reads or writes these elements meanwhile.
    unsafe fn view_mut<'a>(
        self,
        r0: usize,
        n: usize,
        cols: std::ops::Range<usize>,
    ) -> ArrayViewMut2<'a, F> {
        ArrayViewMut2::from_shape_ptr(
            (n, cols.len()).strides((self.stride, 1)),
            self.ptr.add(r0 * self.stride + cols.start),
        )
    }
}

/// Rows (of all steps) per slice of the weight-gradient products (see `direction_backward`).
const GRADIENT_ROWS: usize = 2048;

/// The row length to allocate for a work buffer of `cols` values per row that the products
/// read as `A` (states, dL/d pre-activations). Rows a multiple of 2 KiB apart put the rows
/// of a kernel tile into the same few L1 sets (4K aliasing); one more cache line of padding
/// spreads them: +1.5-6% on the large presets' per-step products (64 x 1024 x 4096 and
/// 64 x 4096 x 1024), level on the others.
fn padded_width<F>(cols: usize) -> usize {
    let line = 64 / size_of::<F>().max(1);
    let bytes = cols * size_of::<F>();
    if bytes >= 2048 && bytes.is_multiple_of(2048) {
        cols + line
    } else {
        cols
    }
}

/// An uninitialised `(rows, padded_width(cols))` buffer whose padding columns are zeroed, so
/// that the whole is initialised once the pass has written columns `..cols` of every row.
fn padded_uninit<F: Float>(rows: usize, cols: usize) -> Array2<std::mem::MaybeUninit<F>> {
    let width = padded_width::<F>(cols);
    let mut a = Array2::<F>::uninit((rows, width));
    a.slice_mut(s![.., cols..])
        .fill(std::mem::MaybeUninit::new(F::zero()));
    a
}

/// Steps whose input projection the forward pass computes at once when the threads share each
/// step by blocks (see `direction_forward`): W_ih is then read once per chunk.
const INPUT_CHUNK_STEPS: usize = 16;

/// The rows (of all steps stacked) of the loop's steps `loop_steps`, which are consecutive in
/// time and so, time-major, in rows.
fn step_rows(
    batches: &Batches,
    reverse: bool,
    loop_steps: std::ops::Range<usize>,
) -> std::ops::Range<usize> {
    let (a, b) = (
        time(batches, reverse, loop_steps.start),
        time(batches, reverse, loop_steps.end - 1),
    );
    let (first, last) = (a.min(b), a.max(b));
    debug_assert!(!batches.is_batch_major(), "a step's rows are apart");
    batches.row(first, 0)..batches.row(last, 0) + batches.active(last)
}

/// The loop's `s`-th step: forward in time, or backward for the reverse direction.
fn time(batches: &Batches, reverse: bool, s: usize) -> usize {
    if reverse {
        batches.steps() - 1 - s
    } else {
        s
    }
}

/// Rows of the batch each thread needs before the threads take rows each rather than share
/// every step by blocks of units (see [`Sharing`]).
const MIN_ROWS_PER_THREAD: usize = 16;

/// The rows of one step that a work item covers: `len` rows of the whole pass (all steps
/// stacked) from `r0`, `step` apart (see [`Batches::row_step`]), which are rows `lo..lo + len`
/// of the per-step buffers (states).
#[derive(Clone, Copy, Debug)]
struct Part {
    r0: usize,
    step: usize,
    lo: usize,
    len: usize,
}

impl Part {
    /// The rows of step `t` among the step's rows `rows` (all of them: `0..batch`); `None`
    /// if there are none (the sequences of `rows` have ended).
    fn of_step(batches: &Batches, t: usize, rows: std::ops::Range<usize>) -> Option<Part> {
        let active = batches.active(t);
        let (lo, hi) = (rows.start.min(active), rows.end.min(active));
        (lo < hi).then_some(Part {
            r0: batches.row(t, lo),
            step: batches.row_step(),
            lo,
            len: hi - lo,
        })
    }

    /// The part's rows of `m`, a matrix of the pass's rows (all steps), and its columns `cols`.
    fn rows<F>(&self, m: Shared<F>, cols: std::ops::Range<usize>) -> Rows<F> {
        m.every(self.r0, self.step).rows(0, cols)
    }

    /// The part's rows of `m` (as in [`Part::rows`]) to read.
    ///
    /// # Safety
    /// As [`Shared::view`].
    unsafe fn view<'a, F>(&self, m: Shared<F>, cols: std::ops::Range<usize>) -> ArrayView2<'a, F> {
        m.every(self.r0, self.step).view(0, self.len, cols)
    }

    /// The part's rows of `m` (as in [`Part::rows`]) to write.
    ///
    /// # Safety
    /// As [`Shared::view_mut`].
    unsafe fn view_mut<'a, F>(
        &self,
        m: Shared<F>,
        cols: std::ops::Range<usize>,
    ) -> ArrayViewMut2<'a, F> {
        m.every(self.r0, self.step).view_mut(0, self.len, cols)
    }

    /// The part's rows of `a`, a matrix of the pass's rows.
    fn of<'a, F>(&self, a: ArrayView2<'a, F>) -> ArrayView2<'a, F> {
        let last = self.r0 + (self.len - 1) * self.step;
        a.slice_move(s![self.r0..=last; self.step as isize, ..])
    }
}

/// The most bytes of weights all the threads together may read at every step for them to take
/// rows each (every thread then reads all the weights at every step). Measured on 2 threads by
/// alternating the two ways in one process, with the take-over of rows ([`run_row_parts`]):
/// rows win on the small presets (~10%) and on the medium ones, up to 6 MiB of weights
/// (LSTM +1-15%, GRU +6-11%, RNN +2-4% forward; backward +1-5%); from the large RNN (8 MiB)
/// up they are level (-2% to +3%), and with more threads reading the weights they would
/// stream from memory.
const ROWS_MAX_WEIGHT_BYTES: usize = 12 << 20;

/// Bytes of the weights a step reads: `W_ih`, `W_hh` and `W_hr`.
fn weight_bytes<F>(w: &DirWeights<'_, F>) -> usize {
    let w_hr = w.w_hr.as_ref().map_or(0, |w| w.len());
    (w.w_ih.len() + w.w_hh.len() + w_hr) * size_of::<F>()
}

/// Cuts the batch's sequences into `threads` ranges of rows with about equal work (a row's
/// work is its sequence's length), or returns one range when the batch is too small for that
/// or the weights (`weight_bytes`, read by every thread) too large (see [`Sharing`]).
#[allow(clippy::single_range_in_vec_init)] // A list of row ranges, here of one.
fn row_parts(
    batches: &Batches,
    threads: usize,
    weight_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let n = batches.batch();
    if threads < 2
        || n < threads * MIN_ROWS_PER_THREAD
        || weight_bytes * threads > ROWS_MAX_WEIGHT_BYTES
    {
        return vec![0..n];
    }
    // Sequence i is active at the steps whose batch size exceeds i.
    let mut ending_at = vec![0usize; n + 1];
    for &b in batches.batch_sizes() {
        ending_at[b] += 1;
    }
    let mut lengths = vec![0usize; n];
    let mut active = 0;
    for i in (0..n).rev() {
        active += ending_at[i + 1];
        lengths[i] = active;
    }
    let total: usize = lengths.iter().sum();
    let mut parts = Vec::with_capacity(threads);
    let (mut start, mut done) = (0, 0);
    for (i, &len) in lengths.iter().enumerate() {
        done += len;
        let k = parts.len() + 1;
        if k < threads && done * threads >= k * total && n - (i + 1) >= threads - k {
            parts.push(start..i + 1);
            start = i + 1;
        }
    }
    parts.push(start..n);
    parts
}

/// How the threads of one layer and direction's pass share its work.
///
/// Two ways. With several `parts` (from [`row_parts`]: the batch has enough rows,
/// [`MIN_ROWS_PER_THREAD`] per thread, and the weights, read by every thread at every step,
/// stay within [`ROWS_MAX_WEIGHT_BYTES`] together), each thread takes a range of rows through
/// every phase on its own, without meeting the others: the rows of a batch never interact
/// (and a thread done early takes over half of the rows left to another, [`run_row_parts`]).
/// With one part (all rows), the threads share each phase's items (blocks of units) and meet
/// between phases ([`run_phases`]). Either way every value is computed by the same
/// arithmetic, so the results do not depend on the number of threads.
struct Sharing {
    threads: usize,
    parts: Vec<std::ops::Range<usize>>,
}

impl Sharing {
    /// For the layer `w` over `batches`: [`pass_threads`] threads, by rows or by blocks.
    fn new<F>(w: &DirWeights<'_, F>, batches: &Batches) -> Self {
        let threads = pass_threads(w, batches);
        let parts = row_parts(batches, threads, weight_bytes(w));
        Sharing { threads, parts }
    }

    /// Whether the threads take rows each (and never meet).
    fn by_rows(&self) -> bool {
        self.parts.len() > 1
    }

    /// Runs `work(phase, item, rows)` for every phase in `0..phases` and item in `0..items`,
    /// with the phases in order and the items of a phase independent.
    fn run(
        &self,
        phases: usize,
        items: usize,
        work: &(dyn Fn(usize, usize, std::ops::Range<usize>) + Sync),
    ) {
        let parts = &self.parts;
        if self.by_rows() {
            run_row_parts(self.threads, phases, parts, &|phase, rows| {
                for item in 0..items {
                    work(phase, item, rows.clone());
                }
            });
        } else {
            run_phases(self.threads, phases, items, &|phase, item| {
                work(phase, item, parts[0].clone())
            });
        }
    }
}

/// The threads of the layer `w`'s pass over `batches`: one when a step's products are below
/// [`PARALLEL_MIN_STEP_WORK`] multiply-adds, else all of rayon's.
fn pass_threads<F>(w: &DirWeights<'_, F>, batches: &Batches) -> usize {
    let step_work = batches.batch() * w.w_ih.nrows() * (w.w_ih.ncols() + w.w_hh.ncols());
    if step_work < PARALLEL_MIN_STEP_WORK {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// `[pack(0), .., pack(count - 1)]`: the packed blocks of the layer `w`'s weights, on rayon's
/// threads from `linalg`'s [`PACK_PARALLEL_MIN_BYTES`] of weights (32 MiB per call for the
/// large LSTM; a block's own packing may split further), else on this one.
fn per_block<F, T: Send>(
    w: &DirWeights<'_, F>,
    count: usize,
    pack: &(dyn Fn(usize) -> T + Sync),
) -> Vec<T> {
    if weight_bytes(w) >= PACK_PARALLEL_MIN_BYTES && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        (0..count).into_par_iter().map(pack).collect()
    } else {
        (0..count).map(pack).collect()
    }
}

/// One layer and direction's weights as the forward pass reads them: `W_ih`, `W_hh` (and
/// `W_hr`) packed block by block ([`Blocks`]), the biases folded and in block order. Packing
/// reads and writes all the weights, which costs as much as a whole step of a small batch, so
/// a layer that runs the same weights again keeps them (see `Recurrent`).
#[derive(Debug)]
pub(crate) struct PackedDir<F> {
    /// The blocks of hidden units (and their gate columns) the weights are packed by.
    blocks: Blocks,
    /// The blocks of the state's columns: of `h = m W_hr^T` with a projection, else `blocks`.
    out_blocks: Blocks,
    w_ih: Vec<PackedWeights<F>>,
    w_hh: Vec<PackedWeights<F>>,
    w_hr: Vec<PackedWeights<F>>,
    bias: Vec<F>,
    b_hn: Vec<F>,
}

impl<F: Activations> PackedDir<F> {
    /// Packs the weights `w` of a `cell` layer and direction.
    pub(crate) fn new(cell: Cell, w: &DirWeights<'_, F>) -> Self {
        let g = cell.gates();
        let gh = w.w_ih.nrows();
        let hidden = gh / g;
        let blocks = Blocks::new(g, hidden);
        let order = blocks.order(g);
        let pack_block = |m: &ArrayView2<'_, F>, b: usize| {
            PackedWeights::transposed(&gather_rows(m, &order[blocks.columns(b, g)]).view())
        };
        let bias = match (&w.b_ih, &w.b_hh) {
            (Some(b_ih), Some(b_hh)) => {
                let folded = Array1::from(fold_biases(cell.kind, &b_ih.to_vec(), &b_hh.to_vec()));
                gather(&folded.view(), &order)
            }
            _ => vec![F::zero(); gh],
        };
        let b_hn = match (cell.kind == CellKind::Gru, &w.b_hh) {
            (true, Some(b)) => b.slice(s![2 * hidden..]).to_vec(),
            (true, None) => vec![F::zero(); hidden],
            _ => Vec::new(),
        };
        let (out_blocks, w_hr) = match &w.w_hr {
            Some(w_hr) => {
                let out_blocks = Blocks::new(1, w.w_hh.ncols());
                let packed = per_block(w, out_blocks.count(), &|b| {
                    PackedWeights::transposed(&w_hr.slice(s![out_blocks.units(b), ..]))
                });
                (out_blocks, packed)
            }
            None => (blocks.clone(), Vec::new()),
        };
        PackedDir {
            w_ih: per_block(w, blocks.count(), &|b| pack_block(&w.w_ih, b)),
            w_hh: per_block(w, blocks.count(), &|b| pack_block(&w.w_hh, b)),
            w_hr,
            bias,
            b_hn,
            blocks,
            out_blocks,
        }
    }
}

/// One layer and direction forward. Writes each step's state into `out` (R, H_out; its rows,
/// like those of `x`, in the order of `batches`), which may be a column range of a wider
/// matrix, and leaves the final states in `h` (N, H_out) (the initial states on entry) and `c`
/// (N, H).
#[allow(clippy::too_many_arguments)]
pub(super) fn direction_forward<F: Activations>(
    cell: Cell,
    w: &DirWeights<'_, F>,
    x: ArrayView2<'_, F>,
    batches: &Batches,
    reverse: bool,
    mut h: ArrayViewMut2<'_, F>,
    c: Option<ArrayViewMut2<'_, F>>,
    mut out: ArrayViewMut2<'_, F>,
    save: bool,
    packed: Option<&PackedDir<F>>,
) -> Option<DirSaved<F>> {
    let g = cell.gates();
    let gh = w.w_ih.nrows();
    let hidden = gh / g;
    let h_out = w.w_hh.ncols();
    let (rows, n, steps) = (batches.rows(), batches.batch(), batches.steps());
    let aw = cell.aux_width();
    let proj = w.w_hr.is_some();
    let is_gru = cell.kind == CellKind::Gru;

    // The weights of each block, packed for every step of the call (or by an earlier call).
    let packed_here;
    let packed = match packed {
        Some(p) => p,
        None => {
            packed_here = PackedDir::new(cell, w);
            &packed_here
        }
    };
    let (blocks, out_blocks) = (&packed.blocks, &packed.out_blocks);
    let nb = blocks.count();
    let (w_ih, w_hh, w_hr) = (&packed.w_ih, &packed.w_hh, &packed.w_hr);
    let (bias, b_hn) = (&packed.bias, &packed.b_hn);

    // Work buffers, allocated once.
    let saved_rows = if save { rows } else { n };
    // Written in full before they are read (the saved values: every row is active at one
    // step), so not zero-filled.
    let mut gates = Array2::<F>::uninit((saved_rows, gh));
    let mut aux = Array2::<F>::uninit((saved_rows, aw * hidden));
    let mut h_prev = Array2::<F>::uninit((if save { rows } else { 0 }, h_out));
    // x W_ih^T: per step for the threads' own rows when they take rows each (a step's rows of
    // one thread are then one block of x); otherwise for `chunk` steps at a time, so that
    // W_ih, which then streams from L3 or memory, is read once per chunk, not once per step.
    let sharing = Sharing::new(w, batches);
    let chunk = if sharing.by_rows() {
        1
    } else {
        INPUT_CHUNK_STEPS
    };
    let mut xw = Array2::<F>::uninit((n * chunk.min(steps.max(1)), gh));
    // h W_hh^T apart from x W_ih^T: GRU only (see the step below).
    let mut hw = Array2::<F>::uninit((if is_gru { n } else { 0 }, gh));
    // The two state buffers the steps alternate between, both holding the initial states
    // (padded: the products read them).
    let mut h_a = Array2::<F>::zeros((n, padded_width::<F>(h_out)));
    h_a.slice_mut(s![.., ..h_out]).assign(&h);
    let mut h_b = h_a.clone();
    let mut m = Array2::<F>::uninit((if proj { n } else { 0 }, hidden));
    let mut no_c = Array2::zeros((n, 0));
    let mut c = c.unwrap_or_else(|| no_c.view_mut());

    let states = [
        Shared::new(&mut h_a.view_mut()),
        Shared::new(&mut h_b.view_mut()),
    ];
    let (sh_gates, sh_aux) = (Shared::uninit(&mut gates), Shared::uninit(&mut aux));
    let sh_h_prev = Shared::uninit(&mut h_prev);
    let (sh_xw, sh_hw) = (Shared::uninit(&mut xw), Shared::uninit(&mut hw));
    let sh_m = Shared::uninit(&mut m);
    let sh_c = Shared::new(&mut c);
    let sh_out = Shared::new(&mut out);
    let is_lstm = cell.kind == CellKind::Lstm;

    // With a projection: copies the new state's columns `cols` of the step into the output
    // (and the old state into the saved inputs); without, the gate math does.
    let emit = |s: usize, part: &Part, cols: std::ops::Range<usize>| {
        let (lo, len) = (part.lo, part.len);
        // SAFETY: each item copies its own columns of its rows (out, h_prev) from the state
        // buffers, which no item of this phase writes in those columns.
        unsafe {
            let (cur, next) = (states[s % 2], states[(s + 1) % 2]);
            part.view_mut(sh_out, cols.clone())
                .assign(&next.view(lo, len, cols.clone()));
            if save {
                part.view_mut(sh_h_prev, cols.clone())
                    .assign(&cur.view(lo, len, cols));
            }
        }
    };
    let phases_per_step = if proj { 2 } else { 1 };
    let work = |phase: usize, item: usize, rows: std::ops::Range<usize>| {
        let s = phase / phases_per_step;
        let Some(part) = Part::of_step(batches, time(batches, reverse, s), rows) else {
            return;
        };
        let (r0, lo, bs) = (part.r0, part.lo, part.len);
        let (cur, next) = (states[s % 2], states[(s + 1) % 2]);
        // Rows of the saved values: the pass's rows, or this step's (buffers of one step).
        let saved_rows = |m: Shared<F>, cols: std::ops::Range<usize>| {
            if save {
                part.rows(m, cols)
            } else {
                m.rows(lo, cols)
            }
        };
        if phase.is_multiple_of(phases_per_step) {
            if item >= nb {
                return;
            }
            let (cols, units) = (blocks.columns(item, g), blocks.units(item));
            // The rows of x W_ih^T for this step: computed now for this step alone, or at the
            // first step of each chunk for the chunk's steps (for all the batch's rows, which
            // is then one part).
            let xw_row = if chunk == 1 {
                // SAFETY: this item alone writes the block's columns of these rows of xw.
                unsafe {
                    matmul_packed_serial(
                        &mut sh_xw.view_mut(lo, bs, cols.clone()),
                        &part.of(x),
                        &w_ih[item],
                        false,
                    );
                }
                lo
            } else {
                let first = s - s % chunk;
                let chunk_steps = first..(first + chunk).min(steps);
                if batches.is_batch_major() {
                    // A step's rows are `L` rows apart, so the chunk's steps are projected one
                    // by one into consecutive rows of xw, while the block's columns of W_ih
                    // stay in cache (every row is active: the batch is padded).
                    if s == first {
                        for (k, s_k) in chunk_steps.enumerate() {
                            let t_k = time(batches, reverse, s_k);
                            let rows_k = Part::of_step(batches, t_k, 0..n).expect("padded");
                            // SAFETY: this item alone writes the block's columns of xw;
                            // the previous chunk's rows are no longer read.
                            unsafe {
                                matmul_packed_serial(
                                    &mut sh_xw.view_mut(k * n, n, cols.clone()),
                                    &rows_k.of(x),
                                    &w_ih[item],
                                    false,
                                );
                            }
                        }
                    }
                    (s - first) * n + lo
                } else {
                    let chunk_rows = step_rows(batches, reverse, chunk_steps);
                    if s == first {
                        // SAFETY: this item alone writes the block's columns of xw; the rows
                        // of the previous chunk are no longer read (their steps are done).
                        unsafe {
                            matmul_packed_serial(
                                &mut sh_xw.view_mut(0, chunk_rows.len(), cols.clone()),
                                &x.slice(s![chunk_rows.clone(), ..]),
                                &w_ih[item],
                                false,
                            );
                        }
                    }
                    r0 - chunk_rows.start
                }
            };
            // SAFETY: this item alone writes the block's columns of xw's rows of the step or
            // of hw (the part's rows), of the new state or m, c, gates and aux; x and the old
            // state are only read in this phase.
            unsafe {
                // h W_hh^T: added into x W_ih^T for RNN and LSTM (the gate math then reads one
                // pre-activation); apart for GRU, whose n gate scales it by r.
                let (mut hw_to, accumulate) = if is_gru {
                    (sh_hw.view_mut(lo, bs, cols.clone()), false)
                } else {
                    (sh_xw.view_mut(xw_row, bs, cols.clone()), true)
                };
                matmul_packed_serial(
                    &mut hw_to,
                    &cur.view(lo, bs, 0..h_out),
                    &w_hh[item],
                    accumulate,
                );
                forward_block(
                    cell,
                    &ForwardBlock {
                        rows: bs,
                        h_prev: if proj {
                            Rows::empty()
                        } else {
                            cur.rows(lo, units.clone())
                        },
                        h_new: if proj {
                            sh_m.rows(lo, units.clone())
                        } else {
                            next.rows(lo, units.clone())
                        },
                        c: if is_lstm {
                            sh_c.rows(lo, units.clone())
                        } else {
                            Rows::empty()
                        },
                        // RNN's gate is its new state: kept only for backward.
                        gates: if save || cell.kind != CellKind::Rnn {
                            saved_rows(sh_gates, cols.clone())
                        } else {
                            Rows::empty()
                        },
                        aux: saved_rows(sh_aux, blocks.columns(item, aw)),
                        xw: sh_xw.rows(xw_row, cols.clone()),
                        hw: if is_gru {
                            sh_hw.rows(lo, cols.clone())
                        } else {
                            Rows::empty()
                        },
                        bias: &bias[cols],
                        b_hn: if is_gru { &b_hn[units.clone()] } else { &[] },
                        out: if proj {
                            Rows::empty()
                        } else {
                            part.rows(sh_out, units.clone())
                        },
                        saved_h_prev: if save && !proj {
                            part.rows(sh_h_prev, units.clone())
                        } else {
                            Rows::empty()
                        },
                    },
                );
            }
        } else {
            if item >= out_blocks.count() {
                return;
            }
            let cols = out_blocks.units(item);
            // SAFETY: this item alone writes these columns of the new state; m is complete
            // (previous phase) and only read.
            unsafe {
                matmul_packed_serial(
                    &mut next.view_mut(lo, bs, cols.clone()),
                    &sh_m.view(lo, bs, 0..hidden),
                    &w_hr[item],
                    false,
                );
            }
            emit(s, &part, cols);
        }
    };
    sharing.run(steps * phases_per_step, nb.max(out_blocks.count()), &work);

    // Final states: each sequence's output at its last step.
    for i in 0..n {
        let last = if reverse {
            0
        } else {
            batches.batch_sizes().iter().filter(|&&b| b > i).count() - 1
        };
        h.row_mut(i).assign(&out.row(batches.row(last, i)));
    }
    // SAFETY: with `save`, every row of these was written (each row is active at one step;
    // each block writes its columns of gates and aux, each output block its columns of h_prev).
    save.then(|| unsafe {
        DirSaved {
            blocks: blocks.clone(),
            gates: gates.assume_init(),
            h_prev: h_prev.assume_init(),
            aux: aux.assume_init(),
        }
    })
}

/// One layer and direction backward. `dh` and `dc` enter as the gradients of the final states
/// and leave as those of the initial states; `d_input` (R, I) accumulates dL/d input.
#[allow(clippy::too_many_arguments)]
pub(super) fn direction_backward<F: Activations>(
    cell: Cell,
    w: &DirWeights<'_, F>,
    saved: &DirSaved<F>,
    x: ArrayView2<'_, F>,
    batches: &Batches,
    reverse: bool,
    d_out: ArrayView2<'_, F>,
    mut dh: ArrayViewMut2<'_, F>,
    dc: Option<ArrayViewMut2<'_, F>>,
    d_input: &mut Array2<F>,
) -> DirGrads<F> {
    let g = cell.gates();
    let gh = w.w_ih.nrows();
    let hidden = gh / g;
    let h_out = w.w_hh.ncols();
    let (rows, n, steps) = (batches.rows(), batches.batch(), batches.steps());
    let aw = cell.aux_width();
    let is_gru = cell.kind == CellKind::Gru;
    let is_lstm = cell.kind == CellKind::Lstm;
    let proj = w.w_hr.is_some();
    let blocks = &saved.blocks;
    let order = blocks.order(g);
    let nb = blocks.count();
    let out_blocks = if proj {
        Blocks::new(1, h_out)
    } else {
        blocks.clone()
    };

    // dL/dh_prev = dHW W_hh by blocks of columns of h, with W_hh's rows in block order;
    // dL/dm = dL/dh W_hr by unit blocks.
    let w_hh_blocked = gather_rows(&w.w_hh, &order);
    let w_hh = per_block(w, out_blocks.count(), &|b| {
        PackedWeights::new(&w_hh_blocked.slice(s![.., out_blocks.units(b)]))
    });
    let w_hr = match &w.w_hr {
        Some(w_hr) => per_block(w, nb, &|b| {
            PackedWeights::new(&w_hr.slice(s![.., blocks.units(b)]))
        }),
        None => Vec::new(),
    };

    // Written in full by the sweep before they are read, so not zero-filled.
    let mut dxw = padded_uninit::<F>(rows, gh);
    // GRU: dHW differs from dXW only in the n gate (times r). The sweep needs the whole dHW
    // of one step (two buffers: one step's is read while the next one's is written); only
    // its n part is kept for the weight gradients, which saves (R, 2H) of memory.
    let gru_rows = |r: usize| if is_gru { r } else { 0 };
    let mut dhw_steps = [
        padded_uninit::<F>(gru_rows(n), gh),
        padded_uninit::<F>(gru_rows(n), gh),
    ];
    let mut dhn = Array2::<F>::uninit((gru_rows(rows), hidden));
    // With a projection: dL/dh per row (for dW_hr) and dL/dm for the current step.
    let mut dh_all = Array2::<F>::uninit((if proj { rows } else { 0 }, h_out));
    let mut dm = Array2::<F>::uninit((if proj { n } else { 0 }, hidden));
    let mut no_c = Array2::zeros((n, 0));
    let mut dc = dc.unwrap_or_else(|| no_c.view_mut());

    let sh_dxw = Shared::uninit(&mut dxw);
    let [a, b] = &mut dhw_steps;
    let sh_dhw_steps = [Shared::uninit(a), Shared::uninit(b)];
    let sh_dhn = Shared::uninit(&mut dhn);
    let (sh_dh_all, sh_dm) = (Shared::uninit(&mut dh_all), Shared::uninit(&mut dm));
    let (sh_dh, sh_dc) = (Shared::new(&mut dh), Shared::new(&mut dc));
    let sh_gates = Shared::read_only(&saved.gates.view());
    let sh_aux = Shared::read_only(&saved.aux.view());
    let sh_h_prev = Shared::read_only(&saved.h_prev.view());
    // The rows of the loop's `s`-th step (the reverse of the forward order) within `rows`.
    let step = |s: usize, rows: &std::ops::Range<usize>| {
        Part::of_step(batches, time(batches, !reverse, s), rows.clone())
    };

    // dL/dh (+)= dHW W_hh for the columns of block `b` after loop step `s`.
    let through_w_hh = |s: usize, b: usize, part: &Part| {
        let (lo, bs) = (part.lo, part.len);
        // SAFETY: dHW of the step is complete (previous phase) and only read; this item alone
        // writes these columns of dh.
        unsafe {
            let a = if is_gru {
                sh_dhw_steps[s % 2].view(lo, bs, 0..gh)
            } else {
                part.view(sh_dxw, 0..gh)
            };
            matmul_packed_serial(
                &mut sh_dh.view_mut(lo, bs, out_blocks.units(b)),
                &a,
                &w_hh[b],
                is_gru,
            );
        }
    };
    // The gate math of loop step `s` for unit block `b`, from dL/dh' in `d_state`.
    let gates_back = |s: usize, b: usize, part: &Part, d_state: Shared<F>| {
        let (lo, bs) = (part.lo, part.len);
        let (cols, units) = (blocks.columns(b, g), blocks.units(b));
        // SAFETY: this item alone writes the block's columns of dxw, dhw (rows of the step),
        // of d_state and dc; the saved values are only read.
        unsafe {
            backward_block(
                cell,
                &BackwardBlock {
                    rows: bs,
                    dxw: part.rows(sh_dxw, cols.clone()),
                    dhw: if is_gru {
                        sh_dhw_steps[s % 2].rows(lo, cols.clone())
                    } else {
                        Rows::empty()
                    },
                    dh: d_state.rows(lo, units.clone()),
                    dc: if is_lstm {
                        sh_dc.rows(lo, units.clone())
                    } else {
                        Rows::empty()
                    },
                    gates: part.rows(sh_gates, cols.clone()),
                    aux: part.rows(sh_aux, blocks.columns(b, aw)),
                    h_prev: if is_gru {
                        part.rows(sh_h_prev, units.clone())
                    } else {
                        Rows::empty()
                    },
                },
            );
            if is_gru {
                let n_gate = blocks.gate(b, g, 2);
                part.view_mut(sh_dhn, units)
                    .assign(&sh_dhw_steps[s % 2].view(lo, bs, n_gate));
            }
        }
    };
    // dL/dh += dL/d output for columns `cols` of loop step `s`.
    let add_d_out = |part: &Part, cols: std::ops::Range<usize>| {
        let (lo, bs) = (part.lo, part.len);
        // SAFETY: this item alone writes these columns of dh (and of dh_all's rows).
        unsafe {
            let mut dh_t = sh_dh.view_mut(lo, bs, cols.clone());
            dh_t += &part.of(d_out).slice(s![.., cols.clone()]);
            if proj {
                part.view_mut(sh_dh_all, cols).assign(&dh_t);
            }
        }
    };

    let work_plain = |s: usize, b: usize, rows: std::ops::Range<usize>| {
        if b >= nb {
            return;
        }
        if s > 0 {
            if let Some(part) = step(s - 1, &rows) {
                through_w_hh(s - 1, b, &part);
            }
        }
        if let Some(part) = (s < steps).then(|| step(s, &rows)).flatten() {
            add_d_out(&part, blocks.units(b));
            gates_back(s, b, &part, sh_dh);
        }
    };
    let work_proj = |phase: usize, b: usize, rows: std::ops::Range<usize>| {
        let s = phase / 2;
        if phase.is_multiple_of(2) {
            if b >= out_blocks.count() {
                return;
            }
            if s > 0 {
                if let Some(part) = step(s - 1, &rows) {
                    through_w_hh(s - 1, b, &part);
                }
            }
            if let Some(part) = (s < steps).then(|| step(s, &rows)).flatten() {
                add_d_out(&part, out_blocks.units(b));
            }
        } else {
            if b >= nb {
                return;
            }
            let Some(part) = step(s, &rows) else {
                return;
            };
            let (lo, bs) = (part.lo, part.len);
            // SAFETY: dh is complete (previous phase) and only read; this item alone writes
            // the block's columns of dm.
            unsafe {
                matmul_packed_serial(
                    &mut sh_dm.view_mut(lo, bs, blocks.units(b)),
                    &sh_dh.view(lo, bs, 0..h_out),
                    &w_hr[b],
                    false,
                );
            }
            gates_back(s, b, &part, sh_dm);
        }
    };
    let items = nb.max(out_blocks.count());
    let sharing = Sharing::new(w, batches);
    if proj {
        sharing.run(2 * steps + 1, items, &work_proj);
    } else {
        sharing.run(steps + 1, items, &work_plain);
    }

    // SAFETY: every row of each step was written by the gate math (dxw, dhn) or with dL/dh
    // (dh_all), and every row belongs to one step.
    let (dxw_padded, dhn, dh_all) =
        unsafe { (dxw.assume_init(), dhn.assume_init(), dh_all.assume_init()) };
    let dxw = dxw_padded.slice(s![.., ..gh]);
    // Weight gradients [dW_ih | dW_hh] (G*H, I + H_out): large GEMMs over all timesteps, then
    // back to PyTorch's row order. The operands X and H_prev are packed a slice of rows at a
    // time, so that the packed copies never hold all rows (peak memory).
    let inputs = x.ncols();
    let mut g_ih_hh = Array2::<F>::zeros((gh, inputs + h_out));
    let (mut packed_x, mut packed_h) = (PackedWeights::default(), PackedWeights::default());
    for r0 in (0..rows).step_by(GRADIENT_ROWS) {
        let r = r0..(r0 + GRADIENT_ROWS).min(rows);
        let acc = r0 > 0;
        let (x_r, h_r) = (
            x.slice(s![r.clone(), ..]),
            saved.h_prev.slice(s![r.clone(), ..]),
        );
        if is_gru {
            let (mut g_ih, mut g_hh) = g_ih_hh.view_mut().split_at(Axis(1), inputs);
            packed_x.repack(&x_r);
            matmul_packed(&mut g_ih, &dxw.slice(s![r.clone(), ..]).t(), &packed_x, acc);
            // Per block: the r and z rows come from dXW, the n rows from dHW's n part.
            packed_h.repack(&h_r);
            for b in 0..nb {
                let (rz, n_gate) = (
                    blocks.gate(b, g, 0).start..blocks.gate(b, g, 1).end,
                    blocks.gate(b, g, 2),
                );
                let mut g_rz = g_hh.slice_mut(s![rz.clone(), ..]);
                let dxw_rz = dxw.slice(s![r.clone(), rz]);
                matmul_packed(&mut g_rz, &dxw_rz.t(), &packed_h, acc);
                let mut g_n = g_hh.slice_mut(s![n_gate, ..]);
                let dhn_b = dhn.slice(s![r.clone(), blocks.units(b)]);
                matmul_packed(&mut g_n, &dhn_b.t(), &packed_h, acc);
            }
        } else {
            // One product, so one pass over (and one packing of) dXW^T.
            packed_x.repack_concat(&[x_r, h_r]);
            let dxw_r = dxw.slice(s![r, ..]);
            matmul_packed(&mut g_ih_hh.view_mut(), &dxw_r.t(), &packed_x, acc);
        }
    }
    drop((packed_x, packed_h));
    let (g_ih, g_hh) = g_ih_hh.view().split_at(Axis(1), inputs);
    let (g_bih, g_bhh) = if w.b_ih.is_some() {
        let d_bias = dxw.sum_axis(Axis(0));
        let mut d_bhh = d_bias.clone();
        if is_gru {
            for b in 0..nb {
                let dhn_b = dhn.slice(s![.., blocks.units(b)]);
                d_bhh
                    .slice_mut(s![blocks.gate(b, g, 2)])
                    .assign(&dhn_b.sum_axis(Axis(0)));
            }
        }
        (
            Some(scatter(&d_bias, &order)),
            Some(scatter(&d_bhh, &order)),
        )
    } else {
        (None, None)
    };
    let g_hr = w.w_hr.as_ref().map(|w_hr| {
        // m = o * tanh(c') per row, rebuilt from the saved (blocked) gates.
        let mut m_all = Array2::zeros((rows, hidden));
        for b in 0..nb {
            // LSTM's aux holds c and tanh(c') per block: its "gate" 1 is tanh(c').
            let o = saved.gates.slice(s![.., blocks.gate(b, g, 3)]);
            let tanh_c = saved.aux.slice(s![.., blocks.gate(b, aw, 1)]);
            m_all
                .slice_mut(s![.., blocks.units(b)])
                .assign(&(&o * &tanh_c));
        }
        let mut g = Array2::zeros(w_hr.dim());
        matmul(&mut g.view_mut(), &dh_all.t(), &m_all.view(), false);
        g
    });
    matmul(
        &mut d_input.view_mut(),
        &dxw.view(),
        &gather_rows(&w.w_ih, &order).view(),
        true,
    );
    DirGrads {
        w_ih: scatter_rows(&g_ih, &order),
        w_hh: scatter_rows(&g_hh, &order),
        b_ih: g_bih,
        b_hh: g_bhh,
        w_hr: g_hr,
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_whole_2_kib_are_padded_by_a_cache_line() {
        assert_eq!(padded_width::<f32>(1024), 1040);
        assert_eq!(padded_width::<f32>(512), 528);
        assert_eq!(padded_width::<f64>(256), 264);
        for cols in [0, 1, 128, 256, 500, 640, 1000] {
            assert_eq!(padded_width::<f32>(cols), cols);
        }
        let a = padded_uninit::<f32>(3, 1024);
        assert_eq!(a.dim(), (3, 1040));
        // SAFETY: the padding columns are initialised by `padded_uninit`.
        let pad = unsafe { a.slice(s![.., 1024..]).to_owned().assume_init() };
        assert!(pad.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn row_parts_balance_the_work_of_the_sequences() {
        let small = 64 << 10;
        // Too few rows per thread, or weights too large: one part.
        let padded = Batches::uniform(5, 31);
        assert_eq!(row_parts(&padded, 2, small), vec![0..31]);
        let padded = Batches::uniform(5, 64);
        assert_eq!(
            row_parts(&padded, 2, ROWS_MAX_WEIGHT_BYTES + 1),
            vec![0..64]
        );
        assert_eq!(row_parts(&padded, 1, small), vec![0..64]);
        // Equal lengths: equal rows.
        assert_eq!(row_parts(&padded, 2, small), vec![0..32, 32..64]);
        assert_eq!(
            row_parts(&padded, 4, small),
            vec![0..16, 16..32, 32..48, 48..64]
        );
        // Sorted by decreasing length: the long sequences share the work of the short ones.
        // Lengths: 10 rows of 4 steps, 20 of 3, 10 of 1 (40 + 60 + 10 = 110 row-steps).
        let packed = Batches::from_batch_sizes(vec![40, 30, 30, 10]).unwrap();
        let parts = row_parts(&packed, 2, small);
        assert_eq!(parts, vec![0..15, 15..40]);
        let work = |r: &std::ops::Range<usize>| -> usize {
            packed
                .batch_sizes()
                .iter()
                .map(|&b| b.min(r.end).saturating_sub(r.start))
                .sum()
        };
        assert_eq!((work(&parts[0]), work(&parts[1])), (55, 55));
    }
}
