//! Elementwise arithmetic with broadcasting, scalar arithmetic and matrix products.
//!
//! Broadcasting backward: the gradient of an input is the output gradient (times the local
//! derivative) summed over the dimensions that broadcasting expanded.

use ndarray::{ArrayD, IxDyn};

use super::{as_matrix, broadcast_shapes, mm, read2, sum_to_shape};
use crate::error::{Error, Result};
use crate::tensor::{Backward, Tensor};

#[derive(Clone, Copy, PartialEq, Eq)]
enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a ∘ b` for ∘ in {+, -, *, /}; saves nothing (the inputs are read back in backward).
struct Binary(BinaryKind);

impl Backward for Binary {
    fn name(&self) -> &'static str {
        match self.0 {
            BinaryKind::Add => "AddBackward",
            BinaryKind::Sub => "SubBackward",
            BinaryKind::Mul => "MulBackward",
            BinaryKind::Div => "DivBackward",
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
        let (ta, tb) = (&inputs[0], &inputs[1]);
        let (need_a, need_b) = (ta.requires_grad(), tb.requires_grad());
        read2(ta, tb, |a, b| {
            // d(a∘b)/da and d(a∘b)/db, times g, at the broadcast shape.
            let ga = need_a.then(|| {
                let full = match self.0 {
                    BinaryKind::Add | BinaryKind::Sub => g.clone(),
                    BinaryKind::Mul => g * b,
                    BinaryKind::Div => g / b,
                };
                sum_to_shape(full, a.shape())
            });
            let gb = need_b.then(|| {
                let full = match self.0 {
                    BinaryKind::Add => g.clone(),
                    BinaryKind::Sub => -g,
                    BinaryKind::Mul => g * a,
                    // d(a/b)/db = -a / b^2
                    BinaryKind::Div => -(g * a) / &b.mapv(|v| v * v),
                };
                sum_to_shape(full, b.shape())
            });
            vec![ga, gb]
        })
    }
}

/// `x * factor + offset`; the backward is `g * factor`.
struct Affine(f32);

impl Backward for Affine {
    fn name(&self) -> &'static str {
        "AffineBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let f = self.0;
        vec![grads[0].as_ref().map(|g| g.mapv(|v| v * f))]
    }
}

/// `a @ b` with `a` of shape `(..., K)` seen as `(rows, K)` and `b` of shape `(K, M)`.
struct MatMul {
    rows: usize,
}

impl Backward for MatMul {
    fn name(&self) -> &'static str {
        "MmBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None, None];
        };
        let (ta, tb) = (&inputs[0], &inputs[1]);
        let (need_a, need_b) = (ta.requires_grad(), tb.requires_grad());
        read2(ta, tb, |a, b| {
            let (k, m) = (b.shape()[0], b.shape()[1]);
            let g2 = as_matrix(g, self.rows, m);
            // dA = G @ B^T, shaped back to (..., K); dB = A^T @ G.
            let ga = need_a.then(|| {
                let ga = mm(g2.view(), b.view().into_dimensionality().expect("2-D").t());
                ga.into_dyn()
                    .into_shape_with_order(IxDyn(a.shape()))
                    .expect("same size")
            });
            let gb = need_b.then(|| {
                let a2 = as_matrix(a, self.rows, k);
                mm(a2.t(), g2.view()).into_dyn()
            });
            vec![ga, gb]
        })
    }
}

impl Tensor {
    fn binary(&self, other: &Tensor, kind: BinaryKind, what: &str) -> Result<Tensor> {
        let out = read2(self, other, |a, b| -> Result<ArrayD<f32>> {
            broadcast_shapes(what, a.shape(), b.shape())?;
            Ok(match kind {
                BinaryKind::Add => a + b,
                BinaryKind::Sub => a - b,
                BinaryKind::Mul => a * b,
                BinaryKind::Div => a / b,
            })
        })?;
        Ok(Tensor::from_unary_op(
            out,
            vec![self.clone(), other.clone()],
            Binary(kind),
        ))
    }

    /// `self + other`, with broadcasting (`torch.add`).
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryKind::Add, "add")
    }

    /// `self - other`, with broadcasting (`torch.sub`).
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryKind::Sub, "sub")
    }

    /// `self * other` elementwise, with broadcasting (`torch.mul`).
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryKind::Mul, "mul")
    }

    /// `self / other` elementwise, with broadcasting (`torch.div`).
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryKind::Div, "div")
    }

    fn affine(&self, factor: f32, offset: f32) -> Tensor {
        let out = self.data().mapv(|v| v * factor + offset);
        Tensor::from_unary_op(out, vec![self.clone()], Affine(factor))
    }

    /// `self + s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        let out = self.data().mapv(|v| v + s);
        Tensor::from_unary_op(out, vec![self.clone()], Affine(1.0))
    }

    /// `self / s`, divided value by value (not multiplied by `1/s`); the backward is `g / s`.
    pub fn div_scalar(&self, s: f32) -> Tensor {
        let out = self.data().mapv(|v| v / s);
        Tensor::from_unary_op(out, vec![self.clone()], Affine(1.0 / s))
    }

    /// `self * s`.
    pub fn mul_scalar(&self, s: f32) -> Tensor {
        self.affine(s, 0.0)
    }

    /// `-self`.
    pub fn neg(&self) -> Tensor {
        self.affine(-1.0, 0.0)
    }

    /// Matrix product `self @ other` (`torch.matmul`) for `self` of shape `(N, K)` or, more
    /// generally, `(..., K)` and `other` of shape `(K, M)`: the result has shape `(..., M)`.
    ///
    /// Errors as PyTorch: `mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let (out, rows) = read2(self, other, |a, b| -> Result<(ArrayD<f32>, usize)> {
            let (sa, sb) = (a.shape(), b.shape());
            if sa.is_empty() {
                return Err(Error::shape_hint(
                    "matmul input",
                    "(*, K) with at least one dimension",
                    sa,
                    "both arguments to matmul need to be at least 1D",
                ));
            }
            let k = sa[sa.len() - 1];
            let rows: usize = sa[..sa.len() - 1].iter().product();
            if sb.len() != 2 {
                return Err(Error::shape_hint(
                    "matmul mat2",
                    format!("({k}, M)"),
                    sb,
                    "the second argument must be a 2-D matrix",
                ));
            }
            if sb[0] != k {
                return Err(Error::shape_hint(
                    "matmul mat2",
                    format!("({k}, {})", sb[1]),
                    sb,
                    format!(
                        "mat1 and mat2 shapes cannot be multiplied ({rows}x{k} and {}x{})",
                        sb[0], sb[1]
                    ),
                ));
            }
            let a2 = as_matrix(a, rows, k);
            let b2 = b.view().into_dimensionality().expect("2-D");
            let out = mm(a2.view(), b2);
            let mut shape = sa[..sa.len() - 1].to_vec();
            shape.push(sb[1]);
            Ok((
                out.into_dyn()
                    .into_shape_with_order(IxDyn(&shape))
                    .expect("same size"),
                rows,
            ))
        })?;
        Ok(Tensor::from_unary_op(
            out,
            vec![self.clone(), other.clone()],
            MatMul { rows },
        ))
    }
}
