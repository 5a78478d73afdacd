//! Parameter groups, as `optimizer.param_groups` and `optimizer.add_param_group`: every
//! optimizer holds one or more groups of parameters, each with its own hyperparameters (a
//! smaller learning rate for the embedding, no weight decay for biases...).
//!
//! The constructor makes group 0 from its parameter list; its builder methods
//! (`with_momentum`, `with_betas`...) set the optimizer's defaults and every group made so far.
//! [`ParamGroup`] describes a further group: the hyperparameters it names replace the defaults,
//! the others are the defaults, as PyTorch's `add_param_group({"params": ..., "lr": ...})`.
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::{Optimizer, ParamGroup, Sgd};
//! use rnn::Tensor;
//!
//! let weight = Tensor::parameter(array![1.0f32, 1.0].into_dyn());
//! let bias = Tensor::parameter(array![1.0f32].into_dyn());
//! // torch.optim.SGD([{"params": [weight]}, {"params": [bias], "lr": 0.5}], lr=0.1, momentum=0.9)
//! let mut opt = Sgd::new(vec![weight.clone()], 0.1).unwrap().with_momentum(0.9).unwrap();
//! opt.add_param_group(ParamGroup::new(vec![bias.clone()]).lr(0.5)).unwrap();
//! assert_eq!((opt.num_groups(), opt.group_lr(0), opt.group_lr(1)), (2, 0.1, 0.5));
//! weight.set_grad(Some(array![1.0f32, 1.0].into_dyn()));
//! bias.set_grad(Some(array![1.0f32].into_dyn()));
//! opt.step().unwrap();
//! assert_eq!(weight.to_array(), array![0.9f32, 0.9].into_dyn());
//! assert_eq!(bias.to_array(), array![0.5f32].into_dyn());
//! ```
//!
//! In an [`OptimizerState`] group 0's hyperparameters keep their plain names (`lr`,
//! `momentum`, `params` its parameter count), group `g ≥ 1`'s are prefixed `group{g}.`
//! (`group1.lr`, `group1.params`), and per-parameter buffers are numbered across the groups in
//! order, as PyTorch numbers them.

use std::collections::BTreeMap;
use std::fmt::Debug;

use ndarray::ArrayD;

use super::{check_params, gradients, OptimizerState, StateReader};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A group of parameters for `add_param_group`, with the hyperparameters that differ from the
/// optimizer's defaults. An optimizer refuses a hyperparameter it does not have (Adagrad has no
/// `momentum`), naming it.
#[derive(Clone, Debug, Default)]
pub struct ParamGroup {
    /// The parameters (leaves, none already in another group).
    pub params: Vec<Tensor>,
    /// Hyperparameters by their state name (`lr`, `beta1`, booleans as 0 or 1).
    options: BTreeMap<&'static str, f64>,
}

impl ParamGroup {
    /// A group with the optimizer's default hyperparameters.
    pub fn new(params: Vec<Tensor>) -> ParamGroup {
        ParamGroup {
            params,
            options: BTreeMap::new(),
        }
    }

    fn set(mut self, key: &'static str, value: f64) -> ParamGroup {
        self.options.insert(key, value);
        self
    }

    /// `"lr"`.
    pub fn lr(self, lr: f64) -> ParamGroup {
        self.set("lr", lr)
    }

    /// `"weight_decay"`.
    pub fn weight_decay(self, weight_decay: f64) -> ParamGroup {
        self.set("weight_decay", weight_decay)
    }

    /// `"momentum"` (SGD, RMSprop).
    pub fn momentum(self, momentum: f64) -> ParamGroup {
        self.set("momentum", momentum)
    }

    /// `"dampening"` (SGD).
    pub fn dampening(self, dampening: f64) -> ParamGroup {
        self.set("dampening", dampening)
    }

    /// `"nesterov"` (SGD).
    pub fn nesterov(self, nesterov: bool) -> ParamGroup {
        self.set("nesterov", f64::from(u8::from(nesterov)))
    }

    /// `"betas"` (Adam, AdamW).
    pub fn betas(self, beta1: f64, beta2: f64) -> ParamGroup {
        self.set("beta1", beta1).set("beta2", beta2)
    }

    /// `"eps"`.
    pub fn eps(self, eps: f64) -> ParamGroup {
        self.set("eps", eps)
    }

    /// `"amsgrad"` (Adam, AdamW).
    pub fn amsgrad(self, amsgrad: bool) -> ParamGroup {
        self.set("amsgrad", f64::from(u8::from(amsgrad)))
    }

    /// `"alpha"` (RMSprop's smoothing constant).
    pub fn alpha(self, alpha: f64) -> ParamGroup {
        self.set("alpha", alpha)
    }

    /// `"centered"` (RMSprop).
    pub fn centered(self, centered: bool) -> ParamGroup {
        self.set("centered", f64::from(u8::from(centered)))
    }

    /// `"lr_decay"` (Adagrad).
    pub fn lr_decay(self, lr_decay: f64) -> ParamGroup {
        self.set("lr_decay", lr_decay)
    }

    /// `"initial_accumulator_value"` (Adagrad).
    pub fn initial_accumulator_value(self, value: f64) -> ParamGroup {
        self.set("initial_accumulator_value", value)
    }

    /// `"maximize"`.
    pub fn maximize(self, maximize: bool) -> ParamGroup {
        self.set("maximize", f64::from(u8::from(maximize)))
    }
}

/// One optimizer's hyperparameters, read and written by name (the state's names).
pub(crate) trait Hyper: Clone + Debug {
    /// The names, in the order they are saved.
    fn names(&self) -> &'static [&'static str];
    /// The value of `name` (booleans as 0 or 1).
    fn get(&self, name: &str) -> f64;
    /// Sets `name` after checking the value alone; an unknown name is an error.
    fn set(&mut self, name: &str, value: f64) -> Result<()>;
    /// Checks what depends on several values (SGD's Nesterov needs momentum).
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// Sets the learning rate as given, unchecked (a scheduler's value).
    fn set_lr(&mut self, lr: f64);
    /// The optimizer's name in errors (`"SGD"`).
    fn optimizer_name(&self) -> &'static str;
    /// The hyperparameter OneCycleLR cycles: SGD's and RMSprop's momentum, Adam's β₁.
    fn momentum_name(&self) -> Option<&'static str> {
        None
    }
}

/// A boolean stored as 0.0 or 1.0; any other value is an error naming `name`.
pub(crate) fn flag(name: &str, value: f64) -> Result<bool> {
    if value == 0.0 || value == 1.0 {
        Ok(value == 1.0)
    } else {
        Err(Error::Invalid(format!(
            "{name} is a flag and must be 0 or 1, got {value}"
        )))
    }
}

/// The error for a hyperparameter an optimizer does not have.
pub(crate) fn unknown(optimizer: &str, name: &str) -> Error {
    Error::Invalid(format!("{optimizer} has no hyperparameter \"{name}\""))
}

/// One parameter's optimizer state, saved under `{buffer}.{i}` keys.
pub(crate) trait ParamState<H>: Clone + Debug + Sized {
    /// Writes the state of parameter `i` (flat index).
    fn save(&self, i: usize, state: &mut OptimizerState);
    /// Reads the state of parameter `i`, of shape `shape`, if it has one.
    fn load(r: &mut StateReader<'_>, i: usize, shape: &[usize], hyper: &H) -> Result<Option<Self>>;
}

/// One group: parameters, hyperparameters and each parameter's state.
#[derive(Clone, Debug)]
pub(crate) struct Group<H, S> {
    pub params: Vec<Tensor>,
    pub hyper: H,
    pub state: Vec<Option<S>>,
}

/// Every group of an optimizer, and the defaults new groups start from.
#[derive(Clone, Debug)]
pub(crate) struct Groups<H, S> {
    pub defaults: H,
    pub groups: Vec<Group<H, S>>,
}

/// The state key of hyperparameter `name` of group `g`.
fn key(g: usize, name: &str) -> String {
    if g == 0 {
        name.to_string()
    } else {
        format!("group{g}.{name}")
    }
}

/// An `Invalid` error about a loaded state reported as a state error.
pub(crate) fn loaded(e: Error) -> Error {
    match e {
        Error::Invalid(m) => Error::StateDict(m),
        other => other,
    }
}

impl<H: Hyper, S: ParamState<H>> Groups<H, S> {
    /// Group 0 from the constructor's parameters and hyperparameters.
    pub fn new(params: Vec<Tensor>, defaults: H) -> Result<Self> {
        check_params(&params)?;
        defaults.check()?;
        let n = params.len();
        Ok(Groups {
            groups: vec![Group {
                params,
                hyper: defaults.clone(),
                state: vec![None; n],
            }],
            defaults,
        })
    }

    /// A builder method: sets `name` in the defaults and in every group.
    pub fn set_default(&mut self, name: &str, value: f64) -> Result<()> {
        let mut defaults = self.defaults.clone();
        defaults.set(name, value)?;
        defaults.check()?;
        let mut hypers = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let mut h = g.hyper.clone();
            h.set(name, value)?;
            h.check()?;
            hypers.push(h);
        }
        self.defaults = defaults;
        for (g, h) in self.groups.iter_mut().zip(hypers) {
            g.hyper = h;
        }
        Ok(())
    }

    /// `add_param_group`: checks the parameters (leaves, none twice, none in another group)
    /// and the hyperparameters before adding anything.
    pub fn add(&mut self, group: ParamGroup) -> Result<()> {
        check_params(&group.params)?;
        for (i, p) in group.params.iter().enumerate() {
            if let Some(g) = self
                .groups
                .iter()
                .position(|g| g.params.iter().any(|q| q.same(p)))
            {
                return Err(Error::Invalid(format!(
                    "some parameters appear in more than one parameter group: parameter {i} of \
                     the new group is already in group {g}"
                )));
            }
        }
        let mut hyper = self.defaults.clone();
        for (name, &v) in &group.options {
            hyper.set(name, v)?;
        }
        hyper.check()?;
        let n = group.params.len();
        self.groups.push(Group {
            params: group.params,
            hyper,
            state: vec![None; n],
        });
        Ok(())
    }

    /// Every group's gradients, checked against their parameters before anything changes.
    pub fn gradients(&self) -> Result<Vec<Vec<Option<ArrayD<f32>>>>> {
        let mut offset = 0;
        self.groups
            .iter()
            .map(|g| {
                let grads = gradients(&g.params).map_err(|e| renumber(e, offset));
                offset += g.params.len();
                grads
            })
            .collect()
    }

    /// Every parameter, group after group.
    pub fn params(&self) -> Vec<Tensor> {
        self.groups.iter().flat_map(|g| g.params.clone()).collect()
    }

    /// `optimizer.zero_grad()`.
    pub fn zero_grad(&self) {
        self.groups
            .iter()
            .flat_map(|g| &g.params)
            .for_each(Tensor::zero_grad);
    }

    /// The learning rate of group `g` (panics on a group that does not exist).
    pub fn lr(&self, g: usize) -> f64 {
        self.groups[g].hyper.get("lr")
    }

    /// Sets the learning rate of group `g` as given (a scheduler's value).
    pub fn set_lr(&mut self, g: usize, lr: f64) {
        self.groups[g].hyper.set_lr(lr);
    }

    /// The value OneCycleLR cycles in group `g`, if the optimizer has one.
    pub fn momentum(&self, g: usize) -> Option<f64> {
        let h = &self.groups[g].hyper;
        h.momentum_name().map(|n| h.get(n))
    }

    /// Sets that value in group `g`; false if the optimizer has none.
    pub fn set_momentum(&mut self, g: usize, value: f64) -> bool {
        let h = &mut self.groups[g].hyper;
        match h.momentum_name() {
            Some(n) => h.set(n, value).is_ok(),
            None => false,
        }
    }

    /// `optimizer.state_dict()` of kind `kind`.
    pub fn state_dict(&self, kind: &str) -> OptimizerState {
        let mut s = OptimizerState::new(kind);
        let mut i = 0;
        for (g, group) in self.groups.iter().enumerate() {
            s.scalars
                .insert(key(g, "params"), group.params.len() as f64);
            for &name in group.hyper.names() {
                s.scalars.insert(key(g, name), group.hyper.get(name));
            }
            for st in &group.state {
                if let Some(st) = st {
                    st.save(i, &mut s);
                }
                i += 1;
            }
        }
        s
    }

    /// `optimizer.load_state_dict(state)`: the same kind, the same groups of the same sizes
    /// and shapes; the saved hyperparameters replace the current ones. Nothing changes on an
    /// error.
    pub fn load_state_dict(&mut self, kind: &str, state: &OptimizerState) -> Result<()> {
        let sizes: Vec<usize> = self.groups.iter().map(|g| g.params.len()).collect();
        let mut r = StateReader::new(state, kind, sizes[0])?;
        for (g, &n) in sizes.iter().enumerate().skip(1) {
            let saved = r.optional_scalar(&key(g, "params")).ok_or_else(|| {
                Error::StateDict(format!(
                    "the state has fewer parameter groups than this optimizer's {}",
                    sizes.len()
                ))
            })?;
            if saved != n as f64 {
                return Err(Error::StateDict(format!(
                    "group {g} of the state has {saved} parameters, this optimizer's {n}"
                )));
            }
        }
        let mut loaded_groups = Vec::with_capacity(self.groups.len());
        let mut i = 0;
        for (g, group) in self.groups.iter().enumerate() {
            let mut hyper = group.hyper.clone();
            for &name in group.hyper.names() {
                let v = r.scalar(&key(g, name))?;
                hyper.set(name, v).map_err(loaded)?;
            }
            hyper.check().map_err(loaded)?;
            let mut states = Vec::with_capacity(group.params.len());
            for p in &group.params {
                states.push(S::load(&mut r, i, &p.shape(), &hyper)?);
                i += 1;
            }
            loaded_groups.push((hyper, states));
        }
        if r.has_scalar(&key(sizes.len(), "params")) {
            return Err(Error::StateDict(format!(
                "the state has more parameter groups than this optimizer's {}",
                sizes.len()
            )));
        }
        r.finish()?;
        for (group, (hyper, states)) in self.groups.iter_mut().zip(loaded_groups) {
            group.hyper = hyper;
            group.state = states;
        }
        Ok(())
    }
}

/// Shifts "parameter {i}" in a gradient error by the group's offset.
fn renumber(e: Error, offset: usize) -> Error {
    if offset == 0 {
        return e;
    }
    match e {
        Error::Shape {
            what,
            expected,
            actual,
            hint,
        } => {
            let what = what
                .strip_prefix("gradient of parameter ")
                .and_then(|n| n.parse::<usize>().ok())
                .map_or(what.clone(), |n| {
                    format!("gradient of parameter {}", n + offset)
                });
            Error::Shape {
                what,
                expected,
                actual,
                hint,
            }
        }
        other => other,
    }
}
