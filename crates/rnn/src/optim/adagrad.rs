//! Adagrad, as `torch.optim.Adagrad(foreach=False)`.
//!
//! For each parameter `p` with gradient `g`, at step `t` (counted per parameter, from 1), with
//! learning rate `lr`, learning-rate decay `η`, weight decay `λ` and `eps`:
//!
//! ```text
//! g ← −g                            if maximize
//! g ← g + λ·p                       if λ ≠ 0
//! clr = lr / (1 + (t − 1)·η)        (f64, as Python floats)
//! s ← s + g²                        (state_sum, starting at initial_accumulator_value)
//! p ← p − clr·g / (√s + eps)
//! ```
//!
//! Each line is one f32 operation of PyTorch's kernels in its order (`addcmul` fused).
//! PyTorch makes every parameter's state (`step` 0, `sum` filled with
//! `initial_accumulator_value`) in the constructor; so does this one, for the constructor's
//! parameters, so that `state_dict` lists them even before their first step (a group added
//! later gets its state at its first step, which gives the same numbers).
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::{Adagrad, Optimizer};
//! use rnn::Tensor;
//!
//! let w = Tensor::parameter(array![1.0f32].into_dyn());
//! let mut opt = Adagrad::new(vec![w.clone()], 0.1).unwrap();
//! w.set_grad(Some(array![3.0f32].into_dyn()));
//! opt.step().unwrap(); // s = 9: the first step is lr·g/|g| = 0.1
//! assert!((w.to_array()[0] - 0.9).abs() < 1e-6);
//! ```

use ndarray::ArrayD;

use super::adam::read_step;
use super::groups::{flag, unknown, Groups, Hyper, ParamState};
use super::{
    check_non_negative, row_major_values, state_values, with_fma, Optimizer, OptimizerState,
    ParamGroup, StateReader,
};
use crate::error::Result;
use crate::tensor::Tensor;

/// `torch.optim.Adagrad(params, lr=0.01, lr_decay=0, weight_decay=0,
/// initial_accumulator_value=0, eps=1e-10, maximize=False)`.
#[derive(Debug)]
pub struct Adagrad {
    groups: Groups<AdagradHyper, AdagradState>,
}

/// Adagrad's hyperparameters (one group's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdagradHyper {
    lr: f64,
    lr_decay: f64,
    weight_decay: f64,
    initial_accumulator_value: f64,
    eps: f64,
    maximize: bool,
}

impl Hyper for AdagradHyper {
    fn names(&self) -> &'static [&'static str] {
        &[
            "lr",
            "lr_decay",
            "weight_decay",
            "initial_accumulator_value",
            "eps",
            "maximize",
        ]
    }

    fn get(&self, name: &str) -> f64 {
        match name {
            "lr" => self.lr,
            "lr_decay" => self.lr_decay,
            "weight_decay" => self.weight_decay,
            "initial_accumulator_value" => self.initial_accumulator_value,
            "eps" => self.eps,
            "maximize" => f64::from(u8::from(self.maximize)),
            _ => f64::NAN,
        }
    }

    fn set(&mut self, name: &str, v: f64) -> Result<()> {
        match name {
            "lr" => check_non_negative("learning rate", v).map(|()| self.lr = v),
            "lr_decay" => check_non_negative("lr_decay value", v).map(|()| self.lr_decay = v),
            "weight_decay" => {
                check_non_negative("weight_decay value", v).map(|()| self.weight_decay = v)
            }
            "initial_accumulator_value" => check_non_negative("initial_accumulator_value value", v)
                .map(|()| self.initial_accumulator_value = v),
            "eps" => check_non_negative("epsilon value", v).map(|()| self.eps = v),
            "maximize" => flag(name, v).map(|b| self.maximize = b),
            _ => Err(unknown("Adagrad", name)),
        }
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn optimizer_name(&self) -> &'static str {
        "Adagrad"
    }
}

/// `state[p]`: `step` and `sum`.
#[derive(Clone, Debug)]
pub(crate) struct AdagradState {
    step: f32,
    sum: ArrayD<f32>,
}

impl AdagradState {
    fn initial(p: &Tensor, h: &AdagradHyper) -> AdagradState {
        AdagradState {
            step: 0.0,
            sum: ArrayD::from_elem(p.shape(), h.initial_accumulator_value as f32),
        }
    }
}

impl ParamState<AdagradHyper> for AdagradState {
    fn save(&self, i: usize, s: &mut OptimizerState) {
        s.scalars.insert(format!("step.{i}"), f64::from(self.step));
        s.tensors.insert(format!("sum.{i}"), self.sum.clone());
    }

    fn load(
        r: &mut StateReader<'_>,
        i: usize,
        shape: &[usize],
        _: &AdagradHyper,
    ) -> Result<Option<Self>> {
        let Some(step) = read_step(r, i, shape, &["sum"])? else {
            return Ok(None);
        };
        let sum = r.required_tensor(&format!("sum.{i}"), shape)?;
        Ok(Some(AdagradState { step, sum }))
    }
}

impl Adagrad {
    /// `Adagrad(params, lr)` with PyTorch's defaults: no lr decay, no weight decay, the sums
    /// starting at 0, eps 1e-10. Fails on an empty list, a non-leaf or repeated parameter, or a
    /// learning rate that is negative or not finite ("Invalid learning rate").
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<Adagrad> {
        check_non_negative("learning rate", lr)?;
        let defaults = AdagradHyper {
            lr,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        };
        let mut opt = Adagrad {
            groups: Groups::new(params, defaults)?,
        };
        opt.init_state();
        Ok(opt)
    }

    /// (Re)makes the constructor's state of group 0, as PyTorch's `__init__` does.
    fn init_state(&mut self) {
        let group = &mut self.groups.groups[0];
        let h = group.hyper;
        group.state = group
            .params
            .iter()
            .map(|p| Some(AdagradState::initial(p, &h)))
            .collect();
    }

    /// `lr_decay=η` (default 0): the step `t` uses `lr / (1 + (t − 1)·η)`.
    pub fn with_lr_decay(mut self, lr_decay: f64) -> Result<Adagrad> {
        self.groups.set_default("lr_decay", lr_decay)?;
        Ok(self)
    }

    /// `weight_decay=λ` (default 0): L2 penalty `g ← g + λ·p`.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Result<Adagrad> {
        self.groups.set_default("weight_decay", weight_decay)?;
        Ok(self)
    }

    /// `initial_accumulator_value` (default 0): where the sums of squared gradients start.
    pub fn with_initial_accumulator_value(mut self, value: f64) -> Result<Adagrad> {
        self.groups
            .set_default("initial_accumulator_value", value)?;
        self.init_state();
        Ok(self)
    }

    /// `eps` (default 1e-10), added to the denominator.
    pub fn with_eps(mut self, eps: f64) -> Result<Adagrad> {
        self.groups.set_default("eps", eps)?;
        Ok(self)
    }

    /// `maximize=True`: ascend the objective instead of descending it.
    pub fn with_maximize(mut self, maximize: bool) -> Adagrad {
        self.groups
            .set_default("maximize", f64::from(u8::from(maximize)))
            .expect("a flag is valid");
        self
    }

    /// The parameters, group after group, in the order given.
    pub fn params(&self) -> Vec<Tensor> {
        self.groups.params()
    }

    fn kind(&self) -> &'static str {
        "adagrad"
    }
}

impl Optimizer for Adagrad {
    fn step(&mut self) -> Result<()> {
        let grads = self.groups.gradients()?;
        let mut i = 0;
        for (group, grads) in self.groups.groups.iter_mut().zip(grads) {
            let h = group.hyper;
            for ((param, grad), slot) in group.params.iter().zip(grads).zip(&mut group.state) {
                let index = i;
                i += 1;
                let Some(mut g) = grad else { continue };
                let st = slot.get_or_insert_with(|| AdagradState::initial(param, &h));
                st.step += 1.0;
                let clr = h.lr / (1.0 + (f64::from(st.step) - 1.0) * h.lr_decay);
                let neg_clr = (-clr) as f32;
                let (weight_decay, eps) = (h.weight_decay as f32, h.eps as f32);
                let mut p = param.data_mut();
                let (p, g) = (row_major_values(&mut p)?, row_major_values(&mut g)?);
                let s = state_values(&mut st.sum, "sum", index, p.len())?;
                with_fma(|| {
                    if h.maximize {
                        g.iter_mut().for_each(|g| *g = -*g);
                    }
                    if h.weight_decay != 0.0 {
                        // grad = grad.add(param, alpha=weight_decay)
                        for (g, &p) in g.iter_mut().zip(&*p) {
                            *g = p.mul_add(weight_decay, *g);
                        }
                    }
                    // state_sum.addcmul_(grad, grad, value=1)
                    for (s, &g) in s.iter_mut().zip(&*g) {
                        *s = g.mul_add(g, *s);
                    }
                    // std = state_sum.sqrt().add_(eps); param.addcdiv_(grad, std, value=-clr)
                    for ((p, &g), &s) in p.iter_mut().zip(&*g).zip(&*s) {
                        *p += neg_clr * g / (s.sqrt() + eps);
                    }
                });
            }
        }
        Ok(())
    }

    super::group_methods!();
}
