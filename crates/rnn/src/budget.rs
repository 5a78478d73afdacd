//! The memory budget: every size that comes from a file or a flag is checked against it, with
//! overflow-safe arithmetic, before memory is taken.
//!
//! The budget is the memory the machine has available now (`MemAvailable` in `/proc/meminfo`
//! on Linux; no limit elsewhere), or the value of the environment variable
//! [`RNN_MEMORY_LIMIT`](LIMIT_VAR) when it is set: bytes, or a number with a binary suffix
//! `K`, `M`, `G` or `T` (`RNN_MEMORY_LIMIT=512M`, `=8G`). It is never more than `isize::MAX`,
//! the most one allocation can hold.
//!
//! A refusal names what was asked for and the bytes it would take:
//!
//! ```
//! use rnn::{CellKind, RecurrentConfig};
//! let huge = RecurrentConfig::new(CellKind::Lstm, 4, 1_000_000_000);
//! let err = huge.validate().unwrap_err().to_string();
//! assert!(err.contains("hidden_size 1000000000") && err.contains("bytes"), "{err}");
//! ```

use crate::error::{Error, Result};

/// The environment variable that overrides the memory budget.
pub const LIMIT_VAR: &str = "RNN_MEMORY_LIMIT";

/// The memory one run may use, and where that number comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Bytes.
    pub bytes: u64,
    /// `RNN_MEMORY_LIMIT=...`, `the available memory (MemAvailable)` or `the address space`.
    pub source: String,
}

/// The budget now: [`LIMIT_VAR`] if set, else the available memory. A [`LIMIT_VAR`] that is
/// not a size is an [`Error::Config`].
pub fn budget() -> Result<Budget> {
    let cap = isize::MAX as u64;
    if let Ok(text) = std::env::var(LIMIT_VAR) {
        let bytes = parse_size(&text).ok_or_else(|| {
            Error::Config(format!(
                "{LIMIT_VAR}={text:?} is not a size: write bytes, or a number with K, M, G or \
                 T (binary units), e.g. {LIMIT_VAR}=8G"
            ))
        })?;
        return Ok(Budget {
            bytes: bytes.min(cap),
            source: format!("{LIMIT_VAR}={text}"),
        });
    }
    match available_memory() {
        Some(bytes) => Ok(Budget {
            bytes: bytes.min(cap),
            source: format!("the available memory (MemAvailable; set {LIMIT_VAR} to change it)"),
        }),
        None => Ok(Budget {
            bytes: cap,
            source: "the address space".to_string(),
        }),
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux only).
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// `"123"`, `"64K"`, `"1.5G"` (binary units, case-insensitive, an optional trailing `B` or
/// `iB`) as bytes; `None` for anything else.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t
        .strip_suffix("IB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(&t);
    let (number, shift) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    if let Ok(n) = number.trim().parse::<u64>() {
        return n.checked_mul(1u64 << shift);
    }
    let x: f64 = number.trim().parse().ok()?;
    let bytes = x * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `1.5 GB`-style text for `bytes` (decimal units, as `ls -h --si`), with the exact count.
pub fn human(bytes: u64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({value:.1} {})", units[unit])
    }
}

/// Checks that `bytes` (`None`: the size computation overflowed) fits the [`budget`]; the
/// error says `what` would take so much. `what` is called only on refusal.
pub fn check(bytes: Option<u64>, what: impl FnOnce() -> String) -> Result<()> {
    let Some(bytes) = bytes else {
        return Err(Error::Config(format!(
            "{}: the size overflows 64 bits, far beyond any machine's memory",
            what()
        )));
    };
    // Small requests never read /proc (but always meet a limit set by hand).
    if bytes <= 1 << 24 && std::env::var_os(LIMIT_VAR).is_none() {
        return Ok(());
    }
    let budget = budget()?;
    if bytes > budget.bytes {
        return Err(Error::Config(format!(
            "{} would take {}, more than the memory budget of {} ({})",
            what(),
            human(bytes),
            human(budget.bytes),
            budget.source
        )));
    }
    Ok(())
}

/// The product of `dims`, `None` on overflow.
pub fn product(dims: &[usize]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("8GiB"), Some(8 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("2TB"), Some(2 << 40));
        for bad in [
            "",
            "G",
            "-1",
            "1e400",
            "lots",
            "NaN",
            "18446744073709551615T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn check_refuses_overflow_and_the_impossible() {
        assert!(check(Some(1000), || unreachable!()).is_ok());
        let e = check(None, || "hidden_size 10".into()).unwrap_err();
        assert!(
            e.to_string().contains("hidden_size 10: the size overflows"),
            "{e}"
        );
        let e = check(Some(u64::MAX), || "a tensor".into()).unwrap_err();
        assert!(
            e.to_string()
                .contains("a tensor would take 18446744073709551615 bytes (18.4 EB)"),
            "{e}"
        );
        assert_eq!(product(&[3, 4, 5]), Some(60));
        assert_eq!(product(&[usize::MAX, 3]), None);
        assert_eq!(product(&[]), Some(1));
        assert_eq!(human(999), "999 bytes");
    }
}
