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

use super::{parts, parts_mut, BackwardRow, CellMath, Description, ForwardRow, Param};
use crate::engine::math::Activations;

/// The GRU cell's math.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gru;

impl CellMath for Gru {
    const DESCRIPTION: Description = Description {
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
}
