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

/// Where a write to `path` lands: `path` itself, or, for a symbolic link, the file it points to
/// (links followed to the end, relative targets read from the link's directory), so that the
/// link is kept and its target replaced, as editors do.
fn resolve(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    // A bounded number of hops: a cycle of links ends at the open, which reports it.
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => match fs::read_link(&p) {
                Ok(target) => {
                    p = match p.parent() {
                        Some(dir) if target.is_relative() => dir.join(target),
                        _ => target,
                    };
                }
                Err(_) => return p,
            },
            _ => return p,
        }
    }
    p
}

/// What is at the write's destination, when it is not a regular file or nothing.
enum Special {
    /// A character device (`/dev/null`, a terminal) or a FIFO: written through, in place.
    Stream,
    /// A directory, a socket or a block device: refused, naming what it is.
    Refused(&'static str),
}

#[cfg(unix)]
fn special(path: &Path) -> Option<Special> {
    use std::os::unix::fs::FileTypeExt;
    let t = fs::metadata(path).ok()?.file_type();
    if t.is_file() {
        None
    } else if t.is_char_device() || t.is_fifo() {
        Some(Special::Stream)
    } else if t.is_dir() {
        Some(Special::Refused("a directory"))
    } else if t.is_socket() {
        Some(Special::Refused("a socket"))
    } else if t.is_block_device() {
        Some(Special::Refused("a block device"))
    } else {
        Some(Special::Refused("not a regular file"))
    }
}

#[cfg(not(unix))]
fn special(path: &Path) -> Option<Special> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Some(Special::Refused("a directory")),
        _ => None,
    }
}

/// Writes `bytes` to `path` atomically: the bytes go to a temporary file in the same directory,
/// which is flushed to disk (`fsync`) and then renamed over `path`; the directory is then
/// synced (best effort). A crash or an error leaves either the old file, whole, or the new one;
/// on error the temporary file is removed. An existing file's permissions are kept.
///
/// What `path` names decides the rest:
/// - a symbolic link is followed and its target replaced atomically (the link stays a link);
/// - a character device (`/dev/null`, `/dev/stdout`, a terminal) or a FIFO is written through
///   directly, as `cat > path` would: there is no file to replace, so no atomicity either;
/// - a directory, a socket or a block device is refused, naming what it is.
///
/// Errors are [`Error::Io`] naming `path` (a missing directory, no permission, a full disk...).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let given = path.as_ref();
    let resolved = resolve(given);
    let path = resolved.as_path();
    match special(path) {
        Some(Special::Stream) => {
            return fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| f.write_all(bytes).and_then(|()| f.flush()))
                .map_err(|e| Error::io(given, e));
        }
        Some(Special::Refused(what)) => {
            return Err(Error::io(
                given,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("is {what}, not a file: give the path of a file to write"),
                ),
            ));
        }
        None => {}
    }
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
        .map_err(|e| Error::io(given, e))?;
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
        return Err(Error::io(given, e));
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

        // A directory is refused, saying so (no temporary file named), and left untouched.
        let sub = dir.path("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("keep"), b"k").unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err().to_string();
        assert!(e.contains("sub: is a directory, not a file"), "{e}");
        assert!(!e.contains(".tmp"), "{e}");
        assert_eq!(dir.entries(), vec!["f.bin", "sub"]);
        assert_eq!(fs::read(sub.join("keep")).unwrap(), b"k");

        // A symbolic link stays a link; its target is replaced (relative and chained links).
        #[cfg(unix)]
        {
            fs::write(dir.path("target"), b"old").unwrap();
            std::os::unix::fs::symlink("target", dir.path("link")).unwrap();
            std::os::unix::fs::symlink(dir.path("link"), dir.path("link2")).unwrap();
            write_atomic(dir.path("link2"), b"new").unwrap();
            assert!(fs::symlink_metadata(dir.path("link"))
                .unwrap()
                .file_type()
                .is_symlink());
            assert!(fs::symlink_metadata(dir.path("link2"))
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(fs::read(dir.path("target")).unwrap(), b"new");
            // A dangling link creates its target.
            std::os::unix::fs::symlink("later", dir.path("dangling")).unwrap();
            write_atomic(dir.path("dangling"), b"made").unwrap();
            assert_eq!(fs::read(dir.path("later")).unwrap(), b"made");
            for name in ["link", "link2", "target", "dangling", "later"] {
                fs::remove_file(dir.path(name)).unwrap();
            }
            // A character device is written through and stays a device.
            write_atomic("/dev/null", b"gone").unwrap();
            use std::os::unix::fs::FileTypeExt;
            assert!(fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device());
        }

        // A failed write leaves the old file whole.
        assert!(write_atomic(dir.path(""), b"x").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"short");
    }
}
