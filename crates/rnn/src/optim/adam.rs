//! Adam and AdamW, as `torch.optim.Adam(foreach=False)` and `torch.optim.AdamW(foreach=False)`.
//!
//! For each parameter `p` with gradient `g`, at step `t` (counted per parameter, from 1), with
//! learning rate `lr`, betas `β₁, β₂`, `eps` and weight decay `λ`:
//!
//! ```text
//! g ← −g                                   if maximize
//! p ← p·(1 − lr·λ)                          AdamW (decoupled weight decay)
//! g ← g + λ·p                               Adam with λ ≠ 0 (L2 penalty)
//! m ← lerp(m, g, 1 − β₁)                    = β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! v̂ ← max(v̂, v), used instead of v         if amsgrad
//! bc₁ = 1 − β₁ᵗ,  bc₂ = 1 − β₂ᵗ              (f64, as Python floats)
//! p ← p − (lr / bc₁) · m / (√v / √bc₂ + eps)
//! ```
//!
//! Each tensor line is evaluated with PyTorch's f32 operations in PyTorch's order, including
//! its fused multiply-adds (`lerp`, `addcmul`) and its lerp formula's two branches. The one
//! known difference is `√v`: PyTorch's CPU kernel (MKL's vectorised sqrt) is not always
//! correctly rounded, this one is, so results can differ in the last bit of the denominator
//! (a relative 6e-8 of one update).

use ndarray::ArrayD;

use super::groups::{flag, unknown, Groups, Hyper};
use super::{
    check_non_negative, maximum, row_major_values, state_values, with_fma, Optimizer,
    OptimizerState, ParamGroup, StateReader,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The state of one parameter: `state[p]` in PyTorch.
#[derive(Clone, Debug)]
struct ParamState {
    /// The step count; an f32 as PyTorch's `state["step"]` tensor.
    step: f32,
    /// First moment `m`.
    exp_avg: ArrayD<f32>,
    /// Second moment `v`.
    exp_avg_sq: ArrayD<f32>,
    /// `v̂`, the running maximum of `v` (amsgrad only).
    max_exp_avg_sq: Option<ArrayD<f32>>,
}

/// `torch.optim.Adam` (L2 weight decay added to the gradient); see [`AdamW`] for the
/// decoupled weight decay.
///
/// ```
/// use ndarray::array;
/// use rnn::optim::{Adam, Optimizer};
/// use rnn::Tensor;
///
/// let w = Tensor::parameter(array![1.0f32, -1.0].into_dyn());
/// let mut opt = Adam::new(vec![w.clone()], 0.1).unwrap().with_betas(0.9, 0.99).unwrap();
/// w.set_grad(Some(array![3.0f32, -0.5].into_dyn()));
/// opt.step().unwrap();
/// // The first step moves each coordinate by about lr, against the gradient's sign.
/// assert!((w.to_array()[0] - 0.9).abs() < 1e-6 && (w.to_array()[1] + 0.9).abs() < 1e-6);
/// ```
#[derive(Debug)]
pub struct Adam {
    groups: Groups<AdamHyper, ParamState>,
    /// AdamW: `p *= 1 − lr·λ` instead of `g += λ·p`.
    decoupled: bool,
}

/// Adam's hyperparameters (one group's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamHyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    maximize: bool,
    /// AdamW (for error messages; the state's kind says it too).
    decoupled: bool,
}

impl Hyper for AdamHyper {
    fn names(&self) -> &'static [&'static str] {
        &[
            "lr",
            "beta1",
            "beta2",
            "eps",
            "weight_decay",
            "amsgrad",
            "maximize",
        ]
    }

    fn get(&self, name: &str) -> f64 {
        match name {
            "lr" => self.lr,
            "beta1" => self.beta1,
            "beta2" => self.beta2,
            "eps" => self.eps,
            "weight_decay" => self.weight_decay,
            "amsgrad" => f64::from(u8::from(self.amsgrad)),
            "maximize" => f64::from(u8::from(self.maximize)),
            _ => f64::NAN,
        }
    }

    fn set(&mut self, name: &str, v: f64) -> Result<()> {
        match name {
            "lr" => check_non_negative("learning rate", v).map(|()| self.lr = v),
            "beta1" => check_beta(0, v).map(|()| self.beta1 = v),
            "beta2" => check_beta(1, v).map(|()| self.beta2 = v),
            "eps" => check_non_negative("epsilon value", v).map(|()| self.eps = v),
            "weight_decay" => {
                check_non_negative("weight_decay value", v).map(|()| self.weight_decay = v)
            }
            "amsgrad" => flag(name, v).map(|b| self.amsgrad = b),
            "maximize" => flag(name, v).map(|b| self.maximize = b),
            _ => Err(unknown(self.optimizer_name(), name)),
        }
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn optimizer_name(&self) -> &'static str {
        if self.decoupled {
            "AdamW"
        } else {
            "Adam"
        }
    }

    fn momentum_name(&self) -> Option<&'static str> {
        Some("beta1")
    }
}

impl super::groups::ParamState<AdamHyper> for ParamState {
    fn save(&self, i: usize, s: &mut OptimizerState) {
        s.scalars.insert(format!("step.{i}"), f64::from(self.step));
        s.tensors
            .insert(format!("exp_avg.{i}"), self.exp_avg.clone());
        s.tensors
            .insert(format!("exp_avg_sq.{i}"), self.exp_avg_sq.clone());
        if let Some(max_v) = &self.max_exp_avg_sq {
            s.tensors
                .insert(format!("max_exp_avg_sq.{i}"), max_v.clone());
        }
    }

    fn load(
        r: &mut StateReader<'_>,
        i: usize,
        shape: &[usize],
        hyper: &AdamHyper,
    ) -> Result<Option<Self>> {
        let Some(step) = read_step(r, i, shape, &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])?
        else {
            return Ok(None);
        };
        let exp_avg = r.required_tensor(&format!("exp_avg.{i}"), shape)?;
        let exp_avg_sq = r.required_tensor(&format!("exp_avg_sq.{i}"), shape)?;
        let max_key = format!("max_exp_avg_sq.{i}");
        let max_exp_avg_sq = if hyper.amsgrad {
            Some(r.required_tensor(&max_key, shape)?)
        } else {
            r.tensor(&max_key, shape)?
        };
        Ok(Some(ParamState {
            step,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
        }))
    }
}

/// The f32 step count `step.{i}` of parameter `i`, `None` if it has no state; an error if its
/// `buffers` are there without it, or if it is not a count.
pub(crate) fn read_step(
    r: &mut StateReader<'_>,
    i: usize,
    shape: &[usize],
    buffers: &[&str],
) -> Result<Option<f32>> {
    let Some(step) = r.optional_scalar(&format!("step.{i}")) else {
        for key in buffers {
            if r.tensor(&format!("{key}.{i}"), shape)?.is_some() {
                return Err(Error::StateDict(format!(
                    "\"{key}.{i}\" is present but \"step.{i}\" is not"
                )));
            }
        }
        return Ok(None);
    };
    if !(step.is_finite() && step >= 0.0 && step == f64::from(step as f32)) {
        return Err(Error::StateDict(format!(
            "\"step.{i}\" must be a step count (a non-negative f32 value), got {step}"
        )));
    }
    Ok(Some(step as f32))
}

impl Adam {
    /// `Adam(params, lr)` with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight
    /// decay. Fails on an empty list, a non-leaf or repeated parameter, or a learning rate that
    /// is negative or not finite.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<Adam> {
        Adam::build(params, lr, 0.0, false)
    }

    fn build(params: Vec<Tensor>, lr: f64, weight_decay: f64, decoupled: bool) -> Result<Adam> {
        check_non_negative("learning rate", lr)?;
        let defaults = AdamHyper {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            amsgrad: false,
            maximize: false,
            decoupled,
        };
        Ok(Adam {
            groups: Groups::new(params, defaults)?,
            decoupled,
        })
    }

    /// `betas=(β₁, β₂)`, each in [0, 1).
    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Result<Adam> {
        check_betas(beta1, beta2)?;
        self.groups.set_default("beta1", beta1)?;
        self.groups.set_default("beta2", beta2)?;
        Ok(self)
    }

    /// `eps` (default 1e-8), added to the denominator.
    pub fn with_eps(mut self, eps: f64) -> Result<Adam> {
        self.groups.set_default("eps", eps)?;
        Ok(self)
    }

    /// `weight_decay=λ`: an L2 penalty `g ← g + λ·p` for Adam (default 0), the decoupled
    /// `p ← p·(1 − lr·λ)` for AdamW (default 0.01).
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Result<Adam> {
        self.groups.set_default("weight_decay", weight_decay)?;
        Ok(self)
    }

    /// `amsgrad=True`: normalise by the running maximum of the second moment.
    pub fn with_amsgrad(mut self, amsgrad: bool) -> Adam {
        self.groups
            .set_default("amsgrad", f64::from(u8::from(amsgrad)))
            .expect("a flag is valid");
        self
    }

    /// `maximize=True`: ascend the objective instead of descending it.
    pub fn with_maximize(mut self, maximize: bool) -> Adam {
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
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
}

fn check_beta(i: usize, beta: f64) -> Result<()> {
    if !(0.0..1.0).contains(&beta) {
        return Err(Error::Invalid(format!(
            "Invalid beta parameter at index {i}: {beta} (must be in [0, 1))"
        )));
    }
    Ok(())
}

fn check_betas(beta1: f64, beta2: f64) -> Result<()> {
    check_beta(0, beta1)?;
    check_beta(1, beta2)
}

/// PyTorch's `lerp(start, end, weight)` on CPU (its vector kernel): two formulas, chosen by
/// `|weight| < 0.5`, each one fused multiply-add.
#[inline]
pub(crate) fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        weight.mul_add(end - start, start)
    } else {
        (weight - 1.0).mul_add(end - start, end)
    }
}

/// One parameter's step: its factors as f32 (the way PyTorch's kernels take Python floats)
/// and its tensor lines as loops over row-major values.
#[derive(Clone, Copy, Debug)]
struct Coefficients {
    maximize: bool,
    /// `λ` of Adam's L2 penalty, if any.
    weight_decay: Option<f32>,
    /// `1 − lr·λ` of AdamW's decoupled decay, if any.
    decay_factor: Option<f32>,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    /// `−lr / bc₁`.
    neg_step_size: f32,
}

impl Coefficients {
    /// The step's tensor lines (module docs), one loop each, in PyTorch's order; `v_max` only
    /// with amsgrad. Every slice has the parameter's length.
    #[inline(always)]
    fn apply(
        &self,
        p: &mut [f32],
        g: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        v_max: Option<&mut [f32]>,
    ) {
        if self.maximize {
            g.iter_mut().for_each(|g| *g = -*g);
        }
        if let Some(factor) = self.decay_factor {
            // param.mul_(1 - lr * weight_decay)
            p.iter_mut().for_each(|p| *p *= factor);
        }
        if let Some(weight_decay) = self.weight_decay {
            // grad = grad.add(param, alpha=weight_decay)
            for (g, &p) in g.iter_mut().zip(&*p) {
                *g = p.mul_add(weight_decay, *g);
            }
        }
        // exp_avg.lerp_(grad, 1 - beta1)
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(&*g) {
            *m = lerp(*m, g, self.one_minus_beta1);
            *v = (self.one_minus_beta2 * g).mul_add(g, *v * self.beta2);
        }
        // torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq) with amsgrad
        let v: &[f32] = match v_max {
            Some(v_max) => {
                for (v_max, &v) in v_max.iter_mut().zip(&*v) {
                    *v_max = maximum(*v_max, v);
                }
                v_max
            }
            None => v,
        };
        // denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
        // param.addcdiv_(exp_avg, denom, value=-step_size)
        for ((p, &m), &v) in p.iter_mut().zip(&*m).zip(v) {
            let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
            *p += self.neg_step_size * m / denom;
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        let grads = self.groups.gradients()?;
        let decoupled = self.decoupled;
        let mut i = 0;
        for (group, grads) in self.groups.groups.iter_mut().zip(grads) {
            let h = group.hyper;
            for ((param, grad), slot) in group.params.iter().zip(grads).zip(&mut group.state) {
                let index = i;
                i += 1;
                let Some(mut g) = grad else { continue };
                let mut p = param.data_mut();
                let st = slot.get_or_insert_with(|| ParamState {
                    step: 0.0,
                    exp_avg: ArrayD::zeros(p.raw_dim()),
                    exp_avg_sq: ArrayD::zeros(p.raw_dim()),
                    max_exp_avg_sq: None,
                });
                if h.amsgrad && st.max_exp_avg_sq.is_none() {
                    st.max_exp_avg_sq = Some(ArrayD::zeros(p.raw_dim()));
                }
                st.step += 1.0;
                let step = f64::from(st.step);
                let bias_correction1 = 1.0 - h.beta1.powf(step);
                let bias_correction2 = 1.0 - h.beta2.powf(step);
                // Python floats, cast to f32 where PyTorch's kernels take them as scalars.
                let c = Coefficients {
                    maximize: h.maximize,
                    weight_decay: (h.weight_decay != 0.0 && !decoupled)
                        .then_some(h.weight_decay as f32),
                    decay_factor: (h.weight_decay != 0.0 && decoupled)
                        .then_some((1.0 - h.lr * h.weight_decay) as f32),
                    one_minus_beta1: (1.0 - h.beta1) as f32,
                    beta2: h.beta2 as f32,
                    one_minus_beta2: (1.0 - h.beta2) as f32,
                    // Python's `bias_correction2**0.5` is pow, not sqrt.
                    bias_correction2_sqrt: bias_correction2.powf(0.5) as f32,
                    eps: h.eps as f32,
                    neg_step_size: (-(h.lr / bias_correction1)) as f32,
                };
                let (p, g) = (row_major_values(&mut p)?, row_major_values(&mut g)?);
                let len = p.len();
                let m = state_values(&mut st.exp_avg, "exp_avg", index, len)?;
                let v = state_values(&mut st.exp_avg_sq, "exp_avg_sq", index, len)?;
                let v_max = match &mut st.max_exp_avg_sq {
                    Some(v_max) if h.amsgrad => {
                        Some(state_values(v_max, "max_exp_avg_sq", index, len)?)
                    }
                    _ => None,
                };
                with_fma(|| c.apply(p, g, m, v, v_max));
            }
        }
        Ok(())
    }

    super::group_methods!();
}

/// `torch.optim.AdamW`: Adam with decoupled weight decay, `p ← p·(1 − lr·λ)` before the Adam
/// update, λ = 0.01 by default. Its state's kind is `"adamw"`.
///
/// ```
/// use ndarray::array;
/// use rnn::optim::{AdamW, Optimizer};
/// use rnn::Tensor;
///
/// let w = Tensor::parameter(array![2.0f32].into_dyn());
/// let mut opt = AdamW::new(vec![w.clone()], 0.1).unwrap().with_weight_decay(0.5).unwrap();
/// w.set_grad(Some(array![0.0f32].into_dyn()));
/// opt.step().unwrap(); // a zero gradient: only the decay acts, 2 · (1 − 0.1 · 0.5)
/// assert_eq!(w.to_array(), array![1.9f32].into_dyn());
/// ```
#[derive(Debug)]
pub struct AdamW(Adam);

impl AdamW {
    /// `AdamW(params, lr)` with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay
    /// 0.01. Fails as [`Adam::new`] does.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<AdamW> {
        Adam::build(params, lr, 0.01, true).map(AdamW)
    }

    /// `betas=(β₁, β₂)`, each in [0, 1).
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Result<AdamW> {
        self.0.with_betas(beta1, beta2).map(AdamW)
    }

    /// `eps` (default 1e-8), added to the denominator.
    pub fn with_eps(self, eps: f64) -> Result<AdamW> {
        self.0.with_eps(eps).map(AdamW)
    }

    /// `weight_decay=λ` (default 0.01): `p ← p·(1 − lr·λ)` at each step.
    pub fn with_weight_decay(self, weight_decay: f64) -> Result<AdamW> {
        self.0.with_weight_decay(weight_decay).map(AdamW)
    }

    /// `amsgrad=True`: normalise by the running maximum of the second moment.
    pub fn with_amsgrad(self, amsgrad: bool) -> AdamW {
        AdamW(self.0.with_amsgrad(amsgrad))
    }

    /// `maximize=True`: ascend the objective instead of descending it.
    pub fn with_maximize(self, maximize: bool) -> AdamW {
        AdamW(self.0.with_maximize(maximize))
    }

    /// The parameters, group after group, in the order given.
    pub fn params(&self) -> Vec<Tensor> {
        self.0.params()
    }
}

impl Optimizer for AdamW {
    fn step(&mut self) -> Result<()> {
        self.0.step()
    }
    fn zero_grad(&self) {
        self.0.zero_grad()
    }
    fn num_groups(&self) -> usize {
        self.0.num_groups()
    }
    fn group_lr(&self, group: usize) -> f64 {
        self.0.group_lr(group)
    }
    fn set_group_lr(&mut self, group: usize, lr: f64) {
        self.0.set_group_lr(group, lr)
    }
    fn group_momentum(&self, group: usize) -> Option<f64> {
        self.0.group_momentum(group)
    }
    fn set_group_momentum(&mut self, group: usize, value: f64) -> bool {
        self.0.set_group_momentum(group, value)
    }
    fn add_param_group(&mut self, group: ParamGroup) -> Result<()> {
        self.0.add_param_group(group)
    }
    fn state_dict(&self) -> OptimizerState {
        self.0.state_dict()
    }
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        self.0.load_state_dict(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Values spread over several magnitudes, both signs, from a fixed seed.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|_| rng.uniform(-1.0, 1.0) * 10f32.powi((rng.below(7) as i32) - 3))
            .collect()
    }

    #[test]
    fn element_loops_give_the_same_bits_with_and_without_fma_instructions() {
        // `with_fma` compiles `mul_add` to the CPU's instruction; without it, libm's `fmaf`.
        for amsgrad in [false, true] {
            let c = Coefficients {
                maximize: amsgrad,
                weight_decay: Some(0.01),
                decay_factor: Some(0.999),
                one_minus_beta1: 0.1,
                beta2: 0.999,
                one_minus_beta2: 0.001,
                bias_correction2_sqrt: 0.0316,
                eps: 1e-8,
                neg_step_size: -0.02,
            };
            let n = 1000;
            let mut a = [
                values(n, 1),
                values(n, 2),
                values(n, 3),
                values(n, 4),
                values(n, 5),
            ];
            a[3].iter_mut().for_each(|v| *v = v.abs());
            a[4].iter_mut().for_each(|v| *v = v.abs());
            let mut b = a.clone();
            {
                let [p, g, m, v, v_max] = &mut a;
                c.apply(p, g, m, v, amsgrad.then_some(v_max.as_mut_slice()));
            }
            {
                let [p, g, m, v, v_max] = &mut b;
                with_fma(|| c.apply(p, g, m, v, amsgrad.then_some(v_max.as_mut_slice())));
            }
            for (x, y) in a.iter().zip(&b) {
                assert!(x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
    }

    #[test]
    fn lerp_matches_both_formulas() {
        assert_eq!(lerp(1.0, 3.0, 0.25), 1.5);
        assert_eq!(lerp(1.0, 3.0, 0.75), 2.5);
        assert_eq!(lerp(1.0, 3.0, 1.0), 3.0);
    }

    #[test]
    fn first_step_moves_by_lr() {
        // At step 1, m/√v̂ = g/|g| after bias correction: the update is lr·sign(g) (up to eps).
        let w = Tensor::parameter(array![0.0f32, 0.0, 0.0].into_dyn());
        let mut opt = Adam::new(vec![w.clone()], 0.01).unwrap();
        w.set_grad(Some(array![5.0f32, -0.001, 0.0].into_dyn()));
        opt.step().unwrap();
        let got = w.to_array();
        assert!((got[0] + 0.01).abs() < 1e-7, "{got}");
        assert!((got[1] - 0.01).abs() < 1e-6, "{got}");
        assert_eq!(got[2], 0.0);
        assert_eq!(opt.state_dict().scalars["step.0"], 1.0);
    }

    #[test]
    fn invalid_hyperparameters_are_named() {
        let w = || vec![Tensor::parameter(array![0.0f32].into_dyn())];
        let err = Adam::new(w(), f64::NAN).unwrap_err().to_string();
        assert!(err.contains("Invalid learning rate: NaN"), "{err}");
        let err = Adam::new(w(), 0.1)
            .unwrap()
            .with_betas(0.9, 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Invalid beta parameter at index 1: 1"),
            "{err}"
        );
        let err = AdamW::new(w(), 0.1)
            .unwrap()
            .with_eps(-1e-8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Invalid epsilon value"), "{err}");
    }

    #[test]
    fn load_checks_kind_shapes_and_keys() {
        let a = Tensor::parameter(array![1.0f32, 2.0].into_dyn());
        let mut adam = Adam::new(vec![a.clone()], 0.1).unwrap().with_amsgrad(true);
        a.set_grad(Some(array![1.0f32, -1.0].into_dyn()));
        adam.step().unwrap();
        let state = adam.state_dict();
        assert!(state.tensors.contains_key("max_exp_avg_sq.0"));

        let mut adamw = AdamW::new(vec![a.clone()], 0.1).unwrap();
        let err = adamw.load_state_dict(&state).unwrap_err().to_string();
        assert!(
            err.contains("\"adam\"") && err.contains("\"adamw\""),
            "{err}"
        );

        let b = Tensor::parameter(array![1.0f32, 2.0, 3.0].into_dyn());
        let mut other = Adam::new(vec![b], 0.1).unwrap();
        let err = other.load_state_dict(&state).unwrap_err().to_string();
        assert!(
            err.contains("exp_avg.0") && err.contains("(2,)") && err.contains("(3,)"),
            "{err}"
        );

        let mut extra = state.clone();
        extra.scalars.insert("momentum".into(), 0.9);
        let mut fresh = Adam::new(vec![a.clone()], 0.5).unwrap();
        let err = fresh.load_state_dict(&extra).unwrap_err().to_string();
        assert!(
            err.contains("unexpected") && err.contains("\"momentum\""),
            "{err}"
        );
        assert_eq!(fresh.lr(), 0.5, "a failed load changes nothing");

        let mut missing = state.clone();
        missing.tensors.remove("max_exp_avg_sq.0");
        let err = fresh.load_state_dict(&missing).unwrap_err().to_string();
        assert!(err.contains("missing buffer \"max_exp_avg_sq.0\""), "{err}");

        fresh.load_state_dict(&state).unwrap();
        assert_eq!(fresh.state_dict(), state);
    }
}
