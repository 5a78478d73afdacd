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
//! **Two rules keep the row loops vectorised** (measured with valgrind's instruction counts on
//! the small preset's training pass; breaking either made the GRU's backward row math 5x
//! as many instructions, scalar code):
//! * Each row is its own call of a `#[target_feature]` function (`forward_row_avx512`, ...).
//!   Inlined into the loop over rows, the vectoriser's runtime alias checks are hoisted out
//!   of it and widened to all rows of the block, where the gates of consecutive rows
//!   interleave: the widened check fails and every row runs the scalar loop.
//! * A cell's row math with more than a few output streams passes its slices to a function as
//!   arguments (`gru_backward(dxw, dhw, dh, ..)`): the compiler knows that arguments do not
//!   alias each other, but not that fields of a struct do not, and a loop over seven outputs
//!   and five inputs then needs more runtime checks than the vectoriser will emit.
//!
//! **A new cell** is a file here with a type implementing `CellMath` (its `DESCRIPTION` and
//! row math), its `mod` line and one line in the `cells!` list here. A variant of a kind is
//! chosen by a configuration option (its description's `variant`, a field of
//! [`RecurrentConfig`]); a new kind adds a variant of [`CellKind`] (and its entry in
//! [`CellKind::ALL`]); a new kind of parameter, a role of [`Param`] (per-unit parameters,
//! [`Param::unit_width`], reach the row math and the gradients generically).

mod gru;
mod lstm;
mod lstm_ln;
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

/// Declares the row-math types, once: the enum [`Math`] of them, its list `Math::ALL`, and
/// the macro `dispatch!($math, C => body)`, which runs `body` with the type alias `C` naming
/// the row math of `$math` (so that the body is compiled once per cell kind and variant).
/// The first token is `$`, which the generated macro needs for its own variables.
macro_rules! cells {
    ($d:tt; $($variant:ident => $ty:ty),* $(,)?) => {
        /// The row-math types, one per cell kind and variant: the one list the engine
        /// dispatches on.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Math {
            $($variant),*
        }

        impl Math {
            /// Every row-math type.
            const ALL: &'static [Math] = &[$(Math::$variant),*];
        }

        macro_rules! dispatch {
            ($d math:expr, $d alias:ident => $d body:expr) => {
                match $d math {
                    $(Math::$variant => {
                        type $d alias = $ty;
                        $d body
                    })*
                }
            };
        }
    };
}

// The list of cells: a new cell is a file here (its `mod` line above) and a line here.
cells! { $;
    Elman => rnn::Elman,
    Lstm => lstm::Lstm,
    LstmPeephole => lstm::LstmPeephole,
    LstmLayerNorm => lstm_ln::LstmLayerNorm,
    Gru => gru::Gru,
    GruResetBefore => gru::GruResetBefore,
}

/// A configuration option (a key of the `config` JSON) that chooses a variant of a kind's
/// cell: its name and whether a configuration sets it.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// The key, as in model files: `peephole`.
    pub option: &'static str,
    /// Whether `config` chooses the variant.
    pub chosen: fn(&RecurrentConfig) -> bool,
}

impl Math {
    fn description(self) -> &'static Description {
        dispatch!(self, C => &<C as CellMath>::DESCRIPTION)
    }

    /// The kind's plain cell (PyTorch's): the one of its kind that no option chooses.
    fn base(kind: CellKind) -> Math {
        *Math::ALL
            .iter()
            .find(|m| m.description().kind == kind && m.description().variant.is_none())
            .expect("every kind has a plain cell")
    }

    /// The cell of `config`: its kind with the variant its options choose, or why the options
    /// do not apply to the kind or do not combine.
    fn of(config: &RecurrentConfig) -> Result<Math, String> {
        let mut chosen = Vec::new();
        for &math in Math::ALL {
            let desc = math.description();
            let Some(variant) = desc.variant else {
                continue;
            };
            if !(variant.chosen)(config) {
                continue;
            }
            if desc.kind != config.cell {
                let kinds: Vec<&str> = Math::ALL
                    .iter()
                    .map(|m| m.description())
                    .filter(|d| d.variant.is_some_and(|v| v.option == variant.option))
                    .map(|d| d.torch_name)
                    .collect();
                return Err(format!(
                    "{} is an option of {} only",
                    variant.option,
                    kinds.join(", ")
                ));
            }
            chosen.push((math, variant.option));
        }
        match chosen[..] {
            [] => Ok(Math::base(config.cell)),
            [(math, _)] => Ok(math),
            _ => {
                let options: Vec<&str> = chosen.iter().map(|&(_, o)| o).collect();
                Err(format!(
                    "{} do not combine: choose one of them",
                    options.join(" and ")
                ))
            }
        }
    }
}

/// Everything the engine and the layers know about a cell kind, apart from its row math.
#[derive(Clone, Copy, Debug)]
pub struct Description {
    /// The kind of layer the cell is a cell of.
    pub kind: CellKind,
    /// `None` for the kind's plain cell (PyTorch's); else the option that chooses this variant.
    pub variant: Option<Variant>,
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
    /// Whether the last gate's recurrent product reads a state `m` that the other gates make
    /// rather than `h` (the reset-before GRU: `W_hn (r h)`). Each step then runs in two
    /// phases: the other gates (their products accumulated into `xw`) and their part of `m`;
    /// then, once all of `m` is made, the last gate's product `m W_hh^T` (accumulated into
    /// `xw`) and the rest of the row math (the `_late` methods of the row math). Backward
    /// likewise, with `dL/dm` from that gate's `dXW` columns; that gate's rows of `dW_hh` are
    /// `dXW^T M`, with `M` rebuilt from the saved gates and states.
    pub late_last_gate: bool,
    /// Per-unit weights of the cell, in units of `hidden_size`: its per-unit parameters
    /// ([`Param::unit_width`]) concatenated in `state_dict` order (the peephole LSTM's `[p_i;
    /// p_f; p_o]`: 3): the row math reads the block's, and their gradients are sums over all
    /// rows (the row math's `unit_weight_grads`).
    pub unit_weights: usize,
    /// Whether the row math needs every hidden unit of a row at once (statistics over the
    /// row, as a layer norm's): the layer is then one block of units (`Blocks::whole`), and
    /// the threads share a pass by rows of the batch only (`schedule.rs`; with too few rows
    /// for that, one thread runs each step). No meeting of blocks within a step is needed.
    pub whole_rows: bool,
    /// Whether the cell transforms `x W_ih^T` and `h W_hh^T` apart before adding them (a layer
    /// norm of each), with every bias added after. Then `hw` stays apart from `xw` for every
    /// gate (the biases still fold), backward writes `dL/d(h W_hh^T)` of every gate (`dhw`,
    /// kept for all rows: `dW_hh = dHW^T H_prev`), and the bias gradients are the sums of the
    /// row gradients' first `G` units ([`Description::row_grads`]).
    pub products_apart: bool,
    /// Per-row gradient values, in units of `hidden_size`, that the backward row math writes
    /// (`drow`) and that are kept for all rows, for the gradients of the unit weights
    /// (the row math's `unit_weight_grads`) and, with [`Description::products_apart`], of the
    /// biases (the first `G` units: `dL/d` the pre-activations, biases included); 0 for none.
    pub row_grads: usize,
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
    /// The description of the kind's plain cell (PyTorch's; see [`Cell::description`] for a
    /// configuration's variant).
    pub fn description(self) -> &'static Description {
        Math::base(self).description()
    }
}

/// What the engine needs to know about a layer's cell: its kind, variant and options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// RNN, LSTM or GRU.
    pub kind: CellKind,
    /// The activation of an Elman RNN (ignored by LSTM and GRU).
    pub nonlinearity: Nonlinearity,
    /// The row math of the kind and variant.
    math: Math,
}

impl Cell {
    /// The cell of a layer's configuration (which must be valid, see
    /// [`RecurrentConfig::validate`]).
    pub fn of(config: &RecurrentConfig) -> Cell {
        Cell::of_options(config).expect("a validated configuration")
    }

    /// The cell of a configuration, or why its options do not apply to its kind.
    pub fn of_options(config: &RecurrentConfig) -> Result<Cell, String> {
        Ok(Cell {
            kind: config.cell,
            nonlinearity: config.nonlinearity,
            math: Math::of(config)?,
        })
    }

    /// The description of the cell (with its variant).
    pub fn description(self) -> &'static Description {
        self.math.description()
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

    /// Cells with a late last gate ([`Description::late_last_gate`]): the second phase of a
    /// row forward, once `xw`'s last gate holds `m W_hh^T` too.
    #[inline(always)]
    fn forward_row_late<F: Activations>(self, _row: ForwardRow<'_, F>) {
        unreachable!("only cells with a late last gate")
    }

    /// Cells with a late last gate: the second phase of a row backward, with `dL/dm` in
    /// `row.dm`.
    #[inline(always)]
    fn backward_row_late<F: Activations>(self, _row: BackwardRow<'_, F>) {
        unreachable!("only cells with a late last gate")
    }

    /// Cells with per-unit weights: their gradients (unit_weights w) for one block, summed
    /// over all rows, from the block's gradients of the pre-activations (rows, G w), its row
    /// gradients (rows, row_grads w; see [`Description::row_grads`]) and saved auxiliary
    /// values (rows, aux_width w).
    fn unit_weight_grads<F: Float>(
        self,
        _dxw: ArrayView2<'_, F>,
        _drow: ArrayView2<'_, F>,
        _aux: ArrayView2<'_, F>,
    ) -> ndarray::Array1<F> {
        unreachable!("only cells with per-unit weights")
    }

    /// Cells with a late last gate: `m` (rows, w) of one block, rebuilt from the block's saved
    /// gates (rows, G w) and entering states (rows, w), for the last gate's rows of `dW_hh`.
    fn late_state<F: Float>(
        self,
        _gates: ArrayView2<'_, F>,
        _h_prev: ArrayView2<'_, F>,
    ) -> Array2<F> {
        unreachable!("only cells with a late last gate")
    }
}

/// See [`CellMath::unprojected_state`].
pub(crate) fn unprojected_state<F: Float>(
    cell: Cell,
    gates: ArrayView2<'_, F>,
    aux: ArrayView2<'_, F>,
) -> Array2<F> {
    dispatch!(cell.math, C => C::new(cell).unprojected_state(gates, aux))
}

/// See [`CellMath::unit_weight_grads`].
pub(crate) fn unit_weight_grads<F: Float>(
    cell: Cell,
    dxw: ArrayView2<'_, F>,
    drow: ArrayView2<'_, F>,
    aux: ArrayView2<'_, F>,
) -> ndarray::Array1<F> {
    dispatch!(cell.math, C => C::new(cell).unit_weight_grads(dxw, drow, aux))
}

/// See [`CellMath::late_state`].
pub(crate) fn late_state<F: Float>(
    cell: Cell,
    gates: ArrayView2<'_, F>,
    h_prev: ArrayView2<'_, F>,
) -> Array2<F> {
    dispatch!(cell.math, C => C::new(cell).late_state(gates, h_prev))
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
    /// (w) cells with a late last gate: the state that gate's product reads, out in the first
    /// phase.
    pub m: &'r mut [F],
    /// (unit_weights w): the block's per-unit weights.
    pub unit_weights: &'r [F],
    /// Training: what backward reads must be kept in `aux` (a cell may skip copies that only
    /// backward reads in inference, where `aux` is per-step scratch).
    pub save: bool,
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
    /// (w) cells with a late last gate, second phase: `dL/dm`.
    pub dm: &'r [F],
    /// (unit_weights w): the block's per-unit weights.
    pub unit_weights: &'r [F],
    /// (row_grads w) out: the row's gradients for the parameters ([`Description::row_grads`]).
    pub drow: &'r mut [F],
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
    /// (w) per row, cells with a late last gate: the state its product reads.
    pub m: Rows<F>,
    /// (unit_weights w): the block's per-unit weights; empty for none.
    pub unit_weights: &'a [F],
    /// Training: keep what backward reads ([`ForwardRow::save`]).
    pub save: bool,
}

/// One step forward of one block of units, row by row, compiled for the cell's kind and for
/// AVX-512 or AVX2 + FMA when the CPU has them.
///
/// # Safety
/// Every row of every operand lies inside its allocation and no other thread touches it
/// while this runs.
pub(crate) unsafe fn forward_block<F: Activations>(cell: Cell, op: &ForwardBlock<'_, F>) {
    dispatch!(cell.math, C => forward_block_of::<F, C, false>(C::new(cell), op))
}

/// The second phase of [`forward_block`] for a cell with a late last gate
/// ([`Description::late_last_gate`]).
///
/// # Safety
/// As [`forward_block`].
pub(crate) unsafe fn forward_block_late<F: Activations>(cell: Cell, op: &ForwardBlock<'_, F>) {
    dispatch!(cell.math, C => forward_block_of::<F, C, true>(C::new(cell), op))
}

#[inline(always)]
unsafe fn forward_block_of<F: Activations, C: CellMath, const LATE: bool>(
    cell: C,
    op: &ForwardBlock<'_, F>,
) {
    #[cfg(target_arch = "x86_64")]
    match crate::linalg::isa() {
        Isa::Avx512 => {
            for i in 0..op.rows {
                forward_row_avx512::<F, C, LATE>(cell, op, i);
            }
            return;
        }
        Isa::Avx2 => {
            for i in 0..op.rows {
                forward_row_avx2::<F, C, LATE>(cell, op, i);
            }
            return;
        }
        Isa::Scalar => {}
    }
    for i in 0..op.rows {
        forward_row_at::<F, C, LATE>(cell, op, i);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_row_avx2<F: Activations, C: CellMath, const LATE: bool>(
    cell: C,
    op: &ForwardBlock<'_, F>,
    i: usize,
) {
    forward_row_at::<F, C, LATE>(cell, op, i)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn forward_row_avx512<F: Activations, C: CellMath, const LATE: bool>(
    cell: C,
    op: &ForwardBlock<'_, F>,
    i: usize,
) {
    forward_row_at::<F, C, LATE>(cell, op, i)
}

#[inline(always)]
unsafe fn forward_row_at<F: Activations, C: CellMath, const LATE: bool>(
    cell: C,
    op: &ForwardBlock<'_, F>,
    i: usize,
) {
    let row = ForwardRow {
        h_prev: op.h_prev.get(i),
        h_new: op.h_new.row(i),
        c: op.c.row(i),
        gates: op.gates.row(i),
        aux: op.aux.row(i),
        xw: op.xw.get(i),
        hw: op.hw.get(i),
        bias: op.bias,
        step_bias: op.step_bias,
        m: op.m.row(i),
        unit_weights: op.unit_weights,
        save: op.save,
    };
    if LATE {
        cell.forward_row_late(row);
    } else {
        cell.forward_row(row);
    }
    // While the row is in L1: the copies for the output and for backward.
    if !op.out.is_empty() {
        op.out.row(i).copy_from_slice(op.h_new.get(i));
    }
    if !op.saved_h_prev.is_empty() {
        op.saved_h_prev.row(i).copy_from_slice(op.h_prev.get(i));
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
    /// (w) per row, cells with a late last gate: `dL/dm` (second phase).
    pub dm: Rows<F>,
    /// (unit_weights w), the same for every row: the block's per-unit weights.
    pub unit_weights: Rows<F>,
    /// (row_grads w) per row, out; empty for none.
    pub drow: Rows<F>,
}

/// One step backward of one block of units, row by row, compiled for the cell's kind and for
/// AVX-512 or AVX2 + FMA when the CPU has them.
///
/// # Safety
/// As [`forward_block`].
pub(crate) unsafe fn backward_block<F: Activations>(cell: Cell, op: &BackwardBlock<F>) {
    dispatch!(cell.math, C => backward_block_of::<F, C, false>(C::new(cell), op))
}

/// The second phase of [`backward_block`] for a cell with a late last gate.
///
/// # Safety
/// As [`forward_block`].
pub(crate) unsafe fn backward_block_late<F: Activations>(cell: Cell, op: &BackwardBlock<F>) {
    dispatch!(cell.math, C => backward_block_of::<F, C, true>(C::new(cell), op))
}

#[inline(always)]
unsafe fn backward_block_of<F: Activations, C: CellMath, const LATE: bool>(
    cell: C,
    op: &BackwardBlock<F>,
) {
    #[cfg(target_arch = "x86_64")]
    match crate::linalg::isa() {
        Isa::Avx512 => {
            for i in 0..op.rows {
                backward_row_avx512::<F, C, LATE>(cell, op, i);
            }
            return;
        }
        Isa::Avx2 => {
            for i in 0..op.rows {
                backward_row_avx2::<F, C, LATE>(cell, op, i);
            }
            return;
        }
        Isa::Scalar => {}
    }
    for i in 0..op.rows {
        backward_row_at::<F, C, LATE>(cell, op, i);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_row_avx2<F: Activations, C: CellMath, const LATE: bool>(
    cell: C,
    op: &BackwardBlock<F>,
    i: usize,
) {
    backward_row_at::<F, C, LATE>(cell, op, i)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn backward_row_avx512<F: Activations, C: CellMath, const LATE: bool>(
    cell: C,
    op: &BackwardBlock<F>,
    i: usize,
) {
    backward_row_at::<F, C, LATE>(cell, op, i)
}

#[inline(always)]
unsafe fn backward_row_at<F: Activations, C: CellMath, const LATE: bool>(
    cell: C,
    op: &BackwardBlock<F>,
    i: usize,
) {
    let row = BackwardRow {
        dxw: op.dxw.row(i),
        dhw: op.dhw.row(i),
        dh: op.dh.row(i),
        dc: op.dc.row(i),
        gates: op.gates.get(i),
        aux: op.aux.get(i),
        h_prev: op.h_prev.get(i),
        dm: op.dm.get(i),
        unit_weights: op.unit_weights.get(i),
        drow: op.drow.row(i),
    };
    if LATE {
        cell.backward_row_late(row);
    } else {
        cell.backward_row(row);
    }
}
