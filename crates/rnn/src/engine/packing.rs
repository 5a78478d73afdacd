//! Weights and work buffers laid out for the time loops: the weights of a layer and direction
//! packed block by block for the per-step products ([`PackedDir`]), and row lengths that keep
//! the products' operand rows out of each other's cache sets ([`padded_width`]). The blocks are
//! packed in the layer's precision ([`PackedBlock`]).

use ndarray::{s, Array1, Array2};

use super::blocks::{gather, gather_rows, Blocks};
use super::cells::Cell;
use super::lowp::PackedBlock;
use super::math::Activations;
use super::schedule::weight_bytes;
use super::DirWeights;
use crate::linalg::{Float, PACK_PARALLEL_MIN_BYTES};
use crate::precision::Precision;

/// The row length to allocate for a work buffer of `cols` values per row that the products
/// read as `A` (states, dL/d pre-activations). Rows a multiple of 2 KiB apart put the rows
/// of a kernel tile into the same few L1 sets (4K aliasing); one more cache line of padding
/// spreads them: +1.5-6% on the large presets' per-step products (64 x 1024 x 4096 and
/// 64 x 4096 x 1024), level on the others.
pub(super) fn padded_width<F>(cols: usize) -> usize {
    let line = 64 / size_of::<F>().max(1);
    let bytes = cols * size_of::<F>();
    if bytes >= 2048 && bytes.is_multiple_of(2048) {
        cols + line
    } else {
        cols
    }
}

/// An uninitialised `(rows, padded_width(cols))` buffer whose padding columns are zeroed, so
/// that the whole is initialised once the pass has written columns `..cols` of every row.
pub(super) fn padded_uninit<F: Float>(
    rows: usize,
    cols: usize,
) -> Array2<std::mem::MaybeUninit<F>> {
    let width = padded_width::<F>(cols);
    let mut a = Array2::<F>::uninit((rows, width));
    a.slice_mut(s![.., cols..])
        .fill(std::mem::MaybeUninit::new(F::zero()));
    a
}

/// `[pack(0), .., pack(count - 1)]`: the packed blocks of the layer `w`'s weights, on rayon's
/// threads from `linalg`'s [`PACK_PARALLEL_MIN_BYTES`] of weights (32 MiB per call for the
/// large LSTM; a block's own packing may split further), else on this one.
pub(super) fn per_block<F, T: Send>(
    w: &DirWeights<'_, F>,
    count: usize,
    pack: &(dyn Fn(usize) -> T + Sync),
) -> Vec<T> {
    if weight_bytes(w) >= PACK_PARALLEL_MIN_BYTES && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        (0..count).into_par_iter().map(pack).collect()
    } else {
        (0..count).map(pack).collect()
    }
}

/// One layer and direction's weights as the forward pass reads them: `W_ih`, `W_hh` (and
/// `W_hr`) packed block by block ([`Blocks`]), the biases folded and in block order. Packing
/// reads and writes all the weights, which costs as much as a whole step of a small batch, so
/// a layer that runs the same weights again keeps them (see `Recurrent`).
#[derive(Debug)]
pub(crate) struct PackedDir<F> {
    /// The blocks of hidden units (and their gate columns) the weights are packed by.
    pub(super) blocks: Blocks,
    /// The blocks of the state's columns: of `h = m W_hr^T` with a projection, else `blocks`.
    pub(super) out_blocks: Blocks,
    /// `W_ih`'s rows of each block's gate columns, packed.
    pub(super) w_ih: Vec<PackedBlock<F>>,
    /// `W_hh`'s rows of each block's gate columns, packed (with a late last gate, of the
    /// other gates only).
    pub(super) w_hh: Vec<PackedBlock<F>>,
    /// With a late last gate ([`super::cells::Description::late_last_gate`]): `W_hh`'s rows
    /// of each block's last-gate columns, packed; else empty.
    pub(super) w_hh_late: Vec<PackedBlock<F>>,
    /// `W_hr`'s rows of each output block, packed; empty without a projection.
    pub(super) w_hr: Vec<PackedBlock<F>>,
    /// (G H) the folded biases in block order.
    pub(super) bias: Vec<F>,
    /// (H) the step bias ([`super::cells::Description::step_bias`]), in unit order.
    pub(super) step_bias: Vec<F>,
    /// (unit_weights H) the cell's per-unit weights in block order; empty for none.
    pub(super) unit_weights: Vec<F>,
}

/// The cell's per-unit weights (its per-unit parameters concatenated in `state_dict` order,
/// `[p_0; p_1; ..]` in units of `hidden_size`) in block order: for each block, `[p_0; p_1;
/// ..]` of its units; empty for none.
pub(super) fn blocked_unit_weights<F: Copy>(
    cell: Cell,
    w: &DirWeights<'_, F>,
    blocks: &Blocks,
) -> Vec<F> {
    let k = cell.description().unit_weights;
    if k == 0 || w.per_unit.is_empty() {
        return Vec::new();
    }
    let all: Vec<F> = w
        .per_unit
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    debug_assert_eq!(all.len(), k * blocks.units(blocks.count() - 1).end);
    blocks.order(k).iter().map(|&r| all[r]).collect()
}

/// The weight matrices of a layer and direction that the forward pass multiplies by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Matrix {
    /// `weight_ih` (G H, I).
    Ih,
    /// `weight_hh` (G H, H_out).
    Hh,
    /// `weight_hr` (H_out, H), with a projection.
    Hr,
}

impl<F: Activations> PackedDir<F> {
    /// Packs the weights `w` of a `cell` layer and direction, the products' operands in
    /// `precision` ([`PackedBlock`]).
    pub(crate) fn new(cell: Cell, w: &DirWeights<'_, F>, precision: Precision) -> Self {
        Self::with_packer(cell, w, &|m: Matrix, rows: &[usize]| {
            let matrix = match m {
                Matrix::Ih => &w.w_ih,
                Matrix::Hh => &w.w_hh,
                Matrix::Hr => w.w_hr.as_ref().expect("a projection"),
            };
            PackedBlock::transposed(&gather_rows(matrix, rows).view(), precision)
        })
    }

    /// Packs the weights `w` of a `cell` layer and direction with `pack(matrix, rows)`, which
    /// packs `matrix[rows]^T` (the weights `w` give the shapes and the biases): a quantized
    /// model file packs its stored int8 rows rather than quantizing `w` again.
    pub(crate) fn with_packer(
        cell: Cell,
        w: &DirWeights<'_, F>,
        pack: &(dyn Fn(Matrix, &[usize]) -> PackedBlock<F> + Sync),
    ) -> Self {
        let desc = cell.description();
        let g = desc.gates();
        let gh = w.w_ih.nrows();
        let hidden = gh / g;
        let blocks = if desc.whole_rows {
            Blocks::whole(hidden)
        } else {
            Blocks::new(g, hidden)
        };
        let order = blocks.order(g);
        let pack_block = |m: Matrix, b: usize| pack(m, &order[blocks.columns(b, g)]);
        // With a late last gate, the block's W_hh rows of the other gates (phase one), and of
        // the last gate (phase two).
        let pack_early = |b: usize| {
            let cols = blocks.columns(b, g);
            let early = cols.start..blocks.gate(b, g, g - 1).start;
            pack(Matrix::Hh, &order[early])
        };
        let pack_late = |b: usize| pack(Matrix::Hh, &order[blocks.gate(b, g, g - 1)]);
        let bias = match (&w.b_ih, &w.b_hh) {
            (Some(b_ih), Some(b_hh)) => {
                let folded = Array1::from(desc.fold_biases(&b_ih.to_vec(), &b_hh.to_vec()));
                gather(&folded.view(), &order)
            }
            _ => vec![F::zero(); gh],
        };
        let b_hh = w.b_hh.as_ref().map(|b| b.to_vec());
        let step_bias = desc.step_bias(b_hh.as_deref(), hidden);
        let (out_blocks, w_hr) = match &w.w_hr {
            Some(_) => {
                let out_blocks = Blocks::new(1, w.w_hh.ncols());
                let packed = per_block(w, out_blocks.count(), &|b| {
                    pack(Matrix::Hr, &out_blocks.units(b).collect::<Vec<_>>())
                });
                (out_blocks, packed)
            }
            None => (blocks.clone(), Vec::new()),
        };
        PackedDir {
            unit_weights: blocked_unit_weights(cell, w, &blocks),
            w_ih: per_block(w, blocks.count(), &|b| pack_block(Matrix::Ih, b)),
            w_hh: if desc.late_last_gate {
                per_block(w, blocks.count(), &pack_early)
            } else {
                per_block(w, blocks.count(), &|b| pack_block(Matrix::Hh, b))
            },
            w_hh_late: if desc.late_last_gate {
                per_block(w, blocks.count(), &pack_late)
            } else {
                Vec::new()
            },
            w_hr,
            bias,
            step_bias,
            blocks,
            out_blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_whole_2_kib_are_padded_by_a_cache_line() {
        assert_eq!(padded_width::<f32>(1024), 1040);
        assert_eq!(padded_width::<f32>(512), 528);
        assert_eq!(padded_width::<f64>(256), 264);
        for cols in [0, 1, 128, 256, 500, 640, 1000] {
            assert_eq!(padded_width::<f32>(cols), cols);
        }
        let a = padded_uninit::<f32>(3, 1024);
        assert_eq!(a.dim(), (3, 1040));
        // SAFETY: the padding columns are initialised by `padded_uninit`.
        let pad = unsafe { a.slice(s![.., 1024..]).to_owned().assume_init() };
        assert!(pad.iter().all(|&v| v == 0.0));
    }
}
