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
use super::vocab::Vocab;
use crate::error::{Error, Result};
use crate::io::{load_state_dict, save_state_dict, TensorFile};

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
pub fn load_model(path: impl AsRef<Path>) -> Result<CharLm> {
    let path = path.as_ref();
    let file = TensorFile::read(path)?;
    let Some(json) = file.metadata.get("config") else {
        return Err(Error::format(
            path,
            "not a character model: no \"config\" metadata (write it with \
             tools/train_charlm.py or rnn train)",
        ));
    };
    let config = CharLmConfig::from_json(json)
        .map_err(|e| Error::format(path, format!("metadata \"config\": {e}")))?;
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
