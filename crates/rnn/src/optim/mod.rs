//! Optimizers, gradient clipping and learning-rate schedulers, as `torch.optim` and
//! `torch.nn.utils.clip_grad_*`.
//!
//! - [`Sgd`], [`Adam`] and [`AdamW`] follow PyTorch's single-tensor (`foreach=False`) update
//!   operation by operation in f32, with the scalar factors (bias corrections, step sizes)
//!   computed in f64 as Python floats are, so their parameters agree with PyTorch's to the last
//!   bit or two after many steps.
//! - [`clip_grad_norm_`] and [`clip_grad_value_`] rescale or clamp gradients in place.
//! - [`StepLR`] and [`CosineAnnealingLR`] change an optimizer's learning rate once per epoch
//!   with PyTorch's (recursive) formulas, so the learning rates are PyTorch's to the bit.
//! - [`OptimizerState`] is `optimizer.state_dict()`: it can be saved as safetensors and loaded
//!   into a new optimizer; training then goes on bit for bit as if it had never stopped.
//!
//! As in PyTorch, a parameter without a gradient (`.grad()` is `None`) is skipped by `step`,
//! and [`Optimizer::zero_grad`] sets the gradients to `None` (`set_to_none=True`).
//!
//! # Training loop
//!
//! `model.parameters()` → Adam → `loop { zero_grad; loss.backward(); step }`. Here the "model"
//! is one parameter `w` and the loss is `½‖w − target‖²`, whose gradient `w − target` is given
//! to `backward_with` (for a leaf, `w.backward_with(g)` accumulates `g` into `w.grad`).
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::{Adam, LrScheduler, Optimizer, StepLR};
//! use rnn::Tensor;
//!
//! let w = Tensor::parameter(array![0.0f32, 0.0, 0.0].into_dyn());
//! let target = array![1.0f32, -2.0, 0.5].into_dyn();
//! let params = vec![w.clone()]; // model.parameters()
//! let mut opt = Adam::new(params, 0.1).unwrap(); // torch.optim.Adam(params, lr=0.1)
//! let mut sched = StepLR::new(100, 0.5).unwrap(); // StepLR(opt, step_size=100, gamma=0.5)
//! for _ in 0..300 {
//!     opt.zero_grad();
//!     let grad = &*w.data() - &target; // d/dw ½‖w − target‖²
//!     w.backward_with(grad).unwrap(); // loss.backward()
//!     opt.step().unwrap();
//!     sched.step(&mut opt);
//! }
//! assert_eq!(opt.lr(), 0.0125); // 0.1 halved three times
//! for (a, b) in w.data().iter().zip(target.iter()) {
//!     assert!((a - b).abs() < 1e-2, "{a} vs {b}");
//! }
//!
//! // Checkpoint: the state goes to a safetensors file and back.
//! let file = opt.state_dict().to_file();
//! let state = rnn::optim::OptimizerState::from_file(&file).unwrap();
//! let mut resumed = Adam::new(vec![w.clone()], 0.1).unwrap();
//! resumed.load_state_dict(&state).unwrap();
//! assert_eq!(resumed.lr(), 0.0125);
//! ```

pub mod adagrad;
pub mod adam;
pub mod clip;
pub mod groups;
pub mod one_cycle;
pub mod plateau;
pub mod rmsprop;
pub mod scheduler;
pub mod schedulers;
pub mod sgd;

use std::collections::{BTreeMap, BTreeSet};

use ndarray::ArrayD;

use crate::error::{Error, Result, Shape};
use crate::io::{TensorData, TensorFile};
use crate::tensor::Tensor;

pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW};
pub use clip::{clip_grad_norm_, clip_grad_norm_error_if_nonfinite_, clip_grad_value_};
pub use groups::ParamGroup;
pub use one_cycle::{Anneal, OneCycleLR, OneCycleOptions};
pub use plateau::{PlateauMode, ReduceLROnPlateau, ThresholdMode};
pub use rmsprop::RMSprop;
pub use scheduler::{CosineAnnealingLR, LrScheduler, StepLR};
pub use schedulers::{ExponentialLR, LambdaLR, LinearLR, LrLambda, SequentialLR};
pub use sgd::Sgd;

/// The [`Optimizer`] methods every optimizer answers from its `groups: Groups<_, _>` field and
/// its `kind()`.
macro_rules! group_methods {
    () => {
        fn zero_grad(&self) {
            self.groups.zero_grad()
        }
        fn num_groups(&self) -> usize {
            self.groups.groups.len()
        }
        fn group_lr(&self, group: usize) -> f64 {
            self.groups.lr(group)
        }
        fn set_group_lr(&mut self, group: usize, lr: f64) {
            self.groups.set_lr(group, lr)
        }
        fn group_momentum(&self, group: usize) -> Option<f64> {
            self.groups.momentum(group)
        }
        fn set_group_momentum(&mut self, group: usize, value: f64) -> bool {
            self.groups.set_momentum(group, value)
        }
        fn add_param_group(&mut self, group: ParamGroup) -> Result<()> {
            self.groups.add(group)
        }
        fn state_dict(&self) -> OptimizerState {
            self.groups.state_dict(self.kind())
        }
        fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
            let kind = self.kind();
            self.groups.load_state_dict(kind, state)
        }
    };
}
pub(crate) use group_methods;

/// What every optimizer does, as `torch.optim.Optimizer`, with its parameter groups
/// (see [`groups`]).
pub trait Optimizer {
    /// One update of every parameter that has a gradient (`optimizer.step()`). Fails, changing
    /// nothing, if a gradient's shape differs from its parameter's.
    fn step(&mut self) -> Result<()>;

    /// Sets every parameter's gradient to `None` (`optimizer.zero_grad(set_to_none=True)`).
    fn zero_grad(&self);

    /// The learning rate of the first group (`optimizer.param_groups[0]["lr"]`).
    fn lr(&self) -> f64 {
        self.group_lr(0)
    }

    /// Sets every group's learning rate to `lr`. The value is used as given (a scheduler may
    /// produce any value; the constructors are the ones that validate).
    fn set_lr(&mut self, lr: f64) {
        for g in 0..self.num_groups() {
            self.set_group_lr(g, lr);
        }
    }

    /// The number of parameter groups (`len(optimizer.param_groups)`), at least 1.
    fn num_groups(&self) -> usize;

    /// `optimizer.param_groups[group]["lr"]`. Panics if `group >= num_groups()`, as indexing
    /// does.
    fn group_lr(&self, group: usize) -> f64;

    /// Sets `optimizer.param_groups[group]["lr"]`, as a scheduler does (used as given). Panics
    /// if `group >= num_groups()`.
    fn set_group_lr(&mut self, group: usize, lr: f64);

    /// What `OneCycleLR` cycles in `group`: `momentum` for SGD and RMSprop, β₁ for Adam and
    /// AdamW; `None` for Adagrad, which has neither.
    fn group_momentum(&self, group: usize) -> Option<f64>;

    /// Sets that value; false (and nothing changes) if the optimizer has none or the value is
    /// invalid.
    fn set_group_momentum(&mut self, group: usize, value: f64) -> bool;

    /// `optimizer.add_param_group({...})`: a new group; the hyperparameters it does not name
    /// are the optimizer's defaults (its constructor's and builder methods' values). Fails,
    /// adding nothing, on a parameter already in a group, a non-leaf, or a hyperparameter the
    /// optimizer does not have or refuses.
    fn add_param_group(&mut self, group: ParamGroup) -> Result<()>;

    /// The state to resume from: hyperparameters and per-parameter buffers
    /// (`optimizer.state_dict()`).
    fn state_dict(&self) -> OptimizerState;

    /// Restores a state saved by [`Optimizer::state_dict`] of the same kind of optimizer over
    /// parameters of the same shapes. As in PyTorch, the saved hyperparameters (learning rate,
    /// momentum, betas...) replace the current ones. Nothing changes if the state does not fit:
    /// the error names the key, the shapes or the kind that differ.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;
}

/// An optimizer's `state_dict`: named f32 buffers and f64 scalars, for one parameter group.
///
/// Keys: hyperparameters by name (`lr`, `momentum`, `beta1`...), `params` (the number of
/// parameters), and per-parameter entries suffixed with the parameter's index in the list given
/// to the optimizer: `momentum_buffer.3`, `exp_avg.3`, `exp_avg_sq.3`, `max_exp_avg_sq.3`,
/// `step.3`. Booleans are stored as 0.0 or 1.0. A parameter that has never been updated has no
/// entries, as in PyTorch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Which optimizer wrote it: `"sgd"`, `"adam"` or `"adamw"`; loading checks it.
    pub kind: String,
    /// Per-parameter buffers (f32, the parameter's shape).
    pub tensors: BTreeMap<String, ArrayD<f32>>,
    /// Hyperparameters and step counts (f64, so learning rates survive exactly).
    pub scalars: BTreeMap<String, f64>,
}

/// The metadata key of [`OptimizerState::to_file`] that holds the optimizer's kind.
pub const KIND_METADATA_KEY: &str = "optimizer";

impl OptimizerState {
    /// An empty state of the given kind.
    pub fn new(kind: impl Into<String>) -> Self {
        OptimizerState {
            kind: kind.into(),
            ..Self::default()
        }
    }

    /// The state as a safetensors file: buffers as F32 tensors, scalars as 0-dimensional F64
    /// tensors (exact: a resumed run is bit-identical), the kind as metadata
    /// `{"optimizer": kind}`. Write it with [`TensorFile::write`].
    ///
    /// Buffer and scalar names never collide in states made by this crate's optimizers; if a
    /// hand-made state has a name in both, the scalar is the one written.
    pub fn to_file(&self) -> TensorFile {
        let mut file = TensorFile::new();
        file.metadata
            .insert(KIND_METADATA_KEY.to_string(), self.kind.clone());
        for (key, t) in &self.tensors {
            file.insert(key.clone(), t.clone());
        }
        for (key, v) in &self.scalars {
            file.insert(key.clone(), ndarray::arr0(*v).into_dyn());
        }
        file
    }

    /// Reads a state written by [`OptimizerState::to_file`]: F32 (or BF16) tensors are buffers,
    /// 0-dimensional F64 tensors are scalars. A missing kind, an F64 tensor that is not
    /// 0-dimensional or an integer tensor is an [`Error::StateDict`] naming it.
    pub fn from_file(file: &TensorFile) -> Result<Self> {
        let kind = file.metadata.get(KIND_METADATA_KEY).ok_or_else(|| {
            Error::StateDict(format!(
                "not an optimizer state: the file has no \"{KIND_METADATA_KEY}\" metadata entry"
            ))
        })?;
        let mut state = OptimizerState::new(kind.clone());
        for (key, data) in &file.tensors {
            match data {
                TensorData::F32(a) => {
                    state.tensors.insert(key.clone(), a.clone());
                }
                // Widened exactly, as files with BF16 buffers were always read.
                TensorData::BF16(_) => {
                    state.tensors.insert(key.clone(), data.to_f32());
                }
                TensorData::F64(a) if a.ndim() == 0 => {
                    let v = *a.iter().next().expect("a 0-d array has one element");
                    state.scalars.insert(key.clone(), v);
                }
                other => {
                    return Err(Error::StateDict(format!(
                    "optimizer state entry \"{key}\": expected an F32 buffer or a 0-dimensional \
                         F64 scalar, got {} of shape {}",
                    other.dtype(),
                    Shape::of(other.shape())
                )))
                }
            }
        }
        Ok(state)
    }
}

/// Checks a hyperparameter that must be finite and non-negative (PyTorch:
/// `if not 0.0 <= lr: raise ValueError(f"Invalid learning rate: {lr}")`). `what` is the phrase
/// after "Invalid", e.g. `"learning rate"`.
pub(crate) fn check_non_negative(what: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "Invalid {what}: {value} (must be finite and >= 0)"
        )))
    }
}

/// Checks the parameter list given to an optimizer: not empty, leaves only, no tensor twice.
pub(crate) fn check_params(params: &[Tensor]) -> Result<()> {
    if params.is_empty() {
        return Err(Error::Invalid(
            "optimizer got an empty parameter list".into(),
        ));
    }
    for (i, p) in params.iter().enumerate() {
        if !p.is_leaf() {
            return Err(Error::Invalid(format!(
                "can't optimize a non-leaf Tensor (parameter {i} is the result of an operation; \
                 use a parameter or .detach())"
            )));
        }
        if let Some(j) = params[..i].iter().position(|q| q.same(p)) {
            return Err(Error::Invalid(format!(
                "parameter {i} is the same tensor as parameter {j}: a parameter may appear only once"
            )));
        }
    }
    Ok(())
}

/// The gradient of every parameter (`None` where there is none), checked against the
/// parameters' shapes before anything is updated.
pub(crate) fn gradients(params: &[Tensor]) -> Result<Vec<Option<ArrayD<f32>>>> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let grad = p.grad();
            if let Some(g) = &grad {
                let shape = p.shape();
                if g.shape() != shape.as_slice() {
                    return Err(Error::shape_hint(
                        format!("gradient of parameter {i}"),
                        Shape::of(&shape).to_string(),
                        g.shape(),
                        "a gradient must have its parameter's shape",
                    ));
                }
            }
            Ok(grad)
        })
        .collect()
}

/// Reads an [`OptimizerState`] for `load_state_dict`: checks the kind and the number of
/// parameters, hands out entries by key, and at the end rejects any entry not asked for.
pub(crate) struct StateReader<'a> {
    state: &'a OptimizerState,
    tensors_used: BTreeSet<&'a str>,
    scalars_used: BTreeSet<&'a str>,
}

impl<'a> StateReader<'a> {
    /// Starts reading; fails if the kind or the number of parameters differ.
    pub(crate) fn new(state: &'a OptimizerState, kind: &str, num_params: usize) -> Result<Self> {
        if state.kind != kind {
            return Err(Error::StateDict(format!(
                "the state is of a \"{}\" optimizer, this optimizer is \"{kind}\"",
                state.kind
            )));
        }
        let mut reader = StateReader {
            state,
            tensors_used: BTreeSet::new(),
            scalars_used: BTreeSet::new(),
        };
        let n = reader.scalar("params")?;
        if n != num_params as f64 {
            return Err(Error::StateDict(format!(
                "the state is for {n} parameters, this optimizer has {num_params}"
            )));
        }
        Ok(reader)
    }

    /// A scalar that must be present.
    pub(crate) fn scalar(&mut self, key: &str) -> Result<f64> {
        self.optional_scalar(key).ok_or_else(|| {
            Error::StateDict(format!(
                "missing scalar \"{key}\" in the \"{}\" optimizer state",
                self.state.kind
            ))
        })
    }

    /// Whether the state has the scalar `key` (without marking it read).
    pub(crate) fn has_scalar(&self, key: &str) -> bool {
        self.state.scalars.contains_key(key)
    }

    /// A scalar that may be absent.
    pub(crate) fn optional_scalar(&mut self, key: &str) -> Option<f64> {
        let (k, v) = self.state.scalars.get_key_value(key)?;
        self.scalars_used.insert(k.as_str());
        Some(*v)
    }

    /// A buffer that may be absent; when present it must have `shape`.
    pub(crate) fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<Option<ArrayD<f32>>> {
        let Some((k, t)) = self.state.tensors.get_key_value(key) else {
            return Ok(None);
        };
        self.tensors_used.insert(k.as_str());
        if t.shape() != shape {
            return Err(Error::StateDict(format!(
                "size mismatch for \"{key}\": the state has shape {}, the parameter has shape {}",
                Shape::of(t.shape()),
                Shape::of(shape)
            )));
        }
        Ok(Some(t.clone()))
    }

    /// A buffer that must be present (with `shape`).
    pub(crate) fn required_tensor(&mut self, key: &str, shape: &[usize]) -> Result<ArrayD<f32>> {
        self.tensor(key, shape)?.ok_or_else(|| {
            Error::StateDict(format!(
                "missing buffer \"{key}\" in the \"{}\" optimizer state",
                self.state.kind
            ))
        })
    }

    /// Fails if the state has entries that were not read.
    pub(crate) fn finish(self) -> Result<()> {
        let unexpected: Vec<String> = self
            .state
            .tensors
            .keys()
            .filter(|k| !self.tensors_used.contains(k.as_str()))
            .chain(
                self.state
                    .scalars
                    .keys()
                    .filter(|k| !self.scalars_used.contains(k.as_str())),
            )
            .map(|k| format!("\"{k}\""))
            .collect();
        if unexpected.is_empty() {
            Ok(())
        } else {
            Err(Error::StateDict(format!(
                "unexpected key(s) in the \"{}\" optimizer state: {}",
                self.state.kind,
                unexpected.join(", ")
            )))
        }
    }
}

/// Runs `f`, compiled for AVX2 + FMA when the CPU has them (x86-64). Inside, `f32::mul_add`
/// is then one instruction that vectorises with the loop around it, instead of a call to libm's
/// `fmaf` per value (the optimizers' update loops were ~6% of a char-model training step). Both
/// are the correctly rounded fused multiply-add, and the other operations are IEEE in any
/// width, so the results are the same bits either way.
#[inline(always)]
pub(crate) fn with_fma<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if crate::engine::math::has_avx2_fma() {
        /// `f()` with the features enabled, so that `f` and the loops it runs are compiled
        /// with them once inlined here.
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn call<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { call(f) };
    }
    f()
}

/// The values of `a` as one row-major slice, for the optimizers' element loops. `a` is first
/// made row-major (standard layout) if it is not, every array this crate creates already
/// being so; its values are unchanged.
pub(crate) fn row_major_values(a: &mut ArrayD<f32>) -> Result<&mut [f32]> {
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
    a.as_slice_mut()
        .ok_or_else(|| Error::Invalid("a row-major array has no contiguous slice".into()))
}

/// The values of the optimizer state `what` of parameter `i` as one row-major slice (see
/// [`row_major_values`]), checked to have the parameter's `len` values: `load_state_dict`
/// checks shapes, but a parameter can be replaced afterwards, and the element loops zip.
pub(crate) fn state_values<'a>(
    a: &'a mut ArrayD<f32>,
    what: &str,
    i: usize,
    len: usize,
) -> Result<&'a mut [f32]> {
    let values = row_major_values(a)?;
    if values.len() != len {
        return Err(Error::Invalid(format!(
            "{what} of parameter {i} has {} values, the parameter {len}",
            values.len()
        )));
    }
    Ok(values)
}

/// `torch.maximum`: the larger value, NaN if either is NaN.
#[inline]
pub(crate) fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2, IxDyn};

    #[test]
    fn state_of_another_size_than_its_parameter_is_an_error() {
        // The parameter is replaced by a longer one after a step: its moments and momentum
        // buffer no longer fit, and the loops must not silently stop at the shorter.
        let makers: [fn(Tensor) -> Box<dyn Optimizer>; 2] = [
            |w| Box::new(Adam::new(vec![w], 0.1).unwrap()),
            |w| {
                Box::new(
                    Sgd::new(vec![w], 0.1)
                        .and_then(|o| o.with_momentum(0.9))
                        .unwrap(),
                )
            },
        ];
        for make in makers {
            let w = Tensor::parameter(array![1.0f32, 2.0, 3.0].into_dyn());
            let mut opt = make(w.clone());
            w.set_grad(Some(array![1.0f32, 1.0, 1.0].into_dyn()));
            opt.step().unwrap();
            *w.data_mut() = array![1.0f32, 2.0, 3.0, 4.0].into_dyn();
            w.set_grad(Some(array![1.0f32, 1.0, 1.0, 1.0].into_dyn()));
            let err = opt.step().unwrap_err().to_string();
            assert!(
                err.contains("of parameter 0 has 3 values, the parameter 4"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_column_major_parameter_steps_as_a_row_major_one() {
        // Adam with amsgrad, SGD with Nesterov momentum and weight decay.
        let makers: [fn(Tensor) -> Box<dyn Optimizer>; 2] = [
            |w| Box::new(Adam::new(vec![w], 0.1).unwrap().with_amsgrad(true)),
            |w| {
                Box::new(
                    Sgd::new(vec![w], 0.1)
                        .and_then(|o| o.with_momentum(0.9))
                        .and_then(|o| o.with_nesterov(true))
                        .and_then(|o| o.with_weight_decay(0.01))
                        .unwrap(),
                )
            },
        ];
        let mut rng = crate::rng::Rng::new(3);
        let mut values =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect() };
        let rows = Array2::from_shape_vec((3, 4), values(12)).unwrap();
        let grad = Array2::from_shape_vec((3, 4), values(12)).unwrap();
        // The same values, stored column by column.
        let columns = |a: &Array2<f32>| a.t().as_standard_layout().into_owned().reversed_axes();
        for make in makers {
            let row_major = Tensor::parameter(rows.clone().into_dyn());
            let column_major = Tensor::parameter(columns(&rows).into_dyn());
            assert!(!column_major.data().is_standard_layout());
            let mut opts = [make(row_major.clone()), make(column_major.clone())];
            for _ in 0..3 {
                for (w, opt) in [&row_major, &column_major].into_iter().zip(&mut opts) {
                    w.set_grad(Some(columns(&grad).into_dyn()));
                    opt.step().unwrap();
                }
            }
            assert_eq!(row_major.to_array(), column_major.to_array());
            assert_ne!(row_major.to_array(), rows.clone().into_dyn());
        }
    }

    #[test]
    fn file_round_trip_is_exact() {
        let mut s = OptimizerState::new("adam");
        s.tensors.insert(
            "exp_avg.0".into(),
            array![1.0f32, f32::MIN_POSITIVE, -3.5].into_dyn(),
        );
        s.scalars.insert("lr".into(), 0.1 + 0.2);
        s.scalars.insert("step.0".into(), 7.0);
        let back = OptimizerState::from_file(&s.to_file()).unwrap();
        assert_eq!(back, s);
        let bytes = s.to_file().to_bytes().unwrap();
        let again = TensorFile::from_bytes(&bytes, "<memory>").unwrap();
        assert_eq!(OptimizerState::from_file(&again).unwrap(), s);
    }

    #[test]
    fn from_file_rejects_other_files() {
        let mut f = TensorFile::new();
        f.insert("weight", ArrayD::<f32>::zeros(IxDyn(&[2])));
        let err = OptimizerState::from_file(&f).unwrap_err().to_string();
        assert!(err.contains("\"optimizer\" metadata"), "{err}");
        f.metadata.insert("optimizer".into(), "sgd".into());
        f.insert("lr", ArrayD::<f64>::zeros(IxDyn(&[2])));
        let err = OptimizerState::from_file(&f).unwrap_err().to_string();
        assert!(err.contains("\"lr\"") && err.contains("(2,)"), "{err}");
    }

    #[test]
    fn parameter_lists_are_checked() {
        let p = Tensor::parameter(array![1.0f32].into_dyn());
        let err = check_params(&[]).unwrap_err().to_string();
        assert!(err.contains("empty parameter list"), "{err}");
        let err = check_params(&[p.clone(), p.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("parameter 1 is the same tensor as parameter 0"),
            "{err}"
        );
        let err = check_non_negative("learning rate", -0.5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Invalid learning rate: -0.5"), "{err}");
        assert!(check_non_negative("learning rate", f64::NAN).is_err());
        assert!(check_non_negative("learning rate", 0.0).is_ok());
    }

    #[test]
    fn gradients_must_match_their_parameter() {
        let p = Tensor::parameter(ArrayD::zeros(IxDyn(&[3, 5])));
        p.set_grad(Some(ArrayD::zeros(IxDyn(&[5, 3]))));
        let err = gradients(&[p]).unwrap_err().to_string();
        assert!(
            err.contains("gradient of parameter 0")
                && err.contains("(3, 5)")
                && err.contains("(5, 3)"),
            "{err}"
        );
    }
}
