//! Binary cross-entropy: `nn.BCELoss` on probabilities and `nn.BCEWithLogitsLoss` on logits
//! (multi-label tagging: one independent yes/no per element).
//!
//! With `x` the input, `y ∈ [0, 1]` the target (same shape), `w` the optional `weight`
//! broadcast to the input, `pw` the optional `pos_weight` (broadcast along the last
//! dimension, the classes) and `σ` the logistic sigmoid:
//!
//! ```text
//! BCELoss:            l = −w·(y·max(ln x, −100) + (1 − y)·max(ln(1 − x), −100))
//!                     dl/dx = w·(x − y) / max(x·(1 − x), 1e-12)
//! BCEWithLogitsLoss:  lw = 1 + (pw − 1)·y
//!                     l = w·((1 − y)·x + lw·(ln(1 + e^−|x|) + max(−x, 0)))
//!                     dl/dx = w·(σ(x)·lw − pw·y)
//! ```
//!
//! The logits form never takes the log of a rounded probability, so it is the stable one. The
//! logs are clamped at −100 as PyTorch does, so a probability of exactly 0 or 1 gives a finite
//! loss. An input outside `[0, 1]` for `BCELoss` is an error, as in PyTorch ("all elements of
//! input should be between 0 and 1"). The gradient reaches the input only: the target is a
//! constant here.
//!
//! ```
//! use rnn::loss::{BCELoss, BCEWithLogitsLoss};
//! use rnn::Tensor;
//! let logits = Tensor::from_vec(&[2], vec![0.0, 2.0]).unwrap();
//! let target = Tensor::from_vec(&[2], vec![1.0, 0.0]).unwrap();
//! let a = BCEWithLogitsLoss::new().forward(&logits, &target).unwrap().item().unwrap();
//! let probs = logits.sigmoid();
//! let b = BCELoss::new().forward(&probs, &target).unwrap().item().unwrap();
//! assert!((a - b).abs() < 1e-6);
//! ```

use std::fmt;

use ndarray::{ArrayD, Zip};

use super::regression::{per_element, reduce, same_shape};
use super::Reduction;
use crate::error::{Error, Result, Shape};
use crate::ops::read2;
use crate::tensor::{Backward, Tensor};

/// `weight` (or `pos_weight`) broadcast to the input's shape, or an error naming both shapes.
fn broadcast_to(what: &str, w: &ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
    w.broadcast(shape).map(|v| v.to_owned()).ok_or_else(|| {
        Error::shape_hint(
            what,
            format!("a shape broadcastable to the input's {}", Shape::of(shape)),
            w.shape(),
            "",
        )
    })
}

/// `nn.BCELoss(weight=None, reduction='mean')`: binary cross-entropy on probabilities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BCELoss {
    weight: Option<ArrayD<f32>>,
    reduction: Reduction,
}

impl BCELoss {
    /// `nn.BCELoss()`: no weight, mean.
    pub fn new() -> Self {
        Self::default()
    }

    /// A rescaling weight for each element, broadcast to the input's shape.
    pub fn with_weight(mut self, weight: ArrayD<f32>) -> Self {
        self.weight = Some(weight);
        self
    }

    /// The reduction (default [`Reduction::Mean`]).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss of probabilities `input` against `target` of the same shape (module docs).
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (out, op) = read2(input, target, |x, y| -> Result<_> {
            same_shape("BCELoss", x.shape(), y.shape())?;
            if let Some(bad) = x.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                return Err(Error::Invalid(format!(
                    "BCELoss: all elements of input should be between 0 and 1, got {bad} \
                     (apply sigmoid first, or use BCEWithLogitsLoss on the logits)"
                )));
            }
            let w = match &self.weight {
                Some(w) => Some(broadcast_to("BCELoss weight", w, x.shape())?),
                None => None,
            };
            let mut losses = Zip::from(x).and(y).map_collect(|&x, &y| {
                let (log_x, log_1mx) = (x.ln().max(-100.0), (1.0 - x).ln().max(-100.0));
                (y - 1.0) * log_1mx - y * log_x
            });
            if let Some(w) = &w {
                losses *= w;
            }
            let (out, scale) = reduce(losses, self.reduction);
            Ok((
                out,
                BinaryBackward {
                    logits: false,
                    weight: w,
                    pos_weight: None,
                    scale,
                },
            ))
        })?;
        Ok(Tensor::from_unary_op(
            out,
            vec![input.clone(), target.clone()],
            op,
        ))
    }
}

/// `nn.BCEWithLogitsLoss(weight=None, reduction='mean', pos_weight=None)`: a sigmoid and
/// binary cross-entropy in one stable formula.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BCEWithLogitsLoss {
    weight: Option<ArrayD<f32>>,
    pos_weight: Option<ArrayD<f32>>,
    reduction: Reduction,
}

impl BCEWithLogitsLoss {
    /// `nn.BCEWithLogitsLoss()`: no weights, mean.
    pub fn new() -> Self {
        Self::default()
    }

    /// A rescaling weight for each element, broadcast to the input's shape.
    pub fn with_weight(mut self, weight: ArrayD<f32>) -> Self {
        self.weight = Some(weight);
        self
    }

    /// The weight of positive examples, usually one per class `(C,)`, broadcast to the input
    /// (classes on the last dimension): `pw > 1` raises recall, `pw < 1` precision.
    pub fn with_pos_weight(mut self, pos_weight: ArrayD<f32>) -> Self {
        self.pos_weight = Some(pos_weight);
        self
    }

    /// The reduction (default [`Reduction::Mean`]).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss of logits `input` against `target` of the same shape (module docs).
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (out, op) = read2(input, target, |x, y| -> Result<_> {
            same_shape("BCEWithLogitsLoss", x.shape(), y.shape())?;
            let w = match &self.weight {
                Some(w) => Some(broadcast_to("BCEWithLogitsLoss weight", w, x.shape())?),
                None => None,
            };
            let pw = match &self.pos_weight {
                Some(p) => Some(broadcast_to("BCEWithLogitsLoss pos_weight", p, x.shape())?),
                None => None,
            };
            let mut losses = match &pw {
                Some(pw) => Zip::from(x).and(y).and(pw).map_collect(|&x, &y, &pw| {
                    let lw = (pw - 1.0) * y + 1.0;
                    (1.0 - y) * x + lw * ((-x.abs()).exp().ln_1p() + (-x).max(0.0))
                }),
                None => Zip::from(x).and(y).map_collect(|&x, &y| {
                    let m = (-x).max(0.0);
                    (1.0 - y) * x + m + ((-m).exp() + (-x - m).exp()).ln()
                }),
            };
            if let Some(w) = &w {
                losses *= w;
            }
            let (out, scale) = reduce(losses, self.reduction);
            Ok((
                out,
                BinaryBackward {
                    logits: true,
                    weight: w,
                    pos_weight: pw,
                    scale,
                },
            ))
        })?;
        Ok(Tensor::from_unary_op(
            out,
            vec![input.clone(), target.clone()],
            op,
        ))
    }
}

/// The input gradient of either loss (module docs); weights already broadcast.
struct BinaryBackward {
    logits: bool,
    weight: Option<ArrayD<f32>>,
    pos_weight: Option<ArrayD<f32>>,
    scale: f32,
}

impl Backward for BinaryBackward {
    fn name(&self) -> &'static str {
        if self.logits {
            "BinaryCrossEntropyWithLogitsBackward"
        } else {
            "BinaryCrossEntropyBackward"
        }
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None, None];
        };
        if !inputs[0].requires_grad() {
            return vec![None, None];
        }
        let mut dx = read2(&inputs[0], &inputs[1], |x, y| {
            let ge = per_element(g, x.shape(), self.scale);
            match (&self.pos_weight, self.logits) {
                (Some(pw), _) => {
                    Zip::from(&ge)
                        .and(x)
                        .and(y)
                        .and(pw)
                        .map_collect(|&ge, &x, &y, &pw| {
                            let s = 1.0 / (1.0 + (-x).exp());
                            ge * (s * ((pw - 1.0) * y + 1.0) - pw * y)
                        })
                }
                (None, true) => Zip::from(&ge).and(x).and(y).map_collect(|&ge, &x, &y| {
                    let s = 1.0 / (1.0 + (-x).exp());
                    ge * (s - y)
                }),
                (None, false) => Zip::from(&ge)
                    .and(x)
                    .and(y)
                    .map_collect(|&ge, &x, &y| ge * (x - y) / ((1.0 - x) * x).max(1e-12)),
            }
        });
        if let Some(w) = &self.weight {
            dx *= w;
        }
        vec![Some(dx), None]
    }
}

impl fmt::Display for BCELoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BCELoss()")
    }
}

impl fmt::Display for BCEWithLogitsLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BCEWithLogitsLoss()")
    }
}
