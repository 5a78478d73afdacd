//! `OneCycleLR`, as `torch.optim.lr_scheduler.OneCycleLR`: the 1cycle policy, stepped once
//! per batch.
//!
//! With `initial = max_lr / div_factor` and `min = initial / final_div_factor`, over
//! `total_steps` steps: the learning rate rises from `initial` to `max_lr` until step
//! `pct_start·total_steps − 1`, then falls to `min` at step `total_steps − 1`; with
//! `three_phase` it falls back to `initial` at step `2·pct_start·total_steps − 2` first, then to
//! `min`. Momentum (SGD's and RMSprop's `momentum`, Adam's β₁) moves the other way between
//! `max_momentum` and `base_momentum` when `cycle_momentum` (the default). Within a phase from
//! step `a` to step `b`, at step `t`, `pct = (t − a)/(b − a)` and
//!
//! ```text
//! cos:     v = end + (start − end)/2 · (cos(π·pct) + 1)      (the default)
//! linear:  v = (end − start)·pct + start
//! ```
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::{OneCycleLR, LrScheduler, Optimizer, Sgd};
//! use rnn::Tensor;
//!
//! let w = Tensor::parameter(array![1.0f32].into_dyn());
//! let mut opt = Sgd::new(vec![w], 0.5).unwrap().with_momentum(0.9).unwrap();
//! let mut sched = OneCycleLR::new(&mut opt, 1.0, 10).unwrap();
//! // max_lr / 25, through the cosine formula: PyTorch's 0.040000000000000036 exactly.
//! assert_eq!(opt.lr(), 0.040000000000000036);
//! assert!((opt.group_momentum(0).unwrap() - 0.95).abs() < 1e-12);
//! for _ in 0..2 {
//!     sched.step(&mut opt);
//! }
//! assert_eq!(opt.lr(), 1.0); // the peak at step 0.3·10 − 1 = 2
//! assert_eq!(opt.group_momentum(0), Some(0.85));
//! ```

use std::collections::BTreeMap;
use std::f64::consts::PI;

use super::scheduler::{common_state, group_key, per_group, read_common_with, required};
use super::{LrScheduler, Optimizer};
use crate::error::{Error, Result};

/// How `OneCycleLR` moves between two values (`anneal_strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Anneal {
    /// `'cos'`: cosine annealing (the default).
    #[default]
    Cos,
    /// `'linear'`: linear annealing.
    Linear,
}

impl Anneal {
    fn apply(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// `OneCycleLR`'s arguments besides the optimizer, with PyTorch's defaults (see
/// [`OneCycleOptions::new`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OneCycleOptions {
    /// `max_lr`: one value for every group, or one per group.
    pub max_lr: Vec<f64>,
    /// `total_steps` ≥ 1 (PyTorch's `epochs·steps_per_epoch` is that product).
    pub total_steps: usize,
    /// `pct_start` in [0, 1] (0.3): the fraction of the steps spent rising.
    pub pct_start: f64,
    /// `anneal_strategy` (cos).
    pub anneal_strategy: Anneal,
    /// `cycle_momentum` (true): move the momentum (or β₁) against the learning rate.
    pub cycle_momentum: bool,
    /// `base_momentum` (0.85): the momentum at the learning rate's peak.
    pub base_momentum: f64,
    /// `max_momentum` (0.95): the momentum at the start and at the end.
    pub max_momentum: f64,
    /// `div_factor` (25): `initial_lr = max_lr / div_factor`.
    pub div_factor: f64,
    /// `final_div_factor` (1e4): `min_lr = initial_lr / final_div_factor`.
    pub final_div_factor: f64,
    /// `three_phase` (false): fall back to `initial_lr` before annealing to `min_lr`.
    pub three_phase: bool,
}

impl OneCycleOptions {
    /// PyTorch's defaults for `max_lr` (every group) over `total_steps` steps.
    pub fn new(max_lr: f64, total_steps: usize) -> OneCycleOptions {
        OneCycleOptions {
            max_lr: vec![max_lr],
            total_steps,
            pct_start: 0.3,
            anneal_strategy: Anneal::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
}

/// One phase: ends at `end_step`, from `start` to `end` for the learning rate (indices into
/// `[initial, max, min]`) and the momentum (into `[max_momentum, base_momentum]`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Phase {
    end_step: f64,
    lr: (usize, usize),
    momentum: (usize, usize),
}

/// `OneCycleLR(optimizer, max_lr, total_steps, ...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct OneCycleLR {
    options: OneCycleOptions,
    phases: Vec<Phase>,
    /// Per group: `[initial_lr, max_lr, min_lr]`.
    lrs: Vec<[f64; 3]>,
    last_epoch: i64,
    last_lrs: Vec<f64>,
}

/// PyTorch's `_schedule_phases` for `o`.
fn phases(o: &OneCycleOptions) -> Vec<Phase> {
    let total = o.total_steps as f64;
    let rise = Phase {
        end_step: o.pct_start * total - 1.0,
        lr: (INITIAL, MAX),
        momentum: (MAX_M, BASE_M),
    };
    if o.three_phase {
        vec![
            rise,
            Phase {
                end_step: 2.0 * o.pct_start * total - 2.0,
                lr: (MAX, INITIAL),
                momentum: (BASE_M, MAX_M),
            },
            Phase {
                end_step: total - 1.0,
                lr: (INITIAL, MIN),
                momentum: (MAX_M, MAX_M),
            },
        ]
    } else {
        vec![
            rise,
            Phase {
                end_step: total - 1.0,
                lr: (MAX, MIN),
                momentum: (BASE_M, MAX_M),
            },
        ]
    }
}

const INITIAL: usize = 0;
const MAX: usize = 1;
const MIN: usize = 2;
const MAX_M: usize = 0;
const BASE_M: usize = 1;

impl OneCycleLR {
    /// `OneCycleLR(optimizer, max_lr, total_steps)` with PyTorch's defaults.
    pub fn new(opt: &mut dyn Optimizer, max_lr: f64, total_steps: usize) -> Result<OneCycleLR> {
        Self::with_options(opt, OneCycleOptions::new(max_lr, total_steps))
    }

    /// `OneCycleLR` with every argument. Sets each group's learning rate to `initial_lr`
    /// and, with `cycle_momentum`, its momentum to `max_momentum`, as PyTorch's constructor.
    /// Errors with PyTorch's texts on a `total_steps` of 0, a `pct_start` outside [0, 1], a
    /// `max_lr` list of the wrong length, or `cycle_momentum` on an optimizer without
    /// momentum or β₁ (Adagrad).
    pub fn with_options(opt: &mut dyn Optimizer, options: OneCycleOptions) -> Result<OneCycleLR> {
        let o = &options;
        if o.total_steps == 0 {
            return Err(Error::Invalid(format!(
                "Expected positive integer total_steps, but got {}",
                o.total_steps
            )));
        }
        if !(0.0..=1.0).contains(&o.pct_start) {
            return Err(Error::Invalid(format!(
                "Expected float between 0 and 1 pct_start, but got {}",
                o.pct_start
            )));
        }
        let groups = opt.num_groups();
        let max_lrs = match o.max_lr.len() {
            1 => vec![o.max_lr[0]; groups],
            n if n == groups => o.max_lr.clone(),
            n => {
                return Err(Error::Invalid(format!(
                    "expected {groups} values for max_lr, got {n}"
                )))
            }
        };
        if o.cycle_momentum && (0..groups).any(|g| opt.group_momentum(g).is_none()) {
            return Err(Error::Invalid(
                "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
                    .into(),
            ));
        }
        let phases = phases(o);
        let lrs = max_lrs
            .iter()
            .map(|&m| {
                let initial = m / o.div_factor;
                [initial, m, initial / o.final_div_factor]
            })
            .collect();
        if o.cycle_momentum {
            for g in 0..groups {
                opt.set_group_momentum(g, o.max_momentum);
            }
        }
        let mut s = OneCycleLR {
            options,
            phases,
            lrs,
            last_epoch: 0,
            last_lrs: Vec::new(),
        };
        s.apply(opt);
        Ok(s)
    }

    /// One step; PyTorch's error once `total_steps` is exceeded ("Tried to step N times. The
    /// specified number of total steps is M"), the learning rates then unchanged.
    pub fn try_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        if self.last_epoch + 1 > self.options.total_steps as i64 {
            return Err(Error::Invalid(format!(
                "Tried to step {} times. The specified number of total steps is {}",
                self.last_epoch + 1,
                self.options.total_steps
            )));
        }
        self.last_epoch += 1;
        self.apply(opt);
        Ok(())
    }

    /// PyTorch's `get_lr()` at `last_epoch`, applied to every group.
    fn apply(&mut self, opt: &mut dyn Optimizer) {
        let t = self.last_epoch as f64;
        let o = &self.options;
        let momenta = [o.max_momentum, o.base_momentum];
        let mut last = Vec::with_capacity(self.lrs.len());
        for (g, lrs) in self.lrs.iter().enumerate() {
            let mut start_step = 0.0;
            let (mut lr, mut momentum) = (lrs[INITIAL], momenta[MAX_M]);
            for (i, phase) in self.phases.iter().enumerate() {
                if t <= phase.end_step || i == self.phases.len() - 1 {
                    let pct = (t - start_step) / (phase.end_step - start_step);
                    lr = o
                        .anneal_strategy
                        .apply(lrs[phase.lr.0], lrs[phase.lr.1], pct);
                    momentum = o.anneal_strategy.apply(
                        momenta[phase.momentum.0],
                        momenta[phase.momentum.1],
                        pct,
                    );
                    break;
                }
                start_step = phase.end_step;
            }
            if g < opt.num_groups() {
                opt.set_group_lr(g, lr);
                if o.cycle_momentum {
                    opt.set_group_momentum(g, momentum);
                }
            }
            last.push(lr);
        }
        self.last_lrs = last;
    }
}

impl LrScheduler for OneCycleLR {
    /// See [`OneCycleLR::try_step`]; past `total_steps` this changes nothing.
    fn step(&mut self, opt: &mut dyn Optimizer) {
        let _ = self.try_step(opt);
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
    fn rebase(&mut self, _base_lrs: &[f64]) {}
    /// `last_epoch`, `last_lr`, `initial_lr`, `max_lr`, `min_lr` per group, and the options
    /// (`anneal_strategy` 0 = cos, 1 = linear; flags 0 or 1).
    fn state_dict(&self) -> BTreeMap<String, f64> {
        let o = &self.options;
        let mut s = common_state(self.last_epoch, &[], &self.last_lrs);
        for (g, lrs) in self.lrs.iter().enumerate() {
            s.insert(group_key(g, "initial_lr"), lrs[INITIAL]);
            s.insert(group_key(g, "max_lr"), lrs[MAX]);
            s.insert(group_key(g, "min_lr"), lrs[MIN]);
        }
        let flag = |b: bool| f64::from(u8::from(b));
        for (k, v) in [
            ("total_steps", o.total_steps as f64),
            ("pct_start", o.pct_start),
            (
                "anneal_strategy",
                f64::from(u8::from(o.anneal_strategy == Anneal::Linear)),
            ),
            ("cycle_momentum", flag(o.cycle_momentum)),
            ("base_momentum", o.base_momentum),
            ("max_momentum", o.max_momentum),
            ("div_factor", o.div_factor),
            ("final_div_factor", o.final_div_factor),
            ("three_phase", flag(o.three_phase)),
        ] {
            s.insert(k.into(), v);
        }
        s
    }
    fn load_state_dict(&mut self, state: &BTreeMap<String, f64>) -> Result<()> {
        let name = "OneCycleLR";
        let own = [
            "total_steps",
            "pct_start",
            "anneal_strategy",
            "cycle_momentum",
            "base_momentum",
            "max_momentum",
            "div_factor",
            "final_div_factor",
            "three_phase",
        ];
        let (last_epoch, _, last_lrs) =
            read_common_with(state, name, &own, &["initial_lr", "max_lr", "min_lr"])?;
        let mut o = self.options.clone();
        let get = |k: &str| required(state, name, k);
        let total_steps = get("total_steps")?;
        if !(total_steps >= 1.0 && total_steps.fract() == 0.0 && total_steps < 9.0e15) {
            return Err(Error::StateDict(format!(
                "\"total_steps\" must be a whole number >= 1, got {total_steps}"
            )));
        }
        o.total_steps = total_steps as usize;
        o.pct_start = get("pct_start")?;
        o.anneal_strategy = if get("anneal_strategy")? == 1.0 {
            Anneal::Linear
        } else {
            Anneal::Cos
        };
        o.cycle_momentum = get("cycle_momentum")? == 1.0;
        o.base_momentum = get("base_momentum")?;
        o.max_momentum = get("max_momentum")?;
        o.div_factor = get("div_factor")?;
        o.final_div_factor = get("final_div_factor")?;
        o.three_phase = get("three_phase")? == 1.0;
        let (initial, max, min) = (
            per_group(state, "initial_lr"),
            per_group(state, "max_lr"),
            per_group(state, "min_lr"),
        );
        if initial.len() != self.lrs.len() || max.len() != initial.len() || min.len() != max.len() {
            return Err(Error::StateDict(format!(
                "the OneCycleLR state has {} groups, this scheduler {}",
                initial.len(),
                self.lrs.len()
            )));
        }
        // Rebuild the phases from the loaded options.
        let mut rebuilt = self.clone();
        rebuilt.phases = phases(&o);
        rebuilt.options = o;
        rebuilt.lrs = (0..initial.len())
            .map(|g| [initial[g], max[g], min[g]])
            .collect();
        rebuilt.last_epoch = last_epoch;
        rebuilt.last_lrs = last_lrs;
        *self = rebuilt;
        Ok(())
    }
}
