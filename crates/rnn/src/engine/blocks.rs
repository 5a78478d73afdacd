//! How a layer's hidden units are cut into blocks that threads work on independently.
//!
//! Each step of a layer is one matrix product and the gate math. Both split cleanly by hidden
//! unit: the gates of units `j0..j1` need only the product's columns for those units (all `G`
//! gates of them), so a thread can multiply *and* apply the gate math for its block without
//! waiting for the others; the threads meet once per step, when the new state is complete.
//!
//! Work buffers whose columns are gates (`G * H` wide: the step's products, the saved gate
//! activations, their gradients) are therefore stored *blocked*: the `G` gates of block 0
//! (`G * w0` columns, gate-major, `w0` units each), then those of block 1, and so on. With one
//! block this is PyTorch's layout. Per-unit buffers (`H` wide) keep the unit order.
//!
//! The blocks depend only on the shape, never on the thread count, so the results (whose sums
//! run over blocked columns in the backward pass) do not depend on it either.

use std::ops::Range;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

/// Columns of a packed weight panel: blocks are multiples of it where the shape allows.
const PANEL: usize = crate::linalg::PANEL_WIDTH;

/// Aimed-for hidden units per block: long enough vector loops in the gate math and a few
/// panels per product; measured on the benchmark presets (32 units per block was 20-30% slower
/// than 64 for LSTM, 128 left small layers on one thread).
const TARGET_UNITS: usize = 64;

/// At most this many blocks: each costs a claim per step.
const MAX_BLOCKS: usize = 16;

/// A partition of `0..hidden` into contiguous blocks of units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blocks {
    /// `starts[b]..starts[b + 1]` are the units of block `b`; the last entry is `hidden`.
    starts: Vec<usize>,
}

impl Blocks {
    /// Blocks for `hidden` units of `gates` gates each: a power of two of them (so that 2, 4,
    /// ... threads share them evenly), about [`TARGET_UNITS`] units each, in whole panels of
    /// product columns where possible.
    pub(crate) fn new(gates: usize, hidden: usize) -> Self {
        // Units per block such that gates * units is a multiple of the panel width.
        let unit = PANEL / gcd(PANEL, gates.max(1));
        let wanted = hidden.div_ceil(TARGET_UNITS).max(1);
        let count = (1usize << wanted.ilog2()).min(MAX_BLOCKS);
        let width = hidden.div_ceil(count).div_ceil(unit) * unit;
        let mut starts: Vec<usize> = (0..hidden).step_by(width.max(1)).collect();
        starts.push(hidden);
        if hidden == 0 {
            starts = vec![0, 0];
        }
        Blocks { starts }
    }

    /// One block of all `hidden` units: for cells whose row math needs a whole row at once
    /// ([`super::cells::Description::whole_rows`]).
    pub(crate) fn whole(hidden: usize) -> Self {
        Blocks {
            starts: vec![0, hidden],
        }
    }

    /// Number of blocks.
    pub(crate) fn count(&self) -> usize {
        self.starts.len() - 1
    }

    /// The units of block `b`.
    pub(crate) fn units(&self, b: usize) -> Range<usize> {
        self.starts[b]..self.starts[b + 1]
    }

    /// The blocked columns of block `b` in a buffer `per_unit * hidden` wide (`per_unit` = G
    /// for gate buffers, the auxiliary width for saved values).
    pub(crate) fn columns(&self, b: usize, per_unit: usize) -> Range<usize> {
        per_unit * self.starts[b]..per_unit * self.starts[b + 1]
    }

    /// The blocked columns of gate `k` of block `b` in a buffer `gates * hidden` wide.
    pub(crate) fn gate(&self, b: usize, gates: usize, k: usize) -> Range<usize> {
        let (start, width) = (gates * self.starts[b], self.units(b).len());
        start + k * width..start + (k + 1) * width
    }

    /// For each blocked column of a `gates * hidden` buffer, the PyTorch row `g * hidden + j`
    /// of the weights that produces it.
    pub(crate) fn order(&self, gates: usize) -> Vec<usize> {
        let hidden = *self.starts.last().expect("at least one start");
        let mut order = Vec::with_capacity(gates * hidden);
        for b in 0..self.count() {
            for g in 0..gates {
                order.extend(self.units(b).map(|j| g * hidden + j));
            }
        }
        order
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Rows `order[0], order[1], ...` of `w`: the weights in blocked row order.
pub(crate) fn gather_rows<F: Copy + num_traits::Zero>(
    w: &ArrayView2<'_, F>,
    order: &[usize],
) -> Array2<F> {
    let mut out = Array2::zeros((order.len(), w.ncols()));
    for (mut row, &r) in out.rows_mut().into_iter().zip(order) {
        row.assign(&w.row(r));
    }
    out
}

/// The inverse of [`gather_rows`]: row `k` of `blocked` becomes row `order[k]`.
pub(crate) fn scatter_rows<F: Copy + num_traits::Zero>(
    blocked: &ArrayView2<'_, F>,
    order: &[usize],
) -> Array2<F> {
    let mut out = Array2::zeros(blocked.dim());
    for (row, &r) in blocked.rows().into_iter().zip(order) {
        out.row_mut(r).assign(&row);
    }
    out
}

/// `v` in blocked order.
pub(crate) fn gather<F: Copy>(v: &ArrayView1<'_, F>, order: &[usize]) -> Vec<F> {
    order.iter().map(|&r| v[r]).collect()
}

/// The inverse of [`gather`].
pub(crate) fn scatter<F: Copy + num_traits::Zero>(
    blocked: &Array1<F>,
    order: &[usize],
) -> Array1<F> {
    let mut out = Array1::zeros(blocked.len());
    for (&v, &r) in blocked.iter().zip(order) {
        out[r] = v;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_units_in_whole_panels() {
        for (gates, hidden) in [
            (1, 2),
            (4, 2),
            (4, 128),
            (3, 128),
            (1, 128),
            (4, 512),
            (3, 1000),
        ] {
            let b = Blocks::new(gates, hidden);
            assert_eq!(b.units(0).start, 0);
            assert_eq!(b.units(b.count() - 1).end, hidden);
            for k in 0..b.count() {
                let u = b.units(k);
                assert!(!u.is_empty(), "{gates} x {hidden}: empty block {k}");
                if k + 1 < b.count() {
                    assert_eq!(gates * u.len() % PANEL, 0, "{gates} x {hidden}");
                    assert_eq!(u.end, b.units(k + 1).start);
                }
            }
            for k in 0..b.count() {
                let last = b.gate(k, gates, gates - 1);
                assert_eq!(b.gate(k, gates, 0).start, b.columns(k, gates).start);
                assert_eq!(last.end, b.columns(k, gates).end);
            }
            let mut order = b.order(gates);
            assert_eq!(order.len(), gates * hidden);
            order.sort_unstable();
            assert!(order.iter().enumerate().all(|(i, &r)| i == r));
        }
        assert_eq!(Blocks::new(4, 128).count(), 2);
        assert_eq!(Blocks::new(3, 512).count(), 8);
        assert_eq!(Blocks::new(4, 4096).count(), 16);
        assert_eq!(Blocks::new(1, 2).count(), 1);
    }

    #[test]
    fn gather_and_scatter_are_inverse() {
        let b = Blocks::new(3, 40);
        let order = b.order(3);
        let w = Array2::from_shape_fn((120, 2), |(i, j)| (i * 2 + j) as f32);
        let g = gather_rows(&w.view(), &order);
        assert_eq!(g.row(0), w.row(order[0]));
        assert_eq!(scatter_rows(&g.view(), &order), w);
        let v = Array1::from_shape_fn(120, |i| i as f32);
        assert_eq!(scatter(&Array1::from(gather(&v.view(), &order)), &order), v);
    }
}
