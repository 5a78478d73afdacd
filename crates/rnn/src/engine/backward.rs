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
use super::cells::{backward_block, unprojected_state, BackwardBlock};
use super::forward::{DirPass, DirSaved};
use super::math::Activations;
use super::packing::{padded_uninit, per_block};
use super::schedule::{time, Sharing};
use super::views::{Part, Rows, Shared};
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
    // dL/dm = dL/dh W_hr by unit blocks.
    let w_hh_blocked = gather_rows(&w.w_hh, &order);
    let w_hh = per_block(w, out_blocks.count(), &|b| {
        PackedWeights::new(&w_hh_blocked.slice(s![.., out_blocks.units(b)]))
    });
    let w_hr = match &w.w_hr {
        Some(w_hr) => per_block(w, nb, &|b| {
            PackedWeights::new(&w_hr.slice(s![.., blocks.units(b)]))
        }),
        None => Vec::new(),
    };

    // Written in full by the sweep before they are read, so not zero-filled.
    let mut dxw = padded_uninit::<F>(rows, gh);
    // A cell whose last gate's recurrent part stays apart (GRU): dHW differs from dXW only in
    // that gate (GRU: times r). The sweep needs the whole dHW of one step (two buffers: one
    // step's is read while the next one's is written); only that gate's part is kept for the
    // weight gradients, which saves (R, (G-1) H) of memory.
    let apart_rows = |r: usize| if apart { r } else { 0 };
    let mut dhw_steps = [
        padded_uninit::<F>(apart_rows(n), gh),
        padded_uninit::<F>(apart_rows(n), gh),
    ];
    let mut dhn = Array2::<F>::uninit((apart_rows(rows), hidden));
    // With a projection: dL/dh per row (for dW_hr) and dL/dm for the current step.
    let mut dh_all = Array2::<F>::uninit((if proj { rows } else { 0 }, h_out));
    let mut dm = Array2::<F>::uninit((if proj { n } else { 0 }, hidden));
    let mut no_c = Array2::zeros((n, 0));
    let mut dc = dc.unwrap_or_else(|| no_c.view_mut());

    let sh_dxw = Shared::uninit(&mut dxw);
    let [a, b] = &mut dhw_steps;
    let sh_dhw_steps = [Shared::uninit(a), Shared::uninit(b)];
    let sh_dhn = Shared::uninit(&mut dhn);
    let (sh_dh_all, sh_dm) = (Shared::uninit(&mut dh_all), Shared::uninit(&mut dm));
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
            let a = if apart {
                sh_dhw_steps[s % 2].view(lo, bs, 0..gh)
            } else {
                part.view(sh_dxw, 0..gh)
            };
            // A direct path from h to h' left its part of dL/dh in dh: add to it.
            matmul_packed_serial(
                &mut sh_dh.view_mut(lo, bs, out_blocks.units(b)),
                &a,
                &w_hh[b],
                desc.direct_state_path,
            );
        }
    };
    // The gate math of loop step `s` for unit block `b`, from dL/dh' in `d_state`.
    let gates_back = |s: usize, b: usize, part: &Part, d_state: Shared<F>| {
        let (lo, bs) = (part.lo, part.len);
        let (cols, units) = (blocks.columns(b, g), blocks.units(b));
        // SAFETY: this item alone writes the block's columns of dxw, dhw (rows of the step),
        // of d_state and dc; the saved values are only read.
        unsafe {
            backward_block(
                cell,
                &BackwardBlock {
                    rows: bs,
                    dxw: part.rows(sh_dxw, cols.clone()),
                    dhw: if apart {
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
                },
            );
            if apart {
                let n_gate = blocks.gate(b, g, g - 1);
                part.view_mut(sh_dhn, units)
                    .assign(&sh_dhw_steps[s % 2].view(lo, bs, n_gate));
            }
        }
    };
    // dL/dh += dL/d output for columns `cols` of loop step `s`.
    let add_d_out = |part: &Part, cols: Range<usize>| {
        let (lo, bs) = (part.lo, part.len);
        // SAFETY: this item alone writes these columns of dh (and of dh_all's rows).
        unsafe {
            let mut dh_t = sh_dh.view_mut(lo, bs, cols.clone());
            dh_t += &part.of(d_out).slice(s![.., cols.clone()]);
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
    let items = nb.max(out_blocks.count());
    let sharing = Sharing::new(w, batches);
    if proj {
        sharing.run(2 * steps + 1, items, &work_proj);
    } else {
        sharing.run(steps + 1, items, &work_plain);
    }

    // SAFETY: every row of each step was written by the gate math (dxw, dhn) or with dL/dh
    // (dh_all), and every row belongs to one step.
    let (dxw_padded, dhn, dh_all) =
        unsafe { (dxw.assume_init(), dhn.assume_init(), dh_all.assume_init()) };
    weight_gradients(
        pass,
        saved,
        StepGradients {
            dxw: dxw_padded.slice(s![.., ..gh]),
            dhn: dhn.view(),
            dh_all: dh_all.view(),
        },
        d_input,
    )
}

/// What the backward sweep leaves for the weight gradients, per row of all steps.
struct StepGradients<'a, F> {
    /// (R, G H) blocked: dL/d the pre-activations.
    dxw: ArrayView2<'a, F>,
    /// (R, H): dL/d the last gate's recurrent part where it stays apart; else no rows.
    dhn: ArrayView2<'a, F>,
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
    let StepGradients { dxw, dhn, dh_all } = grads;
    let desc = cell.description();
    let g = desc.gates();
    let (gh, h_out, rows) = (w.w_ih.nrows(), w.w_hh.ncols(), x.nrows());
    let hidden = gh / g;
    let apart = desc.last_gate_recurrent_apart;
    let blocks = &saved.blocks;
    let order = blocks.order(g);
    let nb = blocks.count();
    // [dW_ih | dW_hh] (G*H, I + H_out). The operands X and H_prev are packed a slice of rows at
    // a time, so that the packed copies never hold all rows (peak memory).
    let inputs = x.ncols();
    let mut g_ih_hh = Array2::<F>::zeros((gh, inputs + h_out));
    let (mut packed_x, mut packed_h) = (PackedWeights::default(), PackedWeights::default());
    for r0 in (0..rows).step_by(GRADIENT_ROWS) {
        let r = r0..(r0 + GRADIENT_ROWS).min(rows);
        let acc = r0 > 0;
        let (x_r, h_r) = (
            x.slice(s![r.clone(), ..]),
            saved.h_prev.slice(s![r.clone(), ..]),
        );
        if apart {
            let (mut g_ih, mut g_hh) = g_ih_hh.view_mut().split_at(Axis(1), inputs);
            packed_x.repack(&x_r);
            matmul_packed(&mut g_ih, &dxw.slice(s![r.clone(), ..]).t(), &packed_x, acc);
            // Per block: the rows of the other gates come from dXW, the last gate's from dHW's
            // kept part.
            packed_h.repack(&h_r);
            for b in 0..nb {
                let (rest, last) = (
                    blocks.gate(b, g, 0).start..blocks.gate(b, g, g - 2).end,
                    blocks.gate(b, g, g - 1),
                );
                let mut g_rest = g_hh.slice_mut(s![rest.clone(), ..]);
                let dxw_rest = dxw.slice(s![r.clone(), rest]);
                matmul_packed(&mut g_rest, &dxw_rest.t(), &packed_h, acc);
                let mut g_last = g_hh.slice_mut(s![last, ..]);
                let dhn_b = dhn.slice(s![r.clone(), blocks.units(b)]);
                matmul_packed(&mut g_last, &dhn_b.t(), &packed_h, acc);
            }
        } else {
            // One product, so one pass over (and one packing of) dXW^T.
            packed_x.repack_concat(&[x_r, h_r]);
            let dxw_r = dxw.slice(s![r, ..]);
            matmul_packed(&mut g_ih_hh.view_mut(), &dxw_r.t(), &packed_x, acc);
        }
    }
    drop((packed_x, packed_h));
    let (g_ih, g_hh) = g_ih_hh.view().split_at(Axis(1), inputs);
    let (g_bih, g_bhh) = if w.b_ih.is_some() {
        let d_bias = dxw.sum_axis(Axis(0));
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
    }
}
