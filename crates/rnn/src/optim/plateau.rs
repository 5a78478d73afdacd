//! `ReduceLROnPlateau`, as `torch.optim.lr_scheduler.ReduceLROnPlateau`: lowers the learning
//! rates when a metric (usually the validation loss) stops improving.
//!
//! At each `step(metric)`: the metric is better than the best so far when
//!
//! ```text
//! min, rel:  metric < best·(1 − threshold)      min, abs:  metric < best − threshold
//! max, rel:  metric > best·(1 + threshold)      max, abs:  metric > best + threshold
//! ```
//!
//! (a NaN is never better). A better metric becomes the best and resets the count of bad
//! epochs; otherwise the count grows. During a cooldown the count is held at 0. When it
//! exceeds `patience`, every group's learning rate becomes `max(lr·factor, min_lr)` if that
//! lowers it by more than `eps`, and a cooldown of `cooldown` epochs starts.
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::{Optimizer, ReduceLROnPlateau, Sgd};
//! use rnn::Tensor;
//!
//! let w = Tensor::parameter(array![1.0f32].into_dyn());
//! let mut opt = Sgd::new(vec![w], 1.0).unwrap();
//! let mut sched = ReduceLROnPlateau::new(&opt).with_patience(1);
//! for loss in [3.0, 2.0, 2.5, 2.4, 2.0] {
//!     sched.step(loss, &mut opt);
//! }
//! assert_eq!(opt.lr(), 0.1); // two epochs without improvement after 2.0
//! ```

use std::collections::BTreeMap;

use super::scheduler::{common_state, per_group, read_common_with, required};
use super::Optimizer;
use crate::error::{Error, Result};

/// Whether a lower (`Min`, a loss) or a higher (`Max`, an accuracy) metric is better.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlateauMode {
    /// `mode='min'` (the default).
    #[default]
    Min,
    /// `mode='max'`.
    Max,
}

/// How `threshold` is compared (`threshold_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThresholdMode {
    /// `'rel'` (the default): a relative change of `threshold`.
    #[default]
    Rel,
    /// `'abs'`: an absolute change of `threshold`.
    Abs,
}

/// `ReduceLROnPlateau(optimizer, mode='min', factor=0.1, patience=10, threshold=1e-4,
/// threshold_mode='rel', cooldown=0, min_lr=0, eps=1e-8)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceLROnPlateau {
    mode: PlateauMode,
    factor: f64,
    patience: usize,
    threshold: f64,
    threshold_mode: ThresholdMode,
    cooldown: usize,
    min_lrs: Vec<f64>,
    eps: f64,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
    last_epoch: i64,
    last_lrs: Vec<f64>,
}

impl ReduceLROnPlateau {
    /// PyTorch's defaults, for the groups of `opt`.
    pub fn new(opt: &dyn Optimizer) -> ReduceLROnPlateau {
        let groups = opt.num_groups();
        ReduceLROnPlateau {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lrs: vec![0.0; groups],
            eps: 1e-8,
            best: f64::INFINITY,
            num_bad_epochs: 0,
            cooldown_counter: 0,
            last_epoch: 0,
            last_lrs: (0..groups).map(|g| opt.group_lr(g)).collect(),
        }
    }

    /// `mode` (min); resets the best value to the mode's worst (±∞).
    pub fn with_mode(mut self, mode: PlateauMode) -> ReduceLROnPlateau {
        self.mode = mode;
        self.best = self.worst();
        self
    }

    /// `factor` in [0, 1) (0.1). PyTorch: "Factor should be < 1.0."
    pub fn with_factor(mut self, factor: f64) -> Result<ReduceLROnPlateau> {
        if !(0.0..1.0).contains(&factor) {
            return Err(Error::Invalid(format!(
                "ReduceLROnPlateau: Factor should be < 1.0 (and >= 0), got {factor}"
            )));
        }
        self.factor = factor;
        Ok(self)
    }

    /// `patience` (10): bad epochs tolerated before lowering the rates.
    pub fn with_patience(mut self, patience: usize) -> ReduceLROnPlateau {
        self.patience = patience;
        self
    }

    /// `threshold` (1e-4) and `threshold_mode` (rel): how much better counts as better.
    pub fn with_threshold(
        mut self,
        threshold: f64,
        mode: ThresholdMode,
    ) -> Result<ReduceLROnPlateau> {
        if !threshold.is_finite() {
            return Err(Error::Invalid(format!(
                "ReduceLROnPlateau: threshold must be finite, got {threshold}"
            )));
        }
        self.threshold = threshold;
        self.threshold_mode = mode;
        Ok(self)
    }

    /// `cooldown` (0): epochs after a reduction during which bad epochs are not counted.
    pub fn with_cooldown(mut self, cooldown: usize) -> ReduceLROnPlateau {
        self.cooldown = cooldown;
        self
    }

    /// `min_lr`: one floor for every group, or one per group ("expected N min_lrs, got M").
    pub fn with_min_lr(mut self, min_lr: &[f64]) -> Result<ReduceLROnPlateau> {
        let groups = self.min_lrs.len();
        self.min_lrs = match min_lr.len() {
            1 => vec![min_lr[0]; groups],
            n if n == groups => min_lr.to_vec(),
            n => {
                return Err(Error::Invalid(format!(
                    "ReduceLROnPlateau: expected {groups} min_lrs, got {n}"
                )))
            }
        };
        Ok(self)
    }

    /// `eps` (1e-8): a reduction smaller than this is skipped.
    pub fn with_eps(mut self, eps: f64) -> ReduceLROnPlateau {
        self.eps = eps;
        self
    }

    fn worst(&self) -> f64 {
        match self.mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        }
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, t) = (self.best, self.threshold);
        match (self.mode, self.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - t),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - t,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (t + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + t,
        }
    }

    /// Ends an epoch with its `metric` (module docs).
    pub fn step(&mut self, metric: f64, opt: &mut dyn Optimizer) {
        self.last_epoch += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.patience {
            for g in 0..opt.num_groups() {
                let old = opt.group_lr(g);
                let floor = self.min_lrs.get(g).copied().unwrap_or(0.0);
                let new = (old * self.factor).max(floor);
                if old - new > self.eps {
                    opt.set_group_lr(g, new);
                }
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad_epochs = 0;
        }
        self.last_lrs = (0..opt.num_groups()).map(|g| opt.group_lr(g)).collect();
    }

    /// The number of `step` calls so far.
    pub fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    /// The best metric so far (±∞ before any).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Every group's learning rate after the last step (`get_last_lr()`).
    pub fn last_lrs(&self) -> &[f64] {
        &self.last_lrs
    }

    /// `scheduler.state_dict()`: the options (modes as 0 = min/rel, 1 = max/abs), `best`,
    /// `num_bad_epochs`, `cooldown_counter`, `last_epoch`, and `min_lr`, `last_lr` per group.
    pub fn state_dict(&self) -> BTreeMap<String, f64> {
        let mut s = common_state(self.last_epoch, &[], &self.last_lrs);
        for (g, &m) in self.min_lrs.iter().enumerate() {
            s.insert(super::scheduler::group_key(g, "min_lr"), m);
        }
        for (k, v) in [
            ("mode", f64::from(u8::from(self.mode == PlateauMode::Max))),
            ("factor", self.factor),
            ("patience", self.patience as f64),
            ("threshold", self.threshold),
            (
                "threshold_mode",
                f64::from(u8::from(self.threshold_mode == ThresholdMode::Abs)),
            ),
            ("cooldown", self.cooldown as f64),
            ("eps", self.eps),
            ("best", self.best),
            ("num_bad_epochs", self.num_bad_epochs as f64),
            ("cooldown_counter", self.cooldown_counter as f64),
        ] {
            s.insert(k.into(), v);
        }
        s
    }

    /// Restores [`ReduceLROnPlateau::state_dict`]; nothing changes on an error.
    pub fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let name = "ReduceLROnPlateau";
        let own = [
            "mode",
            "factor",
            "patience",
            "threshold",
            "threshold_mode",
            "cooldown",
            "eps",
            "best",
            "num_bad_epochs",
            "cooldown_counter",
        ];
        let (last_epoch, _, last_lrs) = read_common_with(state, name, &own, &["min_lr"])?;
        let get = |k: &str| required(state, name, k);
        let count = |k: &str| -> Result<usize> {
            let v = get(k)?;
            if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 {
                Ok(v as usize)
            } else {
                Err(Error::StateDict(format!(
                    "\"{k}\" must be a whole number >= 0, got {v}"
                )))
            }
        };
        let min_lrs = per_group(state, "min_lr");
        if min_lrs.len() != self.min_lrs.len() {
            return Err(Error::StateDict(format!(
                "the {name} state has {} groups, this scheduler {}",
                min_lrs.len(),
                self.min_lrs.len()
            )));
        }
        let loaded = ReduceLROnPlateau {
            mode: if get("mode")? == 1.0 {
                PlateauMode::Max
            } else {
                PlateauMode::Min
            },
            factor: get("factor")?,
            patience: count("patience")?,
            threshold: get("threshold")?,
            threshold_mode: if get("threshold_mode")? == 1.0 {
                ThresholdMode::Abs
            } else {
                ThresholdMode::Rel
            },
            cooldown: count("cooldown")?,
            min_lrs,
            eps: get("eps")?,
            best: get("best")?,
            num_bad_epochs: count("num_bad_epochs")?,
            cooldown_counter: count("cooldown_counter")?,
            last_epoch,
            last_lrs,
        };
        *self = loaded;
        Ok(())
    }
}
