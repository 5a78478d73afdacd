//! The cells: one file per kind, each a complete description of the cell that the one engine
//! reads (its gates, what backward keeps, its parameters, its row math forward and backward,
//! and the hooks of its weight gradients). Nothing outside this folder asks which cell runs.
//!
//! The engine has already computed the two matrix products of a step for one block of `w`
//! hidden units (see `engine/blocks.rs`): `xw = x W_ih^T` and `hw = h W_hh^T`, each `G * w`
//! values per row, gate-major (the `w` values of gate 0, then gate 1, ...). What is left per
//! element is cheap but touches every gate once; doing it row by row, right after the products,
//! keeps it in cache and allocates nothing. The biases are added there (`bias`:
//! [`Description::fold_biases`], permuted to the block layout).
//!
//! Forward saves the gate activations and the cell's auxiliary values (`aux`); backward turns
//! `dL/dh'` (and `dL/dc'`) into the gradients of the gate pre-activations, which the engine
//! multiplies back through the weights.
//!
//! The row math is compiled once per cell kind (the crate-private trait `CellMath` is
//! implemented by a type per kind, and `forward_block` / `backward_block` pick it once per
//! block, outside the row loop) and once per instruction set, inside the `#[target_feature]`
//! wrappers here.
//!
//! **A new cell** is a file here with a type implementing `CellMath` (its `DESCRIPTION` and
//! row math), a variant of [`CellKind`] (and its entry in [`CellKind::ALL`]), and one line in
//! the list of the `dispatch!` macro here.

mod gru;
mod lstm;
pub mod params;
mod rnn;

use ndarray::{Array2, ArrayView2};

use super::math::Activations;
use super::views::Rows;
use crate::config::{CellKind, Nonlinearity, RecurrentConfig};
use crate::linalg::Float;
#[cfg(target_arch = "x86_64")]
use crate::linalg::Isa;
pub use params::Param;

/// Runs `$body` with `$math` bound to the row math of `$cell` (a [`Cell`]), a value of the
/// kind's own type, so that the body is compiled once per kind. The one list of the kinds.
macro_rules! dispatch {
    ($kind:expr, $ty:ident => $body:expr) => {
        match $kind {
            CellKind::Rnn => {
                type $ty = rnn::Elman;
                $body
            }
            CellKind::Lstm => {
                type $ty = lstm::Lstm;
                $body
            }
            CellKind::Gru => {
                type $ty = gru::Gru;
                $body
            }
        }
    };
}

/// Everything the engine and the layers know about a cell kind, apart from its row math.
#[derive(Clone, Copy, Debug)]
pub struct Description {
    /// The name in model files and on the command line: `lstm`.
    pub name: &'static str,
    /// PyTorch's class name of the layer: `LSTM`.
    pub torch_name: &'static str,
    /// PyTorch's class name of one step: `LSTMCell`.
    pub torch_cell_name: &'static str,
    /// The gates stacked in `weight_ih` / `weight_hh`, in PyTorch's order; `G` is their count.
    pub gate_names: &'static [&'static str],
    /// Per-row auxiliary values saved for backward, in units of `hidden_size`.
    pub aux_width: usize,
    /// Whether the cell carries a cell state `c` next to `h` (`c0`, `c_n`).
    pub cell_state: bool,
    /// Whether the layer may project `h` with `weight_hr` (`proj_size`).
    pub projection: bool,
    /// Whether `nonlinearity` applies (else it must be `tanh`).
    pub nonlinearity: bool,
    /// Whether the forward math uses the gate buffer within the step (else it only copies its
    /// result there for backward, and inference skips that).
    pub gates_in_step: bool,
    /// Whether the cell scales the recurrent pre-activation of its last gate (`h W_hh^T +
    /// b_hh` of gate `G - 1`) by another gate (GRU's `r (W_hn h + b_hn)`). Then `hw` stays
    /// apart from `xw`, that gate's `b_hh` stays in the step (the step bias), and backward
    /// keeps that gate's `dL/d(hw)` (`dHW`, which differs from `dXW` there) for its rows of
    /// `dW_hh` and `d b_hh`.
    pub last_gate_recurrent_apart: bool,
    /// Whether `h'` depends on `h` directly, not only through `W_hh` (GRU's `z h`): backward
    /// then leaves that part of `dL/dh` in `dh`, and the product through `W_hh` adds to it.
    pub direct_state_path: bool,
    /// The parameters of a layer and direction, in `state_dict` order (those a configuration
    /// lacks, as biases without `bias`, are skipped).
    pub params: &'static [Param],
}

impl Description {
    /// Number of gate blocks `G`.
    pub fn gates(&self) -> usize {
        self.gate_names.len()
    }

    /// The bias added to `x W_ih^T` once for all timesteps: `b_ih + b_hh`, except the last
    /// gate's `b_hh` when its recurrent part stays apart (GRU's `b_hn`, multiplied by `r`).
    pub fn fold_biases<F: Float>(&self, b_ih: &[F], b_hh: &[F]) -> Vec<F> {
        let gh = b_ih.len();
        let mut folded: Vec<F> = b_ih.to_vec();
        let keep = if self.last_gate_recurrent_apart {
            (self.gates() - 1) * gh / self.gates()
        } else {
            gh
        };
        for (f, &b) in folded.iter_mut().zip(b_hh).take(keep) {
            *f += b;
        }
        folded
    }

    /// The part of `b_hh` added within the step (per unit; empty when every bias is folded).
    pub fn step_bias<F: Float>(&self, b_hh: Option<&[F]>, hidden: usize) -> Vec<F> {
        if !self.last_gate_recurrent_apart {
            return Vec::new();
        }
        match b_hh {
            Some(b) => b[(self.gates() - 1) * hidden..].to_vec(),
            None => vec![F::zero(); hidden],
        }
    }
}

impl CellKind {
    /// The description of the kind's cell.
    pub fn description(self) -> &'static Description {
        dispatch!(self, C => &<C as CellMath>::DESCRIPTION)
    }
}

/// What the engine needs to know about a layer's cell: its kind and its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// RNN, LSTM or GRU.
    pub kind: CellKind,
    /// The activation of an Elman RNN (ignored by LSTM and GRU).
    pub nonlinearity: Nonlinearity,
}

impl Cell {
    /// The cell of a layer's configuration.
    pub fn of(config: &RecurrentConfig) -> Cell {
        Cell {
            kind: config.cell,
            nonlinearity: config.nonlinearity,
        }
    }

    /// The kind's description.
    pub fn description(self) -> &'static Description {
        self.kind.description()
    }

    /// Number of gate blocks `G`.
    pub fn gates(self) -> usize {
        self.description().gates()
    }

    /// Per-row auxiliary values saved for backward, in units of `hidden_size`.
    pub fn aux_width(self) -> usize {
        self.description().aux_width
    }
}

/// The row math of one cell kind: what [`forward_block`] and [`backward_block`] run for each
/// row of a block of `w` units. Implemented by one type per kind, built from the [`Cell`].
pub(crate) trait CellMath: Copy {
    /// The kind's description.
    const DESCRIPTION: Description;

    /// The math of `cell` (whose kind is this one).
    fn new(cell: Cell) -> Self;

    /// One row of one block of a step forward (`w = row.h_new.len()` units).
    fn forward_row<F: Activations>(self, row: ForwardRow<'_, F>);

    /// One row of one block of a step backward (`w = row.dh.len()` units).
    fn backward_row<F: Activations>(self, row: BackwardRow<'_, F>);

    /// Cells with a projection: the state before it, `m` (rows, w), of one block, rebuilt
    /// from the block's saved gates (rows, G w) and auxiliary values (rows, aux_width w), for
    /// `dW_hr = dH^T M`.
    fn unprojected_state<F: Float>(
        self,
        _gates: ArrayView2<'_, F>,
        _aux: ArrayView2<'_, F>,
    ) -> Array2<F> {
        unreachable!("only cells with a projection keep m")
    }
}

/// See [`CellMath::unprojected_state`].
pub(crate) fn unprojected_state<F: Float>(
    cell: Cell,
    gates: ArrayView2<'_, F>,
    aux: ArrayView2<'_, F>,
) -> Array2<F> {
    dispatch!(cell.kind, C => C::new(cell).unprojected_state(gates, aux))
}

/// The operands of one row forward. Slices are of one block of `w` units; those a cell does
/// not use are empty.
pub(crate) struct ForwardRow<'r, F> {
    /// (w) the state entering the step (read by cells with a direct state path).
    pub h_prev: &'r [F],
    /// (w) out: the new state (LSTM: `o tanh(c')`, before any projection).
    pub h_new: &'r mut [F],
    /// (w) the cell state, previous in, new out.
    pub c: &'r mut [F],
    /// (G w) out: the gate activations, saved for backward (scratch for cells that use them
    /// in the step; empty in inference otherwise).
    pub gates: &'r mut [F],
    /// (aux_width w) out: values saved for backward.
    pub aux: &'r mut [F],
    /// (G w): `x W_ih^T`, plus `h W_hh^T` unless the recurrent part stays apart.
    pub xw: &'r [F],
    /// (G w): `h W_hh^T` when it stays apart.
    pub hw: &'r [F],
    /// (G w): the folded biases (zeros without bias).
    pub bias: &'r [F],
    /// (w): the step bias ([`Description::step_bias`]).
    pub step_bias: &'r [F],
}

/// The operands of one row backward, of one block of `w` units; those a cell does not use are
/// empty.
pub(crate) struct BackwardRow<'r, F> {
    /// (G w) out: gradient of the input projection's pre-activations.
    pub dxw: &'r mut [F],
    /// (G w) out, cells whose recurrent part stays apart: gradient of `h W_hh^T` (the rest
    /// equal `dxw`).
    pub dhw: &'r mut [F],
    /// (w): `dL/dh'` in (LSTM: `dL/d(o tanh c')`); out, cells with a direct state path: the
    /// part of `dL/dh` that bypasses `W_hh`.
    pub dh: &'r mut [F],
    /// (w): `dL/dc'` in, `dL/dc` out.
    pub dc: &'r mut [F],
    /// (G w): saved gate activations.
    pub gates: &'r [F],
    /// (aux_width w): saved values.
    pub aux: &'r [F],
    /// (w): the state that entered the step.
    pub h_prev: &'r [F],
}

/// Splits `v` into `K` consecutive slices of `n` values.
#[inline(always)]
pub(super) fn parts<F, const K: usize>(v: &[F], n: usize) -> [&[F]; K] {
    std::array::from_fn(|k| &v[k * n..(k + 1) * n])
}

/// Splits `v` into `K` consecutive mutable slices of `n` values.
#[inline(always)]
pub(super) fn parts_mut<F, const K: usize>(v: &mut [F], n: usize) -> [&mut [F]; K] {
    let mut rest = &mut v[..K * n];
    std::array::from_fn(|_| {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        part
    })
}

/// The operands of one block of a step forward, for rows `0..rows` (see [`forward_block`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForwardBlock<'a, F> {
    /// Active rows of the step.
    pub rows: usize,
    /// (w) per row: the state entering the step.
    pub h_prev: Rows<F>,
    /// (w) per row: the new state (before any projection).
    pub h_new: Rows<F>,
    /// (w) per row, cells with a cell state: updated in place.
    pub c: Rows<F>,
    /// (G w) per row: the gate activations (empty when neither saved nor used in the step).
    pub gates: Rows<F>,
    /// (aux_width w) per row: values saved for backward.
    pub aux: Rows<F>,
    /// (G w) per row: `x W_ih^T` of the block, plus `h W_hh^T` unless it stays apart.
    pub xw: Rows<F>,
    /// (G w) per row: `h W_hh^T` of the block when it stays apart; empty otherwise.
    pub hw: Rows<F>,
    /// (G w): the folded biases of the block (zeros without bias).
    pub bias: &'a [F],
    /// (w): the step bias of the block; empty for none.
    pub step_bias: &'a [F],
    /// (w) per row: the layer's output rows, which receive a copy of `h_new`; empty for
    /// none (with a projection the output is `h_new W_hr^T`, a later product).
    pub out: Rows<F>,
    /// (w) per row: where the entering state `h_prev` is saved for backward; empty for none.
    pub saved_h_prev: Rows<F>,
}

/// One step forward of one block of units, row by row, compiled for the cell's kind and for
/// AVX-512 or AVX2 + FMA when the CPU has them.
///
/// # Safety
/// Every row of every operand lies inside its allocation and no other thread touches it
/// while this runs.
pub(crate) unsafe fn forward_block<F: Activations>(cell: Cell, op: &ForwardBlock<'_, F>) {
    dispatch!(cell.kind, C => forward_block_of(C::new(cell), op))
}

#[inline(always)]
unsafe fn forward_block_of<F: Activations, C: CellMath>(cell: C, op: &ForwardBlock<'_, F>) {
    #[cfg(target_arch = "x86_64")]
    match crate::linalg::isa() {
        Isa::Avx512 => return forward_block_avx512(cell, op),
        Isa::Avx2 => return forward_block_avx2(cell, op),
        Isa::Scalar => {}
    }
    forward_rows(cell, op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_block_avx2<F: Activations, C: CellMath>(cell: C, op: &ForwardBlock<'_, F>) {
    forward_rows(cell, op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn forward_block_avx512<F: Activations, C: CellMath>(cell: C, op: &ForwardBlock<'_, F>) {
    forward_rows(cell, op)
}

#[inline(always)]
unsafe fn forward_rows<F: Activations, C: CellMath>(cell: C, op: &ForwardBlock<'_, F>) {
    for i in 0..op.rows {
        cell.forward_row(ForwardRow {
            h_prev: op.h_prev.get(i),
            h_new: op.h_new.row(i),
            c: op.c.row(i),
            gates: op.gates.row(i),
            aux: op.aux.row(i),
            xw: op.xw.get(i),
            hw: op.hw.get(i),
            bias: op.bias,
            step_bias: op.step_bias,
        });
        // While the row is in L1: the copies for the output and for backward.
        if !op.out.is_empty() {
            op.out.row(i).copy_from_slice(op.h_new.get(i));
        }
        if !op.saved_h_prev.is_empty() {
            op.saved_h_prev.row(i).copy_from_slice(op.h_prev.get(i));
        }
    }
}

/// The operands of one block of a step backward, for rows `0..rows` (see [`backward_block`]);
/// as in [`BackwardRow`], per row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackwardBlock<F> {
    /// Active rows of the step.
    pub rows: usize,
    /// (G w) per row, out.
    pub dxw: Rows<F>,
    /// (G w) per row, out; empty unless the recurrent part stays apart.
    pub dhw: Rows<F>,
    /// (w) per row, in and out.
    pub dh: Rows<F>,
    /// (w) per row, in and out; empty without a cell state.
    pub dc: Rows<F>,
    /// (G w) per row.
    pub gates: Rows<F>,
    /// (aux_width w) per row.
    pub aux: Rows<F>,
    /// (w) per row; empty without a direct state path.
    pub h_prev: Rows<F>,
}

/// One step backward of one block of units, row by row, compiled for the cell's kind and for
/// AVX-512 or AVX2 + FMA when the CPU has them.
///
/// # Safety
/// As [`forward_block`].
pub(crate) unsafe fn backward_block<F: Activations>(cell: Cell, op: &BackwardBlock<F>) {
    dispatch!(cell.kind, C => backward_block_of(C::new(cell), op))
}

#[inline(always)]
unsafe fn backward_block_of<F: Activations, C: CellMath>(cell: C, op: &BackwardBlock<F>) {
    #[cfg(target_arch = "x86_64")]
    match crate::linalg::isa() {
        Isa::Avx512 => return backward_block_avx512(cell, op),
        Isa::Avx2 => return backward_block_avx2(cell, op),
        Isa::Scalar => {}
    }
    backward_rows(cell, op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_block_avx2<F: Activations, C: CellMath>(cell: C, op: &BackwardBlock<F>) {
    backward_rows(cell, op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn backward_block_avx512<F: Activations, C: CellMath>(cell: C, op: &BackwardBlock<F>) {
    backward_rows(cell, op)
}

#[inline(always)]
unsafe fn backward_rows<F: Activations, C: CellMath>(cell: C, op: &BackwardBlock<F>) {
    for i in 0..op.rows {
        cell.backward_row(BackwardRow {
            dxw: op.dxw.row(i),
            dhw: op.dhw.row(i),
            dh: op.dh.row(i),
            dc: op.dc.row(i),
            gates: op.gates.get(i),
            aux: op.aux.get(i),
            h_prev: op.h_prev.get(i),
        });
    }
}
