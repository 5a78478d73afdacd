//! The LSTM cell (`torch.nn.LSTM`), gates i, f, g, o in PyTorch's order:
//!
//! ```text
//! i = σ(.), f = σ(.), g = tanh(.), o = σ(.)      (. = x W_ih^T + b_ih + h W_hh^T + b_hh)
//! c' = f c + i g
//! h' = o tanh(c')                                 (then h' W_hr^T with proj_size)
//! ```
//!
//! Forward saves the gates and, as auxiliary values, `c` (before the step) and `tanh(c')`.
//! Backward, with `dc_t = dL/dc' + dL/dh' o (1 - tanh(c')^2)`:
//! `dL/dc = dc_t f`, `d i = dc_t g i (1 - i)`, `d f = dc_t c f (1 - f)`,
//! `d g = dc_t i (1 - g^2)`, `d o = dL/dh' tanh(c') o (1 - o)`.
//! Both biases fold into the products. With a projection, `dW_hr = dL/dh^T m` where
//! `m = o tanh(c')` is rebuilt from the saved gate `o` and `tanh(c')`.
//!
//! **With peepholes** ([`LstmPeephole`], `"peephole": true`, ONNX's definition), per-unit
//! weights `[p_i; p_f; p_o]` (`weight_ph`, zero-initialised) let the gates see the cell state:
//!
//! ```text
//! i = σ(. + p_i c), f = σ(. + p_f c), g = tanh(.), c' = f c + i g
//! o = σ(. + p_o c'), h' = o tanh(c')
//! ```
//!
//! Forward also saves `c'`. Backward: `d o = dL/dh' tanh(c') o (1 - o)`, `dc_t = dL/dc' +
//! dL/dh' o (1 - tanh(c')^2) + d o p_o`, then `d i`, `d f`, `d g` as above, and
//! `dL/dc = dc_t f + d i p_i + d f p_f`; `d p_i = Σ d i c`, `d p_f = Σ d f c`,
//! `d p_o = Σ d o c'` over all rows.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};

use super::{parts, parts_mut, BackwardRow, CellMath, Description, ForwardRow, Param, Variant};
use crate::config::CellKind;
use crate::engine::math::Activations;
use crate::linalg::Float;

/// The LSTM cell's math.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lstm;

impl CellMath for Lstm {
    const DESCRIPTION: Description = Description {
        kind: CellKind::Lstm,
        variant: None,
        name: "lstm",
        torch_name: "LSTM",
        torch_cell_name: "LSTMCell",
        gate_names: &["i", "f", "g", "o"],
        aux_width: 2,
        cell_state: true,
        projection: true,
        nonlinearity: false,
        gates_in_step: true,
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
            Param::WeightHr,
        ],
    };

    fn new(_cell: super::Cell) -> Self {
        Lstm
    }

    #[inline(always)]
    fn forward_row<F: Activations>(self, row: ForwardRow<'_, F>) {
        let ForwardRow {
            h_new,
            c,
            gates,
            aux,
            xw,
            bias,
            ..
        } = row;
        lstm_forward(h_new, c, gates, aux, xw, bias);
    }

    #[inline(always)]
    fn backward_row<F: Activations>(self, row: BackwardRow<'_, F>) {
        let BackwardRow {
            dxw,
            dh,
            dc,
            gates,
            aux,
            ..
        } = row;
        lstm_backward(dxw, dh, dc, gates, aux);
    }

    fn unprojected_state<F: Float>(
        self,
        gates: ArrayView2<'_, F>,
        aux: ArrayView2<'_, F>,
    ) -> Array2<F> {
        let w = gates.ncols() / 4;
        let o = gates.slice(s![.., 3 * w..4 * w]);
        let tanh_c = aux.slice(s![.., w..2 * w]);
        &o * &tanh_c
    }
}

/// The peephole LSTM's math (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LstmPeephole;

impl CellMath for LstmPeephole {
    const DESCRIPTION: Description = Description {
        variant: Some(Variant {
            option: "peephole",
            chosen: |c| c.peephole,
        }),
        aux_width: 3,
        unit_weights: 3,
        params: &[
            Param::WeightIh,
            Param::WeightHh,
            Param::BiasIh,
            Param::BiasHh,
            Param::WeightHr,
            Param::WeightPh,
        ],
        ..Lstm::DESCRIPTION
    };

    fn new(_cell: super::Cell) -> Self {
        LstmPeephole
    }

    #[inline(always)]
    fn forward_row<F: Activations>(self, row: ForwardRow<'_, F>) {
        let ForwardRow {
            h_new,
            c,
            gates,
            aux,
            xw,
            bias,
            unit_weights,
            ..
        } = row;
        lstm_peephole_forward(h_new, c, gates, aux, xw, bias, unit_weights);
    }

    #[inline(always)]
    fn backward_row<F: Activations>(self, row: BackwardRow<'_, F>) {
        let BackwardRow {
            dxw,
            dh,
            dc,
            gates,
            aux,
            unit_weights,
            ..
        } = row;
        lstm_peephole_backward(dxw, dh, dc, gates, aux, unit_weights);
    }

    fn unprojected_state<F: Float>(
        self,
        gates: ArrayView2<'_, F>,
        aux: ArrayView2<'_, F>,
    ) -> Array2<F> {
        let w = gates.ncols() / 4;
        &gates.slice(s![.., 3 * w..4 * w]) * &aux.slice(s![.., w..2 * w])
    }

    fn unit_weight_grads<F: Float>(
        self,
        dxw: ArrayView2<'_, F>,
        _drow: ArrayView2<'_, F>,
        aux: ArrayView2<'_, F>,
    ) -> Array1<F> {
        let w = dxw.ncols() / 4;
        let (c_prev, c_new) = (aux.slice(s![.., ..w]), aux.slice(s![.., 2 * w..3 * w]));
        let sum = |d: ArrayView2<'_, F>, c: ArrayView2<'_, F>| (&d * &c).sum_axis(Axis(0));
        let mut g = Array1::zeros(3 * w);
        g.slice_mut(s![..w])
            .assign(&sum(dxw.slice(s![.., ..w]), c_prev));
        g.slice_mut(s![w..2 * w])
            .assign(&sum(dxw.slice(s![.., w..2 * w]), c_prev));
        g.slice_mut(s![2 * w..])
            .assign(&sum(dxw.slice(s![.., 3 * w..]), c_new));
        g
    }
}

/// [`Lstm`]'s `forward_row`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn lstm_forward<F: Activations>(
    h_new: &mut [F],
    c: &mut [F],
    gates: &mut [F],
    aux: &mut [F],
    xw: &[F],
    bias: &[F],
) {
    let n = h_new.len();
    // Two simple passes (activations gate by gate, then the state update) keep few
    // streams live per loop, so the compiler keeps them in vector registers.
    let (gates, xw, bias) = (&mut gates[..4 * n], &xw[..4 * n], &bias[..4 * n]);
    let [g_if, g_g, g_o] = [0..2 * n, 2 * n..3 * n, 3 * n..4 * n];
    F::sigmoid_of_sum(&mut gates[g_if.clone()], [&xw[g_if.clone()], &bias[g_if]]);
    F::tanh_of_sum(&mut gates[g_g.clone()], [&xw[g_g.clone()], &bias[g_g]]);
    F::sigmoid_of_sum(&mut gates[g_o.clone()], [&xw[g_o.clone()], &bias[g_o]]);
    let [gi, gf, gg, go] = parts(gates, n);
    let [c_prev, tanh_c] = parts_mut(aux, n);
    let c = &mut c[..n];
    for j in 0..n {
        let cp = c[j];
        let c_new = gf[j] * cp + gi[j] * gg[j];
        c_prev[j] = cp;
        c[j] = c_new;
        tanh_c[j] = c_new;
    }
    F::tanh_in_place(tanh_c);
    for j in 0..n {
        h_new[j] = go[j] * tanh_c[j];
    }
}

/// [`Lstm`]'s `backward_row`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn lstm_backward<F: Activations>(
    dxw: &mut [F],
    dh: &mut [F],
    dc: &mut [F],
    gates: &[F],
    aux: &[F],
) {
    let n = dh.len();
    let one = F::one();
    let [gi, gf, gg, go] = parts(gates, n);
    let [c_prev, tanh_c] = parts(aux, n);
    let [di, df, dg, d_o] = parts_mut(dxw, n);
    let dc = &mut dc[..n];
    for j in 0..n {
        let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
        let tc = tanh_c[j];
        let dct = dc[j] + dh[j] * o * (one - tc * tc);
        dc[j] = dct * f;
        di[j] = dct * g * i * (one - i);
        df[j] = dct * c_prev[j] * f * (one - f);
        dg[j] = dct * i * (one - g * g);
        d_o[j] = dh[j] * tc * o * (one - o);
    }
}

/// [`LstmPeephole`]'s `forward_row`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn lstm_peephole_forward<F: Activations>(
    h_new: &mut [F],
    c: &mut [F],
    gates: &mut [F],
    aux: &mut [F],
    xw: &[F],
    bias: &[F],
    unit_weights: &[F],
) {
    let n = h_new.len();
    let [gi, gf, gg, go] = parts_mut(gates, n);
    let [xi, xf, xg, xo] = parts(xw, n);
    let [bi, bf, bg, bo] = parts(bias, n);
    let [p_i, p_f, p_o] = parts(unit_weights, n);
    let [c_prev, tanh_c, c_new] = parts_mut(aux, n);
    let c = &mut c[..n];
    // The peephole terms of i and f, in the slots of tanh(c') and c' until those are made.
    for j in 0..n {
        tanh_c[j] = p_i[j] * c[j];
        c_new[j] = p_f[j] * c[j];
    }
    F::sigmoid_of_sum(gi, [xi, bi, &*tanh_c]);
    F::sigmoid_of_sum(gf, [xf, bf, &*c_new]);
    F::tanh_of_sum(gg, [xg, bg]);
    for j in 0..n {
        let cp = c[j];
        let cn = gf[j] * cp + gi[j] * gg[j];
        c_prev[j] = cp;
        c[j] = cn;
        c_new[j] = cn;
        tanh_c[j] = cn;
        // o's peephole term, in h' until h' is made.
        h_new[j] = p_o[j] * cn;
    }
    F::sigmoid_of_sum(go, [xo, bo, &*h_new]);
    F::tanh_in_place(tanh_c);
    for j in 0..n {
        h_new[j] = go[j] * tanh_c[j];
    }
}

/// [`LstmPeephole`]'s `backward_row`, its operands as arguments (why: the rules in [`super`]'s docs).
#[inline(always)]
fn lstm_peephole_backward<F: Activations>(
    dxw: &mut [F],
    dh: &mut [F],
    dc: &mut [F],
    gates: &[F],
    aux: &[F],
    unit_weights: &[F],
) {
    let n = dh.len();
    let one = F::one();
    let [gi, gf, gg, go] = parts(gates, n);
    let [c_prev, tanh_c, _] = parts(aux, n);
    let [p_i, p_f, p_o] = parts(unit_weights, n);
    let [di, df, dg, d_o] = parts_mut(dxw, n);
    let dc = &mut dc[..n];
    for j in 0..n {
        let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
        let tc = tanh_c[j];
        let do_pre = dh[j] * tc * o * (one - o);
        let dct = dc[j] + dh[j] * o * (one - tc * tc) + do_pre * p_o[j];
        let di_pre = dct * g * i * (one - i);
        let df_pre = dct * c_prev[j] * f * (one - f);
        dc[j] = dct * f + di_pre * p_i[j] + df_pre * p_f[j];
        di[j] = di_pre;
        df[j] = df_pre;
        dg[j] = dct * i * (one - g * g);
        d_o[j] = do_pre;
    }
}
