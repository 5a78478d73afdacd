//! Gate orders: ONNX stacks the LSTM's gates as `i, o, f, c` and the GRU's as `z, r, h`;
//! PyTorch as `i, f, g, o` and `r, z, n`. ONNX's `B` is `[Wb | Rb]`, PyTorch's `bias_ih` and
//! `bias_hh`. With `linear_before_reset = 1` ONNX's GRU is PyTorch's: `Rbh` is PyTorch's
//! `b_hn`, inside the reset product; with `linear_before_reset = 0` it is rnn's GRU with
//! `linear_before_reset: false`, same parameters. The LSTM's peepholes `P` are `i, o, f`,
//! `weight_ph`'s `i, f, o`.
//!
//! Each gate block is `hidden_size` consecutive rows; reordering moves whole rows, so the values
//! are copied bit for bit in both directions.

use super::tensor::{Const, Data};
use crate::config::CellKind;

/// For each PyTorch gate block, the ONNX block it is read from.
pub fn onnx_block_of_torch(cell: CellKind) -> &'static [usize] {
    match cell {
        CellKind::Rnn => &[0],
        // PyTorch i, f, g, o <- ONNX i (0), f (2), c (3), o (1).
        CellKind::Lstm => &[0, 2, 3, 1],
        // PyTorch r, z, n <- ONNX r (1), z (0), h (2).
        CellKind::Gru => &[1, 0, 2],
    }
}

/// For each ONNX gate block, the PyTorch block it is read from (the inverse permutation).
pub fn torch_block_of_onnx(cell: CellKind) -> Vec<usize> {
    let p = onnx_block_of_torch(cell);
    let mut inv = vec![0; p.len()];
    for (torch, &onnx) in p.iter().enumerate() {
        inv[onnx] = torch;
    }
    inv
}

/// Reorders the gate blocks of `rows` (`gates * hidden` rows of `width` values): block `j` of
/// the result is block `from[j]` of `rows`.
pub fn reorder(rows: &[f32], from: &[usize], hidden: usize, width: usize) -> Vec<f32> {
    let block = hidden * width;
    let mut out = Vec::with_capacity(rows.len());
    for &b in from {
        out.extend_from_slice(&rows[b * block..(b + 1) * block]);
    }
    out
}

/// Direction `d` of ONNX's `W` `(D, G*H, I)` or `R` `(D, G*H, H)` as PyTorch's `weight_ih` /
/// `weight_hh` `(G*H, I)`. The caller has checked the shape.
pub fn onnx_to_torch_weight(cell: CellKind, w: &Const, d: usize) -> Const {
    let (rows, width) = (w.dims[1], w.dims[2]);
    let all = w.floats().unwrap_or(&[]);
    let mine = &all[d * rows * width..(d + 1) * rows * width];
    let hidden = rows / cell.gates();
    Const {
        dims: vec![rows, width],
        data: Data::F32(reorder(mine, onnx_block_of_torch(cell), hidden, width)),
    }
}

/// Direction `d` of ONNX's `B` `(D, 2*G*H)` as PyTorch's `(bias_ih, bias_hh)`, each `(G*H,)`.
pub fn onnx_to_torch_bias(cell: CellKind, b: &Const, d: usize) -> (Const, Const) {
    let n = b.dims[1] / 2;
    let all = b.floats().unwrap_or(&[]);
    let mine = &all[d * 2 * n..(d + 1) * 2 * n];
    let hidden = n / cell.gates();
    let from = onnx_block_of_torch(cell);
    let one = |part: &[f32]| Const {
        dims: vec![n],
        data: Data::F32(reorder(part, from, hidden, 1)),
    };
    (one(&mine[..n]), one(&mine[n..]))
}

/// ONNX's peephole order `i, o, f` as PyTorch-style `weight_ph`'s `i, f, o`: block `j` of
/// `weight_ph` is block `PEEPHOLE_ONNX_OF_TORCH[j]` of `P` (the permutation is its own inverse).
pub const PEEPHOLE_ONNX_OF_TORCH: [usize; 3] = [0, 2, 1];

/// Direction `d` of ONNX's `P` `(D, 3*H)` as `weight_ph` `(3*H,)`. The caller has checked the
/// shape.
pub fn onnx_to_torch_peephole(p: &Const, d: usize) -> Const {
    let n = p.dims[1];
    let all = p.floats().unwrap_or(&[]);
    Const {
        dims: vec![n],
        data: Data::F32(reorder(
            &all[d * n..(d + 1) * n],
            &PEEPHOLE_ONNX_OF_TORCH,
            n / 3,
            1,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_inverse_and_round_trip() {
        for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
            let g = cell.gates();
            let rows: Vec<f32> = (0..g * 2 * 3).map(|v| v as f32).collect();
            let there = reorder(&rows, &torch_block_of_onnx(cell), 2, 3);
            let back = reorder(&there, onnx_block_of_torch(cell), 2, 3);
            assert_eq!(back, rows);
        }
        // LSTM: ONNX block 1 is o, PyTorch's block 3.
        let rows: Vec<f32> = vec![0., 1., 2., 3.];
        assert_eq!(
            reorder(&rows, &torch_block_of_onnx(CellKind::Lstm), 1, 1),
            [0., 3., 1., 2.]
        );
        assert_eq!(
            reorder(&rows, onnx_block_of_torch(CellKind::Gru), 1, 1)[..3],
            [1., 0., 2.]
        );
        // Peepholes: ONNX's P = [p_i; p_o; p_f] (hidden 2) -> weight_ph = [p_i; p_f; p_o].
        let p = Const {
            dims: vec![1, 6],
            data: Data::F32(vec![1., 2., 3., 4., 5., 6.]),
        };
        let ph = onnx_to_torch_peephole(&p, 0);
        assert_eq!(ph.dims, [6]);
        assert_eq!(ph.floats().unwrap(), [1., 2., 5., 6., 3., 4.]);
    }
}
