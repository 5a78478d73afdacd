//! The time loop on several threads: phases of independent work items, one meeting per phase.
//!
//! A recurrent pass is a chain of phases (one or two per time step); within a phase the items
//! (blocks of hidden units, see [`super::blocks`]) are independent. [`run_phases`] starts the
//! helper threads once per pass, not once per step, and every thread *claims* items. A thread
//! that finds no item left waits (spinning briefly, then yielding) for the phase to finish.
//! Because items are claimed, not assigned, a helper that starts late (or never, when the pool
//! is busy) only means the others do more: the pass cannot deadlock, and its result never
//! depends on which thread did what.
//!
//! Each thread has a *home* range of items that it claims first, the same at every phase, and
//! only then helps with the others' ranges. An item's data (its block of the weights, of the
//! input projection, of the cell state) so stays in one core's caches from step to step. This
//! matters where the cores do not share their last-level cache: the benchmark machine's
//! hypervisor sometimes places its two cores on different CCDs of an AMD EPYC, each with its
//! own L3, and the large presets then ran 5-13% faster than when every item went to whichever
//! thread asked first (level when the cores share the L3).
//!
//! When the threads take rows each instead ([`run_row_parts`]), they do not meet at all; a
//! thread that finishes its rows early takes over half of the rows another has left, from the
//! next step on, so that the host slowing one core does not leave the other idle at the end.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Spins before a waiting thread starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

/// A counter on its own cache line, so that claiming and finishing do not contend.
#[repr(align(128))]
struct Padded(AtomicUsize);

/// Progress of one [`run_phases`] call.
struct Progress {
    /// Per range of items (one per thread, its *home* items: range `r` of `R` is items
    /// `r * items / R..(r + 1) * items / R`), its items claimed so far over all phases: claim
    /// `k` of a range is its item `k % len` of phase `k / len`.
    claimed: Vec<Padded>,
    /// Items finished so far, over all phases.
    done: Padded,
    /// Threads that have started so far: a thread's number is its home range.
    joined: Padded,
    /// Set when an item panicked, so that waiting threads give up.
    poisoned: AtomicBool,
}

/// Sets the flag (a pass's `poisoned`) if the thread unwinds while this is alive.
struct PoisonOnUnwind<'a>(&'a AtomicBool);

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Runs `work(phase, item)` for every phase in `0..phases` and item in `0..items`, on up to
/// `threads` threads of rayon's current pool (the caller included). Every item of a phase
/// finishes before any item of the next one starts; items of one phase run in any order and
/// concurrently, so they must touch disjoint data.
///
/// Each thread first claims the items of its own range (the same items at every phase, so
/// that the data an item reads and writes, a block of weights, stays in that thread's
/// caches), then helps with what is left of the others' ranges.
pub(crate) fn run_phases(
    threads: usize,
    phases: usize,
    items: usize,
    work: &(dyn Fn(usize, usize) + Sync),
) {
    let helpers = threads.min(items).saturating_sub(1);
    if helpers == 0 {
        for phase in 0..phases {
            for item in 0..items {
                work(phase, item);
            }
        }
        return;
    }
    let ranges = helpers + 1;
    let progress = Progress {
        claimed: (0..ranges).map(|_| Padded(AtomicUsize::new(0))).collect(),
        done: Padded(AtomicUsize::new(0)),
        joined: Padded(AtomicUsize::new(0)),
        poisoned: AtomicBool::new(false),
    };
    let run = || take_part(&progress, phases, items, work);
    rayon::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| run());
        }
        run();
    });
}

/// One thread's part: claim items (its own range's first, then the others') until the phase
/// has none left, wait for the phase to finish, go on with the next phase.
fn take_part(
    progress: &Progress,
    phases: usize,
    items: usize,
    work: &(dyn Fn(usize, usize) + Sync),
) {
    let _guard = PoisonOnUnwind(&progress.poisoned);
    let ranges = progress.claimed.len();
    let home = progress.joined.0.fetch_add(1, Ordering::AcqRel) % ranges;
    let done = &progress.done.0;
    // A late starter joins at the first phase not finished yet: every item of the earlier
    // ones is done, so it may claim items of this one.
    let first = done.load(Ordering::Acquire) / items;
    for phase in first..phases {
        for r in (0..ranges).map(|i| (home + i) % ranges) {
            let (start, end_of_range) = (r * items / ranges, (r + 1) * items / ranges);
            let len = end_of_range - start;
            let claimed = &progress.claimed[r].0;
            let end = (phase + 1) * len;
            let mut next = claimed.load(Ordering::Acquire);
            // Every item of the earlier phases was claimed before they finished.
            debug_assert!(next >= phase * len);
            while next < end {
                match claimed.compare_exchange_weak(
                    next,
                    next + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        work(phase, start + next - phase * len);
                        done.fetch_add(1, Ordering::Release);
                        next = claimed.load(Ordering::Acquire);
                    }
                    Err(now) => next = now,
                }
            }
        }
        if !wait_for(done, (phase + 1) * items, &progress.poisoned) {
            return;
        }
    }
}

/// Waits until `counter` reaches `count`, spinning, then yielding; false if `poisoned` is set.
fn wait_for(counter: &AtomicUsize, count: usize, poisoned: &AtomicBool) -> bool {
    let mut spins = 0u32;
    while counter.load(Ordering::Acquire) < count {
        if poisoned.load(Ordering::Acquire) {
            return false;
        }
        if spins < SPINS_BEFORE_YIELD {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    true
}

/// Fewest rows a thread takes over from another's part (each half keeps at least this many).
const MIN_STOLEN_ROWS: usize = 4;

/// Where a part stands: its rows `lo..end` and the next phase its owner starts.
struct PartState {
    lo: usize,
    end: usize,
    next_phase: usize,
}

impl PartState {
    /// Rows x phases left, if the part has enough of both to be split in two; else 0.
    fn splittable_work(&self, phases: usize) -> usize {
        let (rows, phases_left) = (self.end - self.lo, phases.saturating_sub(self.next_phase));
        if rows >= 2 * MIN_STOLEN_ROWS && phases_left >= 2 {
            rows * phases_left
        } else {
            0
        }
    }
}

/// One range of rows on its way through the phases, run by one thread at a time.
struct RowPart {
    /// Changed under the lock: by the owner when it starts a phase, by a thief that takes the
    /// second half of the rows.
    state: Mutex<PartState>,
    /// Phases finished over the part's rows.
    done: AtomicUsize,
}

impl RowPart {
    fn new(rows: Range<usize>, phase: usize) -> Self {
        RowPart {
            state: Mutex::new(PartState {
                lo: rows.start,
                end: rows.end,
                next_phase: phase,
            }),
            done: AtomicUsize::new(phase),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PartState> {
        // The state is consistent between statements: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `work(phase, rows)` for every phase in `0..phases` over the disjoint row ranges
/// `parts`, on up to `threads` threads: each thread takes a part through all phases in order,
/// without meeting the others. A thread that has finished its part takes over the second half
/// of the rows of the part with the most work left, from the first phase its owner has not
/// started (after the owner finishes the phase before): the rows of a part never interact,
/// so any split gives the same results, and a thread slowed by the host no longer leaves the
/// other waiting at the end.
pub(crate) fn run_row_parts(
    threads: usize,
    phases: usize,
    parts: &[Range<usize>],
    work: &(dyn Fn(usize, Range<usize>) + Sync),
) {
    let total_rows: usize = parts.iter().map(|p| p.len()).sum();
    let mut slots: Vec<RowPart> = parts.iter().map(|p| RowPart::new(p.clone(), 0)).collect();
    // Every take-over halves a range of at least 2 * MIN_STOLEN_ROWS rows: at most this many.
    slots.extend((0..total_rows / MIN_STOLEN_ROWS).map(|_| RowPart::new(0..0, phases)));
    let used = AtomicUsize::new(parts.len());
    let poisoned = AtomicBool::new(false);
    let slots = &slots;
    run_phases(threads, 1, parts.len(), &|_, p| {
        let _guard = PoisonOnUnwind(&poisoned);
        run_owned(&slots[p], phases, work);
        while let Some(s) = take_over(slots, &used, phases, &poisoned) {
            run_owned(&slots[s], phases, work);
        }
    });
}

/// Runs the owned part `part` through its remaining phases.
fn run_owned(part: &RowPart, phases: usize, work: &(dyn Fn(usize, Range<usize>) + Sync)) {
    loop {
        let (rows, phase) = {
            let mut state = part.lock();
            if state.next_phase >= phases {
                return;
            }
            state.next_phase += 1;
            (state.lo..state.end, state.next_phase - 1)
        };
        work(phase, rows);
        part.done.store(phase + 1, Ordering::Release);
    }
}

/// Splits the part with the most work left and returns the slot of its second half, ready to
/// run; `None` if no part has enough rows and phases left to split.
fn take_over(
    slots: &[RowPart],
    used: &AtomicUsize,
    phases: usize,
    poisoned: &AtomicBool,
) -> Option<usize> {
    let in_use = used.load(Ordering::Acquire).min(slots.len());
    let victim = (0..in_use)
        .map(|i| (i, slots[i].lock().splittable_work(phases)))
        .filter(|&(_, work)| work > 0)
        .max_by_key(|&(_, work)| work)?
        .0;
    let slot = used.fetch_add(1, Ordering::AcqRel);
    if slot >= slots.len() {
        return None;
    }
    let (rows, start) = {
        let mut state = slots[victim].lock();
        if state.splittable_work(phases) == 0 {
            // The owner moved on meanwhile: leave the slot empty.
            return None;
        }
        let mid = state.lo + (state.end - state.lo) / 2;
        let taken = mid..state.end;
        state.end = mid;
        (taken, state.next_phase)
    };
    // The owner may still be in phase `start - 1` over the whole range: wait for it.
    if !wait_for(&slots[victim].done, start, poisoned) {
        return None;
    }
    *slots[slot].lock() = PartState {
        lo: rows.start,
        end: rows.end,
        next_phase: start,
    };
    slots[slot].done.store(start, Ordering::Release);
    Some(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_run_in_order_and_every_item_once() {
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let log = Mutex::new(Vec::new());
            pool.install(|| {
                run_phases(threads, 50, 3, &|phase, item| {
                    log.lock().unwrap().push((phase, item));
                })
            });
            let log = log.into_inner().unwrap();
            assert_eq!(log.len(), 150);
            // Phases never interleave.
            assert!(
                log.windows(2).all(|w| w[0].0 <= w[1].0),
                "{threads} threads"
            );
            let mut sorted = log.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 150);
        }
    }

    #[test]
    fn each_thread_starts_with_its_own_range_of_items() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let firsts = Mutex::new(std::collections::HashMap::new());
        let arrived = AtomicUsize::new(0);
        pool.install(|| {
            run_phases(2, 1, 8, &|_, item| {
                let me = std::thread::current().id();
                let first = {
                    let mut firsts = firsts.lock().unwrap();
                    let new = !firsts.contains_key(&me);
                    firsts.entry(me).or_insert(item);
                    new
                };
                if first {
                    // Hold the first item until the other thread has claimed one too, so
                    // that neither can take the other's range before it starts.
                    arrived.fetch_add(1, Ordering::AcqRel);
                    let start = std::time::Instant::now();
                    while arrived.load(Ordering::Acquire) < 2
                        && start.elapsed() < std::time::Duration::from_secs(10)
                    {
                        std::thread::yield_now();
                    }
                }
            })
        });
        let mut firsts: Vec<usize> = firsts.into_inner().unwrap().into_values().collect();
        firsts.sort_unstable();
        // The two ranges are items 0..4 and 4..8: each thread began at the start of its own.
        assert_eq!(firsts, [0, 4]);
    }

    #[test]
    fn row_parts_run_every_row_once_per_phase_in_order_and_share_a_slow_part() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (rows, phases) = (32, 30);
        // Phases finished per row, checked when a phase starts: the previous one is done.
        let finished: Vec<AtomicUsize> = (0..rows).map(|_| AtomicUsize::new(0)).collect();
        let threads_of_slow_rows = Mutex::new(std::collections::HashSet::new());
        pool.install(|| {
            run_row_parts(2, phases, &[0..16, 16..32], &|phase, rows| {
                for row in rows.clone() {
                    let before = finished[row].load(Ordering::Acquire);
                    assert_eq!(
                        before, phase,
                        "row {row} starts phase {phase} after {before}"
                    );
                }
                // The first part is slow: the thread done with the second takes some of it.
                if rows.start < 16 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    let me = std::thread::current().id();
                    threads_of_slow_rows.lock().unwrap().insert(me);
                }
                for row in rows {
                    finished[row].store(phase + 1, Ordering::Release);
                }
            })
        });
        assert!(finished.iter().all(|f| f.load(Ordering::Relaxed) == phases));
        let threads = threads_of_slow_rows.into_inner().unwrap().len();
        assert_eq!(threads, 2, "the slow part was not shared");
    }

    #[test]
    fn a_busy_pool_cannot_deadlock_the_pass() {
        // Both workers of the pool run passes at once: each pass's helper may never start.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let total = AtomicUsize::new(0);
        pool.install(|| {
            rayon::join(
                || {
                    run_phases(2, 200, 2, &|_, _| {
                        total.fetch_add(1, Ordering::Relaxed);
                    })
                },
                || {
                    run_phases(2, 200, 2, &|_, _| {
                        total.fetch_add(1, Ordering::Relaxed);
                    })
                },
            )
        });
        assert_eq!(total.load(Ordering::Relaxed), 800);
        // Likewise for passes by rows, whose threads also wait for each other's steps.
        let rows_done = AtomicUsize::new(0);
        let pass = || {
            run_row_parts(2, 100, &[0..16, 16..32], &|_, rows| {
                rows_done.fetch_add(rows.len(), Ordering::Relaxed);
            })
        };
        pool.install(|| rayon::join(pass, pass));
        assert_eq!(rows_done.load(Ordering::Relaxed), 2 * 100 * 32);
    }
}
