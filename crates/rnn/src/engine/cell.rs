//! Fused gate math of the three cells, forward and backward side by side, one row (one batch
//! element) at a time.
//!
//! The recurrent engine has already computed the two matrix products of a step:
//! `xw = x W_ih^T + b` (all gates, biases folded in, see [`fold_biases`]) and `hw = h W_hh^T`.
//! What is left per element is cheap but touches every gate once; doing it in one pass keeps
//! it in cache and allocates nothing. Gate blocks are stacked in PyTorch's order.
//!
//! * RNN: `h' = act(xw + hw)`.
//! * LSTM (gates i, f, g, o): `i = σ(.)`, `f = σ(.)`, `g = tanh(.)`, `o = σ(.)`,
//!   `c' = f c + i g`, `h' = o tanh(c')` (then `h' W_hr^T` with a projection).
//! * GRU (gates r, z, n): `r = σ(.)`, `z = σ(.)`, `n = tanh(xw_n + r (hw_n + b_hn))`,
//!   `h' = n + z (h - n)`, which is `(1 - z) n + z h`.
//!
//! Forward saves the gate activations (and for LSTM `c` and `tanh(c')`, for GRU
//! `hw_n + b_hn`); backward turns `dL/dh'` (and `dL/dc'`) into the gradients of the gate
//! pre-activations, which the engine multiplies back through the weights.

use crate::config::{CellKind, Nonlinearity};
use crate::linalg::Float;

use super::math::Activations;

/// What the engine needs to know about a cell: its kind and, for RNN, its activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// RNN, LSTM or GRU.
    pub kind: CellKind,
    /// The activation of an Elman RNN (ignored by LSTM and GRU).
    pub nonlinearity: Nonlinearity,
}

impl Cell {
    /// Number of gate blocks `G`.
    pub fn gates(self) -> usize {
        self.kind.gates()
    }

    /// Per-row auxiliary values saved for backward, in units of `hidden_size`:
    /// LSTM saves `c` (before the step) and `tanh(c')`, GRU saves `hw_n + b_hn`.
    pub fn aux_width(self) -> usize {
        match self.kind {
            CellKind::Rnn => 0,
            CellKind::Lstm => 2,
            CellKind::Gru => 1,
        }
    }
}

#[inline(always)]
fn sigmoid<F: Activations>(x: F) -> F {
    x.sigmoid()
}

/// The bias added to `x W_ih^T` once for all timesteps: `b_ih + b_hh`, except GRU's `b_hn`,
/// which is multiplied by `r` and so stays in the step (see [`Cell`]).
pub fn fold_biases<F: Float>(kind: CellKind, b_ih: &[F], b_hh: &[F]) -> Vec<F> {
    let gh = b_ih.len();
    let mut folded: Vec<F> = b_ih.to_vec();
    let keep = if kind == CellKind::Gru {
        2 * gh / 3
    } else {
        gh
    };
    for (f, &b) in folded.iter_mut().zip(b_hh).take(keep) {
        *f += b;
    }
    folded
}

/// One row of a step forward.
///
/// * `xw`, `hw`: (G*H) projections of the input and of the previous state.
/// * `b_hn`: (H) GRU's `b_hn` (zeros without bias); empty for other cells.
/// * `h`: (H) RNN and GRU: the previous state in, the new state out.
///   LSTM: the output `o tanh(c')` (before projection).
/// * `c`: (H) LSTM cell state, previous in, new out; empty for other cells.
/// * `gates`: (G*H) saved activations; `aux`: (aux_width*H) saved values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_row<F: Activations>(
    cell: Cell,
    h: &mut [F],
    c: &mut [F],
    gates: &mut [F],
    aux: &mut [F],
    xw: &[F],
    hw: &[F],
    b_hn: &[F],
) {
    let n = h.len();
    match cell.kind {
        CellKind::Rnn => {
            for j in 0..n {
                let pre = xw[j] + hw[j];
                let v = match cell.nonlinearity {
                    Nonlinearity::Tanh => pre.tanh_fast(),
                    Nonlinearity::Relu => pre.max(F::zero()),
                };
                h[j] = v;
                gates[j] = v;
            }
        }
        CellKind::Lstm => {
            let (c_prev, tanh_c) = aux.split_at_mut(n);
            for j in 0..n {
                let i = sigmoid(xw[j] + hw[j]);
                let f = sigmoid(xw[n + j] + hw[n + j]);
                let g = (xw[2 * n + j] + hw[2 * n + j]).tanh_fast();
                let o = sigmoid(xw[3 * n + j] + hw[3 * n + j]);
                c_prev[j] = c[j];
                let c_new = f * c[j] + i * g;
                let tc = c_new.tanh_fast();
                c[j] = c_new;
                tanh_c[j] = tc;
                h[j] = o * tc;
                gates[j] = i;
                gates[n + j] = f;
                gates[2 * n + j] = g;
                gates[3 * n + j] = o;
            }
        }
        CellKind::Gru => {
            for j in 0..n {
                let r = sigmoid(xw[j] + hw[j]);
                let z = sigmoid(xw[n + j] + hw[n + j]);
                let hn = hw[2 * n + j] + b_hn[j];
                let nn = (xw[2 * n + j] + r * hn).tanh_fast();
                h[j] = nn + z * (h[j] - nn);
                gates[j] = r;
                gates[n + j] = z;
                gates[2 * n + j] = nn;
                aux[j] = hn;
            }
        }
    }
}

/// One row of a step backward.
///
/// * `dh`: (H) in: `dL/dh'` (LSTM: `dL/d(o tanh c')`). GRU out: the part of `dL/dh` that
///   bypasses `W_hh` (`dL/dh' * z`); other cells leave it unchanged.
/// * `dc`: (H) LSTM: `dL/dc'` in, `dL/dc` out; empty for other cells.
/// * `dxw`: (G*H) out: gradient of the input projection's pre-activations.
/// * `dhw`: (G*H) out, GRU only (differs from `dxw` in the n block: times `r`); empty for
///   RNN and LSTM, whose `dhw` equals `dxw`.
/// * `gates`, `aux`: saved by [`forward_row`]; `h_prev`: (H) GRU's previous state.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_row<F: Activations>(
    cell: Cell,
    dxw: &mut [F],
    dhw: &mut [F],
    dh: &mut [F],
    dc: &mut [F],
    gates: &[F],
    aux: &[F],
    h_prev: &[F],
) {
    let n = dh.len();
    let one = F::one();
    match cell.kind {
        CellKind::Rnn => {
            for j in 0..n {
                let h = gates[j];
                dxw[j] = match cell.nonlinearity {
                    Nonlinearity::Tanh => dh[j] * (one - h * h),
                    Nonlinearity::Relu => {
                        if h > F::zero() {
                            dh[j]
                        } else {
                            F::zero()
                        }
                    }
                };
            }
        }
        CellKind::Lstm => {
            let (c_prev, tanh_c) = aux.split_at(n);
            for j in 0..n {
                let (i, f, g, o) = (gates[j], gates[n + j], gates[2 * n + j], gates[3 * n + j]);
                let tc = tanh_c[j];
                let d_o = dh[j] * tc;
                let dct = dc[j] + dh[j] * o * (one - tc * tc);
                dc[j] = dct * f;
                dxw[j] = dct * g * i * (one - i);
                dxw[n + j] = dct * c_prev[j] * f * (one - f);
                dxw[2 * n + j] = dct * i * (one - g * g);
                dxw[3 * n + j] = d_o * o * (one - o);
            }
        }
        CellKind::Gru => {
            for j in 0..n {
                let (r, z, nn) = (gates[j], gates[n + j], gates[2 * n + j]);
                let d = dh[j];
                let dn_pre = d * (one - z) * (one - nn * nn);
                let dr_pre = dn_pre * aux[j] * r * (one - r);
                let dz_pre = d * (h_prev[j] - nn) * z * (one - z);
                dxw[j] = dr_pre;
                dxw[n + j] = dz_pre;
                dxw[2 * n + j] = dn_pre;
                dhw[j] = dr_pre;
                dhw[n + j] = dz_pre;
                dhw[2 * n + j] = dn_pre * r;
                dh[j] = d * z;
            }
        }
    }
}

/// Rows per parallel chunk below which a step's gate math stays on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// A whole step forward over `bs` rows: `forward_row` on each row of the contiguous blocks
/// `h` (bs, H), `c` (bs, H or 0), `gates` (bs, G*H), `aux`, `xw`, `hw` (bs, G*H).
/// Large steps are split across threads; the kernel runs with AVX2+FMA when the CPU has them.
#[allow(clippy::too_many_arguments)]
pub fn forward_step<F: Activations>(
    cell: Cell,
    hidden: usize,
    h: &mut [F],
    c: &mut [F],
    gates: &mut [F],
    aux: &mut [F],
    xw: &[F],
    hw: &[F],
    b_hn: &[F],
) {
    let gh = cell.gates() * hidden;
    let bs = xw.len() / gh;
    if bs >= 2 && bs * gh >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        let half = bs / 2;
        let cw = c.len() / bs;
        let aw = aux.len() / bs;
        let (h1, h2) = h.split_at_mut(half * hidden);
        let (c1, c2) = c.split_at_mut(half * cw);
        let (g1, g2) = gates.split_at_mut(half * gh);
        let (a1, a2) = aux.split_at_mut(half * aw);
        let (x1, x2) = xw.split_at(half * gh);
        let (w1, w2) = hw.split_at(half * gh);
        rayon::join(
            || forward_step(cell, hidden, h1, c1, g1, a1, x1, w1, b_hn),
            || forward_step(cell, hidden, h2, c2, g2, a2, x2, w2, b_hn),
        );
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::math::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { forward_rows_avx2(cell, hidden, h, c, gates, aux, xw, hw, b_hn) };
        return;
    }
    forward_rows(cell, hidden, h, c, gates, aux, xw, hw, b_hn);
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_rows<F: Activations>(
    cell: Cell,
    hidden: usize,
    h: &mut [F],
    c: &mut [F],
    gates: &mut [F],
    aux: &mut [F],
    xw: &[F],
    hw: &[F],
    b_hn: &[F],
) {
    let gh = cell.gates() * hidden;
    let bs = xw.len() / gh;
    let cw = c.len() / bs.max(1);
    let aw = aux.len() / bs.max(1);
    for b in 0..bs {
        forward_row(
            cell,
            &mut h[b * hidden..(b + 1) * hidden],
            &mut c[b * cw..(b + 1) * cw],
            &mut gates[b * gh..(b + 1) * gh],
            &mut aux[b * aw..(b + 1) * aw],
            &xw[b * gh..(b + 1) * gh],
            &hw[b * gh..(b + 1) * gh],
            b_hn,
        );
    }
}

/// A whole step backward over `bs` rows: `backward_row` on each row of the contiguous
/// blocks `dxw`, `dhw` (bs, G*H; `dhw` empty except GRU), `dh`, `dc` (bs, H or 0), `gates`,
/// `aux`, `h_prev` (bs, H; read by GRU only).
#[allow(clippy::too_many_arguments)]
pub fn backward_step<F: Activations>(
    cell: Cell,
    hidden: usize,
    dxw: &mut [F],
    dhw: &mut [F],
    dh: &mut [F],
    dc: &mut [F],
    gates: &[F],
    aux: &[F],
    h_prev: &[F],
) {
    let gh = cell.gates() * hidden;
    let bs = dxw.len() / gh;
    if bs >= 2 && bs * gh >= PARALLEL_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        let half = bs / 2;
        let (cw, aw, hw_w, pw) = (
            dc.len() / bs,
            aux.len() / bs,
            dhw.len() / bs,
            h_prev.len() / bs,
        );
        let (x1, x2) = dxw.split_at_mut(half * gh);
        let (w1, w2) = dhw.split_at_mut(half * hw_w);
        let (h1, h2) = dh.split_at_mut(half * hidden);
        let (c1, c2) = dc.split_at_mut(half * cw);
        let (g1, g2) = gates.split_at(half * gh);
        let (a1, a2) = aux.split_at(half * aw);
        let (p1, p2) = h_prev.split_at(half * pw);
        rayon::join(
            || backward_step(cell, hidden, x1, w1, h1, c1, g1, a1, p1),
            || backward_step(cell, hidden, x2, w2, h2, c2, g2, a2, p2),
        );
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::math::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { backward_rows_avx2(cell, hidden, dxw, dhw, dh, dc, gates, aux, h_prev) };
        return;
    }
    backward_rows(cell, hidden, dxw, dhw, dh, dc, gates, aux, h_prev);
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_rows<F: Activations>(
    cell: Cell,
    hidden: usize,
    dxw: &mut [F],
    dhw: &mut [F],
    dh: &mut [F],
    dc: &mut [F],
    gates: &[F],
    aux: &[F],
    h_prev: &[F],
) {
    let gh = cell.gates() * hidden;
    let bs = dxw.len() / gh;
    let (cw, aw, hw_w, pw) = (
        dc.len() / bs.max(1),
        aux.len() / bs.max(1),
        dhw.len() / bs.max(1),
        h_prev.len() / bs.max(1),
    );
    for b in 0..bs {
        backward_row(
            cell,
            &mut dxw[b * gh..(b + 1) * gh],
            &mut dhw[b * hw_w..(b + 1) * hw_w],
            &mut dh[b * hidden..(b + 1) * hidden],
            &mut dc[b * cw..(b + 1) * cw],
            &gates[b * gh..(b + 1) * gh],
            &aux[b * aw..(b + 1) * aw],
            &h_prev[b * pw..(b + 1) * pw],
        );
    }
}

/// [`forward_rows`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_rows_avx2<F: Activations>(
    cell: Cell,
    hidden: usize,
    h: &mut [F],
    c: &mut [F],
    gates: &mut [F],
    aux: &mut [F],
    xw: &[F],
    hw: &[F],
    b_hn: &[F],
) {
    forward_rows(cell, hidden, h, c, gates, aux, xw, hw, b_hn)
}

/// [`backward_rows`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_rows_avx2<F: Activations>(
    cell: Cell,
    hidden: usize,
    dxw: &mut [F],
    dhw: &mut [F],
    dh: &mut [F],
    dc: &mut [F],
    gates: &[F],
    aux: &[F],
    h_prev: &[F],
) {
    backward_rows(cell, hidden, dxw, dhw, dh, dc, gates, aux, h_prev)
}
