//! The training loop of a character model, one step at a time, and its resumable state.
//!
//! One step, as the PyTorch twin (`tools/train_charlm.py`) does it:
//!
//! ```text
//! chunk = streams.chunk(step)                 # pure function of (seed, step)
//! if chunk.first: state = None                # a new epoch starts from zeros
//! optimizer.zero_grad()
//! loss, state = model.loss(chunk.inputs, chunk.targets, state)   # mean nats per character
//! loss.backward()
//! clip_grad_norm_(model.parameters(), clip)   # unless clip == 0
//! optimizer.step()                            # Adam(lr), or --optimizer
//! scheduler.step()                            # --schedule cosine|onecycle (plateau: per evaluation)
//! state = state.detach()                      # truncated backprop through time
//! ```
//!
//! Model initialisation and dropout draw from the thread's global generator, seeded with the
//! run's seed when the trainer is made; its state is part of a checkpoint. A [`Trainer`] must
//! therefore be stepped on the thread that made (or resumed) it.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use super::data::Streams;
use super::model::{CharLm, CharLmConfig, State};
use super::schedule::{OptimizerKind, Schedule, ScheduleKind};
use crate::error::{Error, Result};
use crate::io::{load_state_dict, TensorData, TensorFile};
use crate::module::Module;
use crate::optim::{clip_grad_norm_, Optimizer, OptimizerState};
use crate::rng::{manual_seed, with_global_rng, Rng};
use crate::tensor::Tensor;

/// The `format` metadata of a training checkpoint file.
pub const CHECKPOINT_FORMAT: &str = "rnn.charlm.checkpoint/1";

/// Hyperparameters of a run that fix what it computes: saved in every checkpoint, and checked
/// when a run is resumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `L`: characters per chunk (backprop through time is truncated to this).
    pub seq_len: usize,
    /// `N`: streams per batch.
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Maximum gradient norm (2-norm of all gradients); 0 disables clipping.
    pub clip: f64,
    /// Seeds initialisation, dropout and the data order.
    pub seed: u64,
    /// Steps the run is to make in all.
    pub steps: u64,
    /// The fraction of the text, at its end, held out for validation.
    pub val_fraction: f64,
    /// Where the text came from: a path, or `<built-in>`.
    pub data: String,
    /// [`fingerprint`] of the text's bytes.
    pub data_hash: String,
    /// The optimizer (Adam when absent, as in checkpoints made before the choice existed).
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// The learning-rate schedule (none when absent).
    #[serde(default)]
    pub schedule: ScheduleKind,
}

impl TrainConfig {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a config serializes")
    }

    /// Checks the values a run cannot start with.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.seq_len == 0 || self.batch == 0 {
            return bad("seq_len and batch must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "the learning rate must be positive, got {}",
                self.lr
            ));
        }
        if !(self.clip.is_finite() && self.clip >= 0.0) {
            return bad(format!("clip must be >= 0 (0 = off), got {}", self.clip));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!(
                "the validation fraction must be in [0, 1), got {}",
                self.val_fraction
            ));
        }
        Ok(())
    }
}

/// A 64-bit FNV-1a hash of `bytes`, as 16 hex digits: identifies a training text.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Steps done, this one included.
    pub step: u64,
    /// The epoch of this step's chunk (0-based).
    pub epoch: u64,
    /// Mean training loss of the chunk, nats per character.
    pub loss: f32,
    /// Gradient 2-norm before clipping.
    pub grad_norm: f32,
}

/// A model, its optimizer and schedule, the streams and the carried state: everything a step
/// needs.
pub struct Trainer {
    model: CharLm,
    opt: Box<dyn Optimizer>,
    /// Made at the first step (when the number of steps is known) or by `resume`.
    schedule: Option<Schedule>,
    streams: Streams,
    config: TrainConfig,
    state: Option<State>,
    step: u64,
}

impl Trainer {
    /// A fresh run: seeds the global generator with `config.seed`, initialises the model and
    /// makes the optimizer (`Adam(lr)` by default) over its parameters.
    pub fn new(model: CharLmConfig, config: TrainConfig, train: Vec<usize>) -> Result<Trainer> {
        config.validate()?;
        model.check_training_memory(config.seq_len, config.batch)?;
        check_tokens(&train, model.vocab_size)?;
        let streams = Streams::new(train, config.batch, config.seq_len, config.seed)?;
        manual_seed(config.seed);
        let model = CharLm::new(model)?;
        let opt = config.optimizer.build(model.parameters(), config.lr)?;
        Ok(Trainer {
            model,
            opt,
            schedule: None,
            streams,
            config,
            state: None,
            step: 0,
        })
    }

    /// Fine-tuning: a run that starts from the weights of `model` (read with
    /// [`load_dir`](super::load_dir)) instead of a fresh initialisation, with a new optimizer
    /// (`config.optimizer`) and step 0. Seeds the global generator with `config.seed` (dropout), as [`Trainer::new`]
    /// does; `train` must be encoded with the model's vocabulary. Unlike
    /// [`Trainer::resume`], nothing of the earlier run but its weights is kept.
    pub fn from_model(model: CharLm, config: TrainConfig, train: Vec<usize>) -> Result<Trainer> {
        config.validate()?;
        check_tokens(&train, model.config().vocab_size)?;
        let streams = Streams::new(train, config.batch, config.seq_len, config.seed)?;
        manual_seed(config.seed);
        let opt = config.optimizer.build(model.parameters(), config.lr)?;
        Ok(Trainer {
            model,
            opt,
            schedule: None,
            streams,
            config,
            state: None,
            step: 0,
        })
    }

    /// Steps done.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The model.
    pub fn model(&self) -> &CharLm {
        &self.model
    }

    /// The model, mutably (to switch it to evaluation mode for sampling).
    pub fn model_mut(&mut self) -> &mut CharLm {
        &mut self.model
    }

    /// The run's hyperparameters.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Changes the total number of steps planned (a resumed run may go further).
    pub fn set_total_steps(&mut self, steps: u64) {
        self.config.steps = steps;
    }

    /// The training streams.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// One step of truncated backprop through time (see the module docs).
    pub fn step(&mut self) -> Result<StepStats> {
        let chunk = self.streams.chunk(self.step);
        if chunk.first {
            self.state = None;
        }
        self.model.set_training(true);
        if self.schedule.is_none() {
            let c = &self.config;
            self.schedule = Schedule::build(c.schedule, self.opt.as_mut(), c.lr, c.steps)?;
        }
        self.opt.zero_grad();
        let (loss, next) = self
            .model
            .loss(&chunk.inputs, &chunk.targets, self.state.as_ref())?;
        let value = loss.item()?;
        if !value.is_finite() {
            return Err(Error::Invalid(format!(
                "the training loss became {value} at step {}: lower --lr or set --clip",
                self.step + 1
            )));
        }
        loss.backward()?;
        drop(loss);
        let params = self.model.parameters();
        let grad_norm = if self.config.clip > 0.0 {
            clip_grad_norm_(&params, self.config.clip, 2.0)?
        } else {
            grad_norm(&params)
        };
        self.opt.step()?;
        if let Some(s) = &mut self.schedule {
            s.after_step(self.opt.as_mut());
        }
        self.state = Some(next.detach());
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            epoch: chunk.epoch,
            loss: value,
            grad_norm,
        })
    }

    /// Tells the schedule the validation loss of an evaluation (`--schedule plateau` lowers
    /// the learning rate when it stops improving; the other schedules ignore it).
    pub fn after_evaluation(&mut self, val_loss: f64) {
        if let Some(s) = &mut self.schedule {
            s.after_evaluation(val_loss, self.opt.as_mut());
        }
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.opt.lr()
    }

    /// The whole resumable state as one safetensors file: the model's tensors under their
    /// keys, the optimizer's under `optimizer.*`, the schedule's under `scheduler.*` (F64
    /// scalars, once it exists), and `trainer.step`, `trainer.rng` (the global
    /// generator, as 4 I64 bit patterns), `trainer.h`, `trainer.c` (the carried state); the
    /// metadata has `format`, `config` (model), `train`, `optimizer` and `step`.
    pub fn checkpoint(&self) -> TensorFile {
        let mut file = TensorFile::new();
        for (name, t) in self.model.named_parameters() {
            file.insert(name, t.to_array());
        }
        let opt = self.opt.state_dict();
        let opt_file = opt.to_file();
        for (key, data) in opt_file.tensors {
            file.tensors.insert(format!("optimizer.{key}"), data);
        }
        if let Some(s) = &self.schedule {
            for (key, v) in s.state_dict() {
                file.insert(format!("scheduler.{key}"), ndarray::arr0(v).into_dyn());
            }
        }
        file.insert("trainer.step", ndarray::arr0(self.step as i64).into_dyn());
        let rng = with_global_rng(|r| r.state());
        file.insert(
            "trainer.rng",
            Array1::from_iter(rng.iter().map(|&s| s as i64)).into_dyn(),
        );
        if let Some(s) = &self.state {
            file.insert("trainer.h", s.h.to_array());
            if let Some(c) = &s.c {
                file.insert("trainer.c", c.to_array());
            }
        }
        file.metadata = BTreeMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("config".to_string(), self.model.config().to_json()),
            ("train".to_string(), self.config.to_json()),
            ("optimizer".to_string(), opt.kind.clone()),
            ("step".to_string(), self.step.to_string()),
        ]);
        file
    }

    /// Reads the model and training configurations of a checkpoint file (already read into
    /// `file`; `path` names it in errors).
    pub fn configs_of(file: &TensorFile, path: &Path) -> Result<(CharLmConfig, TrainConfig)> {
        let meta = |key: &str| {
            file.metadata.get(key).ok_or_else(|| {
                Error::format(
                    path,
                    format!("not an rnn training checkpoint: no \"{key}\" metadata"),
                )
            })
        };
        let format = meta("format")?;
        if format != CHECKPOINT_FORMAT {
            return Err(Error::format(
                path,
                format!("checkpoint format {format:?}, expected {CHECKPOINT_FORMAT:?}"),
            ));
        }
        let model = CharLmConfig::from_json(meta("config")?)
            .map_err(|e| Error::format(path, format!("metadata \"config\": {e}")))?;
        let train: TrainConfig = serde_json::from_str(meta("train")?)
            .map_err(|e| Error::format(path, format!("metadata \"train\": {e}")))?;
        train
            .validate()
            .map_err(|e| Error::format(path, format!("metadata \"train\": {e}")))?;
        Ok((model, train))
    }

    /// Resumes from a checkpoint file made by [`Trainer::checkpoint`], with the training text
    /// `train` (which must be the one the run started with). Restores the weights, the
    /// optimizer, the step, the carried state and the global generator: the next step is the
    /// one the interrupted run would have made. Every error names `path`.
    pub fn resume(file: &TensorFile, path: &Path, train: Vec<usize>) -> Result<Trainer> {
        let (model_config, config) = Self::configs_of(file, path)?;
        super::checkpoint::check_checkpoint(file, path, &model_config, &config)?;
        let in_file = |e: Error| match e {
            Error::Format { .. } | Error::Io { .. } => e,
            other => Error::format(path, other.to_string()),
        };
        let mut trainer = Trainer::new(model_config.clone(), config, train)?;
        // The model's own tensors, strictly.
        let keys: Vec<String> = trainer
            .model
            .named_parameters()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let model_tensors: BTreeMap<String, TensorData> = file
            .tensors
            .iter()
            .filter(|(k, _)| {
                !k.starts_with("optimizer.")
                    && !k.starts_with("trainer.")
                    && !k.starts_with("scheduler.")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        load_state_dict(&trainer.model, &model_tensors, true).map_err(in_file)?;
        debug_assert!(keys.iter().all(|k| model_tensors.contains_key(k)));

        let mut opt_file = TensorFile::new();
        if let Some(kind) = file.metadata.get("optimizer") {
            opt_file
                .metadata
                .insert(crate::optim::KIND_METADATA_KEY.to_string(), kind.clone());
        }
        for (k, v) in &file.tensors {
            if let Some(rest) = k.strip_prefix("optimizer.") {
                opt_file.tensors.insert(rest.to_string(), v.clone());
            }
        }
        let opt_state = OptimizerState::from_file(&opt_file).map_err(in_file)?;
        // The schedule first (one-cycle sets the learning rate when made), then the states.
        let mut sched_state = BTreeMap::new();
        for (k, v) in &file.tensors {
            if let Some(rest) = k.strip_prefix("scheduler.") {
                let value = match v {
                    TensorData::F64(a) if a.len() == 1 => a.iter().next().copied(),
                    _ => None,
                };
                let value = value
                    .ok_or_else(|| Error::format(path, format!("\"{k}\" must be one F64 value")))?;
                sched_state.insert(rest.to_string(), value);
            }
        }
        if !sched_state.is_empty() {
            let c = &trainer.config;
            trainer.schedule = Schedule::build(c.schedule, trainer.opt.as_mut(), c.lr, c.steps)?;
            let Some(s) = &mut trainer.schedule else {
                return Err(Error::format(
                    path,
                    "the checkpoint has a scheduler state but the run has no --schedule",
                ));
            };
            s.load_state_dict(&sched_state).map_err(in_file)?;
        }
        trainer.opt.load_state_dict(&opt_state).map_err(in_file)?;

        let step = file
            .i64("trainer.step")
            .map_err(in_file)?
            .iter()
            .next()
            .copied()
            .filter(|&s| s >= 0)
            .ok_or_else(|| Error::format(path, "\"trainer.step\" must be one count >= 0"))?;
        let rng = file.i64("trainer.rng").map_err(in_file)?;
        if rng.len() != 4 {
            return Err(Error::format(
                path,
                format!("\"trainer.rng\" must hold 4 values, got {}", rng.len()),
            ));
        }
        let words: Vec<u64> = rng.iter().map(|&v| v as u64).collect();
        let state = [words[0], words[1], words[2], words[3]];

        let shape = [
            model_config.num_layers,
            trainer.streams.batch(),
            model_config.hidden_size,
        ];
        let carried = |key: &str| -> Result<Option<Tensor>> {
            if !file.contains(key) {
                return Ok(None);
            }
            let a = file.f32(key).map_err(in_file)?;
            if a.shape() != shape {
                return Err(Error::format(
                    path,
                    format!(
                        "\"{key}\" has shape {}, expected {}",
                        crate::Shape::of(a.shape()),
                        crate::Shape::of(&shape)
                    ),
                ));
            }
            Ok(Some(Tensor::new(a)))
        };
        let h = carried("trainer.h")?;
        let c = carried("trainer.c")?;
        let has_c = model_config.cell.description().cell_state;
        trainer.state = match (h, c) {
            (None, None) => None,
            (Some(h), c) if c.is_some() == has_c => Some(State { h, c }),
            _ => {
                return Err(Error::format(
                    path,
                    "the carried state \"trainer.h\"/\"trainer.c\" does not match the cell",
                ))
            }
        };
        trainer.step = step as u64;
        with_global_rng(|r| *r = Rng::from_state(state));
        Ok(trainer)
    }
}

/// The 2-norm of all gradients (what `clip_grad_norm_` returns), without changing them.
fn grad_norm(params: &[Tensor]) -> f32 {
    let sum: f64 = params
        .iter()
        .filter_map(|p| p.grad())
        .map(|g| {
            let n: f64 = g.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            n
        })
        .sum();
    sum.sqrt() as f32
}

/// Every index must be a class of the model.
fn check_tokens(tokens: &[usize], vocab_size: usize) -> Result<()> {
    match tokens.iter().find(|&&t| t >= vocab_size) {
        Some(t) => Err(Error::Invalid(format!(
            "character index {t} is out of range for a vocabulary of {vocab_size}"
        ))),
        None => Ok(()),
    }
}
