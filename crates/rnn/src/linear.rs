//! `Linear`: the affine layer `y = x W^T + b`, as `torch.nn.Linear`.
//!
//! The weight is stored as PyTorch stores it, `(out_features, in_features)`, so a PyTorch
//! `state_dict` loads with no transposition. Initialisation is PyTorch's: every weight and bias
//! entry uniform in `(-1/sqrt(in_features), 1/sqrt(in_features))`.
//!
//! ```
//! use rnn::{linear::Linear, Module, Tensor};
//! rnn::manual_seed(0);
//! let fc = Linear::new(5, 2).unwrap();
//! assert_eq!(fc.to_string(), "Linear(in_features=5, out_features=2, bias=True)");
//! let y = fc.forward(&Tensor::zeros(&[3, 7, 5])).unwrap();
//! assert_eq!(y.shape(), [3, 7, 2]);
//! assert_eq!(fc.num_parameters(), 12);
//! ```

use std::fmt;

use ndarray::{Array2, ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Shape};
use crate::linalg::{matmul_bf16, matmul_int8, PackedBf16, PackedInt8};
use crate::module::Module;
use crate::ops::{as_matrix, mm};
use crate::precision::{check_int8_width, effective, int8_training_error, Precision, ToPrecision};
use crate::rng::{with_global_rng, Rng};
use crate::tensor::{is_grad_enabled, Backward, Tensor};

/// The configuration of a [`Linear`] layer: the sizes are required, `bias` defaults to true.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearConfig {
    /// Size of each input sample (the last input dimension).
    pub in_features: usize,
    /// Size of each output sample.
    pub out_features: usize,
    /// Whether the layer adds a learnable bias (PyTorch's `bias=True`).
    #[serde(default = "yes")]
    pub bias: bool,
}

fn yes() -> bool {
    true
}

impl LinearConfig {
    /// `nn.Linear(in_features, out_features)` with a bias.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
        }
    }

    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Builds the layer, drawing its initial weights from the global generator.
    pub fn init(&self) -> Result<Linear> {
        with_global_rng(|rng| self.init_with(rng))
    }

    /// Builds the layer, drawing its initial weights from `rng` (the weight row by row, then
    /// the bias).
    pub fn init_with(&self, rng: &mut Rng) -> Result<Linear> {
        let (i, o) = (self.in_features, self.out_features);
        if i.checked_mul(o).is_none_or(|n| n > isize::MAX as usize / 4) {
            return Err(Error::Config(format!("Linear({i}, {o}) is too large")));
        }
        // kaiming_uniform_(a = sqrt(5)) gives bound = 1/sqrt(fan_in), as does the bias init;
        // PyTorch uses 0 when fan_in = 0.
        let bound = if i > 0 { 1.0 / (i as f32).sqrt() } else { 0.0 };
        let weight = ArrayD::from_shape_simple_fn(IxDyn(&[o, i]), || rng.uniform(-bound, bound));
        let bias = self.bias.then(|| {
            Tensor::parameter(ArrayD::from_shape_simple_fn(IxDyn(&[o]), || {
                rng.uniform(-bound, bound)
            }))
        });
        Ok(Linear {
            config: self.clone(),
            weight: Tensor::parameter(weight),
            bias,
            precision: Precision::F32,
        })
    }
}

/// `y = x W^T + b` on the last dimension of `x`: `(..., in_features) -> (..., out_features)`.
#[derive(Clone, Debug)]
pub struct Linear {
    config: LinearConfig,
    /// `(out_features, in_features)`.
    weight: Tensor,
    /// `(out_features,)`, if the layer has a bias.
    bias: Option<Tensor>,
    /// The precision of the product ([`Linear::to_precision`]).
    precision: Precision,
}

impl Linear {
    /// `nn.Linear(in_features, out_features)`, initialised from the global generator.
    pub fn new(in_features: usize, out_features: usize) -> Result<Linear> {
        LinearConfig::new(in_features, out_features).init()
    }

    /// `nn.Linear(in_features, out_features)`, initialised from `rng`.
    pub fn with_rng(in_features: usize, out_features: usize, rng: &mut Rng) -> Result<Linear> {
        LinearConfig::new(in_features, out_features).init_with(rng)
    }

    /// A layer with the given parameters: `weight` of shape `(out, in)`, `bias` of shape
    /// `(out,)`.
    pub fn from_parameters(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        let ws = weight.shape();
        if ws.len() != 2 {
            return Err(Error::shape(
                "Linear weight",
                "(out_features, in_features)",
                &ws,
            ));
        }
        if let Some(b) = &bias {
            if b.shape() != [ws[0]] {
                return Err(Error::shape(
                    "Linear bias",
                    Shape(vec![ws[0]]).to_string(),
                    &b.shape(),
                ));
            }
        }
        let config = LinearConfig {
            in_features: ws[1],
            out_features: ws[0],
            bias: bias.is_some(),
        };
        Ok(Linear {
            config,
            weight,
            bias,
            precision: Precision::F32,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LinearConfig {
        &self.config
    }

    /// The weight, `(out_features, in_features)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `(out_features,)`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The precision of the product; under [`crate::autocast`] an f32 layer runs in
    /// autocast's.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// A copy of the layer (sharing its parameters) whose product `x W^T` runs in `precision`
    /// (the bias is added in f32); int8 is for inference only. The weights are rounded or
    /// quantized at every call (one pass over `W`, as much as one row of the product).
    pub fn to_precision(&self, precision: Precision) -> Result<Self> {
        if precision == Precision::Int8 {
            check_int8_width("Linear", self.config.in_features)?;
        }
        Ok(Linear {
            precision,
            ..self.clone()
        })
    }

    /// `x W^T + b` for `x` of shape `(..., in_features)` (at least 1-D).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (i, o) = (self.config.in_features, self.config.out_features);
        let xs = x.shape();
        if xs.last() != Some(&i) {
            let rows: usize = xs.iter().take(xs.len().saturating_sub(1)).product();
            let k = xs.last().copied().unwrap_or(1);
            return Err(Error::shape_hint(
                "Linear input",
                format!("(*, {i})"),
                &xs,
                format!("mat1 and mat2 shapes cannot be multiplied ({rows}x{k} and {i}x{o})"),
            ));
        }
        let rows = xs[..xs.len() - 1].iter().product();
        let precision = effective(self.precision);
        let record = is_grad_enabled()
            && (x.requires_grad()
                || self.weight.requires_grad()
                || self.bias.as_ref().is_some_and(Tensor::requires_grad));
        if record && !precision.trainable() {
            return Err(int8_training_error("Linear"));
        }
        let out = {
            let xd = x.data();
            let w = self.weight.data();
            let x2 = as_matrix(&xd, rows, i);
            let w2 = as_matrix(&w, o, i);
            let mut y = match precision {
                Precision::F32 => mm(x2.view(), w2.t()),
                Precision::Bf16 => {
                    let mut y = Array2::zeros((rows, o));
                    let b = PackedBf16::transposed(&w2.view());
                    matmul_bf16(&mut y.view_mut(), &x2.view(), &b, false);
                    y
                }
                Precision::Int8 => {
                    let mut y = Array2::zeros((rows, o));
                    let b = PackedInt8::quantize_transposed(&w2.view());
                    matmul_int8(&mut y.view_mut(), &x2.view(), &b, false);
                    y
                }
            };
            if let Some(b) = &self.bias {
                let b = b.data();
                let b1 = b.view().into_shape_with_order(o).expect("(out,)");
                y += &b1;
            }
            let mut shape = xs[..xs.len() - 1].to_vec();
            shape.push(o);
            y.into_dyn()
                .into_shape_with_order(IxDyn(&shape))
                .expect("same size")
        };
        let mut inputs = vec![x.clone(), self.weight.clone()];
        inputs.extend(self.bias.iter().cloned());
        Ok(Tensor::from_unary_op(out, inputs, LinearBackward { rows }))
    }
}

/// Backward of `y = x W^T + b` with `x` seen as `(rows, in)` and `g` as `(rows, out)`:
/// `dx = g W`, `dW = g^T x`, `db = sum_rows g`.
struct LinearBackward {
    rows: usize,
}

impl Backward for LinearBackward {
    fn name(&self) -> &'static str {
        "AddmmBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None; inputs.len()];
        };
        let (x, w) = (&inputs[0], &inputs[1]);
        let (o, i) = {
            let s = w.shape();
            (s[0], s[1])
        };
        let g2 = as_matrix(g, self.rows, o);
        let dx = x.requires_grad().then(|| {
            let wd = w.data();
            let dx = mm(g2.view(), as_matrix(&wd, o, i).view());
            dx.into_dyn()
                .into_shape_with_order(IxDyn(&x.shape()))
                .expect("same size")
        });
        let dw = w.requires_grad().then(|| {
            let xd = x.data();
            mm(g2.t(), as_matrix(&xd, self.rows, i).view()).into_dyn()
        });
        let mut out = vec![dx, dw];
        if let Some(b) = inputs.get(2) {
            out.push(b.requires_grad().then(|| g2.sum_axis(Axis(0)).into_dyn()));
        }
        out
    }
}

impl Module for Linear {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            p.push(("bias".to_string(), b.clone()));
        }
        p
    }
}

impl ToPrecision for Linear {
    fn to_precision(&self, precision: Precision) -> Result<Self> {
        Linear::to_precision(self, precision)
    }
}

impl fmt::Display for Linear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let bias = if c.bias { "True" } else { "False" };
        write!(
            f,
            "Linear(in_features={}, out_features={}, bias={bias})",
            c.in_features, c.out_features
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_uniform_within_pytorch_bound_and_reproducible() {
        let a = Linear::with_rng(16, 8, &mut Rng::new(1)).unwrap();
        let b = Linear::with_rng(16, 8, &mut Rng::new(1)).unwrap();
        assert_eq!(a.weight().to_array(), b.weight().to_array());
        let bound = 0.25f32; // 1 / sqrt(16)
        for p in a.parameters() {
            let d = p.data();
            assert!(d.iter().all(|v| v.abs() < bound));
            // Spread over the whole interval, not a narrower one.
            assert!(d.iter().any(|v| v.abs() > 0.8 * bound));
        }
        let names: Vec<String> = a.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight", "bias"]);
        assert_eq!(a.weight().shape(), [8, 16]);
        assert_eq!(a.num_parameters(), 8 * 16 + 8);
    }

    #[test]
    fn without_bias_and_display() {
        let fc = LinearConfig::new(5, 2).with_bias(false).init().unwrap();
        assert_eq!(
            fc.to_string(),
            "Linear(in_features=5, out_features=2, bias=False)"
        );
        assert_eq!(fc.named_parameters().len(), 1);
        let cfg: LinearConfig =
            serde_json::from_str(r#"{"in_features":5,"out_features":2}"#).unwrap();
        assert_eq!(cfg, LinearConfig::new(5, 2));
    }

    #[test]
    fn forward_values_and_errors() {
        let w =
            Tensor::parameter(ndarray::array![[1.0f32, 2.0], [0.0, -1.0], [3.0, 0.5]].into_dyn());
        let b = Tensor::parameter(ndarray::array![0.5f32, 0.0, -1.0].into_dyn());
        let fc = Linear::from_parameters(w, Some(b.clone())).unwrap();
        let x = Tensor::new(ndarray::array![[[1.0f32, 1.0]], [[2.0, 0.0]]].into_dyn());
        let y = fc.forward(&x).unwrap();
        assert_eq!(
            y.to_array(),
            ndarray::array![[[3.5f32, -1.0, 2.5]], [[2.5, 0.0, 5.0]]].into_dyn()
        );
        y.sum().backward().unwrap();
        assert_eq!(
            b.grad().unwrap(),
            ndarray::array![2.0f32, 2.0, 2.0].into_dyn()
        );
        assert_eq!(
            fc.weight().grad().unwrap(),
            ndarray::array![[3.0f32, 1.0], [3.0, 1.0], [3.0, 1.0]].into_dyn()
        );
        let e = fc.forward(&Tensor::zeros(&[4, 3])).unwrap_err().to_string();
        assert!(
            e.contains("expected shape (*, 2), got (4, 3)") && e.contains("(4x3 and 2x3)"),
            "{e}"
        );
        assert!(fc.forward(&Tensor::scalar(1.0)).is_err());
        let bad = Linear::from_parameters(Tensor::zeros(&[3, 2]), Some(Tensor::zeros(&[2])));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("expected shape (3,), got (2,)"));
    }
}
