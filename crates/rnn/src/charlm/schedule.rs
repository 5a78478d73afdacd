//! The optimizer and the learning-rate schedule of a character-model run (`rnn train
//! --optimizer`, `--schedule`), and their place in a checkpoint.
//!
//! | `--optimizer` | PyTorch |
//! |---|---|
//! | `adam` (default) | `Adam(params, lr)` |
//! | `adamw` | `AdamW(params, lr)` (weight decay 0.01) |
//! | `sgd` | `SGD(params, lr, momentum=0.9)` |
//! | `rmsprop` | `RMSprop(params, lr)` (alpha 0.99) |
//!
//! | `--schedule` | PyTorch, stepped |
//! |---|---|
//! | `none` (default) | a constant learning rate |
//! | `cosine` | `CosineAnnealingLR(opt, T_max=steps)`, after every step |
//! | `onecycle` | `OneCycleLR(opt, max_lr=lr, total_steps=steps)`, after every step |
//! | `plateau` | `ReduceLROnPlateau(opt, factor=0.5, patience=2)` on the validation loss, after every evaluation |
//!
//! The schedule spans the steps planned when the run started; a resumed run that goes
//! further keeps the last learning rate (cosine goes back up, as PyTorch's does).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::{
    Adam, AdamW, CosineAnnealingLR, LrScheduler, OneCycleLR, Optimizer, RMSprop, ReduceLROnPlateau,
    Sgd,
};
use crate::tensor::Tensor;

/// Which optimizer a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `Adam(params, lr)`.
    #[default]
    Adam,
    /// `AdamW(params, lr)`.
    AdamW,
    /// `SGD(params, lr, momentum=0.9)`.
    Sgd,
    /// `RMSprop(params, lr)`.
    Rmsprop,
}

impl OptimizerKind {
    /// Makes the optimizer over `params`.
    pub fn build(self, params: Vec<Tensor>, lr: f64) -> Result<Box<dyn Optimizer>> {
        Ok(match self {
            OptimizerKind::Adam => Box::new(Adam::new(params, lr)?),
            OptimizerKind::AdamW => Box::new(AdamW::new(params, lr)?),
            OptimizerKind::Sgd => Box::new(Sgd::new(params, lr)?.with_momentum(0.9)?),
            OptimizerKind::Rmsprop => Box::new(RMSprop::new(params, lr)?),
        })
    }

    /// The flag's value.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Rmsprop => "rmsprop",
        }
    }
}

impl FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "adam" => Ok(OptimizerKind::Adam),
            "adamw" => Ok(OptimizerKind::AdamW),
            "sgd" => Ok(OptimizerKind::Sgd),
            "rmsprop" => Ok(OptimizerKind::Rmsprop),
            _ => Err(Error::Config(format!(
                "unknown optimizer {s:?}: expected adam, adamw, sgd or rmsprop"
            ))),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which learning-rate schedule a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// A constant learning rate.
    #[default]
    None,
    /// Cosine annealing to 0 over the run.
    Cosine,
    /// The 1cycle policy over the run.
    OneCycle,
    /// Halve the learning rate when the validation loss stops improving.
    Plateau,
}

impl ScheduleKind {
    /// The flag's value.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::None => "none",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::OneCycle => "onecycle",
            ScheduleKind::Plateau => "plateau",
        }
    }
}

impl FromStr for ScheduleKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(ScheduleKind::None),
            "cosine" => Ok(ScheduleKind::Cosine),
            "onecycle" => Ok(ScheduleKind::OneCycle),
            "plateau" => Ok(ScheduleKind::Plateau),
            _ => Err(Error::Config(format!(
                "unknown schedule {s:?}: expected none, cosine, onecycle or plateau"
            ))),
        }
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A run's schedule once made.
#[derive(Debug)]
pub enum Schedule {
    /// Stepped after every training step.
    PerStep(Box<dyn LrScheduler>),
    /// Stepped with every validation loss.
    Plateau(ReduceLROnPlateau),
}

impl Schedule {
    /// Makes `kind` for a run of `steps` steps on `opt` (`None` for a constant rate). The
    /// one-cycle schedule sets the optimizer's starting learning rate here.
    pub fn build(
        kind: ScheduleKind,
        opt: &mut dyn Optimizer,
        lr: f64,
        steps: u64,
    ) -> Result<Option<Schedule>> {
        let steps = usize::try_from(steps.max(1))
            .map_err(|_| Error::Config(format!("{steps} steps is too many for a schedule")))?;
        Ok(match kind {
            ScheduleKind::None => None,
            ScheduleKind::Cosine => Some(Schedule::PerStep(Box::new(CosineAnnealingLR::new(
                steps, 0.0,
            )?))),
            ScheduleKind::OneCycle => Some(Schedule::PerStep(Box::new(OneCycleLR::new(
                opt, lr, steps,
            )?))),
            ScheduleKind::Plateau => Some(Schedule::Plateau(
                ReduceLROnPlateau::new(opt)
                    .with_factor(0.5)?
                    .with_patience(2),
            )),
        })
    }

    /// After a training step.
    pub fn after_step(&mut self, opt: &mut dyn Optimizer) {
        if let Schedule::PerStep(s) = self {
            s.step(opt);
        }
    }

    /// After an evaluation with validation loss `loss`.
    pub fn after_evaluation(&mut self, loss: f64, opt: &mut dyn Optimizer) {
        if let Schedule::Plateau(s) = self {
            s.step(loss, opt);
        }
    }

    /// The scheduler's state.
    pub fn state_dict(&self) -> BTreeMap<String, f64> {
        match self {
            Schedule::PerStep(s) => s.state_dict(),
            Schedule::Plateau(s) => s.state_dict(),
        }
    }

    /// Restores [`Schedule::state_dict`].
    pub fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        match self {
            Schedule::PerStep(s) => s.load_state_dict(state),
            Schedule::Plateau(s) => s.load_state_dict(state),
        }
    }
}
