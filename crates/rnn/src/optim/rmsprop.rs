//! RMSprop, as `torch.optim.RMSprop(foreach=False)`: the optimizer of karpathy's char-rnn.
//!
//! For each parameter `p` with gradient `g`, with learning rate `lr`, smoothing constant `α`,
//! `eps`, weight decay `λ` and momentum `μ`:
//!
//! ```text
//! g ← −g                              if maximize
//! g ← g + λ·p                         if λ ≠ 0
//! v ← α·v + (1 − α)·g²                (square_avg)
//! ḡ ← lerp(ḡ, g, 1 − α)               if centered (grad_avg)
//! d ← √(v − ḡ²) + eps   if centered,  √v + eps  otherwise
//! b ← μ·b + g/d,  p ← p − lr·b        if μ > 0
//! p ← p − lr·g/d                      otherwise
//! ```
//!
//! Each line is one f32 operation of PyTorch's kernels in PyTorch's order, fused
//! multiply-adds included (`addcmul`, `add(alpha=)`, `lerp`), as in [`super::adam`]; the one
//! known difference is the correctly rounded `√`, as there.
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::{Optimizer, RMSprop};
//! use rnn::Tensor;
//!
//! let w = Tensor::parameter(array![1.0f32].into_dyn());
//! let mut opt = RMSprop::new(vec![w.clone()], 0.01).unwrap();
//! w.set_grad(Some(array![2.0f32].into_dyn()));
//! opt.step().unwrap(); // v = 0.01·4, so the step is 0.01·2/√0.04 = 0.1
//! assert!((w.to_array()[0] - 0.9).abs() < 1e-6);
//! ```

use ndarray::ArrayD;

use super::adam::{lerp, read_step};
use super::groups::{flag, unknown, Groups, Hyper, ParamState};
use super::{
    check_non_negative, row_major_values, state_values, with_fma, Optimizer, OptimizerState,
    ParamGroup, StateReader,
};
use crate::error::Result;
use crate::tensor::Tensor;

/// `torch.optim.RMSprop(params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
/// centered=False, maximize=False)`.
#[derive(Debug)]
pub struct RMSprop {
    groups: Groups<RmspropHyper, RmspropState>,
}

/// RMSprop's hyperparameters (one group's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RmspropHyper {
    lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
    centered: bool,
    maximize: bool,
}

impl Hyper for RmspropHyper {
    fn names(&self) -> &'static [&'static str] {
        &[
            "lr",
            "alpha",
            "eps",
            "weight_decay",
            "momentum",
            "centered",
            "maximize",
        ]
    }

    fn get(&self, name: &str) -> f64 {
        match name {
            "lr" => self.lr,
            "alpha" => self.alpha,
            "eps" => self.eps,
            "weight_decay" => self.weight_decay,
            "momentum" => self.momentum,
            "centered" => f64::from(u8::from(self.centered)),
            "maximize" => f64::from(u8::from(self.maximize)),
            _ => f64::NAN,
        }
    }

    fn set(&mut self, name: &str, v: f64) -> Result<()> {
        match name {
            "lr" => check_non_negative("learning rate", v).map(|()| self.lr = v),
            "alpha" => check_non_negative("alpha value", v).map(|()| self.alpha = v),
            "eps" => check_non_negative("epsilon value", v).map(|()| self.eps = v),
            "weight_decay" => {
                check_non_negative("weight_decay value", v).map(|()| self.weight_decay = v)
            }
            "momentum" => check_non_negative("momentum value", v).map(|()| self.momentum = v),
            "centered" => flag(name, v).map(|b| self.centered = b),
            "maximize" => flag(name, v).map(|b| self.maximize = b),
            _ => Err(unknown("RMSprop", name)),
        }
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn optimizer_name(&self) -> &'static str {
        "RMSprop"
    }

    fn momentum_name(&self) -> Option<&'static str> {
        Some("momentum")
    }
}

/// `state[p]`: `step`, `square_avg`, `momentum_buffer` (momentum > 0), `grad_avg` (centered).
#[derive(Clone, Debug)]
pub(crate) struct RmspropState {
    step: f32,
    square_avg: ArrayD<f32>,
    momentum_buffer: Option<ArrayD<f32>>,
    grad_avg: Option<ArrayD<f32>>,
}

impl ParamState<RmspropHyper> for RmspropState {
    fn save(&self, i: usize, s: &mut OptimizerState) {
        s.scalars.insert(format!("step.{i}"), f64::from(self.step));
        s.tensors
            .insert(format!("square_avg.{i}"), self.square_avg.clone());
        if let Some(b) = &self.momentum_buffer {
            s.tensors.insert(format!("momentum_buffer.{i}"), b.clone());
        }
        if let Some(a) = &self.grad_avg {
            s.tensors.insert(format!("grad_avg.{i}"), a.clone());
        }
    }

    fn load(
        r: &mut StateReader<'_>,
        i: usize,
        shape: &[usize],
        h: &RmspropHyper,
    ) -> Result<Option<Self>> {
        let buffers = ["square_avg", "momentum_buffer", "grad_avg"];
        let Some(step) = read_step(r, i, shape, &buffers)? else {
            return Ok(None);
        };
        let square_avg = r.required_tensor(&format!("square_avg.{i}"), shape)?;
        let key = format!("momentum_buffer.{i}");
        let momentum_buffer = if h.momentum > 0.0 {
            Some(r.required_tensor(&key, shape)?)
        } else {
            r.tensor(&key, shape)?
        };
        let key = format!("grad_avg.{i}");
        let grad_avg = if h.centered {
            Some(r.required_tensor(&key, shape)?)
        } else {
            r.tensor(&key, shape)?
        };
        Ok(Some(RmspropState {
            step,
            square_avg,
            momentum_buffer,
            grad_avg,
        }))
    }
}

impl RMSprop {
    /// `RMSprop(params, lr)` with PyTorch's defaults: alpha 0.99, eps 1e-8, no weight decay,
    /// no momentum, not centered. Fails on an empty list, a non-leaf or repeated parameter, or
    /// a learning rate that is negative or not finite ("Invalid learning rate").
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<RMSprop> {
        check_non_negative("learning rate", lr)?;
        let defaults = RmspropHyper {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        };
        Ok(RMSprop {
            groups: Groups::new(params, defaults)?,
        })
    }

    /// `alpha=α` (default 0.99), the smoothing constant of the squared-gradient average.
    pub fn with_alpha(mut self, alpha: f64) -> Result<RMSprop> {
        self.groups.set_default("alpha", alpha)?;
        Ok(self)
    }

    /// `eps` (default 1e-8), added to the denominator.
    pub fn with_eps(mut self, eps: f64) -> Result<RMSprop> {
        self.groups.set_default("eps", eps)?;
        Ok(self)
    }

    /// `weight_decay=λ` (default 0): L2 penalty `g ← g + λ·p`.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Result<RMSprop> {
        self.groups.set_default("weight_decay", weight_decay)?;
        Ok(self)
    }

    /// `momentum=μ` (default 0).
    pub fn with_momentum(mut self, momentum: f64) -> Result<RMSprop> {
        self.groups.set_default("momentum", momentum)?;
        Ok(self)
    }

    /// `centered=True`: normalise by the variance estimate `v − ḡ²` instead of `v`.
    pub fn with_centered(mut self, centered: bool) -> RMSprop {
        self.groups
            .set_default("centered", f64::from(u8::from(centered)))
            .expect("a flag is valid");
        self
    }

    /// `maximize=True`: ascend the objective instead of descending it.
    pub fn with_maximize(mut self, maximize: bool) -> RMSprop {
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
        "rmsprop"
    }
}

/// One group's factors as f32 (PyTorch's kernels take the Python floats so).
#[derive(Clone, Copy, Debug)]
struct Coefficients {
    maximize: bool,
    weight_decay: Option<f32>,
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    momentum: f32,
    neg_lr: f32,
}

impl Coefficients {
    /// The lines of the module docs, one loop each, in PyTorch's order.
    #[inline(always)]
    fn apply(
        &self,
        p: &mut [f32],
        g: &mut [f32],
        v: &mut [f32],
        grad_avg: Option<&mut [f32]>,
        buf: Option<&mut [f32]>,
    ) {
        if self.maximize {
            g.iter_mut().for_each(|g| *g = -*g);
        }
        if let Some(weight_decay) = self.weight_decay {
            // grad = grad.add(param, alpha=weight_decay)
            for (g, &p) in g.iter_mut().zip(&*p) {
                *g = p.mul_add(weight_decay, *g);
            }
        }
        // square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        for (v, &g) in v.iter_mut().zip(&*g) {
            *v = (self.one_minus_alpha * g).mul_add(g, *v * self.alpha);
        }
        // avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_().add_(eps) if centered,
        // else square_avg.sqrt().add_(eps); kept in `v`'s place only for the update below.
        let mut avg: Vec<f32> = match grad_avg {
            Some(ga) => {
                for (a, &g) in ga.iter_mut().zip(&*g) {
                    *a = lerp(*a, g, self.one_minus_alpha);
                }
                v.iter()
                    .zip(&*ga)
                    .map(|(&v, &a)| (-a).mul_add(a, v).sqrt())
                    .collect()
            }
            None => v.iter().map(|&v| v.sqrt()).collect(),
        };
        avg.iter_mut().for_each(|a| *a += self.eps);
        match buf {
            Some(buf) => {
                // buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
                for ((b, &g), &a) in buf.iter_mut().zip(&*g).zip(&avg) {
                    *b = *b * self.momentum + g / a;
                }
                for (p, &b) in p.iter_mut().zip(&*buf) {
                    *p = b.mul_add(self.neg_lr, *p);
                }
            }
            None => {
                // param.addcdiv_(grad, avg, value=-lr)
                for ((p, &g), &a) in p.iter_mut().zip(&*g).zip(&avg) {
                    *p += self.neg_lr * g / a;
                }
            }
        }
    }
}

impl Optimizer for RMSprop {
    fn step(&mut self) -> Result<()> {
        let grads = self.groups.gradients()?;
        let mut i = 0;
        for (group, grads) in self.groups.groups.iter_mut().zip(grads) {
            let h = group.hyper;
            let c = Coefficients {
                maximize: h.maximize,
                weight_decay: (h.weight_decay != 0.0).then_some(h.weight_decay as f32),
                alpha: h.alpha as f32,
                one_minus_alpha: (1.0 - h.alpha) as f32,
                eps: h.eps as f32,
                momentum: h.momentum as f32,
                neg_lr: (-h.lr) as f32,
            };
            for ((param, grad), slot) in group.params.iter().zip(grads).zip(&mut group.state) {
                let index = i;
                i += 1;
                let Some(mut g) = grad else { continue };
                let mut p = param.data_mut();
                let zeros = || ArrayD::zeros(p.raw_dim());
                let st = slot.get_or_insert_with(|| RmspropState {
                    step: 0.0,
                    square_avg: zeros(),
                    momentum_buffer: None,
                    grad_avg: None,
                });
                if h.momentum > 0.0 && st.momentum_buffer.is_none() {
                    st.momentum_buffer = Some(zeros());
                }
                if h.centered && st.grad_avg.is_none() {
                    st.grad_avg = Some(zeros());
                }
                st.step += 1.0;
                let (p, g) = (row_major_values(&mut p)?, row_major_values(&mut g)?);
                let len = p.len();
                let v = state_values(&mut st.square_avg, "square_avg", index, len)?;
                let grad_avg = match &mut st.grad_avg {
                    Some(a) if h.centered => Some(state_values(a, "grad_avg", index, len)?),
                    _ => None,
                };
                let buf = match &mut st.momentum_buffer {
                    Some(b) if h.momentum > 0.0 => {
                        Some(state_values(b, "momentum_buffer", index, len)?)
                    }
                    _ => None,
                };
                with_fma(|| c.apply(p, g, v, grad_avg, buf));
            }
        }
        Ok(())
    }

    super::group_methods!();
}
