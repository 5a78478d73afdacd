//! `ExponentialLR`, `LinearLR`, `LambdaLR` and `SequentialLR`, as
//! `torch.optim.lr_scheduler`: each takes the optimizer in its constructor, records every
//! group's learning rate there as its base, and sets the epoch-0 rates as PyTorch's
//! constructor does (see [`super::scheduler`] for what all schedulers share).
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::{ExponentialLR, LinearLR, LrScheduler, Optimizer, SequentialLR, Sgd};
//! use rnn::Tensor;
//!
//! let w = Tensor::parameter(array![1.0f32].into_dyn());
//! let mut opt = Sgd::new(vec![w], 1.0).unwrap();
//! // Warm up linearly from 0.25 over 3 epochs, then decay by 0.5 per epoch.
//! let warmup = LinearLR::new(&mut opt, 0.25, 1.0, 3).unwrap();
//! let decay = ExponentialLR::new(&mut opt, 0.5).unwrap();
//! let mut sched =
//!     SequentialLR::new(&mut opt, vec![Box::new(warmup), Box::new(decay)], vec![3]).unwrap();
//! let mut lrs = vec![opt.lr()];
//! for _ in 0..5 {
//!     sched.step(&mut opt);
//!     lrs.push(opt.lr());
//! }
//! assert_eq!(lrs, [0.25, 0.5, 0.75, 1.0, 0.5, 0.25]);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use super::scheduler::{
    common_state, group_lrs, per_group, read_common, read_common_with, required, set_each,
};
use super::{LrScheduler, Optimizer};
use crate::error::{Error, Result};

fn state_error(e: Error) -> Error {
    Error::StateDict(e.to_string())
}

/// `ExponentialLR(optimizer, gamma)`: `lr ← lr·gamma` at every epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialLR {
    gamma: f64,
    last_epoch: i64,
    base_lrs: Vec<f64>,
    last_lrs: Vec<f64>,
}

fn check_gamma(gamma: f64) -> Result<()> {
    if gamma.is_finite() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "ExponentialLR: gamma must be finite, got {gamma}"
        )))
    }
}

impl ExponentialLR {
    /// Decays every group's learning rate by a finite `gamma` per epoch.
    pub fn new(opt: &mut dyn Optimizer, gamma: f64) -> Result<ExponentialLR> {
        check_gamma(gamma)?;
        let lrs = group_lrs(opt);
        Ok(ExponentialLR {
            gamma,
            last_epoch: 0,
            base_lrs: lrs.clone(),
            last_lrs: lrs,
        })
    }
}

impl LrScheduler for ExponentialLR {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch += 1;
        let gamma = self.gamma;
        self.last_lrs = set_each(opt, |_, lr| lr * gamma);
    }
    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }
    fn last_lrs(&self) -> Vec<f64> {
        self.last_lrs.clone()
    }
    fn restart(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch = 0;
        let base = self.base_lrs.clone();
        self.last_lrs = set_each(opt, |g, lr| base.get(g).copied().unwrap_or(lr));
    }
    fn rebase(&mut self, base_lrs: &[f64]) {
        self.base_lrs = base_lrs.to_vec();
    }
    fn state_dict(&self) -> BTreeMap<String, f64> {
        let mut s = common_state(self.last_epoch, &self.base_lrs, &self.last_lrs);
        s.insert("gamma".into(), self.gamma);
        s
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let (last_epoch, base_lrs, last_lrs) = read_common(state, "ExponentialLR", &["gamma"])?;
        let gamma = required(state, "ExponentialLR", "gamma")?;
        check_gamma(gamma).map_err(state_error)?;
        *self = ExponentialLR {
            gamma,
            last_epoch,
            base_lrs,
            last_lrs,
        };
        Ok(())
    }
}

/// `LinearLR(optimizer, start_factor=1/3, end_factor=1.0, total_iters=5)`: the learning rate
/// goes linearly from `base_lr·start_factor` (set by the constructor) to `base_lr·end_factor`
/// at epoch `total_iters`, then stays; PyTorch's recursive form:
///
/// ```text
/// lr ← lr·(1 + (end − start) / (total·start + (e − 1)·(end − start)))    for 0 < e ≤ total
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LinearLR {
    start_factor: f64,
    end_factor: f64,
    total_iters: usize,
    last_epoch: i64,
    base_lrs: Vec<f64>,
    last_lrs: Vec<f64>,
}

impl LinearLR {
    /// PyTorch's default `start_factor`, `1/3`.
    pub const DEFAULT_START_FACTOR: f64 = 1.0 / 3.0;

    /// `start_factor` in (0, 1], `end_factor` in [0, 1], over `total_iters` epochs (PyTorch's
    /// defaults: [`LinearLR::DEFAULT_START_FACTOR`], 1.0, 5). Sets every group's learning rate
    /// to `lr·start_factor`, as PyTorch's constructor does.
    pub fn new(
        opt: &mut dyn Optimizer,
        start_factor: f64,
        end_factor: f64,
        total_iters: usize,
    ) -> Result<LinearLR> {
        check_linear(start_factor, end_factor)?;
        let base_lrs = group_lrs(opt);
        let last_lrs = set_each(opt, |_, lr| lr * start_factor);
        Ok(LinearLR {
            start_factor,
            end_factor,
            total_iters,
            last_epoch: 0,
            base_lrs,
            last_lrs,
        })
    }
}

fn check_linear(start_factor: f64, end_factor: f64) -> Result<()> {
    if !(start_factor > 0.0 && start_factor <= 1.0) {
        return Err(Error::Invalid(format!(
            "LinearLR: Starting multiplicative factor expected to be greater than 0 and less or \
             equal to 1 (got start_factor = {start_factor})"
        )));
    }
    if !(0.0..=1.0).contains(&end_factor) {
        return Err(Error::Invalid(format!(
            "LinearLR: Ending multiplicative factor expected to be between 0 and 1 (got \
             end_factor = {end_factor})"
        )));
    }
    Ok(())
}

impl LrScheduler for LinearLR {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch += 1;
        let (e, total) = (self.last_epoch, self.total_iters as i64);
        let (start, end) = (self.start_factor, self.end_factor);
        self.last_lrs = set_each(opt, |_, lr| {
            if e > total {
                lr
            } else {
                lr * (1.0 + (end - start) / (total as f64 * start + (e - 1) as f64 * (end - start)))
            }
        });
    }
    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }
    fn last_lrs(&self) -> Vec<f64> {
        self.last_lrs.clone()
    }
    fn restart(&mut self, opt: &mut dyn Optimizer) {
        // _get_closed_form_lr at 0: base_lr * (start + (end - start) * 0 / total).
        self.last_epoch = 0;
        let (start, end, total) = (self.start_factor, self.end_factor, self.total_iters as f64);
        let base = self.base_lrs.clone();
        self.last_lrs = set_each(opt, |g, lr| {
            base.get(g).copied().unwrap_or(lr) * (start + (end - start) * 0.0 / total)
        });
    }
    fn rebase(&mut self, base_lrs: &[f64]) {
        self.base_lrs = base_lrs.to_vec();
    }
    fn state_dict(&self) -> BTreeMap<String, f64> {
        let mut s = common_state(self.last_epoch, &self.base_lrs, &self.last_lrs);
        s.insert("start_factor".into(), self.start_factor);
        s.insert("end_factor".into(), self.end_factor);
        s.insert("total_iters".into(), self.total_iters as f64);
        s
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let name = "LinearLR";
        let own = ["start_factor", "end_factor", "total_iters"];
        let (last_epoch, base_lrs, last_lrs) = read_common(state, name, &own)?;
        let start_factor = required(state, name, "start_factor")?;
        let end_factor = required(state, name, "end_factor")?;
        let total_iters = required(state, name, "total_iters")?;
        check_linear(start_factor, end_factor).map_err(state_error)?;
        if !(total_iters >= 0.0 && total_iters.fract() == 0.0 && total_iters < 9.0e15) {
            return Err(Error::StateDict(format!(
                "\"total_iters\" must be a whole number >= 0, got {total_iters}"
            )));
        }
        *self = LinearLR {
            start_factor,
            end_factor,
            total_iters: total_iters as usize,
            last_epoch,
            base_lrs,
            last_lrs,
        };
        Ok(())
    }
}

/// A learning-rate multiplier as a function of the epoch.
pub type LrLambda = Box<dyn Fn(i64) -> f64>;

/// `LambdaLR(optimizer, lr_lambda)`: `lr = base_lr·λ(epoch)`, with one closure for every group
/// or one per group. The closures are not part of the state (as in PyTorch, which saves only
/// callable objects, not functions): a resumed run builds the scheduler with the same
/// closures, then loads the state.
pub struct LambdaLR {
    lambdas: Vec<LrLambda>,
    last_epoch: i64,
    base_lrs: Vec<f64>,
    last_lrs: Vec<f64>,
}

impl fmt::Debug for LambdaLR {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaLR")
            .field("lambdas", &self.lambdas.len())
            .field("last_epoch", &self.last_epoch)
            .field("base_lrs", &self.base_lrs)
            .field("last_lrs", &self.last_lrs)
            .finish()
    }
}

impl LambdaLR {
    /// One closure for every group; sets each group's learning rate to `base_lr·λ(0)`.
    pub fn new(opt: &mut dyn Optimizer, lr_lambda: impl Fn(i64) -> f64 + 'static) -> LambdaLR {
        let shared: std::rc::Rc<dyn Fn(i64) -> f64> = std::rc::Rc::new(lr_lambda);
        let lambdas = (0..opt.num_groups())
            .map(|_| {
                let f = shared.clone();
                Box::new(move |e| f(e)) as LrLambda
            })
            .collect();
        Self::per_group(opt, lambdas).expect("one closure per group")
    }

    /// One closure per group (PyTorch's list of lambdas); fails unless there are as many as
    /// groups ("Expected N lr_lambdas, but got M").
    pub fn per_group(opt: &mut dyn Optimizer, lambdas: Vec<LrLambda>) -> Result<LambdaLR> {
        if lambdas.len() != opt.num_groups() {
            return Err(Error::Invalid(format!(
                "LambdaLR: Expected {} lr_lambdas, but got {}",
                opt.num_groups(),
                lambdas.len()
            )));
        }
        let base_lrs = group_lrs(opt);
        let mut s = LambdaLR {
            lambdas,
            last_epoch: 0,
            base_lrs,
            last_lrs: Vec::new(),
        };
        s.apply(opt);
        Ok(s)
    }

    fn apply(&mut self, opt: &mut dyn Optimizer) {
        let e = self.last_epoch;
        let (base, lambdas) = (&self.base_lrs, &self.lambdas);
        self.last_lrs = set_each(opt, |g, lr| match (base.get(g), lambdas.get(g)) {
            (Some(b), Some(f)) => b * f(e),
            _ => lr,
        });
    }
}

impl LrScheduler for LambdaLR {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch += 1;
        self.apply(opt);
    }
    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }
    fn last_lrs(&self) -> Vec<f64> {
        self.last_lrs.clone()
    }
    fn restart(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch = 0;
        self.apply(opt);
    }
    fn rebase(&mut self, base_lrs: &[f64]) {
        self.base_lrs = base_lrs.to_vec();
    }
    fn state_dict(&self) -> BTreeMap<String, f64> {
        common_state(self.last_epoch, &self.base_lrs, &self.last_lrs)
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let (last_epoch, base_lrs, last_lrs) = read_common(state, "LambdaLR", &[])?;
        if base_lrs.len() != self.lambdas.len() {
            return Err(Error::StateDict(format!(
                "the LambdaLR state has {} groups, this scheduler {}",
                base_lrs.len(),
                self.lambdas.len()
            )));
        }
        self.last_epoch = last_epoch;
        self.base_lrs = base_lrs;
        self.last_lrs = last_lrs;
        Ok(())
    }
}

/// `SequentialLR(optimizer, schedulers, milestones)`: runs `schedulers[0]` until epoch
/// `milestones[0]`, then `schedulers[1]` restarted from epoch 0 (`step(0)`, its closed form),
/// and so on.
///
/// As PyTorch's constructor, it sets the learning rates back to the optimizer's initial ones
/// (the base learning rates of the first child that recorded them), then restarts the first
/// scheduler. `last_epoch` counts its own steps.
pub struct SequentialLR {
    schedulers: Vec<Box<dyn LrScheduler>>,
    milestones: Vec<i64>,
    last_epoch: i64,
    last_lrs: Vec<f64>,
}

impl fmt::Debug for SequentialLR {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequentialLR")
            .field("schedulers", &self.schedulers.len())
            .field("milestones", &self.milestones)
            .field("last_epoch", &self.last_epoch)
            .finish()
    }
}

impl SequentialLR {
    /// `schedulers` (one more than `milestones`, which must increase), all built on `opt`.
    pub fn new(
        opt: &mut dyn Optimizer,
        mut schedulers: Vec<Box<dyn LrScheduler>>,
        milestones: Vec<i64>,
    ) -> Result<SequentialLR> {
        if schedulers.is_empty() {
            return Err(Error::Invalid(
                "SequentialLR expects at least one scheduler".into(),
            ));
        }
        if milestones.len() + 1 != schedulers.len() {
            return Err(Error::Invalid(format!(
                "Sequential Schedulers expects number of schedulers provided to be one more than \
                 the number of milestone points, but got number of schedulers {} and the number \
                 of milestones to be equal to {}",
                schedulers.len(),
                milestones.len()
            )));
        }
        if milestones.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::Invalid(format!(
                "SequentialLR: milestones must not decrease, got {milestones:?}"
            )));
        }
        // The optimizer's initial learning rates: the first recorded base, else the current.
        let initial = schedulers
            .iter()
            .map(|s| s.state_dict())
            .map(|s| per_group(&s, "base_lr"))
            .find(|b| b.len() == opt.num_groups())
            .unwrap_or_else(|| group_lrs(opt));
        // Every child's base is the initial rates; then the first restarts from them.
        for s in schedulers.iter_mut() {
            s.rebase(&initial);
        }
        set_each(opt, |g, _| initial[g]);
        schedulers[0].restart(opt);
        let last_lrs = schedulers[0].last_lrs();
        Ok(SequentialLR {
            schedulers,
            milestones,
            last_epoch: 0,
            last_lrs,
        })
    }
}

impl LrScheduler for SequentialLR {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch += 1;
        // bisect_right(milestones, last_epoch)
        let idx = self.milestones.partition_point(|&m| m <= self.last_epoch);
        let s = &mut self.schedulers[idx];
        if idx > 0 && self.milestones[idx - 1] == self.last_epoch {
            s.restart(opt);
        } else {
            s.step(opt);
        }
        self.last_lrs = s.last_lrs();
    }
    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }
    fn last_lrs(&self) -> Vec<f64> {
        self.last_lrs.clone()
    }
    fn restart(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch = 0;
        self.schedulers[0].restart(opt);
        self.last_lrs = self.schedulers[0].last_lrs();
    }
    fn rebase(&mut self, base_lrs: &[f64]) {
        self.schedulers.iter_mut().for_each(|s| s.rebase(base_lrs));
    }
    /// `last_epoch`, `last_lr` per group, `milestone.{k}`, and each child's state under
    /// `scheduler{k}.`.
    fn state_dict(&self) -> BTreeMap<String, f64> {
        let mut s = common_state(self.last_epoch, &[], &self.last_lrs);
        for (k, &m) in self.milestones.iter().enumerate() {
            s.insert(format!("milestone.{k}"), m as f64);
        }
        for (k, child) in self.schedulers.iter().enumerate() {
            for (key, v) in child.state_dict() {
                s.insert(format!("scheduler{k}.{key}"), v);
            }
        }
        s
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let mut own = BTreeMap::new();
        let mut children = vec![BTreeMap::new(); self.schedulers.len()];
        for (key, &v) in state {
            let child = key.strip_prefix("scheduler").and_then(|rest| {
                let (k, inner) = rest.split_once('.')?;
                Some((k.parse::<usize>().ok()?, inner))
            });
            match child {
                Some((k, inner)) if k < children.len() => {
                    children[k].insert(inner.to_string(), v);
                }
                _ => {
                    own.insert(key.clone(), v);
                }
            }
        }
        let milestone_keys: Vec<String> = (0..self.milestones.len())
            .map(|k| format!("milestone.{k}"))
            .collect();
        let names: Vec<&str> = milestone_keys.iter().map(String::as_str).collect();
        let (last_epoch, _, last_lrs) = read_common_with(&own, "SequentialLR", &names, &[])?;
        let milestones = milestone_keys
            .iter()
            .map(|k| required(&own, "SequentialLR", k).map(|m| m as i64))
            .collect::<Result<Vec<_>>>()?;
        // Children are checked before any of them changes.
        let mut saved: Vec<BTreeMap<String, f64>> =
            self.schedulers.iter().map(|s| s.state_dict()).collect();
        for (k, (child, state)) in self.schedulers.iter_mut().zip(&children).enumerate() {
            if let Err(e) = child.load_state_dict(state) {
                for (c, s) in self.schedulers.iter_mut().zip(saved.iter_mut()).take(k) {
                    let _ = c.load_state_dict(s);
                }
                return Err(e);
            }
        }
        self.last_epoch = last_epoch;
        self.last_lrs = last_lrs;
        self.milestones = milestones;
        Ok(())
    }
}
