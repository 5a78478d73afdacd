//! Pointwise regression losses: `nn.L1Loss`, `nn.SmoothL1Loss` and `nn.HuberLoss`.
//!
//! With `d = input − target` elementwise (same shapes; PyTorch would broadcast with a warning,
//! here a different shape is an error):
//!
//! ```text
//! L1:        l = |d|                                   dl/dd = sign(d)  (0 at d = 0)
//! SmoothL1:  l = ½d²/β        if |d| < β               dl/dd = d/β
//!            l = |d| − ½β     otherwise                dl/dd = sign(d)
//! Huber:     l = ½d²          if |d| < δ               dl/dd = d
//!            l = δ(|d| − ½δ)  otherwise                dl/dd = δ·sign(d)
//! ```
//!
//! `SmoothL1Loss` with `β = 0` is `L1Loss` (as PyTorch, which calls `l1_loss` then). Huber with
//! δ is δ times SmoothL1 with β = δ. The gradient reaches `input` and, with the opposite sign,
//! `target` when it requires one. Reductions as [`Reduction`]: the mean divides by the number
//! of elements.
//!
//! ```
//! use rnn::loss::{HuberLoss, L1Loss, SmoothL1Loss};
//! use rnn::Tensor;
//! let x = Tensor::from_vec(&[3], vec![0.0, 1.0, 4.0]).unwrap();
//! let y = Tensor::zeros(&[3]);
//! assert_eq!(L1Loss::new().forward(&x, &y).unwrap().item().unwrap(), 5.0 / 3.0);
//! // ½·1² + (4 − ½) over 3
//! let s = SmoothL1Loss::new().forward(&x, &y).unwrap().item().unwrap();
//! assert!((s - 4.0 / 3.0).abs() < 1e-6);
//! let h = HuberLoss::new().with_delta(2.0).unwrap().forward(&x, &y).unwrap();
//! assert!((h.item().unwrap() - (0.5 + 2.0 * 3.0) / 3.0).abs() < 1e-6);
//! ```

use std::fmt;

use ndarray::{arr0, ArrayD, Zip};

use super::Reduction;
use crate::error::{Error, Result, Shape};
use crate::ops::read2;
use crate::tensor::{Backward, Tensor};

/// Which pointwise loss.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    L1,
    SmoothL1 { beta: f32 },
    Huber { delta: f32 },
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::L1 => "L1Loss",
            Kind::SmoothL1 { .. } => "SmoothL1Loss",
            Kind::Huber { .. } => "HuberLoss",
        }
    }

    /// The loss of one difference `d` (module docs).
    fn value(self, d: f32) -> f32 {
        let z = d.abs();
        match self {
            Kind::L1 => z,
            Kind::SmoothL1 { beta: 0.0 } => z,
            Kind::SmoothL1 { beta } if z < beta => 0.5 * z * z / beta,
            Kind::SmoothL1 { beta } => z - 0.5 * beta,
            Kind::Huber { delta } if z < delta => 0.5 * z * z,
            Kind::Huber { delta } => delta * (z - 0.5 * delta),
        }
    }

    /// `dl/dd` (module docs).
    fn slope(self, d: f32) -> f32 {
        let sign = if d > 0.0 {
            1.0
        } else if d < 0.0 {
            -1.0
        } else {
            0.0
        };
        match self {
            Kind::L1 => sign,
            Kind::SmoothL1 { beta: 0.0 } => sign,
            Kind::SmoothL1 { beta } if d.abs() < beta => d / beta,
            Kind::SmoothL1 { .. } => sign,
            Kind::Huber { delta } if d.abs() < delta => d,
            Kind::Huber { delta } => delta * sign,
        }
    }
}

/// Checks that `target` has `input`'s shape.
pub(super) fn same_shape(what: &str, x: &[usize], y: &[usize]) -> Result<()> {
    if x != y {
        return Err(Error::shape_hint(
            format!("{what} target"),
            Shape::of(x).to_string(),
            y,
            "the target must have the input's shape (PyTorch broadcasts with a warning that \
             this \"will likely lead to incorrect results\"; here it is an error)",
        ));
    }
    Ok(())
}

/// Reduces per-element losses; returns the result and the factor of the mean (1 otherwise).
pub(super) fn reduce(losses: ArrayD<f32>, reduction: Reduction) -> (ArrayD<f32>, f32) {
    match reduction {
        Reduction::None => (losses, 1.0),
        Reduction::Sum => (arr0(sum_f64(&losses) as f32).into_dyn(), 1.0),
        Reduction::Mean => {
            let n = losses.len() as f64;
            (
                arr0((sum_f64(&losses) / n) as f32).into_dyn(),
                (1.0 / n) as f32,
            )
        }
    }
}

fn sum_f64(a: &ArrayD<f32>) -> f64 {
    a.iter().map(|&v| f64::from(v)).sum()
}

/// The gradient reaching each element: `g` itself (`None`), or its one value times `scale`.
pub(super) fn per_element(g: &ArrayD<f32>, shape: &[usize], scale: f32) -> ArrayD<f32> {
    if g.shape() == shape {
        g.clone()
    } else {
        let g0 = g.iter().next().copied().unwrap_or(0.0) * scale;
        ArrayD::from_elem(shape, g0)
    }
}

fn pointwise(kind: Kind, reduction: Reduction, input: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (out, scale) = read2(input, target, |x, y| -> Result<_> {
        same_shape(kind.name(), x.shape(), y.shape())?;
        let losses = Zip::from(x).and(y).map_collect(|&x, &y| kind.value(x - y));
        Ok(reduce(losses, reduction))
    })?;
    Ok(Tensor::from_unary_op(
        out,
        vec![input.clone(), target.clone()],
        PointwiseBackward { kind, scale },
    ))
}

/// `dx = ge · slope(x − y)`, `dy = −dx`.
struct PointwiseBackward {
    kind: Kind,
    /// `1/n` for the mean, else 1.
    scale: f32,
}

impl Backward for PointwiseBackward {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::L1 => "L1LossBackward",
            Kind::SmoothL1 { .. } => "SmoothL1LossBackward",
            Kind::Huber { .. } => "HuberLossBackward",
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
        let dx = read2(&inputs[0], &inputs[1], |x, y| {
            let ge = per_element(g, x.shape(), self.scale);
            Zip::from(&ge)
                .and(x)
                .and(y)
                .map_collect(|&ge, &x, &y| ge * self.kind.slope(x - y))
        });
        let dy = inputs[1].requires_grad().then(|| -&dx);
        vec![inputs[0].requires_grad().then_some(dx), dy]
    }
}

/// `nn.L1Loss(reduction='mean')`: the mean absolute error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L1Loss {
    reduction: Reduction,
}

impl L1Loss {
    /// `nn.L1Loss()` (mean).
    pub fn new() -> Self {
        Self::default()
    }

    /// The reduction (default [`Reduction::Mean`]).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// `|input − target|`, reduced (module docs).
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        pointwise(Kind::L1, self.reduction, input, target)
    }
}

/// `nn.SmoothL1Loss(reduction='mean', beta=1.0)`: quadratic below `beta`, linear above.
#[derive(Clone, Debug, PartialEq)]
pub struct SmoothL1Loss {
    reduction: Reduction,
    beta: f32,
}

impl Default for SmoothL1Loss {
    fn default() -> Self {
        SmoothL1Loss {
            reduction: Reduction::Mean,
            beta: 1.0,
        }
    }
}

impl SmoothL1Loss {
    /// `nn.SmoothL1Loss()`: mean, `beta = 1`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The reduction (default [`Reduction::Mean`]).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// `beta ≥ 0` (0 makes it `L1Loss`). PyTorch: "smooth_l1_loss does not support negative
    /// values for beta."
    pub fn with_beta(mut self, beta: f32) -> Result<Self> {
        if beta.is_nan() || beta < 0.0 {
            return Err(Error::Invalid(format!(
                "smooth_l1_loss does not support negative values for beta (got {beta})"
            )));
        }
        self.beta = beta;
        Ok(self)
    }

    /// The loss, reduced (module docs).
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        pointwise(
            Kind::SmoothL1 { beta: self.beta },
            self.reduction,
            input,
            target,
        )
    }
}

/// `nn.HuberLoss(reduction='mean', delta=1.0)`: quadratic below `delta`, then linear with
/// slope `delta`.
#[derive(Clone, Debug, PartialEq)]
pub struct HuberLoss {
    reduction: Reduction,
    delta: f32,
}

impl Default for HuberLoss {
    fn default() -> Self {
        HuberLoss {
            reduction: Reduction::Mean,
            delta: 1.0,
        }
    }
}

impl HuberLoss {
    /// `nn.HuberLoss()`: mean, `delta = 1`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The reduction (default [`Reduction::Mean`]).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// `delta > 0`. PyTorch: "huber_loss does not support non-positive values for delta."
    pub fn with_delta(mut self, delta: f32) -> Result<Self> {
        if delta.is_nan() || delta <= 0.0 {
            return Err(Error::Invalid(format!(
                "huber_loss does not support non-positive values for delta (got {delta})"
            )));
        }
        self.delta = delta;
        Ok(self)
    }

    /// The loss, reduced (module docs).
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        pointwise(
            Kind::Huber { delta: self.delta },
            self.reduction,
            input,
            target,
        )
    }
}

impl fmt::Display for L1Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L1Loss()")
    }
}

impl fmt::Display for SmoothL1Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmoothL1Loss()")
    }
}

impl fmt::Display for HuberLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HuberLoss()")
    }
}
