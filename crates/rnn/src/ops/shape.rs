//! Shape operations: reshape, unsqueeze, transpose, select, narrow, cat and stack.
//!
//! Every output is a new row-major array (PyTorch would return views; the values are the same).
//! The backward of each routes the gradient back to the positions the values came from.

use ndarray::{concatenate, stack, ArrayD, ArrayViewD, Axis, IxDyn, Slice};

use super::{list, normalize_dim, owned, wrap_dim};
use crate::error::{Error, Result, Shape};
use crate::tensor::{Backward, Tensor};

/// Reshape / transpose: the gradient is reshaped / transposed back.
enum Layout {
    Reshape(Vec<usize>),
    Transpose(usize, usize),
}

impl Backward for Layout {
    fn name(&self) -> &'static str {
        match self {
            Layout::Reshape(_) => "ViewBackward",
            Layout::Transpose(..) => "TransposeBackward",
        }
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        vec![grads[0].as_ref().map(|g| match self {
            Layout::Reshape(shape) => g.to_shape(IxDyn(shape)).expect("same size").into_owned(),
            Layout::Transpose(a, b) => {
                let mut v = g.view();
                v.swap_axes(*a, *b);
                owned(v)
            }
        })]
    }
}

/// A slice of the input (`select` drops the dimension, `narrow` keeps it): the gradient is
/// written into zeros of the input's shape.
struct Slicing {
    shape: Vec<usize>,
    dim: usize,
    start: usize,
    len: usize,
    /// `select`: the output lost dimension `dim`.
    dropped: bool,
}

impl Backward for Slicing {
    fn name(&self) -> &'static str {
        if self.dropped {
            "SelectBackward"
        } else {
            "NarrowBackward"
        }
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        vec![grads[0].as_ref().map(|g| {
            let mut dx = ArrayD::zeros(IxDyn(&self.shape));
            let ax = Axis(self.dim);
            if self.dropped {
                dx.index_axis_mut(ax, self.start).assign(g);
            } else {
                let s = Slice::from(self.start..self.start + self.len);
                dx.slice_axis_mut(ax, s).assign(g);
            }
            dx
        })]
    }
}

/// `cat` (sizes along `dim`) or `stack` (`sizes` empty): the gradient is split back.
struct Join {
    dim: usize,
    sizes: Option<Vec<usize>>,
    count: usize,
}

impl Backward for Join {
    fn name(&self) -> &'static str {
        if self.sizes.is_some() {
            "CatBackward"
        } else {
            "StackBackward"
        }
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None; self.count];
        };
        let ax = Axis(self.dim);
        match &self.sizes {
            Some(sizes) => {
                let mut start = 0;
                sizes
                    .iter()
                    .map(|&n| {
                        let part = owned(g.slice_axis(ax, Slice::from(start..start + n)));
                        start += n;
                        Some(part)
                    })
                    .collect()
            }
            None => (0..self.count)
                .map(|k| Some(owned(g.index_axis(ax, k))))
                .collect(),
        }
    }
}

/// Resolves a possibly negative `index` into a dimension of size `size`.
fn wrap_index(what: &str, index: isize, dim: usize, shape: &[usize]) -> Result<usize> {
    let size = shape[dim] as isize;
    let i = if index < 0 { index + size } else { index };
    if i < 0 || i >= size {
        return Err(Error::shape_hint(
            what,
            format!(
                "a dimension {dim} of size > {}",
                if index < 0 { -index - 1 } else { index }
            ),
            shape,
            format!("index {index} is out of range for dimension {dim} with size {size}"),
        ));
    }
    Ok(i as usize)
}

impl Tensor {
    /// `tensor.reshape(shape)` with PyTorch's view semantics on row-major data; one entry may be
    /// `-1` (inferred). Errors as PyTorch: `shape '[2, 5]' is invalid for input of size 12`.
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        let (out, old) = {
            let x = self.data();
            let n = x.len();
            let invalid = |hint: String| {
                Error::shape_hint(
                    "reshape",
                    format!("a shape with {n} elements"),
                    x.shape(),
                    hint,
                )
            };
            let shown = format!("{shape:?}");
            let mut infer = None;
            let mut known = 1usize;
            for (i, &s) in shape.iter().enumerate() {
                if s == -1 {
                    if infer.replace(i).is_some() {
                        return Err(invalid("only one dimension can be inferred".into()));
                    }
                } else if s < 0 {
                    return Err(invalid(format!("invalid shape dimension {s}")));
                } else {
                    known = known.saturating_mul(s as usize);
                }
            }
            let mut dims: Vec<usize> = shape.iter().map(|&s| s.max(0) as usize).collect();
            let bad = || format!("shape '{shown}' is invalid for input of size {n}");
            match infer {
                Some(i) if known != 0 && n.is_multiple_of(known) => dims[i] = n / known,
                Some(_) => return Err(invalid(bad())),
                None if known != n => return Err(invalid(bad())),
                None => {}
            }
            let out = x
                .to_shape(IxDyn(&dims))
                .map_err(|_| invalid(bad()))?
                .into_owned();
            (out, x.shape().to_vec())
        };
        Ok(Tensor::from_unary_op(
            out,
            vec![self.clone()],
            Layout::Reshape(old),
        ))
    }

    /// `tensor.unsqueeze(dim)`: a new dimension of size 1 at `dim` (in `[-ndim-1, ndim]`).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let shape = self.shape();
        let d = wrap_dim("unsqueeze", dim, shape.len() + 1, &shape)?;
        let mut new: Vec<isize> = shape.iter().map(|&s| s as isize).collect();
        new.insert(d, 1);
        self.reshape(&new)
    }

    /// `tensor.transpose(dim0, dim1)`: swaps two dimensions (negative dims allowed).
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Result<Tensor> {
        let (out, a, b) = {
            let x = self.data();
            let a = normalize_dim("transpose", dim0, x.shape())?;
            let b = normalize_dim("transpose", dim1, x.shape())?;
            let mut v = x.view();
            v.swap_axes(a, b);
            (owned(v), a, b)
        };
        Ok(Tensor::from_unary_op(
            out,
            vec![self.clone()],
            Layout::Transpose(a, b),
        ))
    }

    /// `tensor.select(dim, index)`, i.e. `tensor[:, index]` for `dim = 1`: the dimension is
    /// removed. Negative indices count from the end (`out.select(1, -1)` is the last step).
    pub fn select(&self, dim: isize, index: isize) -> Result<Tensor> {
        let (out, op) = {
            let x = self.data();
            let d = normalize_dim("select", dim, x.shape())?;
            let i = wrap_index("select", index, d, x.shape())?;
            let op = Slicing {
                shape: x.shape().to_vec(),
                dim: d,
                start: i,
                len: 1,
                dropped: true,
            };
            (owned(x.index_axis(Axis(d), i)), op)
        };
        Ok(Tensor::from_unary_op(out, vec![self.clone()], op))
    }

    /// `tensor.narrow(dim, start, length)`: elements `start..start + length` along `dim`
    /// (a negative `start` counts from the end).
    pub fn narrow(&self, dim: isize, start: isize, length: usize) -> Result<Tensor> {
        let (out, op) = {
            let x = self.data();
            let d = normalize_dim("narrow", dim, x.shape())?;
            let size = x.shape()[d];
            let s = if start < 0 {
                start + size as isize
            } else {
                start
            };
            if s < 0 || s as usize + length > size {
                return Err(Error::shape_hint(
                    "narrow",
                    format!("a dimension {d} of size >= {}", s.max(0) as usize + length),
                    x.shape(),
                    format!("start ({start}) + length ({length}) exceeds dimension size ({size})"),
                ));
            }
            let s = s as usize;
            let op = Slicing {
                shape: x.shape().to_vec(),
                dim: d,
                start: s,
                len: length,
                dropped: false,
            };
            (owned(x.slice_axis(Axis(d), Slice::from(s..s + length))), op)
        };
        Ok(Tensor::from_unary_op(out, vec![self.clone()], op))
    }

    /// `torch.cat(tensors, dim)`: joins along an existing dimension; the other dimensions must
    /// agree.
    pub fn cat(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| {
            Error::Invalid("torch.cat(): expected a non-empty list of Tensors".into())
        })?;
        let s0 = first.shape();
        let d = normalize_dim("cat", dim, &s0)?;
        let mut sizes = Vec::with_capacity(tensors.len());
        for (k, t) in tensors.iter().enumerate() {
            let s = t.shape();
            let same = s.len() == s0.len()
                && s.iter()
                    .zip(&s0)
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !same {
                let mut expected: Vec<String> = s0.iter().map(|v| v.to_string()).collect();
                expected[d] = "*".into();
                return Err(Error::shape_hint(
                    format!("cat tensor {k}"),
                    format!("({})", expected.join(", ")),
                    &s,
                    format!("Sizes of tensors must match except in dimension {d} (tensor 0 has shape {})", Shape::of(&s0)),
                ));
            }
            sizes.push(s[d]);
        }
        let guards: Vec<_> = tensors.iter().map(|t| t.to_array()).collect();
        let views: Vec<ArrayViewD<'_, f32>> = guards.iter().map(|a| a.view()).collect();
        let out = concatenate(Axis(d), &views).map_err(|e| Error::Invalid(format!("cat: {e}")))?;
        let op = Join {
            dim: d,
            sizes: Some(sizes),
            count: tensors.len(),
        };
        Ok(Tensor::from_unary_op(out, tensors.to_vec(), op))
    }

    /// `torch.stack(tensors, dim)`: joins equal-shaped tensors along a new dimension `dim`
    /// (in `[-ndim-1, ndim]`).
    pub fn stack(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::Invalid("stack expects a non-empty TensorList".into()))?;
        let s0 = first.shape();
        let d = wrap_dim("stack", dim, s0.len() + 1, &s0)?;
        for (k, t) in tensors.iter().enumerate() {
            let s = t.shape();
            if s != s0 {
                return Err(Error::shape_hint(
                    format!("stack tensor {k}"),
                    Shape::of(&s0).to_string(),
                    &s,
                    format!("stack expects each tensor to be equal size, but got {} at entry 0 and {} at entry {k}", list(&s0), list(&s)),
                ));
            }
        }
        let arrays: Vec<_> = tensors.iter().map(|t| t.to_array()).collect();
        let views: Vec<ArrayViewD<'_, f32>> = arrays.iter().map(|a| a.view()).collect();
        let out = stack(Axis(d), &views).map_err(|e| Error::Invalid(format!("stack: {e}")))?;
        let op = Join {
            dim: d,
            sizes: None,
            count: tensors.len(),
        };
        Ok(Tensor::from_unary_op(out, tensors.to_vec(), op))
    }
}
