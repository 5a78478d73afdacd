//! `rnn info MODEL`: what a model file, a character model directory or a training checkpoint
//! holds: its kind, configuration, every tensor with its dtype, shape and parameter count, and
//! the file sizes; `--json` prints the same as one JSON object.
//!
//! Only the safetensors header is read (8 bytes of length, then that many bytes of JSON), so a
//! large file costs no more than a small one; the header's sizes and offsets are checked against
//! the file's length before anything else is read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rnn::charlm::checkpoint::{BEST_FILE, CHECKPOINT_FILE, MODEL_FILE, VOCAB_FILE};
use rnn::charlm::Vocab;
use serde_json::{json, Value};

/// `rnn info MODEL [--json]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model file (safetensors), a character model directory (as `rnn train --out` writes
    /// it) or a training checkpoint
    #[arg(value_name = "MODEL")]
    path: PathBuf,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

/// Headers larger than this are refused (safetensors' own reader takes at most 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// One tensor of a file's header.
#[derive(Clone, Debug, PartialEq)]
struct TensorInfo {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    bytes: u64,
}

impl TensorInfo {
    fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A safetensors file's header and size.
#[derive(Debug)]
struct FileInfo {
    path: PathBuf,
    size: u64,
    metadata: BTreeMap<String, String>,
    /// In the order of their data in the file.
    tensors: Vec<TensorInfo>,
}

/// What a tensor of a file is to the model (see [`FileInfo::role`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A parameter of the model: counted in its total.
    Parameter,
    /// The per-row scales of a quantized matrix.
    Scale,
    /// The optimizer's or the trainer's state in a checkpoint.
    State,
}

impl FileInfo {
    /// Reads the header of `path`, checking it against the file's length.
    fn read(path: &Path) -> Result<FileInfo> {
        let bad =
            |what: String| anyhow::anyhow!("{}: not a safetensors file: {what}", path.display());
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let mut len = [0u8; 8];
        if size < 8 {
            return Err(bad(format!(
                "{size} bytes, shorter than the 8-byte header length"
            )));
        }
        file.read_exact(&mut len)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let n = u64::from_le_bytes(len);
        if n > size - 8 || n > MAX_HEADER {
            return Err(bad(format!(
                "the header claims {n} bytes, but the file has {} after the length{}",
                size - 8,
                if n > MAX_HEADER {
                    " (and at most 100 MiB are read)"
                } else {
                    ""
                }
            )));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let header: serde_json::Map<String, Value> = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;
        let data_len = size - 8 - n;
        let mut metadata = BTreeMap::new();
        let mut tensors = Vec::new();
        for (name, entry) in header {
            if name == "__metadata__" {
                let map = entry
                    .as_object()
                    .ok_or_else(|| bad("\"__metadata__\" is not an object".into()))?;
                for (k, v) in map {
                    let v = v
                        .as_str()
                        .ok_or_else(|| bad(format!("metadata \"{k}\" is not a string")))?;
                    metadata.insert(k.clone(), v.to_string());
                }
                continue;
            }
            let field = |key: &str| {
                entry
                    .get(key)
                    .ok_or_else(|| bad(format!("tensor \"{name}\" has no \"{key}\"")))
            };
            let dtype = field("dtype")?
                .as_str()
                .ok_or_else(|| bad(format!("tensor \"{name}\": dtype is not a string")))?
                .to_string();
            let numbers = |key: &str| -> Result<Vec<u64>> {
                field(key)?
                    .as_array()
                    .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
                    .ok_or_else(|| bad(format!("tensor \"{name}\": {key} is not a list of counts")))
            };
            let shape = numbers("shape")?;
            let offsets = numbers("data_offsets")?;
            let [start, end] = offsets[..] else {
                return Err(bad(format!(
                    "tensor \"{name}\": data_offsets must be [start, end]"
                )));
            };
            if start > end || end > data_len {
                return Err(bad(format!(
                    "tensor \"{name}\": data_offsets [{start}, {end}] outside the {data_len} data bytes"
                )));
            }
            tensors.push((
                start,
                TensorInfo {
                    name,
                    dtype,
                    shape,
                    bytes: end - start,
                },
            ));
        }
        tensors.sort_by_key(|(start, _)| *start);
        Ok(FileInfo {
            path: path.to_path_buf(),
            size,
            metadata,
            tensors: tensors.into_iter().map(|(_, t)| t).collect(),
        })
    }

    /// What the file is, from its `format` and `config` metadata.
    fn kind(&self) -> &'static str {
        match self.metadata.get("format").map(String::as_str) {
            Some(rnn::charlm::checkpoint::MODEL_FORMAT)
                if self.metadata.contains_key("val_loss") =>
            {
                "character model (best on validation)"
            }
            Some(rnn::charlm::checkpoint::MODEL_FORMAT) => "character model",
            Some(rnn::charlm::train::CHECKPOINT_FORMAT) => "training checkpoint",
            Some(rnn::quantized::FORMAT) => "int8 quantized model (rnn run)",
            _ if self.metadata.contains_key("config") => "recurrent model (rnn run)",
            _ => "safetensors file",
        }
    }

    /// What `t` holds: a checkpoint also holds the optimizer's state, `optimizer.*`, and the
    /// trainer's, `trainer.*`; a quantized model file holds each int8 matrix's per-row scales
    /// under `KEY.scale`, which are not parameters of the model (the int8 matrix counts once,
    /// as its f32 original would).
    fn role(&self, t: &TensorInfo) -> Role {
        if t.name.starts_with("optimizer.") || t.name.starts_with("trainer.") {
            Role::State
        } else if self.metadata.get("format").map(String::as_str) == Some(rnn::quantized::FORMAT)
            && t.name.ends_with(rnn::quantized::SCALE_SUFFIX)
        {
            Role::Scale
        } else {
            Role::Parameter
        }
    }

    /// The tensors of one role, in file order.
    fn tensors_of(&self, role: Role) -> Vec<&TensorInfo> {
        self.tensors
            .iter()
            .filter(|t| self.role(t) == role)
            .collect()
    }

    fn parameters(&self) -> u64 {
        self.tensors_of(Role::Parameter)
            .into_iter()
            .map(TensorInfo::numel)
            .sum()
    }

    /// A metadata entry holding JSON, parsed (or kept as a string if it is not JSON).
    fn json_meta(&self, key: &str) -> Option<Value> {
        self.metadata
            .get(key)
            .map(|s| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())))
    }

    fn to_json(&self) -> Value {
        let tensor = |t: &TensorInfo| json!({"name": t.name, "dtype": t.dtype, "shape": t.shape, "parameters": t.numel(), "bytes": t.bytes});
        let other: BTreeMap<&String, &String> = self
            .metadata
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "config" | "train"))
            .collect();
        json!({
            "path": self.path.display().to_string(),
            "kind": self.kind(),
            "file_size": self.size,
            "metadata": other,
            "config": self.json_meta("config"),
            "train": self.json_meta("train"),
            "parameters": self.parameters(),
            "tensors": self.tensors_of(Role::Parameter).into_iter().map(tensor).collect::<Vec<_>>(),
            "scales": self.tensors_of(Role::Scale).into_iter().map(tensor).collect::<Vec<_>>(),
            "state": self.tensors_of(Role::State).into_iter().map(tensor).collect::<Vec<_>>(),
        })
    }

    /// The human-readable report.
    fn show(&self) -> String {
        let mut out = format!(
            "{}: {}, {}",
            self.path.display(),
            self.kind(),
            bytes(self.size)
        );
        if let Some(step) = self.metadata.get("step") {
            out.push_str(&format!(", step {step}"));
        }
        if let Some(v) = self
            .metadata
            .get("val_loss")
            .and_then(|v| v.parse::<f64>().ok())
        {
            out.push_str(&format!(
                ", validation {:.4} bpc",
                v / std::f64::consts::LN_2
            ));
        }
        out.push('\n');
        for key in ["config", "train", "optimizer"] {
            if let Some(v) = self.metadata.get(key) {
                out.push_str(&format!("{key}: {v}\n"));
            }
        }
        for (k, v) in &self.metadata {
            if !matches!(
                k.as_str(),
                "config" | "train" | "optimizer" | "step" | "val_loss" | "format"
            ) {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        let params = self.tensors_of(Role::Parameter);
        let name_w = params
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let shape_w = params
            .iter()
            .map(|t| shape(&t.shape).len())
            .max()
            .unwrap_or(0)
            .max(5);
        out.push_str(&format!(
            "{:<name_w$}  {:<5}  {:<shape_w$}  {:>12}\n",
            "tensor", "dtype", "shape", "parameters"
        ));
        for t in &params {
            out.push_str(&format!(
                "{:<name_w$}  {:<5}  {:<shape_w$}  {:>12}\n",
                t.name,
                t.dtype,
                shape(&t.shape),
                thousands(t.numel())
            ));
        }
        out.push_str(&format!(
            "{:<name_w$}  {:<5}  {:<shape_w$}  {:>12}\n",
            "total",
            "",
            "",
            thousands(self.parameters())
        ));
        let scales = self.tensors_of(Role::Scale);
        if !scales.is_empty() {
            let values: u64 = scales.iter().map(|t| t.numel()).sum();
            out.push_str(&format!(
                "quantization scales: {} tensors (KEY{}, one per output row), {} values\n",
                scales.len(),
                rnn::quantized::SCALE_SUFFIX,
                thousands(values)
            ));
        }
        let state = self.tensors_of(Role::State);
        if !state.is_empty() {
            let values: u64 = state.iter().map(|t| t.numel()).sum();
            let dtypes: std::collections::BTreeSet<&str> =
                state.iter().map(|t| t.dtype.as_str()).collect();
            out.push_str(&format!(
                "training state: {} tensors (optimizer.*, trainer.*), {} values ({})\n",
                state.len(),
                thousands(values),
                dtypes.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        out
    }
}

/// Entry point of `rnn info`.
pub fn main(args: Args) -> Result<()> {
    let path = &args.path;
    let text = if path.is_dir() {
        directory(path, args.json)?
    } else if path.exists() {
        let info = FileInfo::read(path)?;
        if args.json {
            info.to_json().to_string()
        } else {
            info.show()
        }
    } else {
        bail!("{}: no such file or directory", path.display());
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    Ok(())
}

/// A character model directory: the model in full, then the other files in a line each.
fn directory(dir: &Path, as_json: bool) -> Result<String> {
    let names = [MODEL_FILE, BEST_FILE, CHECKPOINT_FILE];
    let files: Vec<FileInfo> = names
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file())
        .map(|p| FileInfo::read(&p))
        .collect::<Result<_>>()?;
    if files.is_empty() {
        bail!(
            "{}: not a model directory: it has none of {} (`rnn train --out DIR` writes one)",
            dir.display(),
            names.join(", ")
        );
    }
    let vocab_path = dir.join(VOCAB_FILE);
    let vocab = vocab_path
        .is_file()
        .then(|| Vocab::read(&vocab_path).map(|v| v.len()))
        .transpose()?;
    let vocab_size = std::fs::metadata(&vocab_path).map(|m| m.len()).ok();
    if as_json {
        let mut map = serde_json::Map::new();
        for f in &files {
            let name = f
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            map.insert(name, f.to_json());
        }
        if let (Some(n), Some(size)) = (vocab, vocab_size) {
            map.insert(
                VOCAB_FILE.into(),
                json!({"characters": n, "file_size": size}),
            );
        }
        return Ok(json!({
            "path": dir.display().to_string(),
            "kind": "character model directory",
            "files": map,
        })
        .to_string());
    }
    let mut out = format!("{}: character model directory\n", dir.display());
    if let (Some(n), Some(size)) = (vocab, vocab_size) {
        out.push_str(&format!("{VOCAB_FILE}: {n} characters, {}\n", bytes(size)));
    }
    for f in &files[1..] {
        let mut line = format!("{}: {}, {}", f.path.display(), f.kind(), bytes(f.size));
        if let Some(step) = f.metadata.get("step") {
            line.push_str(&format!(", step {step}"));
        }
        if let Some(v) = f
            .metadata
            .get("val_loss")
            .and_then(|v| v.parse::<f64>().ok())
        {
            line.push_str(&format!(
                ", validation {:.4} bpc",
                v / std::f64::consts::LN_2
            ));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&files[0].show());
    Ok(out)
}

/// `[1024, 64]`.
fn shape(s: &[u64]) -> String {
    format!(
        "[{}]",
        s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )
}

/// `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `812 B`, `1.2 KiB`, `3.45 MiB`.
fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.2} MiB", n as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(3 << 20), "3.00 MiB");
        assert_eq!(shape(&[1024, 64]), "[1024, 64]");
    }

    #[test]
    fn a_header_that_claims_too_much_is_refused() {
        let dir = std::env::temp_dir().join(format!("rnn-info-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.safetensors");
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, &bytes).unwrap();
        let e = FileInfo::read(&path).unwrap_err().to_string();
        assert!(e.contains("the header claims 1000 bytes"), "{e}");
        let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0; 8]);
        std::fs::write(&path, &bytes).unwrap();
        let e = FileInfo::read(&path).unwrap_err().to_string();
        assert!(e.contains("outside the 8 data bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
