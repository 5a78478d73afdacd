//! Losses, as `torch.nn.CrossEntropyLoss`, `NLLLoss`, `MSELoss`, `L1Loss`, `SmoothL1Loss`,
//! `HuberLoss`, `BCELoss` and `BCEWithLogitsLoss`, with PyTorch's semantics (class weights,
//! `ignore_index`, label smoothing, probability targets, reductions) and hand-written backwards.
//!
//! | PyTorch | rnn |
//! |---|---|
//! | `nn.CrossEntropyLoss` (class indices) | [`CrossEntropyLoss::forward`] |
//! | `nn.CrossEntropyLoss` (class probabilities) | [`CrossEntropyLoss::forward_probs`] |
//! | `nn.NLLLoss` | [`NLLLoss`] |
//! | `nn.MSELoss` | [`MSELoss`] |
//! | `nn.L1Loss`, `nn.SmoothL1Loss`, `nn.HuberLoss` | [`L1Loss`], [`SmoothL1Loss`], [`HuberLoss`] |
//! | `nn.BCELoss`, `nn.BCEWithLogitsLoss` | [`BCELoss`], [`BCEWithLogitsLoss`] |
//!
//! ## Class-index losses
//!
//! For class scores `x` of shape `(N, C)`, `(C)` or `(N, C, d1, ...)` and class-index targets
//! of shape `(N)`, `()` or `(N, d1, ...)`, with `lp = log_softmax(x)` along the class dimension
//! and class weights `w` (all 1 by default), each non-ignored element `i` with target `t` has
//!
//! ```text
//! nll_i    = -w[t] * lp[t]
//! smooth_i = -sum_c w[c] * lp[c]
//! loss_i   = (1 - eps) * nll_i + (eps / C) * smooth_i        (eps = label_smoothing)
//! ```
//!
//! and ignored elements (`t == ignore_index`) contribute 0. `Mean` divides the sum by
//! `sum_i w[t_i]` over non-ignored elements (PyTorch's weighted mean), `Sum` sums, `None` keeps
//! the per-element losses. `NLLLoss` is `nll_i` on inputs that are already log-probabilities.
//!
//! ```
//! use ndarray::array;
//! use rnn::{loss, Tensor};
//! let logits = Tensor::parameter(array![[2.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]].into_dyn());
//! let l = loss::cross_entropy(&logits, &array![0i64, 2]).unwrap();
//! let expected = ((1.0 + 2.0 * (-2.0f32).exp()).ln() + 3.0f32.ln()) / 2.0;
//! assert!((l.item().unwrap() - expected).abs() < 1e-6);
//! l.backward().unwrap();
//! ```

mod binary;
mod class;
mod regression;
mod soft;

use std::fmt;

use ndarray::{arr0, Array1, ArrayBase, ArrayD, Data, Dimension};

use crate::error::{Error, Result, Shape};
use crate::ops::read2;
use crate::tensor::{Backward, Tensor};
pub use binary::{BCELoss, BCEWithLogitsLoss};
use class::ClassLoss;
pub use regression::{HuberLoss, L1Loss, SmoothL1Loss};
use soft::SoftCrossEntropy;

/// How per-element losses are combined (`reduction=` in PyTorch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Per-element losses, shaped like the target.
    None,
    /// The (weighted) mean, a 0-d tensor.
    #[default]
    Mean,
    /// The sum, a 0-d tensor.
    Sum,
}

/// `nn.CrossEntropyLoss`: log-softmax over the class dimension (dim 1, or 0 for a 1-D input)
/// followed by the negative log-likelihood of the target class.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropyLoss {
    weight: Option<Array1<f32>>,
    ignore_index: i64,
    label_smoothing: f32,
    reduction: Reduction,
}

impl Default for CrossEntropyLoss {
    fn default() -> Self {
        CrossEntropyLoss {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::Mean,
        }
    }
}

impl CrossEntropyLoss {
    /// `nn.CrossEntropyLoss()`: no weights, `ignore_index = -100`, no smoothing, mean.
    pub fn new() -> Self {
        Self::default()
    }

    /// Per-class weights, shape `(C,)`.
    pub fn with_weight(mut self, weight: Array1<f32>) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Targets equal to `ignore_index` contribute nothing (default -100).
    pub fn with_ignore_index(mut self, ignore_index: i64) -> Self {
        self.ignore_index = ignore_index;
        self
    }

    /// Label smoothing `eps` in `[0, 1]`: the target becomes `(1 - eps) * one_hot + eps / C`.
    pub fn with_label_smoothing(mut self, eps: f32) -> Self {
        self.label_smoothing = eps;
        self
    }

    /// The reduction (default [`Reduction::Mean`]).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss of class scores `input` against class-index `target` (see the module docs for
    /// the shapes). Errors on mismatched shapes and on targets outside `0..C` that are not
    /// `ignore_index`.
    pub fn forward<S: Data<Elem = i64>, D: Dimension>(
        &self,
        input: &Tensor,
        target: &ArrayBase<S, D>,
    ) -> Result<Tensor> {
        let eps = self.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(Error::Invalid(format!(
                "label_smoothing must be between 0.0 and 1.0. Got: {eps}"
            )));
        }
        let spec = ClassLoss {
            what: "CrossEntropyLoss",
            weight: self.weight.as_ref(),
            ignore_index: self.ignore_index,
            eps,
            reduction: self.reduction,
            log_softmax: true,
        };
        spec.forward(input, &target.view().into_dyn())
    }

    /// The loss of class scores `input` against class probabilities `target` of the input's
    /// shape (PyTorch's float targets; see `soft` in the source for the equations): each
    /// sample's target row is a distribution over the classes, smoothed as
    /// `(1 − eps)·t + eps/C`, weighted by the class weights. `Mean` divides by the number of
    /// samples. A non-default `ignore_index` is refused, as in PyTorch ("ignore_index is not
    /// supported for floating point target"). Gradients reach `input` and, if it requires
    /// one, `target`.
    ///
    /// ```
    /// use rnn::loss::CrossEntropyLoss;
    /// use rnn::Tensor;
    /// let x = Tensor::from_vec(&[1, 2], vec![0.0, 0.0]).unwrap();
    /// let t = Tensor::from_vec(&[1, 2], vec![0.25, 0.75]).unwrap();
    /// let l = CrossEntropyLoss::new().forward_probs(&x, &t).unwrap();
    /// assert!((l.item().unwrap() - 2f32.ln()).abs() < 1e-6);
    /// let refused = CrossEntropyLoss::new().with_ignore_index(0).forward_probs(&x, &t);
    /// assert!(refused.unwrap_err().to_string().contains("ignore_index is not supported"));
    /// ```
    pub fn forward_probs(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let eps = self.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(Error::Invalid(format!(
                "label_smoothing must be between 0.0 and 1.0. Got: {eps}"
            )));
        }
        SoftCrossEntropy {
            weight: self.weight.as_ref(),
            ignore_index: self.ignore_index,
            eps,
            reduction: self.reduction,
        }
        .forward(input, target)
    }
}

/// `nn.NLLLoss`: the negative log-likelihood of the target class, on log-probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct NLLLoss {
    weight: Option<Array1<f32>>,
    ignore_index: i64,
    reduction: Reduction,
}

impl Default for NLLLoss {
    fn default() -> Self {
        NLLLoss {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
        }
    }
}

impl NLLLoss {
    /// `nn.NLLLoss()`: no weights, `ignore_index = -100`, mean.
    pub fn new() -> Self {
        Self::default()
    }

    /// Per-class weights, shape `(C,)`.
    pub fn with_weight(mut self, weight: Array1<f32>) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Targets equal to `ignore_index` contribute nothing (default -100).
    pub fn with_ignore_index(mut self, ignore_index: i64) -> Self {
        self.ignore_index = ignore_index;
        self
    }

    /// The reduction (default [`Reduction::Mean`]).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// `-w[t] * input[t]` per element, reduced; shapes as for [`CrossEntropyLoss::forward`].
    pub fn forward<S: Data<Elem = i64>, D: Dimension>(
        &self,
        input: &Tensor,
        target: &ArrayBase<S, D>,
    ) -> Result<Tensor> {
        let spec = ClassLoss {
            what: "NLLLoss",
            weight: self.weight.as_ref(),
            ignore_index: self.ignore_index,
            eps: 0.0,
            reduction: self.reduction,
            log_softmax: false,
        };
        spec.forward(input, &target.view().into_dyn())
    }
}

/// `nn.MSELoss`: `(input - target)^2` per element, reduced. The shapes must be equal (PyTorch
/// would broadcast with a warning; here it is an error).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MSELoss {
    reduction: Reduction,
}

impl MSELoss {
    /// `nn.MSELoss()` (mean).
    pub fn new() -> Self {
        Self::default()
    }

    /// The reduction (default [`Reduction::Mean`]).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss; gradients flow to `input` and, if it requires one, to `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (out, scale) = read2(input, target, |x, y| -> Result<(ArrayD<f32>, f32)> {
            if x.shape() != y.shape() {
                return Err(Error::shape_hint(
                    "MSELoss target",
                    Shape::of(x.shape()).to_string(),
                    y.shape(),
                    "the target must have the input's shape (no broadcasting)",
                ));
            }
            let sq = (x - y).mapv(|d| d * d);
            Ok(match self.reduction {
                Reduction::None => (sq, 1.0),
                Reduction::Sum => (arr0(sq.sum()).into_dyn(), 1.0),
                Reduction::Mean => {
                    let n = sq.len() as f32;
                    (arr0(sq.sum() / n).into_dyn(), 1.0 / n)
                }
            })
        })?;
        Ok(Tensor::from_unary_op(
            out,
            vec![input.clone(), target.clone()],
            MseBackward { scale },
        ))
    }
}

/// `d/dx = 2 (x - y) g scale`, `d/dy = -d/dx`.
struct MseBackward {
    scale: f32,
}

impl Backward for MseBackward {
    fn name(&self) -> &'static str {
        "MseLossBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None, None];
        };
        let dx = read2(&inputs[0], &inputs[1], |x, y| {
            (x - y) * &g.mapv(|v| 2.0 * v * self.scale)
        });
        let dy = inputs[1].requires_grad().then(|| -&dx);
        vec![inputs[0].requires_grad().then_some(dx), dy]
    }
}

/// `F.cross_entropy(input, target)` with PyTorch's defaults.
pub fn cross_entropy<S: Data<Elem = i64>, D: Dimension>(
    input: &Tensor,
    target: &ArrayBase<S, D>,
) -> Result<Tensor> {
    CrossEntropyLoss::default().forward(input, target)
}

/// `F.nll_loss(input, target)` with PyTorch's defaults.
pub fn nll_loss<S: Data<Elem = i64>, D: Dimension>(
    input: &Tensor,
    target: &ArrayBase<S, D>,
) -> Result<Tensor> {
    NLLLoss::default().forward(input, target)
}

/// `F.mse_loss(input, target)` (mean).
pub fn mse_loss(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    MSELoss::default().forward(input, target)
}

/// `F.l1_loss(input, target)` (mean).
pub fn l1_loss(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    L1Loss::default().forward(input, target)
}

/// `F.smooth_l1_loss(input, target)` (mean, beta 1).
pub fn smooth_l1_loss(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    SmoothL1Loss::default().forward(input, target)
}

/// `F.huber_loss(input, target)` (mean, delta 1).
pub fn huber_loss(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    HuberLoss::default().forward(input, target)
}

/// `F.binary_cross_entropy(input, target)` (mean).
pub fn binary_cross_entropy(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    BCELoss::default().forward(input, target)
}

/// `F.binary_cross_entropy_with_logits(input, target)` (mean).
pub fn binary_cross_entropy_with_logits(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    BCEWithLogitsLoss::default().forward(input, target)
}

impl fmt::Display for CrossEntropyLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrossEntropyLoss()")
    }
}

impl fmt::Display for NLLLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NLLLoss()")
    }
}

impl fmt::Display for MSELoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MSELoss()")
    }
}
