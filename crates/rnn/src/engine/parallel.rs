//! The time loop on several threads: phases of independent work items, one meeting per phase.
//!
//! A recurrent pass is a chain of phases (one or two per time step); within a phase the items
//! (blocks of hidden units, see [`super::blocks`]) are independent. [`run_phases`] starts the
//! helper threads once per pass, not once per step, and every thread *claims* items from a
//! shared counter. A thread that finds no item left waits (spinning briefly, then yielding) for
//! the phase to finish. Because items are claimed, not assigned, a helper that starts late (or
//! never, when the pool is busy) only means the others do more: the pass cannot deadlock, and
//! its result never depends on which thread did what.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    let mut spins = 0u32;
    while progress.done.0.load(Ordering::Acquire) < count {
        if progress.poisoned.load(Ordering::Acquire) {
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
