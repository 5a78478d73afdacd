//! Learning-rate schedulers, as `torch.optim.lr_scheduler`: [`StepLR`], [`CosineAnnealingLR`]
//! here; [`ExponentialLR`](super::ExponentialLR), [`LinearLR`](super::LinearLR),
//! [`LambdaLR`](super::LambdaLR), [`SequentialLR`](super::SequentialLR),
//! [`OneCycleLR`](super::OneCycleLR) and [`ReduceLROnPlateau`](super::ReduceLROnPlateau) in
//! their own files.
//!
//! Call `scheduler.step(&mut optimizer)` once per epoch (or per batch for `OneCycleLR`), after
//! `optimizer.step()`, as in PyTorch. Every scheduler acts on each parameter group with its
//! own base learning rate, and computes the new rates from the optimizer's current ones with
//! PyTorch's recursive formulas in f64, so the learning rates are PyTorch's to the bit
//! (rounding included: after a period, cosine annealing returns to `0.10000000000000002`, not
//! `0.1`).
//!
//! PyTorch takes the optimizer in the constructor and records its learning rates there as
//! `base_lrs`. `StepLR` and `CosineAnnealingLR` are built alone and record the optimizer's
//! learning rates at their first `step` (the same values, unless the rates were changed by
//! hand in between); the others take the optimizer in their constructor, as in PyTorch, since
//! they change the learning rate there. `last_epoch` counts the `step` calls: 0 after
//! construction, as in PyTorch.
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
    /// Ends an epoch: increments `last_epoch` and sets the optimizer's learning rates.
    fn step(&mut self, opt: &mut dyn Optimizer);
    /// The number of `step` calls so far (`scheduler.last_epoch`; 0 after construction).
    fn last_epoch(&self) -> i64;
    /// The learning rates set by the last `step` or the constructor, one per group
    /// (`get_last_lr()`); empty before any.
    fn last_lrs(&self) -> Vec<f64>;
    /// The first group's learning rate set by the last `step` (`get_last_lr()[0]`), `None`
    /// before any.
    fn last_lr(&self) -> Option<f64> {
        self.last_lrs().first().copied()
    }
    /// `scheduler.step(0)`, as `SequentialLR` calls it at a milestone: `last_epoch` becomes 0
    /// and the learning rates the schedule's values at epoch 0 (its closed form from the
    /// base learning rates).
    fn restart(&mut self, opt: &mut dyn Optimizer);
    /// Sets the base learning rates (PyTorch's `initial_lr` of each group, which every
    /// scheduler on an optimizer shares): what `SequentialLR` gives its children. `OneCycleLR`
    /// derives its rates from `max_lr` and ignores it.
    fn rebase(&mut self, base_lrs: &[f64]);
    /// `scheduler.state_dict()`: hyperparameters, `last_epoch`, the base and last learning
    /// rates (group 0's as `base_lr` and `last_lr`, group `g`'s as `group{g}.base_lr`...), all
    /// as f64.
    fn state_dict(&self) -> BTreeMap<String, f64>;
    /// Restores a state from [`LrScheduler::state_dict`] of the same kind of scheduler; the
    /// saved hyperparameters replace the current ones, as in PyTorch. Nothing changes if the
    /// state is invalid or has unknown keys.
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()>;
}

impl std::fmt::Debug for dyn LrScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LrScheduler(last_epoch={})", self.last_epoch())
    }
}

/// The learning rate of every group.
pub(crate) fn group_lrs(opt: &dyn Optimizer) -> Vec<f64> {
    (0..opt.num_groups()).map(|g| opt.group_lr(g)).collect()
}

/// Records the base learning rates of groups that have none yet (all of them at the first
/// step, a group added since later).
fn record_base(base_lrs: &mut Vec<f64>, opt: &dyn Optimizer) {
    for g in base_lrs.len()..opt.num_groups() {
        base_lrs.push(opt.group_lr(g));
    }
}

/// Sets each group's learning rate to `f(g, current lr)`; returns the new rates.
pub(crate) fn set_each(opt: &mut dyn Optimizer, mut f: impl FnMut(usize, f64) -> f64) -> Vec<f64> {
    (0..opt.num_groups())
        .map(|g| {
            let lr = f(g, opt.group_lr(g));
            opt.set_group_lr(g, lr);
            lr
        })
        .collect()
}

/// `StepLR(optimizer, step_size, gamma)`: multiplies the learning rate by `gamma` every
/// `step_size` epochs: `lr ← lr·gamma` when `last_epoch` is a non-zero multiple of `step_size`.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLR {
    step_size: usize,
    gamma: f64,
    last_epoch: i64,
    base_lrs: Vec<f64>,
    last_lrs: Vec<f64>,
}

impl StepLR {
    /// `step_size` ≥ 1 epochs between decays, by a finite `gamma` (PyTorch's default is 0.1).
    pub fn new(step_size: usize, gamma: f64) -> Result<StepLR> {
        check_step_lr(step_size as f64, gamma)?;
        Ok(StepLR {
            step_size,
            gamma,
            last_epoch: 0,
            base_lrs: Vec::new(),
            last_lrs: Vec::new(),
        })
    }

    /// Ends an epoch (see [`LrScheduler::step`]).
    pub fn step(&mut self, opt: &mut dyn Optimizer) {
        record_base(&mut self.base_lrs, opt);
        self.last_epoch += 1;
        // get_lr(): group["lr"] unless last_epoch is a non-zero multiple of step_size.
        let decay = self.last_epoch % self.step_size as i64 == 0;
        let gamma = self.gamma;
        self.last_lrs = set_each(opt, |_, lr| if decay { lr * gamma } else { lr });
    }

    /// The number of `step` calls so far.
    pub fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    /// The first group's learning rate set by the last `step`, `None` before any.
    pub fn last_lr(&self) -> Option<f64> {
        self.last_lrs.first().copied()
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
    fn last_lrs(&self) -> Vec<f64> {
        self.last_lrs.clone()
    }
    fn restart(&mut self, opt: &mut dyn Optimizer) {
        // _get_closed_form_lr at 0: base_lr * gamma ** (0 // step_size).
        record_base(&mut self.base_lrs, opt);
        self.last_epoch = 0;
        let base = self.base_lrs.clone();
        self.last_lrs = set_each(opt, |g, _| base[g]);
    }
    fn rebase(&mut self, base_lrs: &[f64]) {
        self.base_lrs = base_lrs.to_vec();
    }
    fn state_dict(&self) -> BTreeMap<String, f64> {
        let mut s = common_state(self.last_epoch, &self.base_lrs, &self.last_lrs);
        s.insert("step_size".into(), self.step_size as f64);
        s.insert("gamma".into(), self.gamma);
        s
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let (last_epoch, base_lrs, last_lrs) =
            read_common(state, "StepLR", &["step_size", "gamma"])?;
        let step_size = required(state, "StepLR", "step_size")?;
        let gamma = required(state, "StepLR", "gamma")?;
        check_step_lr(step_size, gamma).map_err(|e| Error::StateDict(e.to_string()))?;
        *self = StepLR {
            step_size: step_size as usize,
            gamma,
            last_epoch,
            base_lrs,
            last_lrs,
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
    base_lrs: Vec<f64>,
    last_lrs: Vec<f64>,
}

impl CosineAnnealingLR {
    /// Half a period of `t_max` ≥ 1 epochs, down to a finite `eta_min` (PyTorch's default 0).
    pub fn new(t_max: usize, eta_min: f64) -> Result<CosineAnnealingLR> {
        check_cosine(t_max as f64, eta_min)?;
        Ok(CosineAnnealingLR {
            t_max,
            eta_min,
            last_epoch: 0,
            base_lrs: Vec::new(),
            last_lrs: Vec::new(),
        })
    }

    /// Ends an epoch (see [`LrScheduler::step`]).
    pub fn step(&mut self, opt: &mut dyn Optimizer) {
        record_base(&mut self.base_lrs, opt);
        self.last_epoch += 1;
        let (e, t, eta_min) = (self.last_epoch as f64, self.t_max as f64, self.eta_min);
        let restart =
            (self.last_epoch - 1 - self.t_max as i64).rem_euclid(2 * self.t_max as i64) == 0;
        let base = &self.base_lrs;
        // PyTorch's get_lr(), operation for operation (Python's `%` is rem_euclid).
        self.last_lrs = set_each(opt, |g, lr| {
            if restart {
                lr + (base[g] - eta_min) * (1.0 - (PI / t).cos()) / 2.0
            } else {
                (1.0 + (PI * e / t).cos()) / (1.0 + (PI * (e - 1.0) / t).cos()) * (lr - eta_min)
                    + eta_min
            }
        });
    }

    /// The number of `step` calls so far.
    pub fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    /// The first group's learning rate set by the last `step`, `None` before any.
    pub fn last_lr(&self) -> Option<f64> {
        self.last_lrs.first().copied()
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
    fn last_lrs(&self) -> Vec<f64> {
        self.last_lrs.clone()
    }
    fn restart(&mut self, opt: &mut dyn Optimizer) {
        // The closed form at 0 is the base learning rate.
        record_base(&mut self.base_lrs, opt);
        self.last_epoch = 0;
        let base = self.base_lrs.clone();
        self.last_lrs = set_each(opt, |g, _| base[g]);
    }
    fn rebase(&mut self, base_lrs: &[f64]) {
        self.base_lrs = base_lrs.to_vec();
    }
    fn state_dict(&self) -> BTreeMap<String, f64> {
        let mut s = common_state(self.last_epoch, &self.base_lrs, &self.last_lrs);
        s.insert("T_max".into(), self.t_max as f64);
        s.insert("eta_min".into(), self.eta_min);
        s
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let name = "CosineAnnealingLR";
        let (last_epoch, base_lrs, last_lrs) = read_common(state, name, &["T_max", "eta_min"])?;
        let t_max = required(state, name, "T_max")?;
        let eta_min = required(state, name, "eta_min")?;
        check_cosine(t_max, eta_min).map_err(|e| Error::StateDict(e.to_string()))?;
        *self = CosineAnnealingLR {
            t_max: t_max as usize,
            eta_min,
            last_epoch,
            base_lrs,
            last_lrs,
        };
        Ok(())
    }
}

/// The state key of per-group value `name` of group `g`: `name` for group 0, else
/// `group{g}.name`.
pub(crate) fn group_key(g: usize, name: &str) -> String {
    if g == 0 {
        name.to_string()
    } else {
        format!("group{g}.{name}")
    }
}

/// `last_epoch`, and `base_lr` and `last_lr` of every group that has them.
pub(crate) fn common_state(
    last_epoch: i64,
    base_lrs: &[f64],
    last_lrs: &[f64],
) -> BTreeMap<String, f64> {
    let mut s = BTreeMap::from([("last_epoch".to_string(), last_epoch as f64)]);
    for (g, &v) in base_lrs.iter().enumerate() {
        s.insert(group_key(g, "base_lr"), v);
    }
    for (g, &v) in last_lrs.iter().enumerate() {
        s.insert(group_key(g, "last_lr"), v);
    }
    s
}

pub(crate) fn required(state: &BTreeMap<String, f64>, name: &str, key: &str) -> Result<f64> {
    state
        .get(key)
        .copied()
        .ok_or_else(|| Error::StateDict(format!("missing \"{key}\" in the {name} state")))
}

/// The values of per-group key `name` for groups 0, 1, ... as long as they are present.
pub(crate) fn per_group(state: &BTreeMap<String, f64>, name: &str) -> Vec<f64> {
    (0..)
        .map_while(|g| state.get(&group_key(g, name)).copied())
        .collect()
}

/// Whether `key` is per-group key `name` of some group.
fn is_group_key(key: &str, name: &str) -> bool {
    key == name
        || key
            .strip_prefix("group")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(g, n)| n == name && g.parse::<usize>().is_ok_and(|g| g > 0))
}

/// Reads `last_epoch` and the per-group `base_lr` and `last_lr`, and rejects keys other than
/// those, the per-group keys `group_own` and the keys `own`.
pub(crate) fn read_common_with(
    state: &BTreeMap<String, f64>,
    name: &str,
    own: &[&str],
    group_own: &[&str],
) -> Result<(i64, Vec<f64>, Vec<f64>)> {
    let unexpected: Vec<String> = state
        .keys()
        .filter(|k| {
            k.as_str() != "last_epoch"
                && !own.contains(&k.as_str())
                && !["base_lr", "last_lr"]
                    .iter()
                    .chain(group_own)
                    .any(|n| is_group_key(k, n))
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
        per_group(state, "base_lr"),
        per_group(state, "last_lr"),
    ))
}

/// [`read_common_with`] without per-group keys of the scheduler's own.
pub(crate) fn read_common(
    state: &BTreeMap<String, f64>,
    name: &str,
    own: &[&str],
) -> Result<(i64, Vec<f64>, Vec<f64>)> {
    read_common_with(state, name, own, &[])
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
