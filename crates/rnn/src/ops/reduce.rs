//! Reductions (sum, mean), softmax, log-softmax and argmax along a dimension.
//!
//! Softmax is computed stably, `y = exp(x - max) / sum(exp(x - max))`, and
//! `log_softmax(x) = x - max - log(sum(exp(x - max)))`. Backward, along the dimension:
//! softmax `dx = y * (g - sum(g * y))`, log-softmax `dx = g - exp(y) * sum(g)`.

use ndarray::{arr0, ArrayD, ArrayView1, ArrayViewMut1, Axis, Zip};

use super::{expand, normalize_dim};
use crate::error::{Error, Result};
use crate::tensor::{Backward, Tensor};

/// `sum` / `mean` over everything or over one dimension: the backward spreads `g * scale`
/// back over the reduced elements.
struct Reduce {
    shape: Vec<usize>,
    /// The reduced dimension when the output lost it (`keepdim = false`).
    squeezed: Option<usize>,
    scale: f32,
}

impl Backward for Reduce {
    fn name(&self) -> &'static str {
        "SumBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        vec![grads[0].as_ref().map(|g| {
            let g = match self.squeezed {
                Some(d) => g.clone().insert_axis(Axis(d)),
                None => g.clone(),
            };
            let s = self.scale;
            expand(&g.mapv(|v| v * s), &self.shape)
        })]
    }
}

/// Softmax (`log = false`) or log-softmax (`log = true`) along `dim`; saves the output.
struct Softmax {
    dim: usize,
    log: bool,
    out: ArrayD<f32>,
}

impl Backward for Softmax {
    fn name(&self) -> &'static str {
        if self.log {
            "LogSoftmaxBackward"
        } else {
            "SoftmaxBackward"
        }
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None];
        };
        let mut dx = ArrayD::<f32>::zeros(self.out.raw_dim());
        let ax = Axis(self.dim);
        Zip::from(dx.lanes_mut(ax))
            .and(g.lanes(ax))
            .and(self.out.lanes(ax))
            .for_each(|mut dx, g, y| {
                if self.log {
                    let gs: f32 = g.sum();
                    Zip::from(&mut dx)
                        .and(&g)
                        .and(&y)
                        .for_each(|d, &g, &y| *d = g - y.exp() * gs);
                } else {
                    let gy: f32 = g.iter().zip(y.iter()).map(|(g, y)| g * y).sum();
                    Zip::from(&mut dx)
                        .and(&g)
                        .and(&y)
                        .for_each(|d, &g, &y| *d = y * (g - gy));
                }
            });
        vec![Some(dx)]
    }
}

/// Writes softmax or log-softmax of `x` into `y` (one lane).
fn softmax_lane(x: ArrayView1<'_, f32>, mut y: ArrayViewMut1<'_, f32>, log: bool) {
    let m = x.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let s: f32 = x.iter().map(|&v| (v - m).exp()).sum();
    if log {
        let ls = s.ln();
        Zip::from(&mut y).and(&x).for_each(|y, &x| *y = x - m - ls);
    } else {
        Zip::from(&mut y)
            .and(&x)
            .for_each(|y, &x| *y = (x - m).exp() / s);
    }
}

impl Tensor {
    /// The sum of all elements, a 0-d tensor (`tensor.sum()`).
    pub fn sum(&self) -> Tensor {
        let (out, shape) = {
            let x = self.data();
            (x.sum(), x.shape().to_vec())
        };
        let op = Reduce {
            shape,
            squeezed: None,
            scale: 1.0,
        };
        Tensor::from_unary_op(arr0(out).into_dyn(), vec![self.clone()], op)
    }

    /// The mean of all elements, a 0-d tensor (`tensor.mean()`; NaN for an empty tensor).
    pub fn mean(&self) -> Tensor {
        let (out, shape, n) = {
            let x = self.data();
            (x.sum(), x.shape().to_vec(), x.len() as f32)
        };
        let op = Reduce {
            shape,
            squeezed: None,
            scale: 1.0 / n,
        };
        Tensor::from_unary_op(arr0(out / n).into_dyn(), vec![self.clone()], op)
    }

    fn reduce_dim(&self, what: &str, dim: isize, keepdim: bool, mean: bool) -> Result<Tensor> {
        let (out, shape, scale, d) = {
            let x = self.data();
            let d = normalize_dim(what, dim, x.shape())?;
            let n = x.shape()[d] as f32;
            let scale = if mean { 1.0 / n } else { 1.0 };
            let mut out = x.sum_axis(Axis(d));
            if mean {
                out.mapv_inplace(|v| v * scale);
            }
            (out, x.shape().to_vec(), scale, d)
        };
        let out = if keepdim {
            out.insert_axis(Axis(d))
        } else {
            out
        };
        let squeezed = (!keepdim).then_some(d);
        Ok(Tensor::from_unary_op(
            out,
            vec![self.clone()],
            Reduce {
                shape,
                squeezed,
                scale,
            },
        ))
    }

    /// Sum along `dim` (`tensor.sum(dim, keepdim)`); `dim` may be negative.
    pub fn sum_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce_dim("sum", dim, keepdim, false)
    }

    /// Mean along `dim` (`tensor.mean(dim, keepdim)`); `dim` may be negative.
    pub fn mean_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce_dim("mean", dim, keepdim, true)
    }

    fn softmax_impl(&self, dim: isize, log: bool) -> Result<Tensor> {
        let what = if log { "log_softmax" } else { "softmax" };
        let (out, d) = {
            let x = self.data();
            let d = normalize_dim(what, dim, x.shape())?;
            let mut y = ArrayD::<f32>::zeros(x.raw_dim());
            Zip::from(x.lanes(Axis(d)))
                .and(y.lanes_mut(Axis(d)))
                .for_each(|x, y| softmax_lane(x, y, log));
            (y, d)
        };
        if !self.requires_grad() || !crate::tensor::is_grad_enabled() {
            return Ok(Tensor::new(out));
        }
        let op = Softmax {
            dim: d,
            log,
            out: out.clone(),
        };
        Ok(Tensor::from_unary_op(out, vec![self.clone()], op))
    }

    /// `softmax(x, dim)`: `exp(x_i) / sum_j exp(x_j)` along `dim`, computed stably.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(dim, false)
    }

    /// `log_softmax(x, dim)`: `x_i - log(sum_j exp(x_j))` along `dim`, computed stably.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(dim, true)
    }

    /// Index of the largest value along `dim` (`tensor.argmax(dim)`), the first on ties; a NaN
    /// counts as the largest, as in PyTorch. Not differentiable.
    pub fn argmax(&self, dim: isize) -> Result<ArrayD<usize>> {
        let x = self.data();
        let d = normalize_dim("argmax", dim, x.shape())?;
        if x.shape()[d] == 0 {
            return Err(Error::shape_hint(
                "argmax",
                "a non-empty reduction dimension",
                x.shape(),
                format!("argmax(): Expected reduction dim {d} to have non-zero size."),
            ));
        }
        Ok(x.map_axis(Axis(d), |lane| {
            let mut best = 0;
            for (i, &v) in lane.iter().enumerate() {
                if v.is_nan() {
                    return i;
                }
                if v > lane[best] {
                    best = i;
                }
            }
            best
        }))
    }
}
