//! `LayerNorm`: normalisation over the last dimensions of each sample, as `torch.nn.LayerNorm`
//! (the usual companion of recurrent layers: applied to each step's output or hidden state).
//!
//! For an input `(*, S)` where `S` is `normalized_shape` (one or more trailing dimensions), each
//! of the `rows = prod(*)` samples `x` of `n = prod(S)` values becomes
//!
//! ```text
//! μ = mean(x),  σ² = mean((x − μ)²)  (biased),  r = 1/√(σ² + eps),  x̂ = (x − μ)·r
//! y = x̂·γ + β                                     (γ = weight, β = bias, both of shape S)
//! ```
//!
//! and the backward, with `ĝ = g·γ`:
//!
//! ```text
//! dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))      dγ = sum_rows g·x̂      dβ = sum_rows g
//! ```
//!
//! `γ` starts at ones and `β` at zeros, as in PyTorch; `elementwise_affine=False` has neither,
//! `bias=False` only `γ`. Means and variances are accumulated in f64.
//!
//! ```
//! use rnn::{LayerNorm, Module, Tensor};
//! let ln = LayerNorm::new(&[4]).unwrap();
//! assert_eq!(ln.to_string(), "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)");
//! let x = Tensor::from_vec(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
//! let y = ln.forward(&x).unwrap().to_array();
//! assert!((y.sum()).abs() < 1e-6 && (y[[0, 3]] - 1.3416355).abs() < 1e-5);
//! assert_eq!(ln.num_parameters(), 8);
//! ```

use std::fmt;

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};
use crate::module::Module;
use crate::ops::list;
use crate::tensor::{Backward, Tensor};

/// `nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    normalized_shape: Vec<usize>,
    eps: f64,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
}

impl LayerNorm {
    /// `nn.LayerNorm(normalized_shape)`: `eps = 1e-5`, a weight of ones and a bias of zeros of
    /// shape `normalized_shape`. Fails on an empty shape or a zero dimension.
    pub fn new(normalized_shape: &[usize]) -> Result<LayerNorm> {
        if normalized_shape.is_empty() || normalized_shape.contains(&0) {
            return Err(Error::Config(format!(
                "LayerNorm: normalized_shape must have at least one dimension, none of them 0; \
                 got {}",
                list(normalized_shape)
            )));
        }
        let n: usize = normalized_shape.iter().product();
        let shape = IxDyn(normalized_shape);
        if n > isize::MAX as usize / 4 {
            return Err(Error::Config(format!(
                "LayerNorm({}) is too large",
                list(normalized_shape)
            )));
        }
        Ok(LayerNorm {
            normalized_shape: normalized_shape.to_vec(),
            eps: 1e-5,
            weight: Some(Tensor::parameter(ArrayD::ones(shape.clone()))),
            bias: Some(Tensor::parameter(ArrayD::zeros(shape))),
        })
    }

    /// `eps` (default 1e-5), added to the variance; must be finite and ≥ 0.
    pub fn with_eps(mut self, eps: f64) -> Result<LayerNorm> {
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::Config(format!(
                "LayerNorm: eps must be finite and >= 0, got {eps}"
            )));
        }
        self.eps = eps;
        Ok(self)
    }

    /// `elementwise_affine=False` drops the weight and the bias (`true` keeps them, or adds
    /// them back as ones and zeros).
    pub fn with_elementwise_affine(mut self, affine: bool) -> LayerNorm {
        let shape = IxDyn(&self.normalized_shape);
        if !affine {
            self.weight = None;
            self.bias = None;
        } else if self.weight.is_none() {
            self.weight = Some(Tensor::parameter(ArrayD::ones(shape.clone())));
            self.bias = Some(Tensor::parameter(ArrayD::zeros(shape)));
        }
        self
    }

    /// `bias=False` drops the bias (kept only with an elementwise affine).
    pub fn with_bias(mut self, bias: bool) -> LayerNorm {
        if !bias {
            self.bias = None;
        } else if self.weight.is_some() && self.bias.is_none() {
            self.bias = Some(Tensor::parameter(ArrayD::zeros(IxDyn(
                &self.normalized_shape,
            ))));
        }
        self
    }

    /// The normalised trailing shape.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// `γ`, of shape `normalized_shape`, if there is an elementwise affine.
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// `β`, of shape `normalized_shape`, if there is one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Normalises `input` `(*, normalized_shape)`; the output has the input's shape.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let x = input.data();
        let s = x.shape();
        let k = self.normalized_shape.len();
        if s.len() < k || s[s.len() - k..] != self.normalized_shape[..] {
            return Err(Error::shape_hint(
                "LayerNorm input",
                format!(
                    "(*, {})",
                    list(&self.normalized_shape).trim_matches(['[', ']'])
                ),
                s,
                format!(
                    "Given normalized_shape={}, expected input with shape [*, {}], but got \
                     input of size{}",
                    list(&self.normalized_shape),
                    list(&self.normalized_shape).trim_matches(['[', ']']),
                    list(s)
                ),
            ));
        }
        let n: usize = self.normalized_shape.iter().product();
        let xs = x.as_standard_layout();
        let xs = xs.as_slice().expect("row-major");
        let rows = xs.len() / n;
        let read = |t: &Option<Tensor>| t.as_ref().map(|t| t.data().iter().copied().collect());
        let (w, b): (Option<Vec<f32>>, Option<Vec<f32>>) = (read(&self.weight), read(&self.bias));
        let mut y = vec![0f32; xs.len()];
        let mut x_hat = vec![0f32; xs.len()];
        let mut rstd = vec![0f32; rows];
        for r in 0..rows {
            let row = &xs[r * n..(r + 1) * n];
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let rs = 1.0 / (var + self.eps).sqrt();
            rstd[r] = rs as f32;
            for j in 0..n {
                let h = ((f64::from(row[j]) - mean) * rs) as f32;
                x_hat[r * n + j] = h;
                let scaled = w.as_ref().map_or(h, |w| h * w[j]);
                y[r * n + j] = b.as_ref().map_or(scaled, |b| scaled + b[j]);
            }
        }
        let shape = s.to_vec();
        drop(x);
        let out = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("input-sized");
        let mut inputs = vec![input.clone()];
        inputs.extend(self.weight.iter().cloned());
        inputs.extend(self.bias.iter().cloned());
        let op = LayerNormBackward {
            n,
            x_hat,
            rstd,
            has_weight: self.weight.is_some(),
            has_bias: self.bias.is_some(),
            shape,
        };
        Ok(Tensor::from_unary_op(out, inputs, op))
    }
}

/// What the backward needs: `x̂` and `r` of every row.
struct LayerNormBackward {
    n: usize,
    x_hat: Vec<f32>,
    rstd: Vec<f32>,
    has_weight: bool,
    has_bias: bool,
    shape: Vec<usize>,
}

impl Backward for LayerNormBackward {
    fn name(&self) -> &'static str {
        "NativeLayerNormBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let n_inputs = inputs.len();
        let Some(g) = &grads[0] else {
            return vec![None; n_inputs];
        };
        let g = g.as_standard_layout();
        let g = g.as_slice().expect("row-major");
        let n = self.n;
        let w: Option<Vec<f32>> = self
            .has_weight
            .then(|| inputs[1].data().iter().copied().collect());
        let mut dx = vec![0f32; g.len()];
        let mut dw = vec![0f64; n];
        let mut db = vec![0f64; n];
        for (r, &rs) in self.rstd.iter().enumerate() {
            let (gr, hr) = (&g[r * n..(r + 1) * n], &self.x_hat[r * n..(r + 1) * n]);
            let gw = |j: usize| f64::from(gr[j]) * w.as_ref().map_or(1.0, |w| f64::from(w[j]));
            let mean_g: f64 = (0..n).map(gw).sum::<f64>() / n as f64;
            let mean_gh: f64 = (0..n).map(|j| gw(j) * f64::from(hr[j])).sum::<f64>() / n as f64;
            for j in 0..n {
                let h = f64::from(hr[j]);
                dx[r * n + j] = (f64::from(rs) * (gw(j) - mean_g - h * mean_gh)) as f32;
                dw[j] += f64::from(gr[j]) * h;
                db[j] += f64::from(gr[j]);
            }
        }
        let norm_shape = inputs.get(1).map(|p| p.shape()).unwrap_or_default();
        let to = |v: Vec<f64>| {
            ArrayD::from_shape_vec(
                IxDyn(&norm_shape),
                v.into_iter().map(|v| v as f32).collect(),
            )
            .expect("normalized_shape-sized")
        };
        let mut out = vec![inputs[0]
            .requires_grad()
            .then(|| ArrayD::from_shape_vec(IxDyn(&self.shape), dx).expect("input-sized"))];
        if self.has_weight {
            out.push(inputs[1].requires_grad().then(|| to(dw)));
        }
        if self.has_bias {
            out.push(inputs[n_inputs - 1].requires_grad().then(|| to(db)));
        }
        out
    }
}

impl Module for LayerNorm {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        if let Some(w) = &self.weight {
            v.push(("weight".to_string(), w.clone()));
        }
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

impl fmt::Display for LayerNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self
            .normalized_shape
            .iter()
            .map(|d| d.to_string())
            .collect();
        let tuple = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        write!(
            f,
            "LayerNorm({tuple}, eps={}, elementwise_affine={}, bias={})",
            python_float(self.eps),
            if self.weight.is_some() {
                "True"
            } else {
                "False"
            },
            if self.bias.is_some() { "True" } else { "False" }
        )
    }
}

/// A float as Python prints it in a module's repr: `1e-05`, `0.001`.
fn python_float(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-4 {
        let s = format!("{v:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let e: i32 = e.parse().unwrap_or(0);
                format!("{m}e{}{:02}", if e < 0 { "-" } else { "+" }, e.abs())
            }
            None => s,
        }
    } else {
        format!("{v}")
    }
}
