//! Differentiable operations on [`Tensor`], as PyTorch's tensor methods: elementwise
//! arithmetic with broadcasting, matrix products, reductions, shape manipulation, activations
//! and (log-)softmax.
//!
//! Each operation computes its output array and records one graph node whose backward is
//! written by hand (see [`crate::tensor::Backward`]). Dimensions follow PyTorch: a `dim` may be
//! negative (`-1` is the last), and anything the caller can get wrong (a shape, a dim, an index)
//! returns an [`Error`] naming the expected and the actual shape.
//!
//! The methods live in submodules by family: `arith` (add, sub, mul, div, scalars, matmul),
//! `reduce` (sum, mean, softmax, log_softmax, argmax), `shape` (reshape, transpose, select,
//! narrow, cat, stack), `activation` (tanh, sigmoid, relu, exp, log) and `operators` (`+ - * /`
//! and unary `-` on tensors and scalars, which panic where the methods return an error). This file holds the
//! shared broadcasting and dimension helpers, [`one_hot`] and [`Tensor::from_vec`].
//!
//! ```
//! use rnn::Tensor;
//! let x = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
//! let b = Tensor::parameter(ndarray::array![10.0f32, 20., 30.].into_dyn());
//! let y = x.add(&b).unwrap().sum(); // b is broadcast over the rows
//! y.backward().unwrap();
//! assert_eq!(b.grad().unwrap(), ndarray::array![2.0f32, 2., 2.].into_dyn());
//! ```

mod activation;
mod arith;
mod operators;
mod reduce;
mod shape;
#[cfg(test)]
mod tests;

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, IxDyn};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// PyTorch's list notation for a shape in messages: `[2, 5]`.
pub(crate) fn list(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// The broadcast shape of `a` and `b` (numpy / PyTorch rules: align trailing dimensions; each
/// pair must be equal or contain a 1).
pub(crate) fn broadcast_shapes(what: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        // Dimension i of the result, counted from the right.
        let da = if i < a.len() { a[a.len() - 1 - i] } else { 1 };
        let db = if i < b.len() { b[b.len() - 1 - i] } else { 1 };
        out[n - 1 - i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            (x, y) => {
                return Err(Error::shape_hint(
                    what,
                    format!("a shape broadcastable with {}", crate::Shape::of(a)),
                    b,
                    format!(
                        "The size of tensor a ({x}) must match the size of tensor b ({y}) at \
                         non-singleton dimension {}",
                        n - 1 - i
                    ),
                ))
            }
        };
    }
    Ok(out)
}

/// Sums a gradient of the broadcast shape back to `shape`: over the leading dimensions that
/// broadcasting added and over the dimensions where `shape` has a 1.
pub(crate) fn sum_to_shape(g: ArrayD<f32>, shape: &[usize]) -> ArrayD<f32> {
    if g.shape() == shape {
        return g;
    }
    let mut g = g;
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (i, &s) in shape.iter().enumerate() {
        if s == 1 && g.shape()[i] != 1 {
            g = g.sum_axis(Axis(i)).insert_axis(Axis(i));
        }
    }
    g
}

/// `g` broadcast to `shape`, as a new standard-layout array.
pub(crate) fn expand(g: &ArrayD<f32>, shape: &[usize]) -> ArrayD<f32> {
    let mut out = ArrayD::zeros(IxDyn(shape));
    out.assign(g);
    out
}

/// A copy of `v` in standard (row-major) layout.
pub(crate) fn owned(v: ArrayViewD<'_, f32>) -> ArrayD<f32> {
    v.as_standard_layout().into_owned()
}

/// Resolves a possibly negative `dim` of a tensor of shape `shape` (PyTorch's wrap-around).
pub(crate) fn normalize_dim(what: &str, dim: isize, shape: &[usize]) -> Result<usize> {
    wrap_dim(what, dim, shape.len(), shape)
}

/// Resolves `dim` against `rank` (which may exceed the tensor's rank by one, for `stack`).
pub(crate) fn wrap_dim(what: &str, dim: isize, rank: usize, shape: &[usize]) -> Result<usize> {
    let r = rank as isize;
    let d = if dim < 0 { dim + r } else { dim };
    if d < 0 || d >= r {
        let range = if rank == 0 {
            "Dimension specified as {dim} but tensor has no dimensions"
                .replace("{dim}", &dim.to_string())
        } else {
            format!(
                "Dimension out of range (expected to be in range of [{}, {}], but got {dim})",
                -r,
                r - 1
            )
        };
        let need = if dim < 0 { -dim } else { dim + 1 };
        return Err(Error::shape_hint(
            what,
            format!("a tensor with at least {need} dimension(s)"),
            shape,
            range,
        ));
    }
    Ok(d as usize)
}

/// Runs `f` on the data of `a` and `b` with one read guard each (one in all if they are the
/// same tensor, so that `x.mul(&x)` never locks twice).
pub(crate) fn read2<R>(
    a: &Tensor,
    b: &Tensor,
    f: impl FnOnce(&ArrayD<f32>, &ArrayD<f32>) -> R,
) -> R {
    let ga = a.data();
    if a.same(b) {
        f(&ga, &ga)
    } else {
        let gb = b.data();
        f(&ga, &gb)
    }
}

/// The matrix product of two 2-D views of any strides (`a @ b`), as a new row-major array:
/// the one product behind every op here, on the crate's GEMM ([`crate::linalg::matmul`]).
pub(crate) fn mm(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    crate::linalg::matmul(&mut c.view_mut(), &a, &b, false);
    c
}

/// `a` seen as a `(rows, cols)` matrix in row-major order (a view when `a` is contiguous).
pub(crate) fn as_matrix(
    a: &ArrayD<f32>,
    rows: usize,
    cols: usize,
) -> ndarray::CowArray<'_, f32, ndarray::Ix2> {
    a.to_shape((rows, cols))
        .expect("rows * cols equals the number of elements")
}

/// Class indices accepted by [`one_hot`]: slices, vectors and ndarray arrays of `usize`.
pub trait Indices {
    /// The indices as an n-dimensional array.
    fn to_indices(&self) -> ArrayD<usize>;
}

impl Indices for [usize] {
    fn to_indices(&self) -> ArrayD<usize> {
        ArrayD::from_shape_vec(IxDyn(&[self.len()]), self.to_vec()).expect("1-D")
    }
}

impl Indices for Vec<usize> {
    fn to_indices(&self) -> ArrayD<usize> {
        self.as_slice().to_indices()
    }
}

impl<const N: usize> Indices for [usize; N] {
    fn to_indices(&self) -> ArrayD<usize> {
        self.as_slice().to_indices()
    }
}

impl<S: ndarray::Data<Elem = usize>, D: ndarray::Dimension> Indices for ndarray::ArrayBase<S, D> {
    fn to_indices(&self) -> ArrayD<usize> {
        self.to_owned().into_dyn()
    }
}

/// `torch.nn.functional.one_hot(indices, num_classes)` as f32: shape `indices.shape + (C,)`,
/// a 1 at each index. A constant (no gradient).
///
/// ```
/// let x = rnn::ops::one_hot(&[0usize, 2], 3).unwrap();
/// assert_eq!(x.to_array(), ndarray::array![[1.0f32, 0., 0.], [0., 0., 1.]].into_dyn());
/// ```
pub fn one_hot(indices: &(impl Indices + ?Sized), num_classes: usize) -> Result<Tensor> {
    let idx = indices.to_indices();
    if let Some(&bad) = idx.iter().find(|&&i| i >= num_classes) {
        return Err(Error::Invalid(format!(
            "one_hot: class index {bad} is out of range for num_classes = {num_classes} \
             (expected 0..={})",
            num_classes as isize - 1
        )));
    }
    let mut shape = idx.shape().to_vec();
    shape.push(num_classes);
    let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
    if let Some(flat) = out.as_slice_mut() {
        for (k, &i) in idx.iter().enumerate() {
            flat[k * num_classes + i] = 1.0;
        }
    }
    Ok(Tensor::new(out))
}

impl Tensor {
    /// A constant of shape `shape` from row-major `data`, as `torch.tensor(data).view(shape)`.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        let n = data.len();
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(Tensor::new)
            .map_err(|_| {
                Error::shape_hint(
                    "from_vec",
                    format!("a shape with {n} elements"),
                    shape,
                    format!("shape '{}' is invalid for input of size {n}", list(shape)),
                )
            })
    }
}
