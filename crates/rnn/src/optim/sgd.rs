//! Stochastic gradient descent with momentum, as `torch.optim.SGD(foreach=False)`.
//!
//! For each parameter `p` with gradient `g`, with learning rate `lr`, momentum `μ`, dampening
//! `τ`, weight decay `λ`:
//!
//! ```text
//! g ← −g                         if maximize
//! g ← g + λ·p                    if λ ≠ 0
//! b ← g                          on the first step (no dampening then)
//! b ← μ·b + (1 − τ)·g            afterwards              } if μ ≠ 0
//! g ← g + μ·b  if nesterov, else g ← b                   }
//! p ← p − lr·g
//! ```
//!
//! Each line is one f32 operation of PyTorch's kernels, fused multiply-adds included (PyTorch's
//! `add(x, alpha=a)` is one `fmadd` in its vector kernels), so the parameters are PyTorch's bit
//! for bit.

use ndarray::ArrayD;

use super::groups::{flag, unknown, Groups, Hyper, ParamState};
use super::{
    check_non_negative, row_major_values, state_values, with_fma, Optimizer, OptimizerState,
    ParamGroup, StateReader,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `torch.optim.SGD`: gradient descent with optional momentum, dampening, Nesterov momentum,
/// L2 weight decay and maximization; parameter groups as [`super::groups`].
///
/// ```
/// use ndarray::array;
/// use rnn::optim::{Optimizer, Sgd};
/// use rnn::Tensor;
///
/// let w = Tensor::parameter(array![1.0f32, -1.0].into_dyn());
/// let mut opt = Sgd::new(vec![w.clone()], 0.1).unwrap().with_momentum(0.9).unwrap();
/// w.set_grad(Some(array![1.0f32, 2.0].into_dyn()));
/// opt.step().unwrap();
/// assert_eq!(w.to_array(), array![0.9f32, -1.2].into_dyn());
/// ```
#[derive(Debug)]
pub struct Sgd {
    groups: Groups<SgdHyper, MomentumBuffer>,
}

/// SGD's hyperparameters (one group's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdHyper {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    maximize: bool,
}

impl Hyper for SgdHyper {
    fn names(&self) -> &'static [&'static str] {
        &[
            "lr",
            "momentum",
            "dampening",
            "weight_decay",
            "nesterov",
            "maximize",
        ]
    }

    fn get(&self, name: &str) -> f64 {
        match name {
            "lr" => self.lr,
            "momentum" => self.momentum,
            "dampening" => self.dampening,
            "weight_decay" => self.weight_decay,
            "nesterov" => f64::from(u8::from(self.nesterov)),
            "maximize" => f64::from(u8::from(self.maximize)),
            _ => f64::NAN,
        }
    }

    fn set(&mut self, name: &str, v: f64) -> Result<()> {
        match name {
            "lr" => check_non_negative("learning rate", v).map(|()| self.lr = v),
            "momentum" => check_non_negative("momentum value", v).map(|()| self.momentum = v),
            "dampening" if !v.is_finite() => Err(Error::Invalid(format!(
                "Invalid dampening value: {v} (must be finite)"
            ))),
            "dampening" => {
                self.dampening = v;
                Ok(())
            }
            "weight_decay" => {
                check_non_negative("weight_decay value", v).map(|()| self.weight_decay = v)
            }
            "nesterov" => flag(name, v).map(|b| self.nesterov = b),
            "maximize" => flag(name, v).map(|b| self.maximize = b),
            _ => Err(unknown("SGD", name)),
        }
    }

    fn check(&self) -> Result<()> {
        check_nesterov(self.nesterov, self.momentum, self.dampening)
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn optimizer_name(&self) -> &'static str {
        "SGD"
    }

    fn momentum_name(&self) -> Option<&'static str> {
        Some("momentum")
    }
}

/// `state[p]["momentum_buffer"]`, made at the parameter's first step with momentum.
#[derive(Clone, Debug)]
pub(crate) struct MomentumBuffer(ArrayD<f32>);

impl ParamState<SgdHyper> for MomentumBuffer {
    fn save(&self, i: usize, s: &mut OptimizerState) {
        s.tensors
            .insert(format!("momentum_buffer.{i}"), self.0.clone());
    }

    fn load(
        r: &mut StateReader<'_>,
        i: usize,
        shape: &[usize],
        _: &SgdHyper,
    ) -> Result<Option<Self>> {
        Ok(r.tensor(&format!("momentum_buffer.{i}"), shape)?
            .map(MomentumBuffer))
    }
}

impl Sgd {
    /// `SGD(params, lr)`: no momentum, dampening, weight decay; minimizes. Fails on an empty
    /// list, a non-leaf or repeated parameter, or a learning rate that is negative or not finite.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<Sgd> {
        check_non_negative("learning rate", lr)?;
        let defaults = SgdHyper {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        };
        Ok(Sgd {
            groups: Groups::new(params, defaults)?,
        })
    }

    /// `momentum=μ` (default 0: no momentum buffer).
    pub fn with_momentum(mut self, momentum: f64) -> Result<Sgd> {
        self.groups.set_default("momentum", momentum)?;
        Ok(self)
    }

    /// `dampening=τ` (default 0): the new gradient enters the momentum buffer with weight
    /// `1 − τ` (except on the first step).
    pub fn with_dampening(mut self, dampening: f64) -> Result<Sgd> {
        self.groups.set_default("dampening", dampening)?;
        Ok(self)
    }

    /// `nesterov=True`: Nesterov momentum. Needs a momentum > 0 and zero dampening (set those
    /// first; PyTorch: "Nesterov momentum requires a momentum and zero dampening").
    pub fn with_nesterov(mut self, nesterov: bool) -> Result<Sgd> {
        self.groups
            .set_default("nesterov", f64::from(u8::from(nesterov)))?;
        Ok(self)
    }

    /// `weight_decay=λ` (default 0): L2 penalty, `g ← g + λ·p`.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Result<Sgd> {
        self.groups.set_default("weight_decay", weight_decay)?;
        Ok(self)
    }

    /// `maximize=True`: ascend the objective instead of descending it.
    pub fn with_maximize(mut self, maximize: bool) -> Sgd {
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
        "sgd"
    }
}

fn check_nesterov(nesterov: bool, momentum: f64, dampening: f64) -> Result<()> {
    if nesterov && (momentum <= 0.0 || dampening != 0.0) {
        return Err(Error::Invalid(format!(
            "Nesterov momentum requires a momentum and zero dampening (momentum = {momentum}, \
             dampening = {dampening})"
        )));
    }
    Ok(())
}

/// One parameter's step: its factors as f32 (PyTorch casts each Python float to the tensor's
/// f32 inside the kernel) and its lines as loops over row-major values.
#[derive(Clone, Copy, Debug)]
struct Coefficients {
    maximize: bool,
    /// `λ`, if not 0.
    weight_decay: Option<f32>,
    momentum: f32,
    one_minus_dampening: f32,
    nesterov: bool,
    neg_lr: f32,
}

impl Coefficients {
    /// The step's lines (module docs), one loop each, in PyTorch's order; `buf` (the momentum
    /// buffer) only with momentum, and `first` on the parameter's first step with it. Every
    /// slice has the parameter's length.
    #[inline(always)]
    fn apply(&self, p: &mut [f32], g: &mut [f32], buf: Option<&mut [f32]>, first: bool) {
        if self.maximize {
            g.iter_mut().for_each(|g| *g = -*g);
        }
        if let Some(weight_decay) = self.weight_decay {
            // grad = grad.add(param, alpha=weight_decay)
            for (g, &p) in g.iter_mut().zip(&*p) {
                *g = p.mul_add(weight_decay, *g);
            }
        }
        if let Some(buf) = buf {
            if first {
                // buf = torch.clone(grad).detach()
                buf.copy_from_slice(g);
            } else {
                // buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                for (b, &g) in buf.iter_mut().zip(&*g) {
                    *b = g.mul_add(self.one_minus_dampening, *b * self.momentum);
                }
            }
            if self.nesterov {
                // grad = grad.add(buf, alpha=momentum)
                for (g, &b) in g.iter_mut().zip(&*buf) {
                    *g = b.mul_add(self.momentum, *g);
                }
            } else {
                g.copy_from_slice(buf);
            }
        }
        // param.add_(grad, alpha=-lr)
        for (p, &g) in p.iter_mut().zip(&*g) {
            *p = g.mul_add(self.neg_lr, *p);
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let grads = self.groups.gradients()?;
        let mut i = 0;
        for (group, grads) in self.groups.groups.iter_mut().zip(grads) {
            let h = group.hyper;
            // PyTorch casts each Python-float factor to the tensor's f32 inside the kernel.
            let c = Coefficients {
                maximize: h.maximize,
                weight_decay: (h.weight_decay != 0.0).then_some(h.weight_decay as f32),
                momentum: h.momentum as f32,
                one_minus_dampening: (1.0 - h.dampening) as f32,
                nesterov: h.nesterov,
                neg_lr: (-h.lr) as f32,
            };
            for ((param, grad), buffer) in group.params.iter().zip(grads).zip(&mut group.state) {
                let index = i;
                i += 1;
                let Some(mut g) = grad else { continue };
                let mut p = param.data_mut();
                let shape = g.raw_dim();
                let (p, g) = (row_major_values(&mut p)?, row_major_values(&mut g)?);
                let first = buffer.is_none();
                let buf = match buffer {
                    Some(buf) if h.momentum != 0.0 => {
                        Some(state_values(&mut buf.0, "momentum_buffer", index, p.len())?)
                    }
                    // b ← g on the first step: filled after the gradient's own lines.
                    None if h.momentum != 0.0 => Some(row_major_values(
                        &mut buffer.insert(MomentumBuffer(ArrayD::zeros(shape))).0,
                    )?),
                    _ => None,
                };
                with_fma(|| c.apply(p, g, buf, first));
            }
        }
        Ok(())
    }

    super::group_methods!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn param() -> Tensor {
        Tensor::parameter(array![1.0f32, -2.0, 0.5].into_dyn())
    }

    #[test]
    fn plain_step_is_p_minus_lr_g() {
        let p = param();
        let mut opt = Sgd::new(vec![p.clone()], 0.5).unwrap();
        p.set_grad(Some(array![2.0f32, 2.0, -1.0].into_dyn()));
        opt.step().unwrap();
        assert_eq!(p.to_array(), array![0.0f32, -3.0, 1.0].into_dyn());
    }

    #[test]
    fn momentum_buffer_starts_as_the_gradient() {
        let p = param();
        let mut opt = Sgd::new(vec![p.clone()], 1.0)
            .unwrap()
            .with_momentum(0.5)
            .unwrap()
            .with_dampening(0.5)
            .unwrap();
        p.set_grad(Some(array![1.0f32, 1.0, 1.0].into_dyn()));
        opt.step().unwrap(); // buf = g = 1 (no dampening on the first step)
        assert_eq!(p.to_array(), array![0.0f32, -3.0, -0.5].into_dyn());
        opt.step().unwrap(); // buf = 0.5 * 1 + 0.5 * 1 = 1
        assert_eq!(p.to_array(), array![-1.0f32, -4.0, -1.5].into_dyn());
        let s = opt.state_dict();
        assert_eq!(
            s.tensors["momentum_buffer.0"],
            array![1.0f32, 1.0, 1.0].into_dyn()
        );
    }

    #[test]
    fn invalid_hyperparameters_are_named() {
        let err = Sgd::new(vec![param()], -0.1).unwrap_err().to_string();
        assert!(err.contains("Invalid learning rate: -0.1"), "{err}");
        let err = Sgd::new(vec![param()], 0.1)
            .unwrap()
            .with_momentum(f64::NAN)
            .unwrap_err()
            .to_string();
        assert!(err.contains("momentum"), "{err}");
        let err = Sgd::new(vec![param()], 0.1)
            .unwrap()
            .with_weight_decay(-1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight_decay"), "{err}");
        let err = Sgd::new(vec![param()], 0.1)
            .unwrap()
            .with_nesterov(true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Nesterov momentum requires a momentum and zero dampening"),
            "{err}"
        );
        let with_dampening = Sgd::new(vec![param()], 0.1)
            .unwrap()
            .with_momentum(0.9)
            .unwrap()
            .with_dampening(0.1)
            .unwrap();
        assert!(with_dampening.with_nesterov(true).is_err());
    }

    #[test]
    fn parameters_without_grad_are_skipped_and_bad_grads_change_nothing() {
        let (a, b) = (param(), param());
        let mut opt = Sgd::new(vec![a.clone(), b.clone()], 0.1)
            .unwrap()
            .with_weight_decay(0.5)
            .unwrap();
        a.set_grad(Some(array![0.0f32, 0.0, 0.0].into_dyn()));
        opt.step().unwrap();
        assert_ne!(a.to_array(), param().to_array());
        assert_eq!(b.to_array(), param().to_array());
        b.set_grad(Some(array![1.0f32].into_dyn()));
        let before = a.to_array();
        assert!(opt.step().is_err());
        assert_eq!(a.to_array(), before);
    }
}
