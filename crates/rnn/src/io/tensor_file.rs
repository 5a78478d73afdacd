//! [`TensorFile`]: the contents of one `.safetensors` file (tensors and `__metadata__`), read
//! from and written to bytes or a path, and looked up by key.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ndarray::ArrayD;
use safetensors::tensor::SafeTensors;

use super::atomic::write_atomic;
use super::parse::{check_layout, decode};
use super::tensor_data::TensorData;
use crate::error::{Error, Result};

/// How many keys an error message lists before it says "... and N more".
const MAX_KEYS_SHOWN: usize = 12;

/// The metadata key of the checksum rnn writes into every file: `crc32:` and 8 hex digits, the
/// CRC-32 (IEEE, as zip and PNG) of the file's contents (see [`checksum`]). Verified on reading
/// and then left out of [`TensorFile::metadata`]; a file without it (PyTorch's) is read as is.
pub const CHECKSUM_KEY: &str = "rnn.checksum";

/// The contents of one `.safetensors` file: `safetensors.torch.load_file(path)` plus the
/// file's `__metadata__`.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    /// The header's `__metadata__` (string to string), empty when the file has none. The
    /// checksum entry ([`CHECKSUM_KEY`]) is not kept here: it is verified on reading and
    /// written anew by [`TensorFile::to_bytes`].
    pub metadata: BTreeMap<String, String>,
    /// The tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
    /// The dtype each tensor had in the file (`I32`, `F16`...) before it was widened; empty
    /// for a file made in memory.
    pub(crate) stored: BTreeMap<String, String>,
}

impl PartialEq for TensorFile {
    /// The same metadata and tensors (the dtypes they were read from do not count).
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata && self.tensors == other.tensors
    }
}

/// The checksum of a file's contents as `crc32:xxxxxxxx`: the CRC-32 of, in key order, every
/// metadata entry but the checksum (key, value) and then every tensor (name, dtype, shape,
/// little-endian bytes), each string and byte run preceded by its length as a u64, each
/// dimension a u64 (all little-endian).
pub fn checksum<'a>(
    metadata: impl Iterator<Item = (&'a str, &'a str)>,
    tensors: impl Iterator<Item = (&'a str, &'a str, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = crc32fast::Hasher::new();
    let mut run = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for (k, v) in metadata.filter(|(k, _)| *k != CHECKSUM_KEY) {
        run(k.as_bytes());
        run(v.as_bytes());
    }
    for (name, dtype, shape, bytes) in tensors {
        run(name.as_bytes());
        run(dtype.as_bytes());
        let dims: Vec<u8> = shape
            .iter()
            .flat_map(|&d| (d as u64).to_le_bytes())
            .collect();
        run(&dims);
        run(bytes);
    }
    format!("crc32:{:08x}", h.finalize())
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
        let mut metadata: BTreeMap<String, String> = metadata;
        let mut raw = BTreeMap::new();
        for (name, info) in header.tensors() {
            let (begin, end) = info.data_offsets;
            let bytes = data.get(begin..end).ok_or_else(|| {
                fail(format!(
                    "tensor \"{name}\": data offsets [{begin}, {end}] are out of range"
                ))
            })?;
            raw.insert(name, (format!("{:?}", info.dtype), info, bytes));
        }
        // A flipped byte in the checksum's own key would otherwise hide it.
        if let Some(k) = metadata.keys().find(|k| near_checksum_key(k)) {
            return Err(fail(format!(
                "checksum mismatch: the file is damaged (its checksum entry is named {k:?} \
                 instead of \"{CHECKSUM_KEY}\"); write it again from its source"
            )));
        }
        if let Some(stored) = metadata.remove(CHECKSUM_KEY) {
            let computed = checksum(
                metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                raw.iter()
                    .map(|(n, (d, info, b))| (n.as_str(), d.as_str(), info.shape.as_slice(), *b)),
            );
            if stored != computed {
                return Err(fail(format!(
                    "checksum mismatch: the file is damaged (the \"{CHECKSUM_KEY}\" metadata \
                     says {stored}, the contents give {computed}); write it again from its source"
                )));
            }
        }
        let mut tensors = BTreeMap::new();
        let mut stored = BTreeMap::new();
        for (name, (dtype, info, bytes)) in raw {
            let tensor = decode(&name, info.dtype, &info.shape, bytes).map_err(fail)?;
            stored.insert(name.clone(), dtype);
            tensors.insert(name, tensor);
        }
        Ok(TensorFile {
            metadata,
            tensors,
            stored,
        })
    }

    /// The dtype tensor `key` had in the file it was read from (`"I32"`, `"BF16"`, ...), or
    /// its dtype now for a tensor made in memory; `None` if there is no such tensor.
    pub fn dtype_in_file(&self, key: &str) -> Option<&str> {
        let t = self.tensors.get(key)?;
        Some(self.stored.get(key).map_or(t.dtype(), String::as_str))
    }

    /// The bytes of the safetensors file, as `safetensors.torch.save(tensors, metadata)`
    /// writes them, with the checksum ([`CHECKSUM_KEY`]) added to the metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        // Written by hand rather than with `safetensors::serialize`, whose metadata goes through
        // a `HashMap`: here the header lists the metadata and the tensors in key order, so the
        // same contents always give the same bytes.
        let mut header = serde_json::Map::new();
        let tensor_bytes: Vec<Vec<u8>> = self.tensors.values().map(|t| t.to_le_bytes()).collect();
        let sum = checksum(
            self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.tensors
                .iter()
                .zip(&tensor_bytes)
                .map(|((n, t), b)| (n.as_str(), t.dtype(), t.shape(), b.as_slice())),
        );
        let mut meta: serde_json::Map<String, serde_json::Value> = self
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != CHECKSUM_KEY)
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        meta.insert(CHECKSUM_KEY.into(), serde_json::Value::String(sum));
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
        let mut data = Vec::new();
        for ((name, t), bytes) in self.tensors.iter().zip(tensor_bytes) {
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
/// Whether `key` is [`CHECKSUM_KEY`] with one byte changed.
fn near_checksum_key(key: &str) -> bool {
    key.len() == CHECKSUM_KEY.len()
        && key
            .bytes()
            .zip(CHECKSUM_KEY.bytes())
            .filter(|(a, b)| a != b)
            .count()
            == 1
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::{sample_file, TempDir};
    use ndarray::{arr0, array};

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
    fn file_without_metadata_has_only_the_checksum() {
        let mut f = TensorFile::new();
        f.insert("a", array![1.0f32].into_dyn());
        let bytes = f.to_bytes().unwrap();
        assert!(String::from_utf8_lossy(&bytes)
            .contains("{\"__metadata__\":{\"rnn.checksum\":\"crc32:"));
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
    fn checksum_catches_every_flipped_byte_and_files_without_one_still_load() {
        let f = sample_file();
        let bytes = f.to_bytes().unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        // Every byte of the data, and of the header's metadata values: a flip either breaks
        // the framing or is a checksum mismatch; it never loads.
        let mut mismatches = 0;
        for at in 8..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            match TensorFile::from_bytes(&b, "f") {
                Ok(g) => panic!("byte {at} flipped, still loads: {:?}", g.metadata),
                Err(e) => {
                    if e.to_string()
                        .contains("checksum mismatch: the file is damaged")
                    {
                        mismatches += 1;
                    }
                }
            }
        }
        assert!(mismatches >= bytes.len() - 8 - n, "{mismatches}");
        // The same file without the checksum (as PyTorch writes it) loads.
        let text = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(text).unwrap();
        json["__metadata__"]
            .as_object_mut()
            .unwrap()
            .remove(CHECKSUM_KEY);
        let header = serde_json::to_string(&json).unwrap();
        let mut plain = (header.len() as u64).to_le_bytes().to_vec();
        plain.extend_from_slice(header.as_bytes());
        plain.extend_from_slice(&bytes[8 + n..]);
        assert_eq!(TensorFile::from_bytes(&plain, "f").unwrap(), f);
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
}
