//! [`gather_rows`], the one differentiable operation behind packing, padding and unpacking: it
//! copies rows between tensors, and its backward scatter-adds the gradient rows back.
//! [`select_batch`] permutes the batch dimension of a state with it.

use ndarray::{ArrayD, IxDyn};

use crate::tensor::{Backward, Tensor};

/// Where one output row of [`gather_rows`] comes from: `(source, row)`, or `None` for a row
/// filled with the padding value.
pub(super) type RowSource = Option<(usize, usize)>;

/// `(output row, source row)`: one copy made by [`gather_rows`].
type RowPair = (usize, usize);

/// Copies rows of `sources` into a new tensor of shape `out_shape`, every tensor being seen as
/// a row-major (rows, `width`) matrix: output row `o` is row `index[o]` of its source, or
/// `fill` for `None`. Backward scatter-adds each output row's gradient into its source row;
/// filled rows pass no gradient.
pub(super) fn gather_rows(
    name: &'static str,
    sources: &[Tensor],
    width: usize,
    index: &[RowSource],
    fill: f32,
    out_shape: Vec<usize>,
) -> Tensor {
    let mut pairs: Vec<Vec<RowPair>> = vec![Vec::new(); sources.len()];
    for (o, src) in index.iter().enumerate() {
        if let Some((s, r)) = *src {
            pairs[s].push((o, r));
        }
    }
    let mut out = vec![fill; index.len() * width];
    let mut shapes = Vec::with_capacity(sources.len());
    // One read lock at a time: the same tensor may appear twice in `sources`.
    for (t, pairs) in sources.iter().zip(&pairs) {
        let data = t.data();
        shapes.push(data.shape().to_vec());
        let data = data.as_standard_layout();
        let flat = data.as_slice().expect("standard layout");
        for &(o, r) in pairs {
            out[o * width..(o + 1) * width].copy_from_slice(&flat[r * width..(r + 1) * width]);
        }
    }
    let out = ArrayD::from_shape_vec(IxDyn(&out_shape), out)
        .expect("out_shape has index.len() rows of width");
    let op = GatherRows {
        name,
        width,
        sources: shapes.into_iter().zip(pairs).collect(),
    };
    Tensor::from_unary_op(out, sources.to_vec(), op)
}

/// Backward of [`gather_rows`]: scatter-add of the output rows into their source rows.
struct GatherRows {
    name: &'static str,
    width: usize,
    /// Per source: its shape and the `(output row, source row)` pairs it feeds.
    sources: Vec<(Vec<usize>, Vec<RowPair>)>,
}

impl Backward for GatherRows {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None; inputs.len()];
        };
        let g = g.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let w = self.width;
        self.sources
            .iter()
            .zip(inputs)
            .map(|((shape, pairs), input)| {
                if !input.requires_grad() {
                    return None;
                }
                let mut d = vec![0.0f32; shape.iter().product()];
                for &(o, r) in pairs {
                    for (a, b) in d[r * w..(r + 1) * w].iter_mut().zip(&g[o * w..(o + 1) * w]) {
                        *a += b;
                    }
                }
                Some(ArrayD::from_shape_vec(IxDyn(shape), d).expect("source shape"))
            })
            .collect()
    }
}

/// `tensor.index_select(1, perm)` for a state (A, N, *): entry `j` of dim 1 of the result is
/// entry `perm[j]` of `state`. Differentiable.
pub(super) fn select_batch(state: &Tensor, perm: &[usize]) -> Tensor {
    let shape = state.shape();
    let (a, n) = (shape[0], shape[1]);
    let width = shape[2..].iter().product();
    let index: Vec<RowSource> = (0..a)
        .flat_map(|i| perm.iter().map(move |&p| Some((0, i * n + p))))
        .collect();
    gather_rows(
        "IndexSelectBackward",
        std::slice::from_ref(state),
        width,
        &index,
        0.0,
        shape,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn gather_backward_scatter_adds_and_skips_padding() {
        let x = Tensor::parameter(array![[1.0f32, 2.], [3., 4.]].into_dyn());
        // Rows: x1, pad, x0, x1.
        let index = [Some((0, 1)), None, Some((0, 0)), Some((0, 1))];
        let y = gather_rows("Test", std::slice::from_ref(&x), 2, &index, 9.0, vec![4, 2]);
        assert_eq!(
            y.to_array(),
            array![[3.0f32, 4.], [9., 9.], [1., 2.], [3., 4.]].into_dyn()
        );
        y.backward_with(array![[1.0f32, 2.], [100., 100.], [3., 4.], [5., 6.]].into_dyn())
            .unwrap();
        assert_eq!(x.grad().unwrap(), array![[3.0f32, 4.], [6., 8.]].into_dyn());
    }

    #[test]
    fn select_batch_permutes_dim_1() {
        let h = Tensor::parameter(ArrayD::from_shape_fn(IxDyn(&[2, 3, 1]), |i| {
            (10 * i[0] + i[1]) as f32
        }));
        let y = select_batch(&h, &[2, 0, 1]);
        assert_eq!(
            y.to_array().iter().copied().collect::<Vec<_>>(),
            [2., 0., 1., 12., 10., 11.]
        );
        y.backward_with(
            ArrayD::from_shape_vec(IxDyn(&[2, 3, 1]), vec![1., 2., 3., 4., 5., 6.]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            h.grad().unwrap().iter().copied().collect::<Vec<_>>(),
            [2., 3., 1., 5., 6., 4.]
        );
    }
}
