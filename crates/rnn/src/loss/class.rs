//! The core shared by `CrossEntropyLoss` and `NLLLoss`: shape and target checks, the forward
//! (accumulated in f64) and the backward.
//!
//! With `p = softmax(x)` along the class dimension, `W = sum_c w[c]`, and `ge` the gradient
//! reaching element `i` (`g[i]`, `g`, or `g / sum_i w[t_i]` for `None`, `Sum`, `Mean`):
//!
//! ```text
//! cross-entropy: dx[c] = ge * ((1 - eps) * w[t] * (p[c] - [c == t]) + (eps / C) * (W * p[c] - w[c]))
//! nll:           dx[t] = -ge * w[t]
//! ```
//!
//! Ignored elements get no gradient.

use ndarray::{arr0, Array1, ArrayD, ArrayViewD, IxDyn};
use rayon::prelude::*;

use super::Reduction;
use crate::error::{Error, Result, Shape};
use crate::tensor::{Backward, Tensor};

/// One class-index loss call: what is computed and how it is reduced.
pub(super) struct ClassLoss<'a> {
    pub what: &'static str,
    pub weight: Option<&'a Array1<f32>>,
    pub ignore_index: i64,
    pub eps: f32,
    pub reduction: Reduction,
    /// Cross-entropy (log-softmax first) rather than NLL on log-probabilities.
    pub log_softmax: bool,
}

/// The input seen as `(n, c, s)`: batch, classes, and the product of the extra dimensions.
struct Layout {
    n: usize,
    c: usize,
    s: usize,
    /// The shape of the per-element losses (the target's).
    out_shape: Vec<usize>,
}

impl ClassLoss<'_> {
    fn layout(&self, xs: &[usize], ts: &[usize]) -> Result<Layout> {
        let what = self.what;
        let (n, c, s, expected) = match xs {
            [] => {
                return Err(Error::shape_hint(
                    format!("{what} input"),
                    "(N, C), (C) or (N, C, d1, ...)",
                    xs,
                    "Expected 1 or more dimensions (got 0)",
                ))
            }
            [c] => (1, *c, 1, vec![]),
            [n, c, rest @ ..] => {
                let mut t = vec![*n];
                t.extend_from_slice(rest);
                (*n, *c, rest.iter().product(), t)
            }
        };
        if ts != expected.as_slice() {
            let hint = match xs.len() {
                1 => "a 1-D input (C) takes a 0-d target".to_string(),
                2 if ts.len() == 1 => format!(
                    "Expected input batch_size ({n}) to match target batch_size ({})",
                    ts[0]
                ),
                _ => format!(
                    "input {} is read as (N, C, d1, ...) with C = {c}",
                    Shape::of(xs)
                ),
            };
            return Err(Error::shape_hint(
                format!("{what} target"),
                Shape(expected).to_string(),
                ts,
                hint,
            ));
        }
        Ok(Layout {
            n,
            c,
            s,
            out_shape: ts.to_vec(),
        })
    }

    pub(super) fn forward(&self, input: &Tensor, target: &ArrayViewD<'_, i64>) -> Result<Tensor> {
        let what = self.what;
        let (out, op) = {
            let xd = input.data();
            let Layout { n, c, s, out_shape } = self.layout(xd.shape(), target.shape())?;
            let w: Vec<f64> = match self.weight {
                Some(w) if w.len() != c => {
                    return Err(Error::shape_hint(
                        format!("{what} weight"),
                        Shape(vec![c]).to_string(),
                        w.shape(),
                        format!(
                        "weight tensor should be defined either for all {c} classes or no classes"
                    ),
                    ))
                }
                Some(w) => w.iter().map(|&v| v as f64).collect(),
                None => vec![1.0; c],
            };
            let mut targets = Vec::with_capacity(n * s);
            for &t in target.iter() {
                if t == self.ignore_index {
                    targets.push(None);
                } else if t < 0 || t as u64 >= c as u64 {
                    return Err(Error::Invalid(format!(
                        "{what}: target {t} is out of bounds for {c} classes (expected 0..={} or ignore_index = {})",
                        c as i64 - 1,
                        self.ignore_index
                    )));
                } else {
                    targets.push(Some(t as usize));
                }
            }
            let x = xd.as_standard_layout();
            let x = x.as_slice().expect("standard layout");
            let eps = self.eps as f64;
            let mut probs = if self.log_softmax {
                vec![0f32; x.len()]
            } else {
                Vec::new()
            };
            let mut losses = vec![0f64; n * s];
            let log_softmax = self.log_softmax;
            // One sample (its `c` logits for each of its `s` positions) per item: samples write
            // disjoint chunks of `probs` and `losses`, so they run in parallel. `lanes` are two
            // work rows of `c` values per thread.
            let lanes = || (vec![0f64; c], vec![0f64; c]);
            let sample = |(lane, exps): &mut (Vec<f64>, Vec<f64>),
                          i: usize,
                          probs: &mut [f32],
                          losses: &mut [f64]| {
                for (j, loss_j) in losses.iter_mut().enumerate() {
                    let base = i * c * s + j;
                    for (k, l) in lane.iter_mut().enumerate() {
                        *l = x[base + k * s] as f64;
                    }
                    if log_softmax {
                        // log-softmax along the lane, stably; the softmax from the same exps.
                        let m = lane.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                        let mut sum = 0f64;
                        for (e, &v) in exps.iter_mut().zip(lane.iter()) {
                            *e = (v - m).exp();
                            sum += *e;
                        }
                        let lse = m + sum.ln();
                        for (k, (l, &e)) in lane.iter_mut().zip(exps.iter()).enumerate() {
                            *l -= lse;
                            probs[k * s + j] = (e / sum) as f32;
                        }
                    }
                    let Some(t) = targets[i * s + j] else {
                        continue;
                    };
                    let mut loss = -w[t] * lane[t];
                    if eps > 0.0 {
                        let smooth: f64 =
                            -w.iter().zip(lane.iter()).map(|(w, l)| w * l).sum::<f64>();
                        loss = (1.0 - eps) * loss + eps / c as f64 * smooth;
                    }
                    *loss_j = loss;
                }
            };
            // (Empty chunks for empty inputs: every loss is then 0 or there is none.)
            if log_softmax {
                probs
                    .par_chunks_mut((c * s).max(1))
                    .zip(losses.par_chunks_mut(s.max(1)))
                    .enumerate()
                    .for_each_init(lanes, |w, (i, (p, l))| sample(w, i, p, l));
            } else {
                losses
                    .par_chunks_mut(s.max(1))
                    .enumerate()
                    .for_each_init(lanes, |w, (i, l)| sample(w, i, &mut [], l));
            }
            let den: f64 = targets.iter().flatten().map(|&t| w[t]).sum();
            let out = match self.reduction {
                Reduction::None => {
                    let v = losses.iter().map(|&l| l as f32).collect();
                    ArrayD::from_shape_vec(IxDyn(&out_shape), v).expect("one loss per target")
                }
                Reduction::Sum => arr0(losses.iter().sum::<f64>() as f32).into_dyn(),
                Reduction::Mean => arr0((losses.iter().sum::<f64>() / den) as f32).into_dyn(),
            };
            let op = ClassBackward {
                shape: xd.shape().to_vec(),
                c,
                s,
                probs,
                targets,
                w,
                eps,
                den,
                reduction: self.reduction,
                cross_entropy: self.log_softmax,
            };
            (out, op)
        };
        Ok(Tensor::from_unary_op(out, vec![input.clone()], op))
    }
}

/// What the backward of a class-index loss needs.
struct ClassBackward {
    shape: Vec<usize>,
    c: usize,
    s: usize,
    /// Softmax of the input (cross-entropy only), in the input's row-major layout.
    probs: Vec<f32>,
    targets: Vec<Option<usize>>,
    w: Vec<f64>,
    eps: f64,
    /// `sum_i w[t_i]` over non-ignored elements (the `Mean` divisor).
    den: f64,
    reduction: Reduction,
    /// Cross-entropy (softmax gradient) rather than NLL.
    cross_entropy: bool,
}

impl Backward for ClassBackward {
    fn name(&self) -> &'static str {
        if self.cross_entropy {
            "CrossEntropyLossBackward"
        } else {
            "NllLossBackward"
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
        let (c, s, eps) = (self.c, self.s, self.eps);
        let per_elem: Vec<f64> = match self.reduction {
            Reduction::None => g.iter().map(|&v| v as f64).collect(),
            Reduction::Sum => {
                vec![g.iter().next().copied().unwrap_or(0.0) as f64; self.targets.len()]
            }
            Reduction::Mean => {
                vec![g.iter().next().copied().unwrap_or(0.0) as f64 / self.den; self.targets.len()]
            }
        };
        let wsum: f64 = self.w.iter().sum();
        let mut dx = vec![0f32; self.shape.iter().product()];
        for (e, t) in self.targets.iter().enumerate() {
            let Some(t) = *t else { continue };
            let ge = per_elem[e];
            let base = (e / s) * c * s + e % s;
            if self.cross_entropy {
                for k in 0..c {
                    let p = self.probs[base + k * s] as f64;
                    let hot = if k == t { 1.0 } else { 0.0 };
                    let mut d = (1.0 - eps) * self.w[t] * (p - hot);
                    if eps > 0.0 {
                        d += eps / c as f64 * (wsum * p - self.w[k]);
                    }
                    dx[base + k * s] = (ge * d) as f32;
                }
            } else {
                dx[base + t * s] = (-ge * self.w[t]) as f32;
            }
        }
        vec![Some(
            ArrayD::from_shape_vec(IxDyn(&self.shape), dx).expect("input-sized gradient"),
        )]
    }
}
