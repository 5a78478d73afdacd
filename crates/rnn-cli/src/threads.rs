//! `--threads`: the size of the worker pool the kernels use, capped at a sane multiple of the
//! cores (more threads than cores only add switching; thousands exhaust the machine).

use anyhow::{bail, Result};

/// Threads per core `--threads` may ask for at most.
pub const PER_CORE: usize = 4;

/// The most `--threads` accepts on this machine: [`PER_CORE`] per core, at least 64.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(PER_CORE).max(64)
}

/// Sizes rayon's global pool to `threads` (default: one per core). Must run before any kernel.
pub fn set(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else { return Ok(()) };
    if n == 0 {
        bail!("--threads must be at least 1");
    }
    let max = max_threads();
    if n > max {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        bail!(
            "--threads {n} is too many: this machine has {cores} core(s), and --threads takes at \
             most {max} ({PER_CORE} per core, at least 64); leave it out for one per core"
        );
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot start {n} worker threads: {e}"))
}
