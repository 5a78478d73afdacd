//! The GRU cell (`torch.nn.GRU`), gates r, z, n in PyTorch's order:
//!
//! ```text
//! r = σ(xw_r + hw_r + b_r),  z = σ(xw_z + hw_z + b_z)     (b = b_ih + b_hh)
//! n = tanh(xw_n + b_in + r (hw_n + b_hn))
//! h' = n + z (h - n)                                        (= (1 - z) n + z h)
//! ```
//!
//! The n gate scales its recurrent part by `r`, so `hw = h W_hh^T` stays apart from `xw` and
//! `b_hn` stays in the step; forward saves `hw_n + b_hn` as its auxiliary value. Backward:
//! `d n = dL/dh' (1 - z) (1 - n^2)`, `d r = d n (hw_n + b_hn) r (1 - r)`,
//! `d z = dL/dh' (h - n) z (1 - z)`; the gradient of `hw` equals that of `xw` but for the n
//! gate, `d n r`, which gives the n rows of `dW_hh` and `d b_hh`; `dL/dh' z` reaches `h`
//! directly.
//!
//! **Reset before the product** ([`GruResetBefore`], `linear_before_reset = false`: ONNX's
//! `linear_before_reset = 0`, the GRU of Cho et al. 2014, Keras's `reset_after=False`), same
//! parameters:
//!
//! ```text
//! r = σ(xw_r + hw_r + b_r),  z = σ(xw_z + hw_z + b_z)
//! m = r h
//! n = tanh(xw_n + b_in + m W_hn^T + b_hn)
//! h' = n + z (h - n)
//! ```
//!
//! `n`'s recurrent product reads `m`, which needs `r` of every unit, so a step runs in two
//! phases ([`Description::late_last_gate`]): `r`, `z` and `m`, then `n` and `h'`. Every
//! product accumulates into `xw` and both biases fold. Backward: `d n = dL/dh' (1 - z)
//! (1 - n^2)`, `d z = dL/dh' (h - n) z (1 - z)`; then `dL/dm = d n W_hn`, `d r = dL/dm h
//! r (1 - r)`, and `dL/dh' z + dL/dm r` reaches `h` directly. The n rows of `dW_hh` are
//! `d n^T M` with `M = r h` rebuilt from the saved `r` and `h`.

use ndarray::{s, Array2, ArrayView2};

use super::{parts, parts_mut, BackwardRow, CellMath, Description, ForwardRow, Param, Variant};
use crate::config::CellKind;
use crate::engine::math::Activations;
use crate::linalg::Float;

/// The GRU cell's math.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gru;

impl CellMath for Gru {
    const DESCRIPTION: Description = Description {
        kind: CellKind::Gru,
        variant: None,
        name: "gru",
        torch_name: "GRU",
        torch_cell_name: "GRUCell",
        gate_names: &["r", "z", "n"],
        aux_width: 1,
        cell_state: false,
        projection: false,
        nonlinearity: false,
        gates_in_step: true,
        last_gate_recurrent_apart: true,
        direct_state_path: true,
        late_last_gate: false,
        unit_weights: 0,
        whole_rows: false,
        products_apart: false,
        row_grads: 0,
        params: &[
            Param::WeightIh,
            Param::WeightHh,
            Param::BiasIh,
            Param::BiasHh,
        ],
    };

    fn new(_cell: super::Cell) -> Self {
        Gru
    }

    #[inline(always)]
    fn forward_row<F: Activations>(self, row: ForwardRow<'_, F>) {
        let ForwardRow {
            h_prev,
            h_new,
            gates,
            aux,
            xw,
            hw,
            bias,
            step_bias: b_hn,
            ..
        } = row;
        let n = h_new.len();
        let (gates, xw, hw, bias) = (
            &mut gates[..3 * n],
            &xw[..3 * n],
            &hw[..3 * n],
            &bias[..3 * n],
        );
        F::sigmoid_of_sum(&mut gates[..2 * n], [xw, hw, bias]);
        let [xn, hn] = [&xw[2 * n..], &hw[2 * n..]];
        let bn = &bias[2 * n..];
        let (rz, gn) = gates.split_at_mut(2 * n);
        let [gr, gz] = parts(rz, n);
        let (aux, b_hn, h_prev, gn) = (&mut aux[..n], &b_hn[..n], &h_prev[..n], &mut gn[..n]);
        for j in 0..n {
            let hn_j = hn[j] + b_hn[j];
            gn[j] = xn[j] + bn[j] + gr[j] * hn_j;
            aux[j] = hn_j;
        }
        F::tanh_in_place(gn);
        for j in 0..n {
            h_new[j] = gn[j] + gz[j] * (h_prev[j] - gn[j]);
        }
    }

    #[inline(always)]
    fn backward_row<F: Activations>(self, row: BackwardRow<'_, F>) {
        let BackwardRow {
            dxw,
            dhw,
            dh,
            gates,
            aux,
            h_prev,
            ..
        } = row;
        gru_backward(dxw, dhw, dh, gates, aux, h_prev);
    }
}

/// The reset-before GRU's math (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GruResetBefore;

impl CellMath for GruResetBefore {
    const DESCRIPTION: Description = Description {
        variant: Some(Variant {
            option: "linear_before_reset",
            chosen: |c| !c.linear_before_reset,
        }),
        aux_width: 0,
        last_gate_recurrent_apart: false,
        late_last_gate: true,
        ..Gru::DESCRIPTION
    };

    fn new(_cell: super::Cell) -> Self {
        GruResetBefore
    }

    /// `r`, `z` and `m = r h`.
    #[inline(always)]
    fn forward_row<F: Activations>(self, row: ForwardRow<'_, F>) {
        let ForwardRow {
            h_prev,
            gates,
            xw,
            bias,
            m,
            ..
        } = row;
        gru_reset_before_forward(h_prev, gates, xw, bias, m);
    }

    /// `n` and `h'`, with `xw_n` holding `x W_in^T + m W_hn^T`.
    #[inline(always)]
    fn forward_row_late<F: Activations>(self, row: ForwardRow<'_, F>) {
        let ForwardRow {
            h_prev,
            h_new,
            gates,
            xw,
            bias,
            ..
        } = row;
        gru_reset_before_forward_late(h_prev, h_new, gates, xw, bias);
    }

    /// `d n` and `d z`; `dh` keeps `dL/dh'` for the second phase.
    #[inline(always)]
    fn backward_row<F: Activations>(self, row: BackwardRow<'_, F>) {
        let BackwardRow {
            dxw,
            dh,
            gates,
            h_prev,
            ..
        } = row;
        gru_reset_before_backward(dxw, dh, gates, h_prev);
    }

    /// `d r` from `dL/dm`, and the direct part of `dL/dh`.
    #[inline(always)]
    fn backward_row_late<F: Activations>(self, row: BackwardRow<'_, F>) {
        let BackwardRow {
            dxw,
            dh,
            gates,
            h_prev,
            dm,
            ..
        } = row;
        gru_reset_before_backward_late(dxw, dh, gates, h_prev, dm);
    }

    fn late_state<F: Float>(
        self,
        gates: ArrayView2<'_, F>,
        h_prev: ArrayView2<'_, F>,
    ) -> Array2<F> {
        let w = h_prev.ncols();
        &gates.slice(s![.., ..w]) * &h_prev
    }
}

/// [`Gru`]'s `backward_row`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn gru_backward<F: Activations>(
    dxw: &mut [F],
    dhw: &mut [F],
    dh: &mut [F],
    gates: &[F],
    aux: &[F],
    h_prev: &[F],
) {
    let n = dh.len();
    let one = F::one();
    let [gr, gz, gn] = parts(gates, n);
    let [dxr, dxz, dxn] = parts_mut(dxw, n);
    let [dhr, dhz, dhn] = parts_mut(dhw, n);
    let (aux, h_prev) = (&aux[..n], &h_prev[..n]);
    for j in 0..n {
        let (r, z, nn) = (gr[j], gz[j], gn[j]);
        let d = dh[j];
        let dn_pre = d * (one - z) * (one - nn * nn);
        let dr_pre = dn_pre * aux[j] * r * (one - r);
        let dz_pre = d * (h_prev[j] - nn) * z * (one - z);
        dxr[j] = dr_pre;
        dxz[j] = dz_pre;
        dxn[j] = dn_pre;
        dhr[j] = dr_pre;
        dhz[j] = dz_pre;
        dhn[j] = dn_pre * r;
        dh[j] = d * z;
    }
}

/// [`GruResetBefore`]'s `forward_row`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn gru_reset_before_forward<F: Activations>(
    h_prev: &[F],
    gates: &mut [F],
    xw: &[F],
    bias: &[F],
    m: &mut [F],
) {
    let n = m.len();
    let rz = &mut gates[..2 * n];
    F::sigmoid_of_sum(rz, [&xw[..2 * n], &bias[..2 * n]]);
    let (gr, h_prev) = (&rz[..n], &h_prev[..n]);
    for j in 0..n {
        m[j] = gr[j] * h_prev[j];
    }
}

/// [`GruResetBefore`]'s `forward_row_late`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn gru_reset_before_forward_late<F: Activations>(
    h_prev: &[F],
    h_new: &mut [F],
    gates: &mut [F],
    xw: &[F],
    bias: &[F],
) {
    let n = h_new.len();
    let (rz, gn) = gates[..3 * n].split_at_mut(2 * n);
    let gz = &rz[n..];
    F::tanh_of_sum(gn, [&xw[2 * n..3 * n], &bias[2 * n..3 * n]]);
    let h_prev = &h_prev[..n];
    for j in 0..n {
        h_new[j] = gn[j] + gz[j] * (h_prev[j] - gn[j]);
    }
}

/// [`GruResetBefore`]'s `backward_row`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn gru_reset_before_backward<F: Activations>(
    dxw: &mut [F],
    dh: &mut [F],
    gates: &[F],
    h_prev: &[F],
) {
    let n = dh.len();
    let one = F::one();
    let [_, gz, gn] = parts(gates, n);
    let [_, dxz, dxn] = parts_mut(dxw, n);
    let h_prev = &h_prev[..n];
    for j in 0..n {
        let (z, nn) = (gz[j], gn[j]);
        let d = dh[j];
        dxn[j] = d * (one - z) * (one - nn * nn);
        dxz[j] = d * (h_prev[j] - nn) * z * (one - z);
    }
}

/// [`GruResetBefore`]'s `backward_row_late`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn gru_reset_before_backward_late<F: Activations>(
    dxw: &mut [F],
    dh: &mut [F],
    gates: &[F],
    h_prev: &[F],
    dm: &[F],
) {
    let n = dh.len();
    let one = F::one();
    let [gr, gz, _] = parts(gates, n);
    let dxr = &mut dxw[..n];
    let (h_prev, dm) = (&h_prev[..n], &dm[..n]);
    for j in 0..n {
        let r = gr[j];
        dxr[j] = dm[j] * h_prev[j] * r * (one - r);
        dh[j] = dh[j] * gz[j] + dm[j] * r;
    }
}
