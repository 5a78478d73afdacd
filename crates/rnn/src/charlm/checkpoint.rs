//! A character model's directory on disk, as `rnn train --out DIR` writes it:
//!
//! | file | what |
//! |---|---|
//! | `model.safetensors` | the weights with PyTorch keys (`embed.weight`, `rnn.weight_ih_l0`, ..., `fc.weight`, `fc.bias`); metadata `format` = `rnn.charlm/1`, `config` = [`CharLmConfig`] JSON, `step` |
//! | `vocab.json` | the [`Vocab`] |
//! | `checkpoint.safetensors` | everything needed to resume (see [`Trainer::checkpoint`](super::Trainer::checkpoint)): weights, Adam state, step, generator state, carried state |
//! | `best.safetensors` | the model with the lowest validation loss so far, as `model.safetensors` plus a `val_loss` metadata entry (see [`save_best`]) |
//!
//! Every file is written atomically (a temporary file, fsync, rename), so a crash leaves the old
//! file or the new one. A resumed run reads only `checkpoint.safetensors`, which is one file:
//! its parts can never be from different steps. `rnn sample` and `rnn eval` read `model.safetensors`
//! and `vocab.json`; PyTorch reads the model with `load_state_dict(load_file(...))`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::model::{CharLm, CharLmConfig};
use super::train::TrainConfig;
use super::train::CHECKPOINT_FORMAT;
use super::vocab::Vocab;
use crate::error::{Error, Result};
use crate::io::{check_state_dict, load_state_dict, save_state_dict, TensorData, TensorFile};

/// The model file's name in a model directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// The vocabulary's file name in a model directory.
pub const VOCAB_FILE: &str = "vocab.json";
/// The resumable training state's file name in a model directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The `format` metadata of a model file.
pub const MODEL_FORMAT: &str = "rnn.charlm/1";

/// Writes `model` to `path` atomically, with `format`, `config` and `step` metadata.
pub fn save_model(path: impl AsRef<Path>, model: &CharLm, step: u64) -> Result<()> {
    let metadata = BTreeMap::from([
        ("format".to_string(), MODEL_FORMAT.to_string()),
        ("config".to_string(), model.config().to_json()),
        ("step".to_string(), step.to_string()),
    ]);
    save_state_dict(model, path, metadata)
}

/// The file name of the model with the lowest validation loss so far in a model directory.
pub const BEST_FILE: &str = "best.safetensors";

/// Writes `model` to `path` atomically as [`save_model`] does, with a `val_loss` metadata entry
/// (nats per character, the loss it is kept for): `rnn train` keeps [`BEST_FILE`] this way.
pub fn save_best(path: impl AsRef<Path>, model: &CharLm, step: u64, val_loss: f64) -> Result<()> {
    let metadata = BTreeMap::from([
        ("format".to_string(), MODEL_FORMAT.to_string()),
        ("config".to_string(), model.config().to_json()),
        ("step".to_string(), step.to_string()),
        ("val_loss".to_string(), format!("{val_loss:e}")),
    ]);
    save_state_dict(model, path, metadata)
}

/// The step and validation loss recorded in a best-model file, if `path` is one.
pub fn best_of(path: impl AsRef<Path>) -> Option<(u64, f64)> {
    let file = TensorFile::read(path).ok()?;
    let step = file.metadata.get("step")?.parse().ok()?;
    let loss = file.metadata.get("val_loss")?.parse().ok()?;
    Some((step, loss))
}

/// Reads a model file: the architecture from its `config` metadata, then the weights,
/// strictly (every key, every shape). Errors name the file.
///
/// The tensors are checked against the configuration before the model is built, and the
/// configuration against the memory budget ([`crate::budget`]). A training checkpoint is
/// refused with a message that names the model file to use instead.
pub fn load_model(path: impl AsRef<Path>) -> Result<CharLm> {
    let path = path.as_ref();
    let file = TensorFile::read(path)?;
    if file.metadata.get("format").map(String::as_str) == Some(CHECKPOINT_FORMAT) {
        let model = path.with_file_name(MODEL_FILE);
        return Err(Error::format(
            path,
            format!(
                "this is a training checkpoint (the state `rnn train --resume` continues from), \
                 not a model file; use {} (or its directory)",
                model.display()
            ),
        ));
    }
    if crate::quantized::is_quantized_file(&file) {
        return Err(crate::quantized::not_a_character_model(path));
    }
    let Some(json) = file.metadata.get("config") else {
        return Err(Error::format(
            path,
            "not a character model: no \"config\" metadata (write it with \
             tools/train_charlm.py or rnn train)",
        ));
    };
    let config = CharLmConfig::from_json(json)
        .map_err(|e| Error::format(path, format!("metadata \"config\": {e}")))?;
    let mismatch = |e: Error| {
        Error::format(
            path,
            format!("the weights do not match the config {json}: {e}"),
        )
    };
    check_state_dict(&config.parameter_shapes(), &file.tensors).map_err(mismatch)?;
    let model = CharLm::new(config)?;
    load_state_dict(&model, &file.tensors, true).map_err(|e| {
        Error::format(
            path,
            format!("the weights do not match the config {json}: {e}"),
        )
    })?;
    Ok(model)
}

/// The model file and vocabulary of a model directory, or of the model file `path` itself
/// (its vocabulary is then `vocab.json` beside it).
pub fn model_paths(path: impl AsRef<Path>) -> (PathBuf, PathBuf) {
    let path = path.as_ref();
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        (path.to_path_buf(), dir.join(VOCAB_FILE))
    } else {
        (path.join(MODEL_FILE), path.join(VOCAB_FILE))
    }
}

/// Reads a model and its vocabulary (see [`model_paths`]) and checks that they agree.
pub fn load_dir(path: impl AsRef<Path>) -> Result<(CharLm, Vocab)> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such model directory (train one with `rnn train --out DIR`)",
            ),
        ));
    }
    let (model_path, vocab_path) = model_paths(path);
    let model = load_model(&model_path)?;
    let vocab = Vocab::read(&vocab_path)?;
    if vocab.len() != model.config().vocab_size {
        return Err(Error::format(
            &vocab_path,
            format!(
                "the vocabulary has {} characters but the model {} has vocab_size {}",
                vocab.len(),
                model_path.display(),
                model.config().vocab_size
            ),
        ));
    }
    Ok((model, vocab))
}

/// Checks every field of a training checkpoint besides the weights and what
/// [`Trainer::configs_of`](super::Trainer::configs_of) reads, before the run is rebuilt from
/// it; each error names the field (`path: "trainer.rng" ...`):
///
/// - `trainer.step`: one integer in `0..=steps` of the `train` metadata, equal to the `step`
///   metadata;
/// - `trainer.rng`: 4 integers, not all zero (the generator's all-zero state is degenerate);
/// - `trainer.h`, `trainer.c`: floating-point and finite (their shapes are checked on resume);
/// - `optimizer.*`: every buffer finite, second moments (`exp_avg_sq`, `max_exp_avg_sq`) not
///   negative, every per-parameter step count (`optimizer.step.i`) a 0-dimensional F64 equal
///   to `trainer.step`, and after the first step a count for every parameter;
/// - `train.data_hash`: 16 hex digits.
pub fn check_checkpoint(
    file: &TensorFile,
    path: &Path,
    model: &CharLmConfig,
    train: &TrainConfig,
) -> Result<()> {
    let bad = |key: &str, what: String| Err(Error::format(path, format!("\"{key}\" {what}")));
    let dtype = |key: &str| file.dtype_in_file(key).unwrap_or("?").to_string();

    // The step, three times: the tensor, the metadata, the optimizer's counts.
    let Some(t) = file.tensors.get("trainer.step") else {
        return bad(
            "trainer.step",
            "is missing: not a whole training checkpoint".into(),
        );
    };
    let TensorData::I64(a) = t else {
        return bad(
            "trainer.step",
            format!(
                "has dtype {}, expected an integer (I64)",
                dtype("trainer.step")
            ),
        );
    };
    if a.len() != 1 {
        return bad(
            "trainer.step",
            format!("must hold one count, got {} values", a.len()),
        );
    }
    let step = a.iter().next().copied().unwrap_or(-1);
    let Ok(step) = u64::try_from(step) else {
        return bad("trainer.step", format!("is {step}, expected a count >= 0"));
    };
    if step > train.steps {
        return bad(
            "trainer.step",
            format!(
                "is {step}, past the {} steps the run planned (metadata \"train\")",
                train.steps
            ),
        );
    }
    match file.metadata.get("step").map(|s| s.parse::<u64>()) {
        Some(Ok(s)) if s == step => {}
        Some(Ok(s)) => {
            return bad(
                "trainer.step",
                format!("is {step} but the \"step\" metadata says {s}: the file is inconsistent"),
            )
        }
        Some(Err(_)) | None => {
            return Err(Error::format(
                path,
                format!(
                    "metadata \"step\" must be the step count {step}, got {:?}",
                    file.metadata.get("step")
                ),
            ))
        }
    }

    // The generator.
    match file.tensors.get("trainer.rng") {
        Some(TensorData::I64(a)) if a.len() == 4 => {
            if a.iter().all(|&w| w == 0) {
                return bad(
                    "trainer.rng",
                    "is all zeros, which no generator reaches (a xoshiro state must have a \
                     non-zero bit): the checkpoint is damaged"
                        .into(),
                );
            }
        }
        Some(TensorData::I64(a)) => {
            return bad(
                "trainer.rng",
                format!("must hold 4 integers, got {}", a.len()),
            )
        }
        Some(_) => {
            return bad(
                "trainer.rng",
                format!("has dtype {}, expected I64", dtype("trainer.rng")),
            )
        }
        None => {
            return bad(
                "trainer.rng",
                "is missing: not a whole training checkpoint".into(),
            )
        }
    }

    // The carried state.
    for key in ["trainer.h", "trainer.c"] {
        match file.tensors.get(key) {
            None => {}
            Some(TensorData::I64(_)) => {
                return bad(
                    key,
                    format!("has dtype {}, expected floating point", dtype(key)),
                )
            }
            Some(t) => {
                let bad_values = t.to_f32().iter().filter(|v| !v.is_finite()).count();
                if bad_values > 0 {
                    return bad(
                        key,
                        format!(
                            "holds {bad_values} NaN or infinite value(s): the carried state of a \
                             run is always finite"
                        ),
                    );
                }
            }
        }
    }

    // The optimizer's state.
    let n_params = model.parameter_shapes().len();
    let mut counts = 0;
    for (key, t) in &file.tensors {
        let Some(rest) = key.strip_prefix("optimizer.") else {
            continue;
        };
        if let Some(i) = rest.strip_prefix("step.") {
            let value = match t {
                TensorData::F64(a) if a.ndim() == 0 => a.iter().next().copied(),
                _ => {
                    return bad(
                        key,
                        format!(
                            "has dtype {} and shape {}, expected a 0-dimensional F64 step count",
                            dtype(key),
                            crate::Shape::of(t.shape())
                        ),
                    )
                }
            };
            if value != Some(step as f64) {
                return bad(
                    key,
                    format!(
                        "is {}, but the run is at step {step} (\"trainer.step\"): every \
                         parameter's step count is the run's",
                        value.unwrap_or(f64::NAN)
                    ),
                );
            }
            if i.parse::<usize>().map_or(true, |i| i >= n_params) {
                return bad(
                    key,
                    format!(
                        "names no parameter: the model has {n_params} (0 to {})",
                        n_params - 1
                    ),
                );
            }
            counts += 1;
            continue;
        }
        let values = t.to_f64();
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return bad(
                key,
                format!("holds {v}: the optimizer's state is always finite"),
            );
        }
        let second_moment = rest.starts_with("exp_avg_sq.") || rest.starts_with("max_exp_avg_sq.");
        if second_moment {
            if let Some(v) = values.iter().find(|&&v| v < 0.0) {
                return bad(
                    key,
                    format!("holds {v}: a second moment (a mean of squares) is never negative"),
                );
            }
        }
    }
    let adam = file.metadata.get("optimizer").map(String::as_str) == Some("adam");
    if adam && step > 0 && counts != n_params {
        return Err(Error::format(
            path,
            format!(
                "the run is at step {step} but the optimizer's state has step counts for {counts} \
                 of the {n_params} parameters (\"optimizer.step.i\"): the checkpoint is incomplete"
            ),
        ));
    }

    if train.data_hash.len() != 16 || !train.data_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::format(
            path,
            format!(
                "metadata \"train\": data_hash {:?} is not a fingerprint (16 hex digits)",
                train.data_hash
            ),
        ));
    }
    Ok(())
}
