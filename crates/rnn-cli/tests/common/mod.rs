//! Helpers shared by the tests that run the built `rnn` binary: a temporary directory and the
//! command runner. Each test file uses only some of them.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

#[allow(dead_code)]
pub mod tiny;

/// A temporary directory removed on drop, named `rnn-<test file>-<tag>-<pid>-<n>`.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory (any leftover of an earlier run with the same name is removed).
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rnn-{}-{tag}-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The path of `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// [`TempDir::path`] as a command-line argument.
    #[allow(dead_code)]
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The names of the directory's entries, sorted.
    #[allow(dead_code)]
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the built `rnn` binary with `args` and waits for it.
pub fn rnn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args(args)
        .output()
        .expect("the rnn binary runs")
}
