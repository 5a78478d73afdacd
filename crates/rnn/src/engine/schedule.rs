//! How the threads of one layer and direction's pass share its work, and in which order the
//! pass visits the steps.
//!
//! Two ways ([`Sharing`]). When the batch is wide and the weights not too large for every
//! thread to read them at every step, the threads do not meet at all: each takes a range of
//! the batch's rows ([`row_parts`]) through every step and block on its own, and one done early
//! takes over half of another's remaining rows. Otherwise the threads share each step's blocks
//! of units and meet once per step (see `parallel.rs`). Either way every value is computed by
//! the same arithmetic, so the results do not depend on the number of threads.

use std::ops::Range;

use super::parallel::{run_phases, run_row_parts};
use super::{Batches, DirWeights};

/// Multiply-adds per step below which a pass stays on the calling thread.
const PARALLEL_MIN_STEP_WORK: usize = 1 << 16;

/// Multiply-adds of a whole pass, counted at f32's rate (an int8 product's at a quarter:
/// [`PackedBlock::speedup`](super::lowp::PackedBlock::speedup)), below which a pass stays on
/// the calling thread: waking a second thread and meeting it costs 10-20 µs on a 2-vCPU host,
/// as much as such a pass. Measured at batch 1, hidden 512 (µs, 2 threads / 1): the int8 RNN
/// and GRU single steps (98k and 295k counted here) 22.6 / 10.7 and 28.8 / 20.7, the int8
/// LSTM step (393k) 30.0 / 34.5, the f32 RNN step (393k) 23.1 / 24.6; every 20-step pass but
/// the int8 GRU's (256 / 227) ran faster on 2.
const PARALLEL_MIN_PASS_WORK: usize = 5 << 16;

/// Rows of the batch each thread needs before the threads take rows each rather than share
/// every step by blocks of units (see [`Sharing`]).
const MIN_ROWS_PER_THREAD: usize = 16;

/// The most bytes of weights all the threads together may read at every step for them to take
/// rows each (every thread then reads all the weights at every step). Measured on 2 threads by
/// alternating the two ways in one process, with the take-over of rows ([`run_row_parts`]):
/// rows win on the small presets (~10%) and on the medium ones, up to 6 MiB of weights
/// (LSTM +1-15%, GRU +6-11%, RNN +2-4% forward; backward +1-5%); from the large RNN (8 MiB)
/// up they are level (-2% to +3%), and with more threads reading the weights they would
/// stream from memory.
pub(super) const ROWS_MAX_WEIGHT_BYTES: usize = 12 << 20;

/// The loop's `s`-th step: forward in time, or backward for the reverse direction.
pub(super) fn time(batches: &Batches, reverse: bool, s: usize) -> usize {
    if reverse {
        batches.steps() - 1 - s
    } else {
        s
    }
}

/// The rows (of all steps stacked) of the loop's steps `loop_steps`, which are consecutive in
/// time and so, time-major, in rows.
pub(super) fn step_rows(
    batches: &Batches,
    reverse: bool,
    loop_steps: Range<usize>,
) -> Range<usize> {
    let (a, b) = (
        time(batches, reverse, loop_steps.start),
        time(batches, reverse, loop_steps.end - 1),
    );
    let (first, last) = (a.min(b), a.max(b));
    debug_assert!(!batches.is_batch_major(), "a step's rows are apart");
    batches.row(first, 0)..batches.row(last, 0) + batches.active(last)
}

/// Bytes of the weights a step reads: `W_ih`, `W_hh` and `W_hr`.
pub(super) fn weight_bytes<F>(w: &DirWeights<'_, F>) -> usize {
    let w_hr = w.w_hr.as_ref().map_or(0, |w| w.len());
    (w.w_ih.len() + w.w_hh.len() + w_hr) * size_of::<F>()
}

/// Cuts the batch's sequences into `threads` ranges of rows with about equal work (a row's
/// work is its sequence's length), or returns one range when the batch is too small for that
/// or the weights (`weight_bytes`, read by every thread) too large (see [`Sharing`]).
#[allow(clippy::single_range_in_vec_init)] // A list of row ranges, here of one.
pub(super) fn row_parts(
    batches: &Batches,
    threads: usize,
    weight_bytes: usize,
) -> Vec<Range<usize>> {
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
pub(super) struct Sharing {
    threads: usize,
    parts: Vec<Range<usize>>,
}

impl Sharing {
    /// For the layer `w` over `batches` with its products `speedup` times faster than f32's
    /// ([`PackedBlock::speedup`](super::lowp::PackedBlock::speedup)): [`pass_threads`]
    /// threads, by rows or by blocks.
    pub(super) fn new<F>(w: &DirWeights<'_, F>, batches: &Batches, speedup: usize) -> Self {
        let threads = pass_threads(w, batches, speedup);
        let parts = row_parts(batches, threads, weight_bytes(w));
        // The items of a phase write disjoint rows because the parts are disjoint: they tile
        // the batch's rows in order.
        debug_assert!(
            parts.first().is_some_and(|p| p.start == 0)
                && parts.last().is_some_and(|p| p.end == batches.batch())
                && parts.windows(2).all(|w| w[0].end == w[1].start),
            "row parts {parts:?} must tile 0..{}",
            batches.batch()
        );
        Sharing { threads, parts }
    }

    /// Whether the threads take rows each (and never meet).
    pub(super) fn by_rows(&self) -> bool {
        self.parts.len() > 1
    }

    /// Runs `work(phase, item, rows)` for every phase in `0..phases` and item in `0..items`,
    /// with the phases in order and the items of a phase independent.
    pub(super) fn run(
        &self,
        phases: usize,
        items: usize,
        work: &(dyn Fn(usize, usize, Range<usize>) + Sync),
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
/// [`PARALLEL_MIN_STEP_WORK`] multiply-adds or the whole pass's, divided by the products'
/// `speedup`, below [`PARALLEL_MIN_PASS_WORK`]; else all of rayon's.
fn pass_threads<F>(w: &DirWeights<'_, F>, batches: &Batches, speedup: usize) -> usize {
    let row_work = w.w_ih.nrows() * (w.w_ih.ncols() + w.w_hh.ncols());
    let step_work = batches.batch() * row_work;
    let pass_work = batches.rows() * row_work / speedup.max(1);
    if step_work < PARALLEL_MIN_STEP_WORK || pass_work < PARALLEL_MIN_PASS_WORK {
        1
    } else {
        rayon::current_num_threads()
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    /// A single step of an int8 layer at batch 1 stays on one thread (waking a second one
    /// costs more than the step); the same step in f32, and 20 int8 steps, take two.
    #[test]
    fn small_passes_stay_on_one_thread() {
        let (w_ih, w_hh) = (
            ndarray::Array2::<f32>::zeros((512, 256)),
            ndarray::Array2::zeros((512, 512)),
        );
        let w = DirWeights {
            w_ih: w_ih.view(),
            w_hh: w_hh.view(),
            b_ih: None,
            b_hh: None,
            w_hr: None,
            per_unit: Vec::new(),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let (one, twenty) = (Batches::uniform(1, 1), Batches::uniform(20, 1));
            assert_eq!(pass_threads(&w, &one, 4), 1);
            assert_eq!(pass_threads(&w, &one, 1), 2);
            assert_eq!(pass_threads(&w, &twenty, 4), 2);
            assert_eq!(pass_threads(&w, &Batches::uniform(100, 1), 1), 2);
            // A step below the per-step threshold: one thread, whatever the steps.
            let tiny = DirWeights {
                w_ih: w_ih.slice(ndarray::s![..64, ..64]),
                w_hh: w_hh.slice(ndarray::s![..64, ..64]),
                ..w
            };
            assert_eq!(pass_threads(&tiny, &Batches::uniform(100, 1), 1), 1);
        });
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
        let work = |r: &Range<usize>| -> usize {
            packed
                .batch_sizes()
                .iter()
                .map(|&b| b.min(r.end).saturating_sub(r.start))
                .sum()
        };
        assert_eq!((work(&parts[0]), work(&parts[1])), (55, 55));
    }
}
