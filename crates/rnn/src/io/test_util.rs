//! Helpers for the tests of this module: a temporary directory and a sample file.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{arr0, array, ArrayD, IxDyn};

use super::TensorFile;

/// A temporary directory removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rnn-io-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub(super) fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A file with every dtype, a 0-dimensional and an empty tensor, and metadata.
pub(super) fn sample_file() -> TensorFile {
    let mut f = TensorFile::new();
    f.insert(
        "w",
        array![[1.5f32, -2.0, 3.25], [0.0, 1e-7, f32::MAX]].into_dyn(),
    );
    f.insert("d", array![1.0f64 / 3.0, -1e300].into_dyn());
    f.insert("len", array![5i64, 3, i64::MIN].into_dyn());
    f.insert("scalar", arr0(7.5f32).into_dyn());
    f.insert("empty", ArrayD::<f32>::zeros(IxDyn(&[3, 0, 2])));
    f.metadata.insert("format".into(), "pt".into());
    f.metadata.insert("note".into(), "héllo \"quoted\"".into());
    f
}
