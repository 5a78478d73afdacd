//! Weights on disk: safetensors files and `state_dict` load/save with PyTorch's semantics.
//!
//! A [`TensorFile`] is the contents of one `.safetensors` file: named tensors plus the
//! string-to-string `__metadata__`. [`state_dict`], [`load_state_dict`] and [`save_state_dict`]
//! connect it to a [`Module`], with the keys PyTorch uses (`weight_ih_l0`, `bias_hh_l0_reverse`,
//! `rnn.weight_ih_l0`, ...), so a file written by PyTorch loads with no renaming.
//!
//! Reading accepts `F32`, `F64`, `F16`, `BF16` (converted to f32), `I64` and `I32` (to i64);
//! any other dtype, and any malformed file, is an [`Error::Format`] naming the file.
//!
//! # Loading weights saved from PyTorch
//!
//! ```python
//! import torch, safetensors.torch
//! model = torch.nn.LSTM(input_size=4, hidden_size=8, num_layers=2)
//! safetensors.torch.save_file(model.state_dict(), "m.safetensors")
//! ```
//!
//! ```no_run
//! use rnn::io::{load_state_dict, save_state_dict, TensorFile};
//! use std::collections::BTreeMap;
//!
//! /// `model.load_state_dict(safetensors.torch.load_file("m.safetensors"))`
//! fn restore(model: &dyn rnn::Module) -> rnn::Result<()> {
//!     let file = TensorFile::read("m.safetensors")?;
//!     // strict = true: every key must match, with the same shape, as in PyTorch.
//!     load_state_dict(model, &file.tensors, true)
//! }
//!
//! /// And back: `safetensors.torch.load_file("out.safetensors")` reads this in PyTorch.
//! fn store(model: &dyn rnn::Module) -> rnn::Result<()> {
//!     let meta = BTreeMap::from([("epoch".to_string(), "3".to_string())]);
//!     save_state_dict(model, "out.safetensors", meta)
//! }
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{Error, Result, Shape};
use crate::module::Module;

/// How many keys an error message lists before it says "... and N more".
const MAX_KEYS_SHOWN: usize = 12;

/// One tensor of a [`TensorFile`], in the element type it is kept in.
///
/// `F16` and `BF16` tensors are widened to [`TensorData::F32`] and `I32` to
/// [`TensorData::I64`] when a file is read.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `torch.float32` (also `float16` and `bfloat16`, widened on reading).
    F32(ArrayD<f32>),
    /// `torch.float64`.
    F64(ArrayD<f64>),
    /// `torch.int64` (also `int32`, widened on reading).
    I64(ArrayD<i64>),
}

impl TensorData {
    /// The shape, as PyTorch's `tensor.shape` (empty for a 0-dimensional tensor).
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorData::F32(a) => a.shape(),
            TensorData::F64(a) => a.shape(),
            TensorData::I64(a) => a.shape(),
        }
    }

    /// The safetensors dtype name: `"F32"`, `"F64"` or `"I64"`.
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::F64(_) => "F64",
            TensorData::I64(_) => "I64",
        }
    }

    /// The values as f32, cast like `tensor.float()` (f64 rounds to nearest; values beyond the
    /// f32 range become infinite).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            TensorData::F32(a) => a.clone(),
            TensorData::F64(a) => a.mapv(|v| v as f32),
            TensorData::I64(a) => a.mapv(|v| v as f32),
        }
    }

    /// The values as f64, cast like `tensor.double()`.
    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            TensorData::F32(a) => a.mapv(f64::from),
            TensorData::F64(a) => a.clone(),
            TensorData::I64(a) => a.mapv(|v| v as f64),
        }
    }

    /// The values as i64. A floating-point tensor is an [`Error::Invalid`] naming `key` and
    /// the dtype: integers (lengths, class indices) are never silently truncated from floats.
    pub fn to_i64(&self, key: &str) -> Result<ArrayD<i64>> {
        match self {
            TensorData::I64(a) => Ok(a.clone()),
            other => Err(Error::Invalid(format!(
                "tensor \"{key}\" has dtype {}, expected an integer tensor (I64 or I32)",
                other.dtype()
            ))),
        }
    }

    /// The number of elements.
    fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// The little-endian bytes in row-major order (any memory layout of the array is fine).
    fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * 8);
        match self {
            TensorData::F32(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            TensorData::F64(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            TensorData::I64(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        }
        out
    }
}

impl From<ArrayD<f32>> for TensorData {
    fn from(a: ArrayD<f32>) -> Self {
        TensorData::F32(a)
    }
}

impl From<ArrayD<f64>> for TensorData {
    fn from(a: ArrayD<f64>) -> Self {
        TensorData::F64(a)
    }
}

impl From<ArrayD<i64>> for TensorData {
    fn from(a: ArrayD<i64>) -> Self {
        TensorData::I64(a)
    }
}

/// The contents of one `.safetensors` file: `safetensors.torch.load_file(path)` plus the
/// file's `__metadata__`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    /// The header's `__metadata__` (string to string), empty when the file has none.
    pub metadata: BTreeMap<String, String>,
    /// The tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
}

impl TensorFile {
    /// An empty file: no tensors, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a safetensors file. A file that cannot be opened is an [`Error::Io`], a malformed
    /// one an [`Error::Format`]; both name `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses the bytes of a safetensors file; `origin` (a path, or a description such as
    /// `"<memory>"`) names the bytes in error messages.
    ///
    /// The layout is: an 8-byte little-endian header length `n`, `n` bytes of JSON
    /// (`{"name": {"dtype": "F32", "shape": [8, 4], "data_offsets": [begin, end]}, ...}`),
    /// then the data, each tensor row-major and little-endian.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let fail = |message: String| Error::format(origin, message);
        check_layout(bytes).map_err(fail)?;
        let (n, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
        let data = &bytes[8 + n..];

        let metadata = header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut tensors = BTreeMap::new();
        for (name, info) in header.tensors() {
            let (begin, end) = info.data_offsets;
            let bytes = data.get(begin..end).ok_or_else(|| {
                fail(format!(
                    "tensor \"{name}\": data offsets [{begin}, {end}] are out of range"
                ))
            })?;
            let tensor = decode(&name, info.dtype, &info.shape, bytes).map_err(fail)?;
            tensors.insert(name, tensor);
        }
        Ok(TensorFile { metadata, tensors })
    }

    /// The bytes of the safetensors file, as `safetensors.torch.save(tensors, metadata)`
    /// writes them (the `__metadata__` entry is left out when there is no metadata).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        // Written by hand rather than with `safetensors::serialize`, whose metadata goes through
        // a `HashMap`: here the header lists the metadata and the tensors in key order, so the
        // same contents always give the same bytes.
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            let meta: serde_json::Map<String, serde_json::Value> = self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            header.insert("__metadata__".into(), serde_json::Value::Object(meta));
        }
        let mut data = Vec::new();
        for (name, t) in &self.tensors {
            let bytes = t.to_le_bytes();
            let begin = data.len();
            data.extend_from_slice(&bytes);
            header.insert(
                name.clone(),
                serde_json::json!({
                    "dtype": t.dtype(),
                    "shape": t.shape(),
                    "data_offsets": [begin, data.len()],
                }),
            );
        }
        let mut json = serde_json::to_string(&serde_json::Value::Object(header))
            .map_err(|e| Error::Invalid(format!("cannot serialize a safetensors header: {e}")))?
            .into_bytes();
        // The data starts on an 8-byte boundary; the header is padded with spaces.
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + json.len() + data.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Writes the file atomically (see [`write_atomic`]): a reader sees the old file or the
    /// new one, never a partial one.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes)
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, key: impl Into<String>, data: impl Into<TensorData>) {
        self.tensors.insert(key.into(), data.into());
    }

    /// The tensor named `key`. A missing key is an [`Error::Invalid`] that names it and lists
    /// the keys present.
    pub fn get(&self, key: &str) -> Result<&TensorData> {
        self.tensors.get(key).ok_or_else(|| {
            let present = if self.tensors.is_empty() {
                "there are no tensors".to_string()
            } else {
                format!(
                    "the {} tensor(s) present are: {}",
                    self.tensors.len(),
                    quoted_list(self.tensors.keys())
                )
            };
            Error::Invalid(format!("no tensor named \"{key}\"; {present}"))
        })
    }

    /// The tensor `key` as f32 (cast from f64 or i64).
    pub fn f32(&self, key: &str) -> Result<ArrayD<f32>> {
        Ok(self.get(key)?.to_f32())
    }

    /// The tensor `key` as f64 (cast from f32 or i64).
    pub fn f64(&self, key: &str) -> Result<ArrayD<f64>> {
        Ok(self.get(key)?.to_f64())
    }

    /// The tensor `key` as i64; a floating-point tensor is an error (see [`TensorData::to_i64`]).
    pub fn i64(&self, key: &str) -> Result<ArrayD<i64>> {
        self.get(key)?.to_i64(key)
    }

    /// Whether a tensor named `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }
}

/// A tensor to serialize with the `safetensors` crate (tests write files with it to check
/// that ours read theirs).
#[cfg(test)]
struct OwnedView {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

#[cfg(test)]
impl safetensors::tensor::View for OwnedView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Checks the framing of a safetensors buffer before the `safetensors` crate parses it, so that
/// the common ways a file is broken get a message saying which, and so that absurd offsets
/// never reach arithmetic that could overflow.
fn check_layout(bytes: &[u8]) -> std::result::Result<(), String> {
    const NOT_ST: &str = "not a safetensors file";
    if bytes.is_empty() {
        return Err(format!("empty file; {NOT_ST}"));
    }
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(format!(
            "{} bytes, too short for the 8-byte header length; {NOT_ST} (truncated?)",
            bytes.len()
        ));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    let available = (bytes.len() - 8) as u64;
    if n > available {
        return Err(format!(
            "the header length says {n} bytes but only {available} follow; \
             the file is truncated or {NOT_ST}"
        ));
    }
    let header = &bytes[8..8 + n as usize];
    let text = std::str::from_utf8(header)
        .map_err(|_| format!("the header is not UTF-8 text; {NOT_ST}"))?;
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON header: {e}"))?;
    let serde_json::Value::Object(entries) = json else {
        return Err("invalid header: the JSON is not an object".to_string());
    };
    let data_len = available - n;
    for (name, info) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)));
        let Some((begin, end)) = offsets else {
            return Err(format!(
                "invalid header: tensor \"{name}\" has no valid \"data_offsets\" [begin, end]"
            ));
        };
        if begin > end || end > data_len {
            return Err(format!(
                "tensor \"{name}\": data offsets [{begin}, {end}] are out of range, \
                 the data section has {data_len} bytes (truncated file?)"
            ));
        }
        // Name the tensor whose shape and offsets disagree (the crate's message does not).
        let dtype = info
            .get("dtype")
            .cloned()
            .map(serde_json::from_value::<Dtype>);
        let shape = info
            .get("shape")
            .cloned()
            .map(serde_json::from_value::<Vec<usize>>);
        if let (Some(Ok(dtype)), Some(Ok(shape))) = (dtype, shape) {
            let bits = shape
                .iter()
                .try_fold(dtype.bitsize(), |acc, &d| acc.checked_mul(d));
            match bits {
                None => {
                    return Err(format!(
                    "tensor \"{name}\": shape {} of {dtype} overflows (size computation overflow)",
                    Shape::of(&shape)
                ))
                }
                Some(bits) if bits % 8 == 0 && (bits / 8) as u64 != end - begin => {
                    return Err(format!(
                        "tensor \"{name}\": shape {} of {dtype} needs {} bytes but its data \
                         offsets [{begin}, {end}] span {}; invalid header",
                        Shape::of(&shape),
                        bits / 8,
                        end - begin
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Converts one tensor's little-endian bytes (length already checked by `safetensors`).
fn decode(
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
) -> std::result::Result<TensorData, String> {
    fn array<T, const N: usize>(
        name: &str,
        shape: &[usize],
        data: &[u8],
        convert: impl Fn([u8; N]) -> T,
    ) -> std::result::Result<ArrayD<T>, String> {
        let values: Vec<T> = data
            .chunks_exact(N)
            .map(|c| convert(c.try_into().expect("chunk of N bytes")))
            .collect();
        ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| {
            format!(
                "tensor \"{name}\": {} bytes do not fit shape {}: {e}",
                data.len(),
                Shape::of(shape)
            )
        })
    }
    Ok(match dtype {
        Dtype::F32 => TensorData::F32(array(name, shape, data, f32::from_le_bytes)?),
        Dtype::F64 => TensorData::F64(array(name, shape, data, f64::from_le_bytes)?),
        Dtype::F16 => TensorData::F32(array(name, shape, data, |b| {
            half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
        })?),
        Dtype::BF16 => TensorData::F32(array(name, shape, data, |b| {
            half::bf16::from_bits(u16::from_le_bytes(b)).to_f32()
        })?),
        Dtype::I64 => TensorData::I64(array(name, shape, data, i64::from_le_bytes)?),
        Dtype::I32 => TensorData::I64(array(name, shape, data, |b| {
            i64::from(i32::from_le_bytes(b))
        })?),
        other => {
            return Err(format!(
                "tensor \"{name}\" has dtype {other}, which is not supported \
                 (supported: F32, F64, F16, BF16, I64, I32)"
            ))
        }
    })
}

/// `"a", "b", "c"`, cut after [`MAX_KEYS_SHOWN`] keys with `... and N more`.
fn quoted_list<'a>(keys: impl ExactSizeIterator<Item = &'a String>) -> String {
    let total = keys.len();
    let mut parts: Vec<String> = keys
        .take(MAX_KEYS_SHOWN)
        .map(|k| format!("\"{k}\""))
        .collect();
    if total > MAX_KEYS_SHOWN {
        parts.push(format!("... and {} more", total - MAX_KEYS_SHOWN));
    }
    parts.join(", ")
}

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

/// `model.state_dict()`: each parameter's key and a copy of its values, in registration order.
pub fn state_dict(module: &dyn Module) -> Vec<(String, ArrayD<f32>)> {
    module
        .named_parameters()
        .into_iter()
        .map(|(name, t)| (name, t.to_array()))
        .collect()
}

/// `model.load_state_dict(tensors, strict)`: copies each tensor into the parameter with the same
/// key.
///
/// With `strict = true` every parameter must have a tensor and every tensor a parameter
/// (`Missing key(s) in state_dict: "bias_ih_l0". Unexpected key(s) in state_dict: "foo".`);
/// with `strict = false` those keys are skipped. In both modes a tensor whose shape differs
/// from its parameter's is an error (`size mismatch for weight_ih_l0: copying a param with
/// shape (8, 3) from checkpoint, the shape in current model is (8, 4).`), as are an integer
/// tensor and a tensor holding NaN or infinity. F64 tensors are rounded to f32.
///
/// Every check runs before anything is copied: after an error ([`Error::StateDict`], listing
/// all the problems found) the module is unchanged.
pub fn load_state_dict(
    module: &dyn Module,
    tensors: &BTreeMap<String, TensorData>,
    strict: bool,
) -> Result<()> {
    let params = module.named_parameters();
    let mut problems = Vec::new();
    if strict {
        let missing: Vec<String> = params
            .iter()
            .filter(|(name, _)| !tensors.contains_key(name))
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "Missing key(s) in state_dict: {}.",
                missing.join(", ")
            ));
        }
        let unexpected: Vec<String> = tensors
            .keys()
            .filter(|k| !params.iter().any(|(name, _)| name == *k))
            .map(|k| format!("\"{k}\""))
            .collect();
        if !unexpected.is_empty() {
            problems.push(format!(
                "Unexpected key(s) in state_dict: {}.",
                unexpected.join(", ")
            ));
        }
    }

    let mut updates = Vec::new();
    for (name, param) in &params {
        let Some(data) = tensors.get(name) else {
            continue;
        };
        if let TensorData::I64(_) = data {
            problems.push(format!(
                "dtype mismatch for {name}: copying a param of dtype {} from checkpoint, \
                 the parameter in current model is floating point (F32).",
                data.dtype()
            ));
            continue;
        }
        let current = param.shape();
        if data.shape() != current.as_slice() {
            problems.push(format!(
                "size mismatch for {name}: copying a param with shape {} from checkpoint, \
                 the shape in current model is {}.",
                Shape::of(data.shape()),
                Shape(current)
            ));
            continue;
        }
        let values = data.to_f32();
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            problems.push(format!(
                "non-finite values for {name}: {bad} of {} values in the checkpoint are NaN or \
                 infinite{}; a checkpoint with non-finite weights is broken.",
                values.len(),
                if data.dtype() == "F64" {
                    " (after rounding to f32)"
                } else {
                    ""
                }
            ));
            continue;
        }
        updates.push((param, values));
    }
    if !problems.is_empty() {
        return Err(Error::StateDict(problems.join(" ")));
    }
    for (param, values) in updates {
        param.data_mut().assign(&values);
    }
    Ok(())
}

/// `safetensors.torch.save_file(model.state_dict(), path, metadata)`: every parameter as an F32
/// tensor under its `state_dict` key, written atomically (see [`write_atomic`]).
pub fn save_state_dict(
    module: &dyn Module,
    path: impl AsRef<Path>,
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let mut file = TensorFile {
        metadata,
        tensors: BTreeMap::new(),
    };
    for (name, values) in state_dict(module) {
        file.insert(name, values);
    }
    file.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use ndarray::{arr0, array, Array, ArrayD};

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "rnn-io-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
        fn entries(&self) -> Vec<String> {
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

    /// Two parameters, as `nn.Module` with `weight_ih_l0` (8, 4) and `bias_ih_l0` (8,).
    struct Tiny {
        weight: Tensor,
        bias: Tensor,
    }

    impl Tiny {
        fn new() -> Self {
            Tiny {
                weight: Tensor::parameter(
                    Array::from_shape_fn((8, 4), |(i, j)| (i * 4 + j) as f32 * 0.1).into_dyn(),
                ),
                bias: Tensor::parameter(Array::from_elem(8, -0.5f32).into_dyn()),
            }
        }
    }

    impl Module for Tiny {
        fn named_parameters(&self) -> Vec<(String, Tensor)> {
            vec![
                ("weight_ih_l0".to_string(), self.weight.clone()),
                ("bias_ih_l0".to_string(), self.bias.clone()),
            ]
        }
    }

    fn header_bytes(json: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn format_message(r: Result<TensorFile>) -> (String, String) {
        match r {
            Err(Error::Format { path, message }) => (path, message),
            Err(e) => panic!("expected a Format error, got {e:?}"),
            Ok(f) => panic!(
                "expected a Format error, got a file with {:?}",
                f.tensors.keys()
            ),
        }
    }

    fn sample_file() -> TensorFile {
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

    #[test]
    fn round_trip_keeps_values_dtypes_shapes_and_metadata() {
        let f = sample_file();
        let back = TensorFile::from_bytes(&f.to_bytes().unwrap(), "<memory>").unwrap();
        assert_eq!(back, f);
        assert_eq!(back.get("scalar").unwrap().shape(), &[] as &[usize]);
        assert_eq!(back.get("empty").unwrap().shape(), &[3, 0, 2]);
        assert_eq!(back.get("d").unwrap().dtype(), "F64");
        assert_eq!(
            back.i64("len").unwrap(),
            array![5i64, 3, i64::MIN].into_dyn()
        );
        assert_eq!(back.f64("d").unwrap()[[0]], 1.0 / 3.0);
        assert_eq!(back.f32("scalar").unwrap()[[]], 7.5);
    }

    #[test]
    fn non_standard_layouts_are_written_in_logical_order() {
        let t = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]
            .reversed_axes()
            .into_dyn();
        let mut f = TensorFile::new();
        f.insert("t", t.clone());
        let back = TensorFile::from_bytes(&f.to_bytes().unwrap(), "x").unwrap();
        assert_eq!(back.f32("t").unwrap(), t);
        assert_eq!(back.f32("t").unwrap()[[0, 1]], 4.0);
    }

    #[test]
    fn file_without_metadata_has_no_metadata_entry() {
        let mut f = TensorFile::new();
        f.insert("a", array![1.0f32].into_dyn());
        let bytes = f.to_bytes().unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("__metadata__"));
        assert!(TensorFile::from_bytes(&bytes, "x")
            .unwrap()
            .metadata
            .is_empty());
        let empty = TensorFile::new();
        assert_eq!(
            TensorFile::from_bytes(&empty.to_bytes().unwrap(), "x").unwrap(),
            empty
        );
    }

    #[test]
    fn half_precision_and_int32_are_widened() {
        let f16: Vec<u8> = [1.5f32, -0.333_251_95, 65504.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let bf16: Vec<u8> = [3.0f32, -1.0e30]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let i32s: Vec<u8> = [-7i32, i32::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let views = vec![
            (
                "h",
                OwnedView {
                    dtype: Dtype::F16,
                    shape: vec![3],
                    bytes: f16,
                },
            ),
            (
                "b",
                OwnedView {
                    dtype: Dtype::BF16,
                    shape: vec![1, 2],
                    bytes: bf16,
                },
            ),
            (
                "i",
                OwnedView {
                    dtype: Dtype::I32,
                    shape: vec![2],
                    bytes: i32s,
                },
            ),
        ];
        let bytes = safetensors::tensor::serialize(views, None).unwrap();
        let f = TensorFile::from_bytes(&bytes, "x").unwrap();
        assert_eq!(f.get("h").unwrap().dtype(), "F32");
        assert_eq!(
            f.f32("h").unwrap(),
            array![1.5f32, -0.333_251_95, 65504.0].into_dyn()
        );
        let b = f.f32("b").unwrap();
        assert_eq!(b[[0, 0]], 3.0);
        // bf16 keeps 8 bits of mantissa: -1e30 rounds to -1.0000001e30 or so, not exactly.
        assert!((b[[0, 1]] / -1.0e30 - 1.0).abs() < 4e-3 && b[[0, 1]] != -1.0e30);
        assert_eq!(
            f.i64("i").unwrap(),
            array![-7i64, i32::MAX as i64].into_dyn()
        );
    }

    #[test]
    fn unsupported_dtype_names_key_and_dtype() {
        let views = vec![(
            "mask",
            OwnedView {
                dtype: Dtype::U8,
                shape: vec![2],
                bytes: vec![1, 0],
            },
        )];
        let bytes = safetensors::tensor::serialize(views, None).unwrap();
        let (path, msg) = format_message(TensorFile::from_bytes(&bytes, "m.safetensors"));
        assert_eq!(path, "m.safetensors");
        assert!(msg.contains("\"mask\"") && msg.contains("U8"), "{msg}");
    }

    #[test]
    fn broken_files_are_format_errors_naming_the_path() {
        let good = sample_file().to_bytes().unwrap();
        let data = [0u8; 16];
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "empty file"),
            ("short", vec![1, 2, 3], "too short"),
            ("truncated", good[..good.len() - 3].to_vec(), "out of range"),
            ("truncated header", good[..40].to_vec(), "truncated"),
            (
                "garbage",
                b"this is not a safetensors file at all".to_vec(),
                "header length",
            ),
            (
                "huge header length",
                u64::MAX.to_le_bytes().to_vec(),
                "header length",
            ),
            (
                "not utf8",
                [&2u64.to_le_bytes()[..], &[0xC0, 0xFF]].concat(),
                "not UTF-8",
            ),
            (
                "invalid json",
                header_bytes("{\"a\": {\"dtype\": ", &[]),
                "invalid JSON",
            ),
            ("json array", header_bytes("[1, 2]", &[]), "not an object"),
            (
                "offsets beyond data",
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                    &data[..8],
                ),
                "out of range",
            ),
            (
                "huge offsets",
                header_bytes(
                    r#"{"a":{"dtype":"U8","shape":[18446744073709551610],"data_offsets":[0,18446744073709551610]}}"#,
                    &data,
                ),
                "out of range",
            ),
            (
                "shape overflow",
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
                    &data,
                ),
                "overflow",
            ),
            (
                "shape disagrees with offsets",
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
                    &data,
                ),
                "invalid",
            ),
            (
                "data not fully covered",
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &data,
                ),
                "not fully covered",
            ),
            (
                "missing offsets",
                header_bytes(r#"{"a":{"dtype":"F32","shape":[4]}}"#, &data),
                "data_offsets",
            ),
            (
                "unknown dtype",
                header_bytes(
                    r#"{"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,16]}}"#,
                    &data,
                ),
                "invalid",
            ),
        ];
        for (what, bytes, needle) in cases {
            let (path, msg) = format_message(TensorFile::from_bytes(&bytes, "bad.safetensors"));
            assert_eq!(path, "bad.safetensors", "{what}");
            assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn every_truncation_of_a_good_file_is_an_error() {
        let good = sample_file().to_bytes().unwrap();
        for cut in 0..good.len() {
            assert!(
                matches!(
                    TensorFile::from_bytes(&good[..cut], "t"),
                    Err(Error::Format { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn read_and_write_name_the_path() {
        let dir = TempDir::new("read");
        let p = dir.path("m.safetensors");
        let f = sample_file();
        f.write(&p).unwrap();
        assert_eq!(TensorFile::read(&p).unwrap(), f);
        assert_eq!(dir.entries(), vec!["m.safetensors"]);

        let missing = dir.path("nope.safetensors");
        let e = TensorFile::read(&missing).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.safetensors"), "{e}");

        let junk = dir.path("junk.safetensors");
        fs::write(&junk, b"").unwrap();
        let e = TensorFile::read(&junk).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(&junk.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn missing_key_lists_present_keys_truncated() {
        let f = sample_file();
        let msg = f.get("wieght").unwrap_err().to_string();
        assert!(
            msg.contains("\"wieght\"") && msg.contains("\"len\", \"scalar\", \"w\""),
            "{msg}"
        );
        let mut many = TensorFile::new();
        for k in 0..40 {
            many.insert(format!("k{k:02}"), arr0(k as i64).into_dyn());
        }
        let msg = many.get("x").unwrap_err().to_string();
        assert!(msg.contains("\"k11\"") && !msg.contains("\"k12\""), "{msg}");
        assert!(
            msg.contains("... and 28 more") && msg.contains("40 tensor"),
            "{msg}"
        );
        assert!(TensorFile::new()
            .get("x")
            .unwrap_err()
            .to_string()
            .contains("no tensors"));
        assert!(f.contains("w") && !f.contains("W"));
    }

    #[test]
    fn casts_and_integer_requests() {
        let f = sample_file();
        assert_eq!(
            f.f32("len").unwrap(),
            array![5.0f32, 3.0, i64::MIN as f32].into_dyn()
        );
        assert_eq!(f.f64("w").unwrap()[[0, 2]], 3.25);
        assert_eq!(f.f32("d").unwrap()[[1]], f32::NEG_INFINITY);
        let msg = f.i64("w").unwrap_err().to_string();
        assert!(msg.contains("\"w\"") && msg.contains("F32"), "{msg}");
        let msg = f.i64("d").unwrap_err().to_string();
        assert!(msg.contains("F64"), "{msg}");
    }

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

    #[test]
    fn state_dict_save_load_round_trip() {
        let dir = TempDir::new("sd");
        let p = dir.path("tiny.safetensors");
        let a = Tiny::new();
        a.weight.data_mut()[[2, 3]] = 42.0;
        save_state_dict(
            &a,
            &p,
            BTreeMap::from([("epoch".to_string(), "3".to_string())]),
        )
        .unwrap();
        let f = TensorFile::read(&p).unwrap();
        assert_eq!(f.metadata["epoch"], "3");
        assert_eq!(f.get("weight_ih_l0").unwrap().dtype(), "F32");

        let b = Tiny::new();
        b.weight.data_mut().fill(0.0);
        b.bias.data_mut().fill(0.0);
        load_state_dict(&b, &f.tensors, true).unwrap();
        assert_eq!(b.weight.to_array(), a.weight.to_array());
        assert_eq!(b.bias.to_array(), a.bias.to_array());
        assert_eq!(b.weight.data()[[2, 3]], 42.0);
        let sd = state_dict(&b);
        assert_eq!(sd[0].0, "weight_ih_l0");
        assert_eq!(sd[1].0, "bias_ih_l0");
        assert_eq!(sd[1].1, a.bias.to_array());
    }

    fn tiny_tensors(m: &Tiny) -> BTreeMap<String, TensorData> {
        state_dict(m)
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect()
    }

    fn state_dict_error(m: &Tiny, t: &BTreeMap<String, TensorData>, strict: bool) -> String {
        let before = state_dict(m);
        match load_state_dict(m, t, strict) {
            Err(Error::StateDict(msg)) => {
                assert_eq!(state_dict(m), before, "a failed load changed the module");
                msg
            }
            other => panic!("expected a StateDict error, got {other:?}"),
        }
    }

    #[test]
    fn strict_load_reports_missing_and_unexpected_like_pytorch() {
        let m = Tiny::new();
        let mut t = tiny_tensors(&m);
        t.remove("weight_ih_l0");
        t.remove("bias_ih_l0");
        t.insert("foo".into(), array![1.0f32].into_dyn().into());
        // A good key next to the bad ones must not be copied either.
        let msg = state_dict_error(&m, &t, true);
        assert_eq!(
            msg,
            "Missing key(s) in state_dict: \"weight_ih_l0\", \"bias_ih_l0\". \
             Unexpected key(s) in state_dict: \"foo\"."
        );

        let mut t = tiny_tensors(&m);
        t.insert(
            "bias_ih_l0".into(),
            Array::from_elem(8, 9.0f32).into_dyn().into(),
        );
        t.insert("foo".into(), array![1.0f32].into_dyn().into());
        let msg = state_dict_error(&m, &t, true);
        assert_eq!(msg, "Unexpected key(s) in state_dict: \"foo\".");
        assert_eq!(m.bias.data()[[0]], -0.5);

        // Non-strict: the extra key is ignored, the rest is loaded.
        load_state_dict(&m, &t, false).unwrap();
        assert_eq!(m.bias.data()[[0]], 9.0);
        t.remove("weight_ih_l0");
        t.insert(
            "bias_ih_l0".into(),
            Array::from_elem(8, 2.0f32).into_dyn().into(),
        );
        load_state_dict(&m, &t, false).unwrap();
        assert_eq!(m.bias.data()[[7]], 2.0);
        assert_eq!(m.weight.data()[[1, 1]], 0.5);
    }

    #[test]
    fn size_mismatch_is_an_error_even_when_not_strict() {
        let m = Tiny::new();
        let mut t = tiny_tensors(&m);
        t.insert(
            "weight_ih_l0".into(),
            ArrayD::<f32>::zeros(IxDyn(&[8, 3])).into(),
        );
        t.insert(
            "bias_ih_l0".into(),
            ArrayD::<f32>::zeros(IxDyn(&[8, 1])).into(),
        );
        let expected = "size mismatch for weight_ih_l0: copying a param with shape (8, 3) from \
                        checkpoint, the shape in current model is (8, 4). size mismatch for \
                        bias_ih_l0: copying a param with shape (8, 1) from checkpoint, the shape \
                        in current model is (8,).";
        assert_eq!(state_dict_error(&m, &t, true), expected);
        assert_eq!(state_dict_error(&m, &t, false), expected);
    }

    #[test]
    fn non_finite_and_integer_tensors_are_rejected() {
        let m = Tiny::new();
        let mut t = tiny_tensors(&m);
        let mut w = m.weight.to_array();
        w[[0, 0]] = f32::NAN;
        w[[5, 1]] = f32::INFINITY;
        t.insert("weight_ih_l0".into(), w.into());
        let msg = state_dict_error(&m, &t, true);
        assert!(
            msg.contains("weight_ih_l0") && msg.contains("2 of 32"),
            "{msg}"
        );

        // A finite f64 beyond the f32 range becomes infinite: rejected too.
        let mut t = tiny_tensors(&m);
        t.insert(
            "bias_ih_l0".into(),
            Array::from_elem(8, 1e300f64).into_dyn().into(),
        );
        let msg = state_dict_error(&m, &t, true);
        assert!(
            msg.contains("bias_ih_l0") && msg.contains("8 of 8"),
            "{msg}"
        );

        let mut t = tiny_tensors(&m);
        t.insert(
            "bias_ih_l0".into(),
            Array::from_elem(8, 1i64).into_dyn().into(),
        );
        let msg = state_dict_error(&m, &t, false);
        assert!(msg.contains("bias_ih_l0") && msg.contains("I64"), "{msg}");
    }

    #[test]
    fn float64_tensors_load_rounded_to_f32() {
        let m = Tiny::new();
        let mut t = tiny_tensors(&m);
        let w64 = Array::from_shape_fn((8, 4), |(i, j)| 0.1 * (i as f64) - 1.0 / (j as f64 + 3.0));
        t.insert("weight_ih_l0".into(), w64.clone().into_dyn().into());
        load_state_dict(&m, &t, true).unwrap();
        assert_eq!(m.weight.to_array(), w64.mapv(|v| v as f32).into_dyn());
        assert_eq!(m.weight.data()[[3, 1]], (0.3f64 - 0.25) as f32);
    }
}
