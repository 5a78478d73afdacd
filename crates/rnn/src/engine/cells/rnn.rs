//! The Elman RNN cell (`torch.nn.RNN`): `h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)`, one
//! gate, `act` = tanh or relu.
//!
//! Forward: the activation is the new state; the gate buffer keeps a copy for backward (and
//! is empty in inference). Backward: `dL/d pre = dL/dh' act'(pre)`, with `tanh' = 1 - h'^2`
//! and `relu' = [h' > 0]`. Nothing auxiliary is saved; both biases fold into the product.

use super::{BackwardRow, CellMath, Description, ForwardRow, Param};
use crate::config::{CellKind, Nonlinearity};
use crate::engine::math::Activations;

/// The Elman cell's math: its activation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Elman {
    nonlinearity: Nonlinearity,
}

impl CellMath for Elman {
    const DESCRIPTION: Description = Description {
        kind: CellKind::Rnn,
        variant: None,
        name: "rnn",
        torch_name: "RNN",
        torch_cell_name: "RNNCell",
        gate_names: &["h"],
        aux_width: 0,
        cell_state: false,
        projection: false,
        nonlinearity: true,
        gates_in_step: false,
        last_gate_recurrent_apart: false,
        direct_state_path: false,
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

    fn new(cell: super::Cell) -> Self {
        Elman {
            nonlinearity: cell.nonlinearity,
        }
    }

    #[inline(always)]
    fn forward_row<F: Activations>(self, row: ForwardRow<'_, F>) {
        let ForwardRow {
            h_new,
            gates,
            xw,
            bias,
            ..
        } = row;
        let n = h_new.len();
        let (xw, bias) = (&xw[..n], &bias[..n]);
        match self.nonlinearity {
            Nonlinearity::Tanh => F::tanh_of_sum(h_new, [xw, bias]),
            Nonlinearity::Relu => {
                for j in 0..n {
                    // As PyTorch's relu, NaN stays NaN (a float max would drop it).
                    let x = xw[j] + bias[j];
                    h_new[j] = if x > F::zero() || x.is_nan() {
                        x
                    } else {
                        F::zero()
                    };
                }
            }
        }
        if !gates.is_empty() {
            gates[..n].copy_from_slice(h_new);
        }
    }

    #[inline(always)]
    fn backward_row<F: Activations>(self, row: BackwardRow<'_, F>) {
        let BackwardRow { dxw, dh, gates, .. } = row;
        let n = dh.len();
        let one = F::one();
        let (dxw, gates) = (&mut dxw[..n], &gates[..n]);
        match self.nonlinearity {
            Nonlinearity::Tanh => {
                for j in 0..n {
                    let h = gates[j];
                    dxw[j] = dh[j] * (one - h * h);
                }
            }
            Nonlinearity::Relu => {
                for j in 0..n {
                    dxw[j] = if gates[j] > F::zero() {
                        dh[j]
                    } else {
                        F::zero()
                    };
                }
            }
        }
    }
}
