//! The time loop of one layer and direction, forward, on all threads.
//!
//! Per step and block of hidden units (see [`super::blocks`]) the pass computes
//! `xw = x_t W_ih^T` and `hw = h W_hh^T` for the block's gate columns (two products with
//! weights packed once per call, [`PackedDir`]), then the block's gate math
//! ([`super::cells`]), and writes the block's part of the new state. The blocks of a step are
//! independent, so the threads meet once per step ([`Sharing`]); the state is double-buffered
//! so that a block can write its part of the new state while others still read the old one.
//! With `proj_size` a second phase per step computes `h = m W_hr^T` by blocks of output
//! columns. When the threads take rows each instead, they never meet.
//!
//! In reduced precision ([`super::lowp`]) the operands of the products are rounded (bf16) or
//! quantized (int8) once rather than by every block: `x` before the loop, and `h` in a phase
//! of its own at the start of each step, its rows split between the blocks.

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

use super::blocks::Blocks;
use super::cells::{forward_block, forward_block_late, Cell, ForwardBlock};
use super::lowp::{PackedBlock, Prepared};
use super::math::Activations;
use super::packing::{padded_width, PackedDir};
use super::schedule::{step_rows, time, Sharing};
use super::views::{Part, Rows, Shared};
use super::zoneout::{keep_old, DirZoneout};
use super::{Batches, DirWeights};

/// Steps whose input projection the forward pass computes at once when the threads share each
/// step by blocks (see [`direction_forward`]): W_ih is then read once per chunk.
const INPUT_CHUNK_STEPS: usize = 16;

/// What one layer and direction's pass reads, forward and backward.
pub(super) struct DirPass<'p, 'w, F> {
    /// The layer's cell.
    pub cell: Cell,
    /// The layer and direction's weights.
    pub w: &'p DirWeights<'w, F>,
    /// (R, I) the layer's input rows, in the order of `batches`.
    pub x: ArrayView2<'p, F>,
    /// The packed layout of the batch.
    pub batches: &'p Batches,
    /// Whether this is the reverse-time direction.
    pub reverse: bool,
    /// Zoneout's masks, if the layer applies it (see `engine/zoneout.rs`).
    pub zoneout: Option<DirZoneout<'p, F>>,
}

/// The states and output a forward pass of one layer and direction writes.
pub(super) struct ForwardStates<'s, F> {
    /// (N, H_out): the initial states on entry, the final ones on exit.
    pub h: ArrayViewMut2<'s, F>,
    /// (N, H): likewise for a cell with a cell state; `None` otherwise.
    pub c: Option<ArrayViewMut2<'s, F>>,
    /// (R, H_out): each step's state, rows in the order of `batches`; may be a column range of
    /// a wider matrix.
    pub out: ArrayViewMut2<'s, F>,
}

/// What one layer and direction saves for backward: per row, the gate activations and the
/// cell's auxiliary values (both blocked), and the state that entered the step.
#[derive(Clone, Debug)]
pub(super) struct DirSaved<F> {
    /// The blocks the gate columns are laid out by.
    pub blocks: Blocks,
    /// (R, G H) blocked.
    pub gates: Array2<F>,
    /// (R, H_out).
    pub h_prev: Array2<F>,
    /// (R, aux_width H) blocked.
    pub aux: Array2<F>,
}

/// One layer and direction forward: writes each step's state into `states.out` and leaves the
/// final states in `states.h` and `states.c`; returns what backward needs when `save`. The
/// weights are packed here unless `packed` holds them (packed from the same weights).
pub(super) fn direction_forward<F: Activations>(
    pass: &DirPass<'_, '_, F>,
    states: ForwardStates<'_, F>,
    save: bool,
    packed: Option<&PackedDir<F>>,
) -> Option<DirSaved<F>> {
    let DirPass {
        cell,
        w,
        x,
        batches,
        reverse,
        zoneout,
    } = *pass;
    let ForwardStates { mut h, c, mut out } = states;
    let desc = cell.description();
    let g = desc.gates();
    let gh = w.w_ih.nrows();
    let hidden = gh / g;
    let h_out = w.w_hh.ncols();
    let (rows, n, steps) = (batches.rows(), batches.batch(), batches.steps());
    let aw = desc.aux_width;
    let proj = w.w_hr.is_some();
    // h W_hh^T apart from x W_ih^T: for GRU's last gate, or for every gate.
    let apart = desc.last_gate_recurrent_apart || desc.products_apart;
    let late = desc.late_last_gate;
    debug_assert!(!(late && proj), "a late last gate and a projection");

    // The weights of each block, packed for every step of the call (or by an earlier call).
    let packed_here;
    let packed = match packed {
        Some(p) => p,
        None => {
            packed_here = PackedDir::new(cell, w, crate::precision::Precision::F32);
            &packed_here
        }
    };
    let (blocks, out_blocks) = (&packed.blocks, &packed.out_blocks);
    let nb = blocks.count();
    let (w_ih, w_hh, w_hr) = (&packed.w_ih, &packed.w_hh, &packed.w_hr);
    let (bias, step_bias) = (&packed.bias, &packed.step_bias);
    let (unit_weights, uw) = (&packed.unit_weights, desc.unit_weights);

    // Work buffers, allocated once.
    let saved_rows = if save { rows } else { n };
    // Written in full before they are read (the saved values: every row is active at one
    // step), so not zero-filled.
    let mut gates = Array2::<F>::uninit((saved_rows, gh));
    let mut aux = Array2::<F>::uninit((saved_rows, aw * hidden));
    let mut h_prev = Array2::<F>::uninit((if save { rows } else { 0 }, h_out));
    // x W_ih^T: per step for the threads' own rows when they take rows each (a step's rows of
    // one thread are then one block of x); otherwise for `chunk` steps at a time, so that
    // W_ih, which then streams from L3 or memory, is read once per chunk, not once per step.
    let speedup = w_ih.first().map_or(1, PackedBlock::speedup);
    let sharing = Sharing::new(w, batches, speedup);
    let chunk = if sharing.by_rows() {
        1
    } else {
        INPUT_CHUNK_STEPS
    };
    let mut xw = Array2::<F>::uninit((n * chunk.min(steps.max(1)), gh));
    // h W_hh^T apart from x W_ih^T: for cells that scale or normalise it (see the step below).
    let mut hw = Array2::<F>::uninit((if apart { n } else { 0 }, gh));
    // The two state buffers the steps alternate between, both holding the initial states
    // (padded: the products read them).
    let mut h_a = Array2::<F>::zeros((n, padded_width::<F>(h_out)));
    h_a.slice_mut(s![.., ..h_out]).assign(&h);
    let mut h_b = h_a.clone();
    // The state before the projection, or the state a late last gate's product reads.
    let mut m = Array2::<F>::uninit((if proj || late { n } else { 0 }, hidden));
    let mut no_c = Array2::zeros((n, 0));
    let mut c = c.unwrap_or_else(|| no_c.view_mut());
    // Zoneout of c: the cell state entering the step, which the cell updates in place.
    let zone_c = zoneout.is_some() && desc.cell_state;
    let mut c_old = Array2::<F>::uninit((if zone_c { n } else { 0 }, hidden));

    let states = [
        Shared::new(&mut h_a.view_mut()),
        Shared::new(&mut h_b.view_mut()),
    ];
    let (sh_gates, sh_aux) = (Shared::uninit(&mut gates), Shared::uninit(&mut aux));
    let sh_h_prev = Shared::uninit(&mut h_prev);
    let (sh_xw, sh_hw) = (Shared::uninit(&mut xw), Shared::uninit(&mut hw));
    let sh_m = Shared::uninit(&mut m);
    // Reduced precision: x rounded or quantized once for every block's input projection, and
    // h once per step (a phase of its own, rows split between the blocks). The row of x at
    // (t, i) is at `x_row(t, i)` among the prepared rows: time-major.
    let mut prep_x = Prepared::new(w_ih.first(), rows);
    let mut prep_h = Prepared::new(w_hh.first(), n);
    let lowp = prep_x.is_used();
    let x_row = |t: usize, i: usize| {
        if batches.is_batch_major() {
            t * n + i
        } else {
            batches.row(t, i)
        }
    };
    if lowp {
        let sh = prep_x.share();
        let prepare_step = |t: usize| {
            if let Some(p) = Part::of_step(batches, t, 0..n) {
                // SAFETY: each step's rows are its own, prepared by one call.
                unsafe { sh.prepare(&w_ih[0], x_row(t, 0), &p.of(x)) };
            }
        };
        if rows * x.ncols() >= 1 << 16 && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            (0..steps).into_par_iter().for_each(prepare_step);
        } else {
            (0..steps).for_each(prepare_step);
        }
    }
    let (sh_prep_x, sh_prep_h) = (prep_x.share(), prep_h.share());
    let sh_c = Shared::new(&mut c);
    let sh_out = Shared::new(&mut out);
    let sh_c_old = Shared::uninit(&mut c_old);

    // Zoneout of h for the new state's columns `cols` of loop step `s` (complete there): mixes
    // in the old state, and writes the result to the output rows too.
    let zone_h = |s: usize, part: &Part, cols: std::ops::Range<usize>| {
        let Some(z) = zoneout else { return };
        let (lo, len) = (part.lo, part.len);
        // SAFETY: this item alone writes these columns of the new state and of the part's
        // output rows; the old state is only read in this phase; the masks are read-only.
        unsafe {
            let (cur, next) = (states[s % 2], states[(s + 1) % 2]);
            keep_old(
                next.view_mut(lo, len, cols.clone()),
                cur.view(lo, len, cols.clone()),
                z.h.view(part, cols.clone()),
            );
            part.view_mut(sh_out, cols.clone())
                .assign(&next.view(lo, len, cols));
        }
    };

    // With a projection: copies the new state's columns `cols` of the step into the output
    // (and the old state into the saved inputs); without, the gate math does.
    let emit = |s: usize, part: &Part, cols: std::ops::Range<usize>| {
        let (lo, len) = (part.lo, part.len);
        // SAFETY: each item copies its own columns of its rows (out, h_prev) from the state
        // buffers, which no item of this phase writes in those columns.
        unsafe {
            let (cur, next) = (states[s % 2], states[(s + 1) % 2]);
            part.view_mut(sh_out, cols.clone())
                .assign(&next.view(lo, len, cols.clone()));
            if save {
                part.view_mut(sh_h_prev, cols.clone())
                    .assign(&cur.view(lo, len, cols));
            }
        }
    };
    // The rows of x W_ih^T of loop step `s` within xw (see the first phase below).
    let xw_row_of = |s: usize, part: &Part| {
        if chunk == 1 {
            part.lo
        } else {
            let first = s - s % chunk;
            if batches.is_batch_major() {
                (s - first) * n + part.lo
            } else {
                let chunk_steps = first..(first + chunk).min(steps);
                part.r0 - step_rows(batches, reverse, chunk_steps).start
            }
        }
    };
    // Per step: [prepare h (reduced precision)], the products and gate math, [the projection
    // or the late last gate].
    let phases_per_step = 1 + usize::from(proj || late) + usize::from(lowp);
    let work = |phase: usize, item: usize, rows: std::ops::Range<usize>| {
        let s = phase / phases_per_step;
        // 0: prepare h, 1: products and gate math, 2: projection or late last gate.
        let local = phase % phases_per_step + usize::from(!lowp);
        let t = time(batches, reverse, s);
        let Some(part) = Part::of_step(batches, t, rows) else {
            return;
        };
        let (r0, lo, bs) = (part.r0, part.lo, part.len);
        let (cur, next) = (states[s % 2], states[(s + 1) % 2]);
        // Rows of the saved values: the pass's rows, or this step's (buffers of one step).
        let saved_rows = |m: Shared<F>, cols: std::ops::Range<usize>| {
            if save {
                part.rows(m, cols)
            } else {
                m.rows(lo, cols)
            }
        };
        if local == 0 {
            // This item's share of the part's rows of h.
            let share = |j: usize| lo + bs * j / nb.max(1);
            let (a, b) = (share(item), share(item + 1));
            if item < nb && a < b {
                // SAFETY: the items prepare disjoint rows of the step; the old state is only
                // read in this phase.
                unsafe { sh_prep_h.prepare(&w_hh[0], a, &cur.view(a, b - a, 0..h_out)) };
            }
            return;
        }
        if local == 1 {
            if item >= nb {
                return;
            }
            let (cols, units) = (blocks.columns(item, g), blocks.units(item));
            // The rows of x W_ih^T for this step: computed now for this step alone, or at the
            // first step of each chunk for the chunk's steps (for all the batch's rows, which
            // is then one part).
            let xw_row = if chunk == 1 {
                // SAFETY: this item alone writes the block's columns of these rows of xw.
                unsafe {
                    sh_prep_x.matmul(
                        &w_ih[item],
                        x_row(t, lo),
                        &mut sh_xw.view_mut(lo, bs, cols.clone()),
                        &part.of(x),
                        false,
                    );
                }
                lo
            } else {
                let first = s - s % chunk;
                let chunk_steps = first..(first + chunk).min(steps);
                if batches.is_batch_major() {
                    // A step's rows are `L` rows apart, so the chunk's steps are projected one
                    // by one into consecutive rows of xw, while the block's columns of W_ih
                    // stay in cache (every row is active: the batch is padded).
                    if s == first {
                        for (k, s_k) in chunk_steps.enumerate() {
                            let t_k = time(batches, reverse, s_k);
                            let rows_k = Part::of_step(batches, t_k, 0..n).expect("padded");
                            // SAFETY: this item alone writes the block's columns of xw;
                            // the previous chunk's rows are no longer read.
                            unsafe {
                                sh_prep_x.matmul(
                                    &w_ih[item],
                                    x_row(t_k, 0),
                                    &mut sh_xw.view_mut(k * n, n, cols.clone()),
                                    &rows_k.of(x),
                                    false,
                                );
                            }
                        }
                    }
                    (s - first) * n + lo
                } else {
                    let chunk_rows = step_rows(batches, reverse, chunk_steps);
                    if s == first {
                        // SAFETY: this item alone writes the block's columns of xw; the rows
                        // of the previous chunk are no longer read (their steps are done).
                        unsafe {
                            sh_prep_x.matmul(
                                &w_ih[item],
                                chunk_rows.start,
                                &mut sh_xw.view_mut(0, chunk_rows.len(), cols.clone()),
                                &x.slice(s![chunk_rows.clone(), ..]),
                                false,
                            );
                        }
                    }
                    r0 - chunk_rows.start
                }
            };
            // SAFETY: this item alone writes the block's columns of xw's rows of the step or
            // of hw (the part's rows), of the new state or m, c, gates and aux; x and the old
            // state are only read in this phase.
            unsafe {
                // h W_hh^T: added into x W_ih^T (the gate math then reads one pre-activation),
                // or apart for a cell that scales part of it (GRU's n gate, by r) or
                // normalises it (the layer-normalised LSTM).
                // With a late last gate, the other gates' columns only.
                let hh_cols = if late {
                    cols.start..blocks.gate(item, g, g - 1).start
                } else {
                    cols.clone()
                };
                let (mut hw_to, accumulate) = if apart {
                    (sh_hw.view_mut(lo, bs, hh_cols), false)
                } else {
                    (sh_xw.view_mut(xw_row, bs, hh_cols), true)
                };
                sh_prep_h.matmul(
                    &w_hh[item],
                    lo,
                    &mut hw_to,
                    &cur.view(lo, bs, 0..h_out),
                    accumulate,
                );
                if zone_c {
                    sh_c_old.view_mut(lo, bs, units.clone()).assign(&sh_c.view(
                        lo,
                        bs,
                        units.clone(),
                    ));
                }
                forward_block(
                    cell,
                    &ForwardBlock {
                        rows: bs,
                        h_prev: if proj {
                            Rows::empty()
                        } else {
                            cur.rows(lo, units.clone())
                        },
                        h_new: if proj {
                            sh_m.rows(lo, units.clone())
                        } else if late {
                            Rows::empty()
                        } else {
                            next.rows(lo, units.clone())
                        },
                        c: if desc.cell_state {
                            sh_c.rows(lo, units.clone())
                        } else {
                            Rows::empty()
                        },
                        // Gates only copied for backward (RNN's is its new state) are skipped
                        // in inference.
                        gates: if save || desc.gates_in_step {
                            saved_rows(sh_gates, cols.clone())
                        } else {
                            Rows::empty()
                        },
                        aux: saved_rows(sh_aux, blocks.columns(item, aw)),
                        xw: sh_xw.rows(xw_row, cols.clone()),
                        hw: if apart {
                            sh_hw.rows(lo, cols.clone())
                        } else {
                            Rows::empty()
                        },
                        bias: &bias[cols],
                        step_bias: if step_bias.is_empty() {
                            &[]
                        } else {
                            &step_bias[units.clone()]
                        },
                        out: if proj || late {
                            Rows::empty()
                        } else {
                            part.rows(sh_out, units.clone())
                        },
                        saved_h_prev: if save && !proj && !late {
                            part.rows(sh_h_prev, units.clone())
                        } else {
                            Rows::empty()
                        },
                        m: if late {
                            sh_m.rows(lo, units.clone())
                        } else {
                            Rows::empty()
                        },
                        unit_weights: &unit_weights[blocks.columns(item, uw)],
                        save,
                    },
                );
                if let Some(z) = zoneout.filter(|_| zone_c) {
                    keep_old(
                        sh_c.view_mut(lo, bs, units.clone()),
                        sh_c_old.view(lo, bs, units.clone()),
                        z.c.view(&part, units.clone()),
                    );
                }
            }
            if !(proj || late) {
                zone_h(s, &part, units);
            }
        } else if late {
            if item >= nb {
                return;
            }
            let (cols, units) = (blocks.columns(item, g), blocks.units(item));
            let xw_row = xw_row_of(s, &part);
            // SAFETY: m is complete (previous phase) and only read; this item alone writes the
            // block's last-gate columns of xw's rows of the step, the block's columns of the
            // new state, of gates, and of the part's output and saved rows.
            unsafe {
                packed.w_hh_late[item].matmul_serial(
                    &mut sh_xw.view_mut(xw_row, bs, blocks.gate(item, g, g - 1)),
                    &sh_m.view(lo, bs, 0..hidden),
                    true,
                );
                forward_block_late(
                    cell,
                    &ForwardBlock {
                        rows: bs,
                        h_prev: cur.rows(lo, units.clone()),
                        h_new: next.rows(lo, units.clone()),
                        c: Rows::empty(),
                        gates: saved_rows(sh_gates, cols.clone()),
                        aux: Rows::empty(),
                        xw: sh_xw.rows(xw_row, cols.clone()),
                        hw: Rows::empty(),
                        bias: &bias[cols],
                        step_bias: &[],
                        out: part.rows(sh_out, units.clone()),
                        saved_h_prev: if save {
                            part.rows(sh_h_prev, units.clone())
                        } else {
                            Rows::empty()
                        },
                        m: Rows::empty(),
                        unit_weights: &unit_weights[blocks.columns(item, uw)],
                        save,
                    },
                );
            }
            zone_h(s, &part, units);
        } else {
            if item >= out_blocks.count() {
                return;
            }
            let cols = out_blocks.units(item);
            // SAFETY: this item alone writes these columns of the new state; m is complete
            // (previous phase) and only read.
            unsafe {
                w_hr[item].matmul_serial(
                    &mut next.view_mut(lo, bs, cols.clone()),
                    &sh_m.view(lo, bs, 0..hidden),
                    false,
                );
            }
            zone_h(s, &part, cols.clone());
            emit(s, &part, cols);
        }
    };
    sharing.run(steps * phases_per_step, nb.max(out_blocks.count()), &work);

    // Final states: each sequence's output at its last step.
    for i in 0..n {
        let last = if reverse {
            0
        } else {
            batches.batch_sizes().iter().filter(|&&b| b > i).count() - 1
        };
        h.row_mut(i).assign(&out.row(batches.row(last, i)));
    }
    // SAFETY: with `save`, every row of these was written (each row is active at one step;
    // each block writes its columns of gates and aux, each output block its columns of h_prev).
    save.then(|| unsafe {
        DirSaved {
            blocks: blocks.clone(),
            gates: gates.assume_init(),
            h_prev: h_prev.assume_init(),
            aux: aux.assume_init(),
        }
    })
}
