//! `CrossEntropyLoss` with class-probability targets (PyTorch's "soft" targets: a float target
//! of the input's shape instead of class indices).
//!
//! With `lp = log_softmax(x)` and `p = softmax(x)` along the class dimension, class weights `w`
//! (all 1 by default), smoothing `eps` and the target `t` made `t' = (1 − eps)·t + eps/C`:
//!
//! ```text
//! loss_i   = −sum_c w[c]·t'[c]·lp[c]
//! dx_i[k]  = ge · (p[k]·sum_c w[c]·t'[c] − w[k]·t'[k])
//! dt_i[k]  = −ge · (1 − eps)·w[k]·lp[k]          (when the target requires a gradient)
//! ```
//!
//! `Mean` divides the sum by the number of samples (the elements of the input without its
//! class dimension), not by the weights as with class indices. `ignore_index` has no meaning
//! here: a value other than the default −100 is refused as PyTorch does ("ignore_index is not
//! supported for floating point target").

use ndarray::{ArrayD, IxDyn};

use super::regression::{per_element, reduce};
use super::Reduction;
use crate::error::{Error, Result, Shape};
use crate::ops::read2;
use crate::tensor::{Backward, Tensor};

/// One soft-target cross-entropy call.
pub(super) struct SoftCrossEntropy<'a> {
    pub weight: Option<&'a ndarray::Array1<f32>>,
    pub ignore_index: i64,
    pub eps: f32,
    pub reduction: Reduction,
}

/// `(n, c, s)` of an input `(C)`, `(N, C)` or `(N, C, d1, ...)`.
fn layout(shape: &[usize]) -> Result<(usize, usize, usize)> {
    match shape {
        [] => Err(Error::shape_hint(
            "CrossEntropyLoss input",
            "(N, C), (C) or (N, C, d1, ...)",
            shape,
            "Expected 1 or more dimensions (got 0)",
        )),
        [c] => Ok((1, *c, 1)),
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
    }
}

impl SoftCrossEntropy<'_> {
    pub(super) fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        if self.ignore_index != -100 {
            return Err(Error::Invalid(format!(
                "CrossEntropyLoss: ignore_index is not supported for floating point target \
                 (ignore_index = {}; probability targets have no class to ignore)",
                self.ignore_index
            )));
        }
        let (out, op) = read2(input, target, |x, t| -> Result<_> {
            let (n, c, s) = layout(x.shape())?;
            if x.shape() != t.shape() {
                let hint = match (x.shape(), t.shape()) {
                    ([n, ..], [m, ..]) if x.ndim() >= 2 && n != m => {
                        format!("Expected input batch_size ({n}) to match target batch_size ({m})")
                    }
                    _ => "probability targets have the input's shape".to_string(),
                };
                return Err(Error::shape_hint(
                    "CrossEntropyLoss target",
                    Shape::of(x.shape()).to_string(),
                    t.shape(),
                    hint,
                ));
            }
            let w: Vec<f64> = match self.weight {
                Some(w) if w.len() != c => {
                    return Err(Error::shape_hint(
                        "CrossEntropyLoss weight",
                        Shape(vec![c]).to_string(),
                        w.shape(),
                        format!(
                            "weight tensor should be defined either for all {c} classes or no \
                             classes"
                        ),
                    ))
                }
                Some(w) => w.iter().map(|&v| f64::from(v)).collect(),
                None => vec![1.0; c],
            };
            let xs = x.as_standard_layout();
            let ts = t.as_standard_layout();
            let (xs, ts) = (
                xs.as_slice().expect("row-major"),
                ts.as_slice().expect("row-major"),
            );
            let eps = f64::from(self.eps);
            let mut log_probs = vec![0f64; xs.len()];
            let mut losses = vec![0f32; n * s];
            for i in 0..n {
                for j in 0..s {
                    let at = |k: usize| i * c * s + k * s + j;
                    let m = (0..c).fold(f64::NEG_INFINITY, |m, k| m.max(f64::from(xs[at(k)])));
                    let sum: f64 = (0..c).map(|k| (f64::from(xs[at(k)]) - m).exp()).sum();
                    let lse = m + sum.ln();
                    let mut loss = 0f64;
                    for k in 0..c {
                        let lp = f64::from(xs[at(k)]) - lse;
                        log_probs[at(k)] = lp;
                        let tk = (1.0 - eps) * f64::from(ts[at(k)]) + eps / c as f64;
                        loss -= w[k] * tk * lp;
                    }
                    losses[i * s + j] = loss as f32;
                }
            }
            let mut out_shape = x.shape().to_vec();
            out_shape.remove(if x.ndim() == 1 { 0 } else { 1 });
            let losses =
                ArrayD::from_shape_vec(IxDyn(&out_shape), losses).expect("one loss per sample");
            let (out, scale) = reduce(losses, self.reduction);
            Ok((
                out,
                SoftBackward {
                    n,
                    c,
                    s,
                    log_probs,
                    w,
                    eps,
                    scale,
                    out_shape,
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

/// What the backward needs: the log-probabilities in the input's row-major layout.
struct SoftBackward {
    n: usize,
    c: usize,
    s: usize,
    log_probs: Vec<f64>,
    w: Vec<f64>,
    eps: f64,
    scale: f32,
    out_shape: Vec<usize>,
}

impl Backward for SoftBackward {
    fn name(&self) -> &'static str {
        "CrossEntropyLossBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None, None];
        };
        let ge = per_element(g, &self.out_shape, self.scale);
        let ge = ge.as_standard_layout();
        let ge = ge.as_slice().expect("row-major");
        let (n, c, s, eps) = (self.n, self.c, self.s, self.eps);
        let t = inputs[1].data().as_standard_layout().into_owned();
        let t = t.as_slice().expect("row-major");
        let shape = inputs[0].shape();
        let mut dx = vec![0f32; self.log_probs.len()];
        let mut dt = vec![0f32; self.log_probs.len()];
        for i in 0..n {
            for j in 0..s {
                let at = |k: usize| i * c * s + k * s + j;
                let gij = f64::from(ge[i * s + j]);
                let tk = |k: usize| (1.0 - eps) * f64::from(t[at(k)]) + eps / c as f64;
                let wt: f64 = (0..c).map(|k| self.w[k] * tk(k)).sum();
                for k in 0..c {
                    let lp = self.log_probs[at(k)];
                    dx[at(k)] = (gij * (lp.exp() * wt - self.w[k] * tk(k))) as f32;
                    dt[at(k)] = (-gij * (1.0 - eps) * self.w[k] * lp) as f32;
                }
            }
        }
        let array = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&shape), v).expect("input-sized");
        vec![
            inputs[0].requires_grad().then(|| array(dx)),
            inputs[1].requires_grad().then(|| array(dt)),
        ]
    }
}
