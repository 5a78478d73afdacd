//! The time loop on several threads: phases of independent work items, one meeting per phase.
//!
//! A recurrent pass is a chain of phases (one or two per time step); within a phase the items
//! (blocks of hidden units, see [`super::blocks`]) are independent. [`run_phases`] starts the
//! helper threads once per pass, not once per step, and every thread *claims* items from a
//! shared counter. A thread that finds no item left waits (spinning briefly, then yielding) for
//! the phase to finish. Because items are claimed, not assigned, a helper that starts late (or
//! never, when the pool is busy) only means the others do more: the pass cannot deadlock, and
//! its result never depends on which thread did what.
//!
//! When the threads take rows each instead ([`run_row_parts`]), they do not meet at all; a
//! thread that finishes its rows early takes over half of the rows another has left, from the
//! next step on, so that the host slowing one core does not leave the other idle at the end.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Spins before a waiting thread starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

/// A counter on its own cache line, so that claiming and finishing do not contend.
#[repr(align(128))]
struct Padded(AtomicUsize);

/// Progress of one [`run_phases`] call.
struct Progress {
    /// Items claimed so far, over all phases (item `i` of phase `p` is `p * items + i`).
    claimed: Padded,
    /// Items finished so far.
    done: Padded,
    /// Set when an item panicked, so that waiting threads give up.
    poisoned: AtomicBool,
}

/// Marks the progress poisoned if an item unwinds.
struct PoisonOnUnwind<'a>(&'a Progress);

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
        }
    }
}

/// Runs `work(phase, item)` for every phase in `0..phases` and item in `0..items`, on up to
/// `threads` threads of rayon's current pool (the caller included). Every item of a phase
/// finishes before any item of the next one starts; items of one phase run in any order and
/// concurrently, so they must touch disjoint data.
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
    let progress = Progress {
        claimed: Padded(AtomicUsize::new(0)),
        done: Padded(AtomicUsize::new(0)),
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

/// One thread's part: claim items until the phase has none left, wait for the phase to finish,
/// go on with the next phase.
fn take_part(
    progress: &Progress,
    phases: usize,
    items: usize,
    work: &(dyn Fn(usize, usize) + Sync),
) {
    let _guard = PoisonOnUnwind(progress);
    let (claimed, done) = (&progress.claimed.0, &progress.done.0);
    // A late starter skips the phases already claimed in full, but it must not start on the
    // next one before the items of the current one have finished.
    let first = claimed.load(Ordering::Acquire) / items;
    if first >= phases || !wait_until(progress, first * items) {
        return;
    }
    for phase in first..phases {
        let end = (phase + 1) * items;
        let mut next = claimed.load(Ordering::Acquire);
        while next < end {
            match claimed.compare_exchange_weak(next, next + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    work(phase, next - phase * items);
                    done.fetch_add(1, Ordering::Release);
                    next = claimed.load(Ordering::Acquire);
                }
                Err(now) => next = now,
            }
        }
        if !wait_until(progress, end) {
            return;
        }
    }
}

/// Waits until `count` items have finished; false if an item panicked.
fn wait_until(progress: &Progress, count: usize) -> bool {
    wait_for(&progress.done.0, count, &progress.poisoned)
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

/// One range of rows on its way through the phases, owned by one thread at a time.
struct RowPart {
    /// `(first row, end row, next phase to start)`; a thief shortens the range under the lock.
    ctl: Mutex<(usize, usize, usize)>,
    /// Phases finished for the part's rows.
    done: AtomicUsize,
}

impl RowPart {
    fn new(rows: Range<usize>, phase: usize) -> Self {
        RowPart {
            ctl: Mutex::new((rows.start, rows.end, phase)),
            done: AtomicUsize::new(phase),
        }
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
    let progress = Progress {
        claimed: Padded(AtomicUsize::new(0)),
        done: Padded(AtomicUsize::new(0)),
        poisoned: AtomicBool::new(false),
    };
    let slots = &slots;
    run_phases(threads, 1, parts.len(), &|_, p| {
        let _guard = PoisonOnUnwind(&progress);
        run_owned(&slots[p], phases, work);
        while let Some(s) = take_over(slots, &used, phases, &progress) {
            run_owned(&slots[s], phases, work);
        }
    });
}

/// Runs the owned part `part` through its remaining phases.
fn run_owned(part: &RowPart, phases: usize, work: &(dyn Fn(usize, Range<usize>) + Sync)) {
    loop {
        let (rows, phase) = {
            let mut ctl = part.ctl.lock().unwrap_or_else(|e| e.into_inner());
            if ctl.2 >= phases {
                return;
            }
            ctl.2 += 1;
            (ctl.0..ctl.1, ctl.2 - 1)
        };
        work(phase, rows);
        part.done.store(phase + 1, Ordering::Release);
    }
}

/// Splits the part with the most work left (rows x phases) and returns the slot of its second
/// half, ready to run; `None` if no part has enough rows and phases left to split.
fn take_over(
    slots: &[RowPart],
    used: &AtomicUsize,
    phases: usize,
    progress: &Progress,
) -> Option<usize> {
    let in_use = used.load(Ordering::Acquire).min(slots.len());
    // Work left in a part that can be split, else 0.
    let left = |&(lo, end, next): &(usize, usize, usize)| {
        let (rows, phases_left) = (end - lo, phases - next.min(phases));
        if rows >= 2 * MIN_STOLEN_ROWS && phases_left >= 2 {
            rows * phases_left
        } else {
            0
        }
    };
    let victim = (0..in_use)
        .map(|i| {
            (
                i,
                left(&slots[i].ctl.lock().unwrap_or_else(|e| e.into_inner())),
            )
        })
        .filter(|&(_, work)| work > 0)
        .max_by_key(|&(_, work)| work)?
        .0;
    let slot = used.fetch_add(1, Ordering::AcqRel);
    if slot >= slots.len() {
        return None;
    }
    let (rows, start) = {
        let mut ctl = slots[victim].ctl.lock().unwrap_or_else(|e| e.into_inner());
        if left(&ctl) == 0 {
            // The victim moved on meanwhile: leave the slot empty.
            return None;
        }
        let (lo, end, next) = *ctl;
        let mid = lo + (end - lo) / 2;
        ctl.1 = mid;
        (mid..end, next)
    };
    // The owner may still be in phase `start - 1` over the whole range: wait for it.
    if !wait_for(&slots[victim].done, start, &progress.poisoned) {
        return None;
    }
    *slots[slot].ctl.lock().unwrap_or_else(|e| e.into_inner()) = (rows.start, rows.end, start);
    slots[slot].done.store(start, Ordering::Release);
    Some(slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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
    fn row_parts_run_every_row_once_per_phase_in_order_and_share_a_slow_part() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (rows, phases) = (32, 30);
        // (phase, row, thread) for every call.
        let log = Mutex::new(Vec::new());
        pool.install(|| {
            run_row_parts(2, phases, &[0..16, 16..32], &|phase, rows| {
                // The first part is slow: the thread done with the second takes some of it.
                if rows.start < 16 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let me = std::thread::current().id();
                log.lock().unwrap().extend(rows.map(|row| (phase, row, me)));
            })
        });
        let log = log.into_inner().unwrap();
        assert_eq!(log.len(), rows * phases);
        for row in 0..rows {
            let seen: Vec<_> = log.iter().filter(|e| e.1 == row).collect();
            let order: Vec<usize> = seen.iter().map(|e| e.0).collect();
            assert_eq!(order, (0..phases).collect::<Vec<_>>(), "row {row}");
        }
        let slow_threads: std::collections::HashSet<_> =
            log.iter().filter(|e| e.1 < 16).map(|e| e.2).collect();
        assert_eq!(slow_threads.len(), 2, "the slow part was not shared");
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
    }
}
