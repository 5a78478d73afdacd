//! `--threads`: the size of the worker pool the kernels use.

use anyhow::{bail, Result};

/// Sizes rayon's global pool to `threads` (default: one per core). Must run before any kernel.
pub fn set(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else { return Ok(()) };
    if n == 0 {
        bail!("--threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot start {n} worker threads: {e}"))
}
