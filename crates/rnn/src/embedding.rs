//! `Embedding`: a lookup table of vectors indexed by integer ids, as `torch.nn.Embedding`.
//!
//! The weight `(num_embeddings, embedding_dim)` is initialised from N(0, 1), as in PyTorch;
//! with a `padding_idx`, that row starts at zero and never receives a gradient. With a
//! `max_norm`, every row a forward looks up whose `norm_type`-norm exceeds `max_norm` is first
//! rescaled in place to `max_norm` (`row *= max_norm / (norm + 1e-7)`), as PyTorch's
//! `embedding_renorm_`: the weight itself changes, outside the graph.
//!
//! ```
//! use ndarray::array;
//! use rnn::embedding::Embedding;
//! rnn::manual_seed(0);
//! let emb = Embedding::new(10, 3).unwrap().with_padding_idx(Some(0)).unwrap();
//! assert_eq!(emb.to_string(), "Embedding(10, 3, padding_idx=0)");
//! let x = emb.forward(&array![[1usize, 2, 0], [4, 0, 9]].into_dyn()).unwrap();
//! assert_eq!(x.shape(), [2, 3, 3]);
//! ```

use std::fmt;

use ndarray::{ArrayD, Axis, IxDyn};

use crate::error::{Error, Result};
use crate::module::Module;
use crate::rng::{with_global_rng, Rng};
use crate::tensor::{Backward, Tensor};

/// A table of `num_embeddings` vectors of size `embedding_dim`.
#[derive(Clone, Debug)]
pub struct Embedding {
    num_embeddings: usize,
    embedding_dim: usize,
    padding_idx: Option<usize>,
    /// `max_norm` and `norm_type`, if rows are renormalised.
    max_norm: Option<(f64, f64)>,
    /// `(num_embeddings, embedding_dim)`.
    weight: Tensor,
}

impl Embedding {
    /// `nn.Embedding(num_embeddings, embedding_dim)`, weights from the global generator.
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> Result<Embedding> {
        with_global_rng(|rng| Embedding::with_rng(num_embeddings, embedding_dim, rng))
    }

    /// `nn.Embedding(num_embeddings, embedding_dim)`, weights N(0, 1) drawn from `rng` row by row.
    pub fn with_rng(
        num_embeddings: usize,
        embedding_dim: usize,
        rng: &mut Rng,
    ) -> Result<Embedding> {
        if num_embeddings
            .checked_mul(embedding_dim)
            .is_none_or(|n| n > isize::MAX as usize / 4)
        {
            return Err(Error::Config(format!(
                "Embedding({num_embeddings}, {embedding_dim}) is too large"
            )));
        }
        let w =
            ArrayD::from_shape_simple_fn(IxDyn(&[num_embeddings, embedding_dim]), || rng.normal());
        Ok(Embedding {
            num_embeddings,
            embedding_dim,
            padding_idx: None,
            max_norm: None,
            weight: Tensor::parameter(w),
        })
    }

    /// A table with the given weight `(num_embeddings, embedding_dim)`, as
    /// `nn.Embedding.from_pretrained(weight, freeze=False)` (the padding row is kept as given).
    pub fn from_weight(weight: Tensor, padding_idx: Option<usize>) -> Result<Embedding> {
        let s = weight.shape();
        if s.len() != 2 {
            return Err(Error::shape(
                "Embedding weight",
                "(num_embeddings, embedding_dim)",
                &s,
            ));
        }
        check_padding(padding_idx, s[0])?;
        Ok(Embedding {
            num_embeddings: s[0],
            embedding_dim: s[1],
            padding_idx,
            max_norm: None,
            weight,
        })
    }

    /// Sets `padding_idx` (`nn.Embedding(..., padding_idx=p)`): row `p` is zeroed and gets no
    /// gradient. Errors if `p >= num_embeddings`.
    pub fn with_padding_idx(mut self, padding_idx: Option<usize>) -> Result<Embedding> {
        check_padding(padding_idx, self.num_embeddings)?;
        if let Some(p) = padding_idx {
            self.weight.data_mut().index_axis_mut(Axis(0), p).fill(0.0);
        }
        self.padding_idx = padding_idx;
        Ok(self)
    }

    /// `max_norm` and `norm_type` (`nn.Embedding(..., max_norm=m, norm_type=p)`, PyTorch's
    /// default p = 2): each looked-up row whose p-norm exceeds `m` is rescaled in place to norm
    /// `m` before the lookup. `None` turns it off. Errors unless `m > 0` and `p > 0` (or ∞).
    pub fn with_max_norm(mut self, max_norm: Option<f64>, norm_type: f64) -> Result<Embedding> {
        if let Some(m) = max_norm {
            if !(m.is_finite() && m > 0.0) || norm_type.is_nan() || norm_type <= 0.0 {
                return Err(Error::Config(format!(
                    "Embedding: max_norm must be finite and > 0 and norm_type > 0, got \
                     max_norm={m}, norm_type={norm_type}"
                )));
            }
        }
        self.max_norm = max_norm.map(|m| (m, norm_type));
        Ok(self)
    }

    /// `(max_norm, norm_type)`, if set.
    pub fn max_norm(&self) -> Option<(f64, f64)> {
        self.max_norm
    }

    /// `embedding_renorm_`: rescales the rows at `indices` (each once, in increasing order)
    /// whose norm exceeds `max_norm`, in place and outside the graph.
    fn renorm(&self, indices: &[usize], max_norm: f64, norm_type: f64) {
        let mut rows = indices.to_vec();
        rows.sort_unstable();
        rows.dedup();
        let mut w = self.weight.data_mut();
        for i in rows {
            let mut row = w.index_axis_mut(Axis(0), i);
            let norm = if norm_type.is_infinite() {
                row.iter().fold(0f64, |m, &v| m.max(f64::from(v.abs())))
            } else {
                row.iter()
                    .map(|&v| f64::from(v.abs()).powf(norm_type))
                    .sum::<f64>()
                    .powf(1.0 / norm_type)
            };
            // PyTorch's norm is an f32 tensor read back as a double.
            let norm = f64::from(norm as f32);
            if norm > max_norm {
                let scale = (max_norm / (norm + 1e-7)) as f32;
                row.mapv_inplace(|v| v * scale);
            }
        }
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.num_embeddings
    }

    /// Size of each vector.
    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// The padding row, if any.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    /// The table, `(num_embeddings, embedding_dim)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The rows at `indices`: shape `indices.shape + (embedding_dim,)`.
    pub fn forward(&self, indices: &ArrayD<usize>) -> Result<Tensor> {
        let (n, d) = (self.num_embeddings, self.embedding_dim);
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::Invalid(format!(
                "Embedding: index {bad} is out of range for {n} embeddings (expected 0..={}); \
                 PyTorch says \"index out of range in self\"",
                n as isize - 1
            )));
        }
        let mut shape = indices.shape().to_vec();
        shape.push(d);
        let flat: Vec<usize> = indices.iter().copied().collect();
        if let Some((max_norm, norm_type)) = self.max_norm {
            self.renorm(&flat, max_norm, norm_type);
        }
        let mut out = Vec::with_capacity(flat.len() * d);
        {
            let w = self.weight.data();
            for &i in &flat {
                out.extend(w.index_axis(Axis(0), i).iter());
            }
        }
        let out = ArrayD::from_shape_vec(IxDyn(&shape), out).expect("indices.len() * dim values");
        let op = Gather {
            indices: flat,
            padding_idx: self.padding_idx,
            rows: n,
        };
        Ok(Tensor::from_unary_op(out, vec![self.weight.clone()], op))
    }
}

fn check_padding(padding_idx: Option<usize>, n: usize) -> Result<()> {
    match padding_idx {
        Some(p) if p >= n => Err(Error::Config(format!(
            "Padding_idx must be within num_embeddings (got {p} for {n})"
        ))),
        _ => Ok(()),
    }
}

/// Backward of a row lookup: the gradient of each looked-up row is added to that row of the
/// table (scatter-add), except for the padding row.
struct Gather {
    indices: Vec<usize>,
    padding_idx: Option<usize>,
    rows: usize,
}

impl Backward for Gather {
    fn name(&self) -> &'static str {
        "EmbeddingBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        vec![grads[0].as_ref().map(|g| {
            let d = g.shape().last().copied().unwrap_or(0);
            let g2 = g.to_shape((self.indices.len(), d)).expect("(n, dim)");
            let mut dw = ArrayD::<f32>::zeros(IxDyn(&[self.rows, d]));
            for (k, &i) in self.indices.iter().enumerate() {
                if Some(i) != self.padding_idx {
                    let mut row = dw.index_axis_mut(Axis(0), i);
                    row += &g2.index_axis(Axis(0), k);
                }
            }
            dw
        })]
    }
}

impl Module for Embedding {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}

impl fmt::Display for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Embedding({}, {}",
            self.num_embeddings, self.embedding_dim
        )?;
        if let Some(p) = self.padding_idx {
            write!(f, ", padding_idx={p}")?;
        }
        if let Some((m, p)) = self.max_norm {
            write!(f, ", max_norm={m:?}")?;
            if p != 2.0 {
                write!(f, ", norm_type={p:?}")?;
            }
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn lookup_padding_and_gradient() {
        let emb = Embedding::with_rng(5, 2, &mut Rng::new(3))
            .unwrap()
            .with_padding_idx(Some(1))
            .unwrap();
        let w = emb.weight().to_array();
        assert!(w.index_axis(Axis(0), 1).iter().all(|&v| v == 0.0));
        let y = emb
            .forward(&array![[4usize, 1], [4, 0]].into_dyn())
            .unwrap();
        assert_eq!(y.shape(), [2, 2, 2]);
        assert_eq!(
            y.to_array().index_axis(Axis(0), 1).index_axis(Axis(0), 0),
            w.index_axis(Axis(0), 4)
        );
        y.sum().backward().unwrap();
        let g = emb.weight().grad().unwrap();
        assert_eq!(
            g,
            array![
                [1.0f32, 1.0],
                [0.0, 0.0],
                [0.0, 0.0],
                [0.0, 0.0],
                [2.0, 2.0]
            ]
            .into_dyn()
        );
        assert_eq!(emb.to_string(), "Embedding(5, 2, padding_idx=1)");
        assert_eq!(emb.named_parameters()[0].0, "weight");
    }

    #[test]
    fn errors() {
        let emb = Embedding::new(3, 2).unwrap();
        let e = emb
            .forward(&array![0usize, 3].into_dyn())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("index 3 is out of range for 3 embeddings"),
            "{e}"
        );
        assert!(Embedding::new(3, 2)
            .unwrap()
            .with_padding_idx(Some(3))
            .is_err());
        assert_eq!(emb.to_string(), "Embedding(3, 2)");
    }
}
