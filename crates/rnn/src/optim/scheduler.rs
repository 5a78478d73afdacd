//! Learning-rate schedulers, as `torch.optim.lr_scheduler.StepLR` and `CosineAnnealingLR`.
//!
//! Call `scheduler.step(&mut optimizer)` once per epoch, after `optimizer.step()`, as in
//! PyTorch. Both schedulers compute the new rate from the optimizer's current one with
//! PyTorch's recursive formulas in f64, so the learning rates are PyTorch's to the bit
//! (rounding included: after a period, cosine annealing returns to `0.10000000000000002`, not
//! `0.1`).
//!
//! PyTorch takes the optimizer in the constructor and records its learning rate there as
//! `base_lr`; here the scheduler is built alone and records the optimizer's learning rate at
//! its first `step` (the same value, unless the rate was changed by hand in between).
//! `last_epoch` counts the `step` calls: 0 after construction, as in PyTorch.
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::{CosineAnnealingLR, Optimizer, Sgd};
//! use rnn::Tensor;
//!
//! let w = Tensor::parameter(array![1.0f32].into_dyn());
//! let mut opt = Sgd::new(vec![w], 0.1).unwrap();
//! let mut sched = CosineAnnealingLR::new(2, 0.0).unwrap();
//! let mut lrs = vec![opt.lr()];
//! for _epoch in 0..4 {
//!     // ... one epoch of training, ending with opt.step() ...
//!     sched.step(&mut opt);
//!     lrs.push(opt.lr());
//! }
//! // PyTorch's values exactly, rounding included.
//! assert_eq!(lrs, [0.1, 0.05, 0.0, 0.049999999999999996, 0.10000000000000002]);
//! ```

use std::collections::BTreeMap;
use std::f64::consts::PI;

use super::Optimizer;
use crate::error::{Error, Result};

/// What a learning-rate scheduler does, for code that handles any of them.
pub trait LrScheduler {
    /// Ends an epoch: increments `last_epoch` and sets the optimizer's learning rate.
    fn step(&mut self, opt: &mut dyn Optimizer);
    /// The number of `step` calls so far (`scheduler.last_epoch`; 0 after construction).
    fn last_epoch(&self) -> i64;
    /// The learning rate set by the last `step` (`get_last_lr()[0]`), `None` before any.
    fn last_lr(&self) -> Option<f64>;
    /// `scheduler.state_dict()`: hyperparameters, `last_epoch`, `base_lr` and `last_lr` (the
    /// last two once known), all as f64.
    fn state_dict(&self) -> BTreeMap<String, f64>;
    /// Restores a state from [`LrScheduler::state_dict`] of the same kind of scheduler; the
    /// saved hyperparameters replace the current ones, as in PyTorch. Nothing changes if the
    /// state is invalid or has unknown keys.
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()>;
}

/// `StepLR(optimizer, step_size, gamma)`: multiplies the learning rate by `gamma` every
/// `step_size` epochs: `lr ← lr·gamma` when `last_epoch` is a non-zero multiple of `step_size`.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLR {
    step_size: usize,
    gamma: f64,
    last_epoch: i64,
    base_lr: Option<f64>,
    last_lr: Option<f64>,
}

impl StepLR {
    /// `step_size` ≥ 1 epochs between decays, by a finite `gamma` (PyTorch's default is 0.1).
    pub fn new(step_size: usize, gamma: f64) -> Result<StepLR> {
        check_step_lr(step_size as f64, gamma)?;
        Ok(StepLR {
            step_size,
            gamma,
            last_epoch: 0,
            base_lr: None,
            last_lr: None,
        })
    }

    /// Ends an epoch (see [`LrScheduler::step`]).
    pub fn step(&mut self, opt: &mut dyn Optimizer) {
        self.base_lr.get_or_insert(opt.lr());
        self.last_epoch += 1;
        let lr = opt.lr();
        // get_lr(): group["lr"] unless last_epoch is a non-zero multiple of step_size.
        let lr = if self.last_epoch % self.step_size as i64 != 0 {
            lr
        } else {
            lr * self.gamma
        };
        opt.set_lr(lr);
        self.last_lr = Some(lr);
    }

    /// The number of `step` calls so far.
    pub fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    /// The learning rate set by the last `step`, `None` before any.
    pub fn last_lr(&self) -> Option<f64> {
        self.last_lr
    }
}

fn check_step_lr(step_size: f64, gamma: f64) -> Result<()> {
    if !(step_size >= 1.0 && step_size.fract() == 0.0 && step_size <= i64::MAX as f64) {
        return Err(Error::Invalid(format!(
            "StepLR: step_size must be a whole number >= 1, got {step_size}"
        )));
    }
    if !gamma.is_finite() {
        return Err(Error::Invalid(format!(
            "StepLR: gamma must be finite, got {gamma}"
        )));
    }
    Ok(())
}

impl LrScheduler for StepLR {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        StepLR::step(self, opt)
    }
    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }
    fn last_lr(&self) -> Option<f64> {
        self.last_lr
    }
    fn state_dict(&self) -> BTreeMap<String, f64> {
        let mut s = common_state(self.last_epoch, self.base_lr, self.last_lr);
        s.insert("step_size".into(), self.step_size as f64);
        s.insert("gamma".into(), self.gamma);
        s
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let (last_epoch, base_lr, last_lr) = read_common(state, "StepLR", &["step_size", "gamma"])?;
        let step_size = required(state, "StepLR", "step_size")?;
        let gamma = required(state, "StepLR", "gamma")?;
        check_step_lr(step_size, gamma).map_err(|e| Error::StateDict(e.to_string()))?;
        *self = StepLR {
            step_size: step_size as usize,
            gamma,
            last_epoch,
            base_lr,
            last_lr,
        };
        Ok(())
    }
}

/// `CosineAnnealingLR(optimizer, T_max, eta_min)`: the learning rate follows
/// `η_min + ½(base_lr − η_min)(1 + cos(π·epoch / T_max))` down to `eta_min` at epoch `T_max`
/// and back up (period `2·T_max`), computed as PyTorch does, recursively from the current rate:
///
/// ```text
/// lr ← η_min + (lr − η_min)·(1 + cos(π·e/T)) / (1 + cos(π·(e − 1)/T))
/// lr ← lr + (base_lr − η_min)·(1 − cos(π/T)) / 2      when (e − 1 − T) mod 2T = 0
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CosineAnnealingLR {
    t_max: usize,
    eta_min: f64,
    last_epoch: i64,
    base_lr: Option<f64>,
    last_lr: Option<f64>,
}

impl CosineAnnealingLR {
    /// Half a period of `t_max` ≥ 1 epochs, down to a finite `eta_min` (PyTorch's default 0).
    pub fn new(t_max: usize, eta_min: f64) -> Result<CosineAnnealingLR> {
        check_cosine(t_max as f64, eta_min)?;
        Ok(CosineAnnealingLR {
            t_max,
            eta_min,
            last_epoch: 0,
            base_lr: None,
            last_lr: None,
        })
    }

    /// Ends an epoch (see [`LrScheduler::step`]).
    pub fn step(&mut self, opt: &mut dyn Optimizer) {
        let base_lr = *self.base_lr.get_or_insert(opt.lr());
        self.last_epoch += 1;
        let (e, t, eta_min) = (self.last_epoch as f64, self.t_max as f64, self.eta_min);
        let lr = opt.lr();
        // PyTorch's get_lr(), operation for operation (Python's `%` is rem_euclid).
        let lr = if (self.last_epoch - 1 - self.t_max as i64).rem_euclid(2 * self.t_max as i64) == 0
        {
            lr + (base_lr - eta_min) * (1.0 - (PI / t).cos()) / 2.0
        } else {
            (1.0 + (PI * e / t).cos()) / (1.0 + (PI * (e - 1.0) / t).cos()) * (lr - eta_min)
                + eta_min
        };
        opt.set_lr(lr);
        self.last_lr = Some(lr);
    }

    /// The number of `step` calls so far.
    pub fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    /// The learning rate set by the last `step`, `None` before any.
    pub fn last_lr(&self) -> Option<f64> {
        self.last_lr
    }
}

fn check_cosine(t_max: f64, eta_min: f64) -> Result<()> {
    if !(t_max >= 1.0 && t_max.fract() == 0.0 && t_max <= (i64::MAX / 2) as f64) {
        return Err(Error::Invalid(format!(
            "CosineAnnealingLR: T_max must be a whole number >= 1, got {t_max}"
        )));
    }
    if !eta_min.is_finite() {
        return Err(Error::Invalid(format!(
            "CosineAnnealingLR: eta_min must be finite, got {eta_min}"
        )));
    }
    Ok(())
}

impl LrScheduler for CosineAnnealingLR {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        CosineAnnealingLR::step(self, opt)
    }
    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }
    fn last_lr(&self) -> Option<f64> {
        self.last_lr
    }
    fn state_dict(&self) -> BTreeMap<String, f64> {
        let mut s = common_state(self.last_epoch, self.base_lr, self.last_lr);
        s.insert("T_max".into(), self.t_max as f64);
        s.insert("eta_min".into(), self.eta_min);
        s
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let name = "CosineAnnealingLR";
        let (last_epoch, base_lr, last_lr) = read_common(state, name, &["T_max", "eta_min"])?;
        let t_max = required(state, name, "T_max")?;
        let eta_min = required(state, name, "eta_min")?;
        check_cosine(t_max, eta_min).map_err(|e| Error::StateDict(e.to_string()))?;
        *self = CosineAnnealingLR {
            t_max: t_max as usize,
            eta_min,
            last_epoch,
            base_lr,
            last_lr,
        };
        Ok(())
    }
}

fn common_state(
    last_epoch: i64,
    base_lr: Option<f64>,
    last_lr: Option<f64>,
) -> BTreeMap<String, f64> {
    let mut s = BTreeMap::from([("last_epoch".to_string(), last_epoch as f64)]);
    if let Some(v) = base_lr {
        s.insert("base_lr".into(), v);
    }
    if let Some(v) = last_lr {
        s.insert("last_lr".into(), v);
    }
    s
}

fn required(state: &BTreeMap<String, f64>, name: &str, key: &str) -> Result<f64> {
    state
        .get(key)
        .copied()
        .ok_or_else(|| Error::StateDict(format!("missing \"{key}\" in the {name} state")))
}

/// Reads `last_epoch`, `base_lr` and `last_lr`, and rejects keys other than those and `own`.
fn read_common(
    state: &BTreeMap<String, f64>,
    name: &str,
    own: &[&str],
) -> Result<(i64, Option<f64>, Option<f64>)> {
    let unexpected: Vec<String> = state
        .keys()
        .filter(|k| {
            !["last_epoch", "base_lr", "last_lr"].contains(&k.as_str())
                && !own.contains(&k.as_str())
        })
        .map(|k| format!("\"{k}\""))
        .collect();
    if !unexpected.is_empty() {
        return Err(Error::StateDict(format!(
            "unexpected key(s) in the {name} state: {}",
            unexpected.join(", ")
        )));
    }
    let last_epoch = required(state, name, "last_epoch")?;
    if !(last_epoch >= 0.0 && last_epoch.fract() == 0.0 && last_epoch < 9.0e15) {
        return Err(Error::StateDict(format!(
            "\"last_epoch\" must be a whole number >= 0, got {last_epoch}"
        )));
    }
    Ok((
        last_epoch as i64,
        state.get("base_lr").copied(),
        state.get("last_lr").copied(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Sgd;
    use crate::tensor::Tensor;
    use ndarray::array;

    fn sgd(lr: f64) -> Sgd {
        Sgd::new(vec![Tensor::parameter(array![0.0f32].into_dyn())], lr).unwrap()
    }

    #[test]
    fn step_lr_decays_every_step_size_epochs() {
        let mut opt = sgd(1.0);
        let mut s = StepLR::new(2, 0.5).unwrap();
        let lrs: Vec<f64> = (0..5)
            .map(|_| {
                s.step(&mut opt);
                opt.lr()
            })
            .collect();
        assert_eq!(lrs, [1.0, 0.5, 0.5, 0.25, 0.25]);
        assert_eq!(s.last_epoch(), 5);
        assert_eq!(s.last_lr(), Some(0.25));
    }

    #[test]
    fn state_round_trip_and_checks() {
        let mut opt = sgd(0.1);
        let mut s = CosineAnnealingLR::new(3, 0.01).unwrap();
        s.step(&mut opt);
        s.step(&mut opt);
        let state = LrScheduler::state_dict(&s);
        let mut t = CosineAnnealingLR::new(10, 0.0).unwrap();
        t.load_state_dict(&state).unwrap();
        assert_eq!(t, s);
        let mut bad = state.clone();
        bad.insert("gamma".into(), 0.5);
        let err = t.load_state_dict(&bad).unwrap_err().to_string();
        assert!(err.contains("\"gamma\""), "{err}");
        let mut step = StepLR::new(3, 0.5).unwrap();
        assert!(
            step.load_state_dict(&state).is_err(),
            "a cosine state is not a StepLR state"
        );
        assert!(StepLR::new(0, 0.5).is_err());
        assert!(CosineAnnealingLR::new(0, 0.0).is_err());
        assert!(CosineAnnealingLR::new(4, f64::NAN).is_err());
    }
}
