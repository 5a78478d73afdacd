//! Writing to standard output with errors that say so (`println!` would panic on a full disk
//! or a closed pipe).

use std::io::Write;

use anyhow::{Context, Result};

/// Writes `text` and a newline to standard output and flushes it; a failure is "cannot write
/// to standard output: ...".
pub fn line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}
