//! Zoneout (Krueger et al. 2016) inside the time loops, the same for every cell: after a
//! step has made its new state `h~` (and `c~`), each unit of each row keeps its previous
//! state where its mask `m` is 1,
//!
//! ```text
//! h_t = m_h h_{t-1} + (1 - m_h) h~_t        c_t = m_c c_{t-1} + (1 - m_c) c~_t
//! ```
//!
//! with `h~_t` made from the kept `c~_t` (not from `c_t`), as in the paper. In training mode the
//! masks are Bernoulli(p) draws, one per unit, row and step (see [`crate::regularisers`]); at
//! evaluation every mask is the expectation `p`. `h` is the state that recurs and is output:
//! with a projection, the projected one.
//!
//! Backward, with `dL/dh_t` complete (from the output and the next step): the cell's gate math
//! reads `dL/dh~_t = (1 - m_h) dL/dh_t`, and `m_h dL/dh_t` goes straight to `dL/dh_{t-1}`,
//! kept meanwhile in a per-step buffer and added before the product through `W_hh`
//! accumulates into it; `c` likewise around the gate math. A pass without zoneout runs none
//! of this.

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder, Zip};

use super::views::{Part, Shared};
use crate::linalg::Float;

/// The masks of one layer and direction, as its pass reads them.
#[derive(Clone, Copy, Debug)]
pub(super) enum Mask<'a, F> {
    /// (R, width): one mask per row of the pass (in the order of its batches) and unit.
    Rows(Shared<F>),
    /// The expectation `p` for every row (evaluation): `width` copies of it.
    Expectation(&'a [F]),
}

impl<'a, F: Float> Mask<'a, F> {
    /// The masks of the part's rows, columns `cols`.
    ///
    /// # Safety
    /// The mask matrix outlives the view and nothing writes it.
    pub(super) unsafe fn view(
        &self,
        part: &Part,
        cols: std::ops::Range<usize>,
    ) -> ArrayView2<'a, F> {
        match *self {
            Mask::Rows(m) => part.view(m, cols),
            Mask::Expectation(p) => {
                let p = &p[cols];
                // SAFETY: row stride 0 reads the one row `p` for every row, as a broadcast.
                ArrayView2::from_shape_ptr((part.len, p.len()).strides((0, 1)), p.as_ptr())
            }
        }
    }
}

/// The zoneout masks of one layer and direction: `h` (width `H_out`) and, for a cell with a
/// cell state, `c` (width `H`).
#[derive(Clone, Copy, Debug)]
pub(super) struct DirZoneout<'a, F> {
    /// The masks of `h`.
    pub h: Mask<'a, F>,
    /// The masks of `c`.
    pub c: Mask<'a, F>,
}

/// Forward: `new += m (old - new)`, element by element.
pub(super) fn keep_old<F: Float>(
    mut new: ArrayViewMut2<'_, F>,
    old: ArrayView2<'_, F>,
    m: ArrayView2<'_, F>,
) {
    Zip::from(&mut new)
        .and(&old)
        .and(&m)
        .for_each(|n, &o, &m| *n = *n + m * (o - *n));
}

/// Backward: splits `d` (dL/d the zoned state) into `keep = m d`, the part that goes to the
/// previous state, and `d = (1 - m) d`, the part the cell's math reads.
pub(super) fn split_grad<F: Float>(
    mut d: ArrayViewMut2<'_, F>,
    mut keep: ArrayViewMut2<'_, F>,
    m: ArrayView2<'_, F>,
) {
    Zip::from(&mut d)
        .and(&mut keep)
        .and(&m)
        .for_each(|d, k, &m| {
            *k = m * *d;
            *d -= *k;
        });
}
