//! [`write_atomic`]: replacing a file so that readers see the old contents or the new, whole.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A name for a temporary file next to `path` that no other writer in this process or another
/// one uses at the same time: `<path>.<pid>.<n>.tmp`.
fn temp_path(path: &Path) -> Option<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name()?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = name.to_os_string();
    tmp.push(format!(".{}.{n}.tmp", std::process::id()));
    Some(path.with_file_name(tmp))
}

/// Writes `bytes` to `path` atomically: the bytes go to a temporary file in the same directory,
/// which is flushed to disk (`fsync`) and then renamed over `path`; the directory is then
/// synced (best effort). A crash or an error leaves either the old file, whole, or the new one;
/// on error the temporary file is removed. An existing file's permissions are kept.
///
/// Errors are [`Error::Io`] naming `path` (a missing directory, no permission, a full disk...).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let Some(tmp) = temp_path(path) else {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        ));
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(path, e))?;
    let written = (|| -> std::io::Result<()> {
        file.write_all(bytes)?;
        if let Ok(old) = fs::metadata(path) {
            // Best effort: keep the mode of the file being replaced.
            let _ = file.set_permissions(old.permissions());
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot rename {} over it: {e}", tmp.display()),
            )
        })
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Best effort: make the rename itself durable.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::TempDir;

    #[test]
    fn write_atomic_replaces_whole_and_cleans_up() {
        let dir = TempDir::new("atomic");
        let p = dir.path("f.bin");
        write_atomic(&p, &[7u8; 1000]).unwrap();
        write_atomic(&p, b"short").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"short");
        assert_eq!(dir.entries(), vec!["f.bin"]);

        // A missing directory: the error names the path and nothing is created.
        let q = dir.path("no/such/dir/f.bin");
        let e = write_atomic(&q, b"x").unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("no/such/dir/f.bin"), "{e}");
        assert_eq!(dir.entries(), vec!["f.bin"]);

        // The rename fails (the target is a non-empty directory): the temporary file is removed
        // and the directory is untouched.
        let sub = dir.path("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("keep"), b"k").unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err();
        assert!(e.to_string().contains("sub"), "{e}");
        assert_eq!(dir.entries(), vec!["f.bin", "sub"]);
        assert_eq!(fs::read(sub.join("keep")).unwrap(), b"k");

        // A failed write leaves the old file whole.
        assert!(write_atomic(dir.path(""), b"x").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"short");
    }
}
