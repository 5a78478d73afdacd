//! The time loop of one layer and direction, backward, on all threads, and the weight
//! gradients after it.
//!
//! Backward mirrors the forward loop: per step and block, the gate math
//! ([`super::cells`]) turns `dL/dh'` into the gradients of the pre-activations (`dXW`, stored
//! for all steps), then, after the meeting, each block computes its columns of
//! `dL/dh = dXW W_hh` and goes straight on with its gate math of the previous step. The weight
//! gradients are a few large products over all steps afterwards ([`weight_gradients`]; for
//! cells whose recurrent part is not kept apart one: `[dW_ih | dW_hh] = dXW^T [X | H_prev]`).

use std::ops::Range;

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};

use super::blocks::{gather_rows, scatter, scatter_rows, Blocks};
use super::cells::{
    backward_block, backward_block_late, late_state, unit_weight_grads, unprojected_state,
    BackwardBlock,
};
use super::forward::{DirPass, DirSaved};
use super::math::Activations;
use super::packing::{blocked_unit_weights, padded_uninit, per_block};
use super::schedule::{time, Sharing};
use super::views::{Part, Rows, Shared};
use super::zoneout::split_grad;
use super::DirGrads;
use crate::linalg::{matmul, matmul_packed, matmul_packed_serial, PackedWeights};

/// Rows (of all steps) per slice of the weight-gradient products (see [`weight_gradients`]).
const GRADIENT_ROWS: usize = 2048;

/// The gradients a backward pass of one layer and direction reads and writes.
pub(super) struct BackwardStates<'s, F> {
    /// (R, H_out) dL/d the direction's output.
    pub d_out: ArrayView2<'s, F>,
    /// (N, H_out): dL/d the final states on entry, dL/d the initial states on exit.
    pub dh: ArrayViewMut2<'s, F>,
    /// (N, H): likewise for the cell state; `None` without one.
    pub dc: Option<ArrayViewMut2<'s, F>>,
    /// (R, I): accumulates dL/d input.
    pub d_input: &'s mut Array2<F>,
}

/// One layer and direction backward, over what its forward pass saved: the gradients of the
/// states go from the final to the initial ones (see [`BackwardStates`]), dL/d input
/// accumulates, and the weights' gradients are returned.
pub(super) fn direction_backward<F: Activations>(
    pass: &DirPass<'_, '_, F>,
    saved: &DirSaved<F>,
    states: BackwardStates<'_, F>,
) -> DirGrads<F> {
    let DirPass {
        cell,
        w,
        batches,
        reverse,
        zoneout,
        ..
    } = *pass;
    let BackwardStates {
        d_out,
        mut dh,
        dc,
        d_input,
    } = states;
    let desc = cell.description();
    let g = desc.gates();
    let gh = w.w_ih.nrows();
    let hidden = gh / g;
    let h_out = w.w_hh.ncols();
    let (rows, n, steps) = (batches.rows(), batches.batch(), batches.steps());
    let aw = desc.aux_width;
    let apart = desc.last_gate_recurrent_apart;
    let late = desc.late_last_gate;
    // dHW differs from dXW: in GRU's last gate, or in every gate (a cell normalising the
    // products apart); `kept` of its gates (the last ones) are kept for the weight gradients.
    let hw_apart = apart || desc.products_apart;
    let kept = kept_gates(desc);
    let rg = desc.row_grads;
    let proj = w.w_hr.is_some();
    let blocks = &saved.blocks;
    let order = blocks.order(g);
    let nb = blocks.count();
    let out_blocks = if proj {
        Blocks::new(1, h_out)
    } else {
        blocks.clone()
    };

    // dL/dh_prev = dHW W_hh by blocks of columns of h, with W_hh's rows in block order;
    // dL/dm = dL/dh W_hr by unit blocks. A late last gate's product reads m, not h: its rows
    // are zero here, and dL/dm = dXW_last W_hh_last by unit blocks.
    let mut w_hh_blocked = gather_rows(&w.w_hh, &order);
    if late {
        for b in 0..nb {
            w_hh_blocked
                .slice_mut(s![blocks.gate(b, g, g - 1), ..])
                .fill(F::zero());
        }
    }
    let w_hh = per_block(w, out_blocks.count(), &|b| {
        PackedWeights::new(&w_hh_blocked.slice(s![.., out_blocks.units(b)]))
    });
    let w_late = if late {
        let w_last = w.w_hh.slice(s![(g - 1) * hidden.., ..]);
        per_block(w, nb, &|b| {
            PackedWeights::new(&w_last.slice(s![.., blocks.units(b)]))
        })
    } else {
        Vec::new()
    };
    let w_hr = match &w.w_hr {
        Some(w_hr) => per_block(w, nb, &|b| {
            PackedWeights::new(&w_hr.slice(s![.., blocks.units(b)]))
        }),
        None => Vec::new(),
    };

    let unit_weights = blocked_unit_weights(cell, w, blocks);
    let uw = desc.unit_weights;

    // Written in full by the sweep before they are read, so not zero-filled.
    let mut dxw = padded_uninit::<F>(rows, gh);
    // A cell whose last gate's recurrent part stays apart (GRU): dHW differs from dXW only in
    // that gate (GRU: times r). The sweep needs the whole dHW of one step (two buffers: one
    // step's is read while the next one's is written); only that gate's part is kept for the
    // weight gradients, which saves (R, (G-1) H) of memory.
    let apart_rows = |r: usize| if hw_apart { r } else { 0 };
    let mut dhw_steps = [
        padded_uninit::<F>(apart_rows(n), gh),
        padded_uninit::<F>(apart_rows(n), gh),
    ];
    let mut dhn = Array2::<F>::uninit((apart_rows(rows), kept * hidden));
    // The cell's row gradients for its parameters, kept for all rows.
    let mut drow = Array2::<F>::uninit((if rg > 0 { rows } else { 0 }, rg * hidden));
    // With a projection: dL/dh per row (for dW_hr) and dL/dm for the current step.
    let mut dh_all = Array2::<F>::uninit((if proj { rows } else { 0 }, h_out));
    // dL/dm of the current step, with a projection or a late last gate; and dXW of a late
    // last gate in unit order, for dL/dm.
    let mut dm = Array2::<F>::uninit((if proj || late { n } else { 0 }, hidden));
    let mut d_late = Array2::<F>::uninit((if late { n } else { 0 }, hidden));
    let mut no_c = Array2::zeros((n, 0));
    let mut dc = dc.unwrap_or_else(|| no_c.view_mut());
    // Zoneout: the parts of dL/dh and dL/dc of the step that go straight to the previous
    // state (see `engine/zoneout.rs`).
    let zone = zoneout.is_some();
    let zone_c = zone && desc.cell_state;
    let mut keep_h = Array2::<F>::uninit((if zone { n } else { 0 }, h_out));
    let mut keep_c = Array2::<F>::uninit((if zone_c { n } else { 0 }, hidden));
    let (sh_keep_h, sh_keep_c) = (Shared::uninit(&mut keep_h), Shared::uninit(&mut keep_c));

    let sh_dxw = Shared::uninit(&mut dxw);
    let [a, b] = &mut dhw_steps;
    let sh_dhw_steps = [Shared::uninit(a), Shared::uninit(b)];
    let sh_dhn = Shared::uninit(&mut dhn);
    let sh_drow = Shared::uninit(&mut drow);
    let (sh_dh_all, sh_dm) = (Shared::uninit(&mut dh_all), Shared::uninit(&mut dm));
    let sh_d_late = Shared::uninit(&mut d_late);
    let (sh_dh, sh_dc) = (Shared::new(&mut dh), Shared::new(&mut dc));
    let sh_gates = Shared::read_only(&saved.gates.view());
    let sh_aux = Shared::read_only(&saved.aux.view());
    let sh_h_prev = Shared::read_only(&saved.h_prev.view());
    // The rows of the loop's `s`-th step (the reverse of the forward order) within `rows`.
    let step = |s: usize, rows: &Range<usize>| {
        Part::of_step(batches, time(batches, !reverse, s), rows.clone())
    };

    // dL/dh (+)= dHW W_hh for the columns of block `b` after loop step `s`.
    let through_w_hh = |s: usize, b: usize, part: &Part| {
        let (lo, bs) = (part.lo, part.len);
        // SAFETY: dHW of the step is complete (previous phase) and only read; this item alone
        // writes these columns of dh.
        unsafe {
            let a = if hw_apart {
                sh_dhw_steps[s % 2].view(lo, bs, 0..gh)
            } else {
                part.view(sh_dxw, 0..gh)
            };
            let cols = out_blocks.units(b);
            let mut dh_b = sh_dh.view_mut(lo, bs, cols.clone());
            // Zoneout's path from h to h' (kept since the step's dL/dh was split).
            if zone {
                let keep = sh_keep_h.view(lo, bs, cols);
                if desc.direct_state_path {
                    dh_b += &keep;
                } else {
                    dh_b.assign(&keep);
                }
            }
            // A direct path from h to h' left its part of dL/dh in dh: add to it.
            matmul_packed_serial(&mut dh_b, &a, &w_hh[b], desc.direct_state_path || zone);
        }
    };
    // The gate math of loop step `s` for unit block `b`, from dL/dh' in `d_state`.
    let gates_back = |s: usize, b: usize, part: &Part, d_state: Shared<F>| {
        let (lo, bs) = (part.lo, part.len);
        let (cols, units) = (blocks.columns(b, g), blocks.units(b));
        // SAFETY: this item alone writes the block's columns of dxw, dhw, drow (rows of the
        // step), of d_state, dc and keep_c; the saved values and masks are only read.
        unsafe {
            let zone_c = zoneout.filter(|_| zone_c);
            if let Some(z) = zone_c {
                split_grad(
                    sh_dc.view_mut(lo, bs, units.clone()),
                    sh_keep_c.view_mut(lo, bs, units.clone()),
                    z.c.view(part, units.clone()),
                );
            }
            backward_block(
                cell,
                &BackwardBlock {
                    rows: bs,
                    dxw: part.rows(sh_dxw, cols.clone()),
                    dhw: if hw_apart {
                        sh_dhw_steps[s % 2].rows(lo, cols.clone())
                    } else {
                        Rows::empty()
                    },
                    dh: d_state.rows(lo, units.clone()),
                    dc: if desc.cell_state {
                        sh_dc.rows(lo, units.clone())
                    } else {
                        Rows::empty()
                    },
                    gates: part.rows(sh_gates, cols.clone()),
                    aux: part.rows(sh_aux, blocks.columns(b, aw)),
                    h_prev: if desc.direct_state_path {
                        part.rows(sh_h_prev, units.clone())
                    } else {
                        Rows::empty()
                    },
                    dm: Rows::empty(),
                    unit_weights: Rows::broadcast(&unit_weights[blocks.columns(b, uw)]),
                    drow: if rg > 0 {
                        part.rows(sh_drow, blocks.columns(b, rg))
                    } else {
                        Rows::empty()
                    },
                },
            );
            if zone_c.is_some() {
                let mut dc_b = sh_dc.view_mut(lo, bs, units.clone());
                dc_b += &sh_keep_c.view(lo, bs, units.clone());
            }
            if kept > 0 {
                let kept_cols = blocks.gate(b, g, g - kept).start..cols.end;
                part.view_mut(sh_dhn, blocks.columns(b, kept))
                    .assign(&sh_dhw_steps[s % 2].view(lo, bs, kept_cols));
            } else if late {
                sh_d_late
                    .view_mut(lo, bs, units)
                    .assign(&part.view(sh_dxw, blocks.gate(b, g, g - 1)));
            }
        }
    };
    // A late last gate, second phase of loop step `s` for unit block `b`: dL/dm, then the
    // rest of the gate math.
    let gates_back_late = |b: usize, part: &Part| {
        let (lo, bs) = (part.lo, part.len);
        let (cols, units) = (blocks.columns(b, g), blocks.units(b));
        // SAFETY: the last gate's dXW of the step is complete (previous phase) and only read;
        // this item alone writes the block's columns of dm, dxw (rows of the step) and dh.
        unsafe {
            matmul_packed_serial(
                &mut sh_dm.view_mut(lo, bs, units.clone()),
                &sh_d_late.view(lo, bs, 0..hidden),
                &w_late[b],
                false,
            );
            backward_block_late(
                cell,
                &BackwardBlock {
                    rows: bs,
                    dxw: part.rows(sh_dxw, cols.clone()),
                    dhw: Rows::empty(),
                    dh: sh_dh.rows(lo, units.clone()),
                    dc: Rows::empty(),
                    gates: part.rows(sh_gates, cols),
                    aux: Rows::empty(),
                    h_prev: part.rows(sh_h_prev, units.clone()),
                    dm: sh_dm.rows(lo, units),
                    unit_weights: Rows::empty(),
                    drow: Rows::empty(),
                },
            );
        }
    };
    // dL/dh += dL/d output for columns `cols` of loop step `s`; with zoneout, then split into
    // the part kept for the previous state and the part the cell reads.
    let add_d_out = |part: &Part, cols: Range<usize>| {
        let (lo, bs) = (part.lo, part.len);
        // SAFETY: this item alone writes these columns of dh, keep_h (and of dh_all's rows);
        // the masks are only read.
        unsafe {
            let mut dh_t = sh_dh.view_mut(lo, bs, cols.clone());
            dh_t += &part.of(d_out).slice(s![.., cols.clone()]);
            if let Some(z) = zoneout {
                split_grad(
                    dh_t.view_mut(),
                    sh_keep_h.view_mut(lo, bs, cols.clone()),
                    z.h.view(part, cols.clone()),
                );
            }
            if proj {
                part.view_mut(sh_dh_all, cols).assign(&dh_t);
            }
        }
    };

    let work_plain = |s: usize, b: usize, rows: Range<usize>| {
        if b >= nb {
            return;
        }
        if s > 0 {
            if let Some(part) = step(s - 1, &rows) {
                through_w_hh(s - 1, b, &part);
            }
        }
        if let Some(part) = (s < steps).then(|| step(s, &rows)).flatten() {
            add_d_out(&part, blocks.units(b));
            gates_back(s, b, &part, sh_dh);
        }
    };
    let work_proj = |phase: usize, b: usize, rows: Range<usize>| {
        let s = phase / 2;
        if phase.is_multiple_of(2) {
            if b >= out_blocks.count() {
                return;
            }
            if s > 0 {
                if let Some(part) = step(s - 1, &rows) {
                    through_w_hh(s - 1, b, &part);
                }
            }
            if let Some(part) = (s < steps).then(|| step(s, &rows)).flatten() {
                add_d_out(&part, out_blocks.units(b));
            }
        } else {
            if b >= nb {
                return;
            }
            let Some(part) = step(s, &rows) else {
                return;
            };
            let (lo, bs) = (part.lo, part.len);
            // SAFETY: dh is complete (previous phase) and only read; this item alone writes
            // the block's columns of dm.
            unsafe {
                matmul_packed_serial(
                    &mut sh_dm.view_mut(lo, bs, blocks.units(b)),
                    &sh_dh.view(lo, bs, 0..h_out),
                    &w_hr[b],
                    false,
                );
            }
            gates_back(s, b, &part, sh_dm);
        }
    };
    let work_late = |phase: usize, b: usize, rows: Range<usize>| {
        if b >= nb {
            return;
        }
        let s = phase / 2;
        if phase.is_multiple_of(2) {
            work_plain(s, b, rows);
        } else if let Some(part) = step(s, &rows) {
            gates_back_late(b, &part);
        }
    };
    let items = nb.max(out_blocks.count());
    // Backward runs in f32 whatever the forward's precision.
    let sharing = Sharing::new(w, batches, 1);
    if proj {
        sharing.run(2 * steps + 1, items, &work_proj);
    } else if late {
        sharing.run(2 * steps + 1, items, &work_late);
    } else {
        sharing.run(steps + 1, items, &work_plain);
    }

    // SAFETY: every row of each step was written by the gate math (dxw, dhn, drow) or with
    // dL/dh (dh_all), and every row belongs to one step.
    let (dxw_padded, dhn, dh_all, drow) = unsafe {
        (
            dxw.assume_init(),
            dhn.assume_init(),
            dh_all.assume_init(),
            drow.assume_init(),
        )
    };
    weight_gradients(
        pass,
        saved,
        StepGradients {
            dxw: dxw_padded.slice(s![.., ..gh]),
            dhn: dhn.view(),
            dh_all: dh_all.view(),
            drow: drow.view(),
        },
        d_input,
    )
}

/// The last gates whose `dL/d(h W_hh^T)` differs from `dL/d(x W_ih^T)` and is kept for
/// `dW_hh`: GRU's last gate (whose recurrent part `r` scales), every gate of a cell that
/// normalises the products apart, else none.
fn kept_gates(desc: &super::cells::Description) -> usize {
    if desc.products_apart {
        desc.gates()
    } else if desc.last_gate_recurrent_apart {
        1
    } else {
        0
    }
}

/// What the backward sweep leaves for the weight gradients, per row of all steps.
struct StepGradients<'a, F> {
    /// (R, G H) blocked: dL/d the pre-activations.
    dxw: ArrayView2<'a, F>,
    /// (R, kept H) blocked: dL/d the recurrent part of the last `kept` gates
    /// ([`kept_gates`]) where it differs from dXW; else no rows.
    dhn: ArrayView2<'a, F>,
    /// (R, row_grads H) blocked: the cell's row gradients; else no rows.
    drow: ArrayView2<'a, F>,
    /// (R, H_out): dL/dh with a projection; else no rows.
    dh_all: ArrayView2<'a, F>,
}

/// The weight gradients of one layer and direction from its sweep's gradients, and dL/d input
/// (accumulated into `d_input`): large GEMMs over all timesteps, then back to PyTorch's row
/// order.
fn weight_gradients<F: Activations>(
    pass: &DirPass<'_, '_, F>,
    saved: &DirSaved<F>,
    grads: StepGradients<'_, F>,
    d_input: &mut Array2<F>,
) -> DirGrads<F> {
    let DirPass { cell, w, x, .. } = *pass;
    let StepGradients {
        dxw,
        dhn,
        dh_all,
        drow,
    } = grads;
    let desc = cell.description();
    let g = desc.gates();
    let (gh, h_out, rows) = (w.w_ih.nrows(), w.w_hh.ncols(), x.nrows());
    let hidden = gh / g;
    let apart = desc.last_gate_recurrent_apart;
    let late = desc.late_last_gate;
    let kept = kept_gates(desc);
    let blocks = &saved.blocks;
    let order = blocks.order(g);
    let nb = blocks.count();
    // [dW_ih | dW_hh] (G*H, I + H_out). The operands X and H_prev are packed a slice of rows at
    // a time, so that the packed copies never hold all rows (peak memory).
    let inputs = x.ncols();
    let mut g_ih_hh = Array2::<F>::zeros((gh, inputs + h_out));
    let (mut packed_x, mut packed_h) = (PackedWeights::default(), PackedWeights::default());
    let mut packed_m = PackedWeights::default();
    for r0 in (0..rows).step_by(GRADIENT_ROWS) {
        let r = r0..(r0 + GRADIENT_ROWS).min(rows);
        let acc = r0 > 0;
        let (x_r, h_r) = (
            x.slice(s![r.clone(), ..]),
            saved.h_prev.slice(s![r.clone(), ..]),
        );
        if kept > 0 || late {
            let (mut g_ih, mut g_hh) = g_ih_hh.view_mut().split_at(Axis(1), inputs);
            packed_x.repack(&x_r);
            matmul_packed(&mut g_ih, &dxw.slice(s![r.clone(), ..]).t(), &packed_x, acc);
            // Per block: the rows of the other gates come from dXW and H_prev; the last
            // gates' from dHW's kept part and H_prev, or (late) the last gate's from dXW and M.
            packed_h.repack(&h_r);
            if late {
                let mut m_r = Array2::zeros((r.len(), hidden));
                for b in 0..nb {
                    let gates = saved.gates.slice(s![r.clone(), blocks.columns(b, g)]);
                    let h_b = saved.h_prev.slice(s![r.clone(), blocks.units(b)]);
                    m_r.slice_mut(s![.., blocks.units(b)])
                        .assign(&late_state(cell, gates, h_b));
                }
                packed_m.repack(&m_r.view());
            }
            let k = if late { 1 } else { kept };
            for b in 0..nb {
                let first_last = blocks.gate(b, g, g - k).start;
                let (rest, last) = (
                    blocks.gate(b, g, 0).start..first_last,
                    first_last..blocks.columns(b, g).end,
                );
                if !rest.is_empty() {
                    let mut g_rest = g_hh.slice_mut(s![rest.clone(), ..]);
                    let dxw_rest = dxw.slice(s![r.clone(), rest]);
                    matmul_packed(&mut g_rest, &dxw_rest.t(), &packed_h, acc);
                }
                let mut g_last = g_hh.slice_mut(s![last.clone(), ..]);
                if late {
                    let dxw_last = dxw.slice(s![r.clone(), last]);
                    matmul_packed(&mut g_last, &dxw_last.t(), &packed_m, acc);
                } else {
                    let dhn_b = dhn.slice(s![r.clone(), blocks.columns(b, k)]);
                    matmul_packed(&mut g_last, &dhn_b.t(), &packed_h, acc);
                }
            }
        } else {
            // One product, so one pass over (and one packing of) dXW^T.
            packed_x.repack_concat(&[x_r, h_r]);
            let dxw_r = dxw.slice(s![r, ..]);
            matmul_packed(&mut g_ih_hh.view_mut(), &dxw_r.t(), &packed_x, acc);
        }
    }
    drop((packed_x, packed_h, packed_m));
    let (g_ih, g_hh) = g_ih_hh.view().split_at(Axis(1), inputs);
    let (g_bih, g_bhh) = if w.b_ih.is_some() {
        let d_bias = if desc.products_apart {
            // The biases are added after the products' normalisation: their gradients are the
            // sums of the row gradients' first G units, dL/d the pre-activations.
            let rg = desc.row_grads;
            let mut d = ndarray::Array1::zeros(gh);
            for b in 0..nb {
                let first = blocks.columns(b, rg).start;
                let width = blocks.columns(b, g).len();
                d.slice_mut(s![blocks.columns(b, g)])
                    .assign(&drow.slice(s![.., first..first + width]).sum_axis(Axis(0)));
            }
            d
        } else {
            dxw.sum_axis(Axis(0))
        };
        let mut d_bhh = d_bias.clone();
        if apart {
            for b in 0..nb {
                let dhn_b = dhn.slice(s![.., blocks.units(b)]);
                d_bhh
                    .slice_mut(s![blocks.gate(b, g, g - 1)])
                    .assign(&dhn_b.sum_axis(Axis(0)));
            }
        }
        (
            Some(scatter(&d_bias, &order)),
            Some(scatter(&d_bhh, &order)),
        )
    } else {
        (None, None)
    };
    let g_hr = w.w_hr.as_ref().map(|w_hr| {
        // The state before the projection per row, rebuilt by the cell from the saved
        // (blocked) gates and auxiliary values.
        let mut m_all = Array2::zeros((rows, hidden));
        for b in 0..nb {
            let gates = saved.gates.slice(s![.., blocks.columns(b, g)]);
            let aux = saved.aux.slice(s![.., blocks.columns(b, desc.aux_width)]);
            m_all
                .slice_mut(s![.., blocks.units(b)])
                .assign(&unprojected_state(cell, gates, aux));
        }
        let mut g = Array2::zeros(w_hr.dim());
        matmul(&mut g.view_mut(), &dh_all.t(), &m_all.view(), false);
        g
    });
    matmul(
        &mut d_input.view_mut(),
        &dxw.view(),
        &gather_rows(&w.w_ih, &order).view(),
        true,
    );
    DirGrads {
        w_ih: scatter_rows(&g_ih, &order),
        w_hh: scatter_rows(&g_hh, &order),
        b_ih: g_bih,
        b_hh: g_bhh,
        w_hr: g_hr,
        per_unit: per_unit_grads(pass, saved, dxw, drow),
    }
}

/// The gradients of the per-unit parameters (the cell's unit weights): sums over all rows,
/// per block, by the cell ([`unit_weight_grads`]), back to unit order and split by parameter.
fn per_unit_grads<F: Activations>(
    pass: &DirPass<'_, '_, F>,
    saved: &DirSaved<F>,
    dxw: ArrayView2<'_, F>,
    drow: ArrayView2<'_, F>,
) -> Vec<(super::cells::Param, ndarray::Array1<F>)> {
    let DirPass { cell, w, .. } = pass;
    let desc = cell.description();
    let uw = desc.unit_weights;
    if uw == 0 || w.per_unit.is_empty() {
        return Vec::new();
    }
    let (g, rg, blocks) = (desc.gates(), desc.row_grads, &saved.blocks);
    let hidden = w.w_ih.nrows() / g;
    let mut grad = ndarray::Array1::zeros(uw * hidden);
    for b in 0..blocks.count() {
        let dxw_b = dxw.slice(s![.., blocks.columns(b, g)]);
        let drow_b = if rg > 0 {
            drow.slice(s![.., blocks.columns(b, rg)])
        } else {
            drow
        };
        let aux_b = saved.aux.slice(s![.., blocks.columns(b, desc.aux_width)]);
        grad.slice_mut(s![blocks.columns(b, uw)])
            .assign(&unit_weight_grads(*cell, dxw_b, drow_b, aux_b));
    }
    let grad = scatter(&grad, &blocks.order(uw));
    let mut start = 0;
    w.per_unit
        .iter()
        .map(|(param, p)| {
            let part = grad.slice(s![start..start + p.len()]).to_owned();
            start += p.len();
            (*param, part)
        })
        .collect()
}
