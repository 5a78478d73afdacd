//! Pointwise activations and their derivatives, written in terms of the saved output `y` where
//! possible:
//!
//! | op      | forward                          | backward          |
//! |---------|----------------------------------|-------------------|
//! | tanh    | `y = tanh(x)`                    | `g * (1 - y^2)`   |
//! | sigmoid | `y = 1 / (1 + exp(-x))` (stable) | `g * y * (1 - y)` |
//! | relu    | `y = max(x, 0)`                  | `g * [y > 0]`     |
//! | exp     | `y = exp(x)`                     | `g * y`           |
//! | log     | `y = ln(x)`                      | `g / x`           |

use ndarray::{ArrayD, Zip};

use crate::tensor::{Backward, Tensor};

#[derive(Clone, Copy)]
enum Kind {
    Tanh,
    Sigmoid,
    Relu,
    Exp,
    Log,
}

/// The activation and what its backward needs: the output (`log`: the input).
struct Pointwise {
    kind: Kind,
    saved: ArrayD<f32>,
}

/// The logistic function, without overflow for large `|x|`; 0 where PyTorch's `exp(-x)`
/// overflows float32 (`x <= -88.72284`), as `torch.sigmoid` gives.
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x < crate::engine::math::SIGMOID_ZERO {
        0.0
    } else if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl Backward for Pointwise {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Tanh => "TanhBackward",
            Kind::Sigmoid => "SigmoidBackward",
            Kind::Relu => "ReluBackward",
            Kind::Exp => "ExpBackward",
            Kind::Log => "LogBackward",
        }
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        vec![grads[0].as_ref().map(|g| {
            let d: fn(f32, f32) -> f32 = match self.kind {
                Kind::Tanh => |g, y| g * (1.0 - y * y),
                Kind::Sigmoid => |g, y| g * y * (1.0 - y),
                Kind::Relu => |g, y| if y > 0.0 { g } else { 0.0 },
                Kind::Exp => |g, y| g * y,
                Kind::Log => |g, x| g / x,
            };
            Zip::from(g).and(&self.saved).map_collect(|&g, &s| d(g, s))
        })]
    }
}

impl Tensor {
    fn pointwise(&self, kind: Kind) -> Tensor {
        let f: fn(f32) -> f32 = match kind {
            Kind::Tanh => f32::tanh,
            Kind::Sigmoid => sigmoid,
            // NaN propagates, as in PyTorch.
            Kind::Relu => |x| if x > 0.0 || x.is_nan() { x } else { 0.0 },
            Kind::Exp => f32::exp,
            Kind::Log => f32::ln,
        };
        let (out, saved) = {
            let x = self.data();
            let y = x.mapv(f);
            let saved = match kind {
                Kind::Log => x.clone(),
                _ => y.clone(),
            };
            (y, saved)
        };
        if !self.requires_grad() || !crate::tensor::is_grad_enabled() {
            return Tensor::new(out);
        }
        Tensor::from_unary_op(out, vec![self.clone()], Pointwise { kind, saved })
    }

    /// `tanh(x)` elementwise.
    pub fn tanh(&self) -> Tensor {
        self.pointwise(Kind::Tanh)
    }

    /// The logistic sigmoid `1 / (1 + exp(-x))` elementwise.
    pub fn sigmoid(&self) -> Tensor {
        self.pointwise(Kind::Sigmoid)
    }

    /// `max(x, 0)` elementwise (the gradient at 0 is 0, as in PyTorch).
    pub fn relu(&self) -> Tensor {
        self.pointwise(Kind::Relu)
    }

    /// `exp(x)` elementwise.
    pub fn exp(&self) -> Tensor {
        self.pointwise(Kind::Exp)
    }

    /// The natural logarithm elementwise (`-inf` at 0, NaN below).
    pub fn log(&self) -> Tensor {
        self.pointwise(Kind::Log)
    }
}
