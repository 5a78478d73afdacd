//! Model files: a recurrent layer's weights and its constructor arguments in one safetensors file.
//!
//! A model file is what `safetensors.torch.save_file` writes for `module.state_dict()` (the
//! bare PyTorch keys `weight_ih_l0`, `bias_hh_l1_reverse`, `weight_hr_l0`, ...), with one
//! metadata entry, `config`, holding the constructor arguments as JSON (see
//! [`RecurrentConfig`]; absent fields take PyTorch's defaults):
//!
//! ```json
//! {"cell": "lstm", "input_size": 4, "hidden_size": 8, "num_layers": 2, "bidirectional": true}
//! ```
//!
//! # Writing one from PyTorch
//!
//! ```python
//! import json, torch; from safetensors.torch import save_file
//! lstm = torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True, proj_size=3)
//! save_file(lstm.state_dict(), "lstm.safetensors", metadata={"config": json.dumps({"cell": "lstm", "input_size": 4, "hidden_size": 8, "num_layers": 2, "bidirectional": True, "batch_first": True, "proj_size": 3})})
//! ```
//!
//! # Reading and writing it in Rust
//!
//! ```no_run
//! use rnn::model_file::{load_model, save_model};
//! let lstm = load_model("lstm.safetensors")?; // LSTM(4, 8, proj_size=3, num_layers=2, ...)
//! save_model("copy.safetensors", &lstm)?; // PyTorch reads it back with load_file
//! # Ok::<(), rnn::Error>(())
//! ```
//!
//! Loading is strict, as `load_state_dict(strict=True)`: every parameter the configuration
//! implies must be in the file with its shape, and nothing else may be.
//!
//! The parameters are F32 (F64 and F16 are read too), all BF16 (a bf16 model file, half the
//! size: [`crate::bf16_file`], loaded as a [`Precision::Bf16`] layer), or int8 with scales (a
//! quantized model file: [`crate::quantized`]); the `precision` metadata entry, when present,
//! says which.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::RecurrentConfig;
use crate::error::{Error, Result};
use crate::io::{check_state_dict, load_state_dict, save_state_dict, TensorFile};
use crate::precision::Precision;
use crate::recurrent::Recurrent;

/// The metadata key holding the configuration JSON.
pub const CONFIG_KEY: &str = "config";

/// How to add the missing `config` entry, quoted in the error for a file without one.
const HOW_TO_WRITE: &str = "write the file with save_file(module.state_dict(), path, \
    metadata={\"config\": json.dumps({\"cell\": \"lstm\", \"input_size\": 4, \"hidden_size\": 8, ...})}) \
    giving the module's constructor arguments (absent ones take PyTorch's defaults)";

/// Reads a model file: builds `Recurrent::new(config)` from the `config` metadata and loads the
/// tensors into it strictly. A quantized model file (metadata `precision = "int8"`, see
/// [`crate::quantized`]) gives an int8 layer running its stored weights; a bf16 one (metadata
/// `precision = "bf16"`, or BF16 tensors, see [`crate::bf16_file`]) a bf16 layer whose packed
/// weights are the file's bits. A `precision` entry that disagrees with the tensors' dtypes, or
/// dtypes that disagree with each other, is an error naming the tensor.
///
/// Every error is an [`Error::Format`] naming `path`, except an unreadable file, which is an
/// [`Error::Io`] naming it: a malformed safetensors file, no `config` metadata (the message
/// says how to write it), a config that is not valid JSON or breaks PyTorch's rules, or a
/// `state_dict` that does not match the config (missing or unexpected keys, wrong shapes,
/// integer or non-finite values).
///
/// The tensors are checked against the configuration (names, shapes, dtypes) before the layer
/// is built, and the configuration against the memory budget (see [`crate::budget`]): a file
/// whose `config` asks for more than it holds, or more than the machine has, is refused before
/// any memory is taken for it.
pub fn load_model(path: impl AsRef<Path>) -> Result<Recurrent> {
    let path = path.as_ref();
    let file = TensorFile::read(path)?;
    if let Some(format) = file.metadata.get("format") {
        if format.starts_with("rnn.charlm") {
            return Err(Error::format(
                path,
                format!(
                    "this is a character model (format {format:?}, written by `rnn train`), not \
                     a model file of one recurrent layer; use it with `rnn sample` or `rnn eval`"
                ),
            ));
        }
    }
    match crate::bf16_file::file_precision(&file, path)? {
        Precision::Int8 => crate::quantized::load_quantized(&file, path),
        Precision::Bf16 => crate::bf16_file::load_bf16(&file, path),
        Precision::F32 => {
            crate::bf16_file::check_dtypes(&file, path, Precision::F32)?;
            load_weights(&file, path)
        }
    }
}

/// The layer of a model file's `config` holding its tensors (any floating-point dtype),
/// checked against the configuration before the layer is built; in f32 precision.
pub(crate) fn load_weights(file: &TensorFile, path: &Path) -> Result<Recurrent> {
    let config = config_of(file, path)?;
    let mismatch = |config: &RecurrentConfig, e: Error| {
        Error::format(
            path,
            format!(
                "the weights do not match the config {} ({}): {e}",
                config.to_json(),
                describe(config)
            ),
        )
    };
    check_state_dict(&config.parameter_shapes(), &file.tensors)
        .map_err(|e| mismatch(&config, e))?;
    let model = Recurrent::new(config.clone()).map_err(|e| in_file(path, e))?;
    load_state_dict(&model, &file.tensors, true).map_err(|e| mismatch(&config, e))?;
    Ok(model)
}

/// The configuration stored in a model file's metadata (already read into `file`); `path` names
/// the file in errors.
pub fn config_of(file: &TensorFile, path: impl AsRef<Path>) -> Result<RecurrentConfig> {
    let path = path.as_ref();
    let Some(json) = file.metadata.get(CONFIG_KEY) else {
        let present = if file.metadata.is_empty() {
            "the file has no metadata".to_string()
        } else {
            let keys: Vec<String> = file.metadata.keys().map(|k| format!("\"{k}\"")).collect();
            format!("its metadata keys are {}", keys.join(", "))
        };
        return Err(Error::format(
            path,
            format!("not a model file: no \"{CONFIG_KEY}\" metadata ({present}); {HOW_TO_WRITE}"),
        ));
    };
    RecurrentConfig::from_json(json)
        .map_err(|e| Error::format(path, format!("metadata \"{CONFIG_KEY}\" {json:?}: {e}")))
}

/// Writes `model` as a model file, atomically: every parameter as F32 under its PyTorch key
/// and the configuration JSON under the `config` metadata key.
/// `safetensors.torch.load_file(path)` then `module.load_state_dict(...)` reads it in PyTorch.
///
/// A layer in [`Precision::Bf16`] is written as a bf16 model file instead (every parameter
/// BF16, metadata `precision = "bf16"`, half the size: [`crate::bf16_file::save_bf16`]), as
/// PyTorch's `state_dict()` of a module moved to bf16. (An int8 layer is written in f32 here;
/// [`crate::quantized::save_quantized`] writes its int8 file.)
pub fn save_model(path: impl AsRef<Path>, model: &Recurrent) -> Result<()> {
    if model.precision() == Precision::Bf16 {
        return crate::bf16_file::save_bf16(path, model);
    }
    let metadata = BTreeMap::from([(CONFIG_KEY.to_string(), model.config().to_json())]);
    save_state_dict(model, path, metadata)
}

/// `LSTM(4, 8, ...)` with the parameter count.
fn describe(config: &RecurrentConfig) -> String {
    match config.parameter_count() {
        Some(n) => format!("{}, {n} parameters", config.repr()),
        None => config.repr(),
    }
}

/// An error from building the model, as a format error of the file.
fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Io { .. } | Error::Format { .. } => e,
        other => Error::format(path, format!("metadata \"{CONFIG_KEY}\": {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CellKind, Nonlinearity};
    use crate::io::TensorData;
    use crate::module::Module;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "rnn-model-file-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cli")
            .join(name)
    }

    fn message(r: Result<Recurrent>) -> String {
        match r {
            Ok(m) => panic!("expected an error, loaded {m}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn save_then_load_round_trips_config_and_weights() {
        let dir = TempDir::new("round");
        let p = dir.path("m.safetensors");
        let config = RecurrentConfig::new(CellKind::Lstm, 3, 5)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_proj_size(2)
            .with_bias(false);
        let a = Recurrent::with_rng(config.clone(), &mut crate::Rng::new(7)).unwrap();
        save_model(&p, &a).unwrap();
        let b = load_model(&p).unwrap();
        assert_eq!(b.config(), &config);
        let (na, nb) = (a.named_parameters(), b.named_parameters());
        assert_eq!(na.len(), nb.len());
        for ((ka, ta), (kb, tb)) in na.iter().zip(&nb) {
            assert_eq!(ka, kb);
            assert_eq!(ta.to_array(), tb.to_array(), "{ka}");
        }
        let f = TensorFile::read(&p).unwrap();
        assert_eq!(config_of(&f, &p).unwrap(), config);
        assert_eq!(f.metadata.len(), 1);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn loads_a_pytorch_file_with_defaults_for_absent_fields() {
        let m = load_model(fixture("rnn_relu_nobias.model.safetensors")).unwrap();
        let c = m.config();
        assert_eq!(c.cell, CellKind::Rnn);
        assert_eq!((c.input_size, c.hidden_size, c.num_layers), (3, 4, 2));
        assert_eq!(c.nonlinearity, Nonlinearity::Relu);
        assert!(!c.bias && !c.batch_first && !c.bidirectional);
        let file = TensorFile::read(fixture("rnn_relu_nobias.model.safetensors")).unwrap();
        for (name, t) in m.named_parameters() {
            assert_eq!(t.to_array(), file.f32(&name).unwrap(), "{name}");
        }
        let m = load_model(fixture("lstm_bi_proj.model.safetensors")).unwrap();
        assert_eq!(m.config().proj_size, 3);
        assert_eq!(m.named_parameters().len(), 20);
    }

    fn write(p: &Path, tensors: BTreeMap<String, TensorData>, meta: &[(&str, &str)]) {
        TensorFile {
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tensors,
            ..TensorFile::default()
        }
        .write(p)
        .unwrap();
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = TempDir::new("errors");
        let good = TensorFile::read(fixture("gru_h0.model.safetensors")).unwrap();
        let p = dir.path("m.safetensors");
        let ps = p.display().to_string();

        write(&p, good.tensors.clone(), &[]);
        let msg = message(load_model(&p));
        assert!(msg.starts_with(&ps), "{msg}");
        assert!(
            msg.contains("no \"config\" metadata")
                && msg.contains("has no metadata")
                && msg.contains("json.dumps"),
            "{msg}"
        );

        write(&p, good.tensors.clone(), &[("format", "pt")]);
        let msg = message(load_model(&p));
        assert!(msg.contains("metadata keys are \"format\""), "{msg}");

        write(
            &p,
            good.tensors.clone(),
            &[("config", "{\"cell\": \"gru\", ")],
        );
        let msg = message(load_model(&p));
        assert!(
            msg.starts_with(&ps) && msg.contains("bad JSON config"),
            "{msg}"
        );

        write(
            &p,
            good.tensors.clone(),
            &[(
                "config",
                r#"{"cell": "gru", "input_size": 3, "hidden_size": 5, "proj_size": 2}"#,
            )],
        );
        let msg = message(load_model(&p));
        assert!(msg.starts_with(&ps) && msg.contains("proj_size"), "{msg}");

        // Config and weights disagree: hidden_size 6 instead of 5.
        write(
            &p,
            good.tensors.clone(),
            &[(
                "config",
                r#"{"cell": "gru", "input_size": 3, "hidden_size": 6}"#,
            )],
        );
        let msg = message(load_model(&p));
        assert!(
            msg.starts_with(&ps)
                && msg.contains("GRU(3, 6)")
                && msg.contains("size mismatch for weight_hh_l0"),
            "{msg}"
        );

        // A missing and an unexpected key.
        let mut t = good.tensors.clone();
        let w = t.remove("weight_ih_l0").unwrap();
        t.insert("rnn.weight_ih_l0".into(), w);
        write(
            &p,
            t,
            &[(
                "config",
                r#"{"cell": "gru", "input_size": 3, "hidden_size": 5}"#,
            )],
        );
        let msg = message(load_model(&p));
        assert!(
            msg.contains("Missing key(s) in state_dict: \"weight_ih_l0\"")
                && msg.contains("Unexpected key(s) in state_dict: \"rnn.weight_ih_l0\""),
            "{msg}"
        );

        let missing = dir.path("nope.safetensors");
        let e = load_model(&missing).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.safetensors"));

        let bytes = std::fs::read(fixture("gru_h0.model.safetensors")).unwrap();
        std::fs::write(&p, &bytes[..100]).unwrap();
        let e = load_model(&p).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&ps), "{e}");
    }
}
