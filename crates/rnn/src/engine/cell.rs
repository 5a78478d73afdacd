//! Fused gate math of the three cells, forward and backward side by side, one row (one batch
//! element) at a time.
//!
//! The recurrent engine has already computed the two matrix products of a step for one block
//! of `w` hidden units (see `engine/blocks.rs`): `xw = x W_ih^T` and `hw = h W_hh^T`, each
//! `G * w` values per row, gate-major (the `w` values of gate 0, then gate 1, ...). What is
//! left per element is cheap but touches every gate once; doing it row by row, right after
//! the products, keeps it in cache and allocates nothing. The biases are added here (`b`: [`fold_biases`], permuted to
//! the block layout).
//!
//! * RNN: `h' = act(xw + hw + b)`.
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
#[cfg(target_arch = "x86_64")]
use crate::linalg::Isa;

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

/// Row slices of a strided matrix that several threads write disjoint parts of: row `i` is
/// `len` values from `ptr + i * stride`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows<F> {
    ptr: *mut F,
    stride: usize,
    len: usize,
}

impl<F> Rows<F> {
    /// Rows of `len` values, `stride` apart, starting at `ptr`.
    pub(crate) fn new(ptr: *mut F, stride: usize, len: usize) -> Self {
        Rows { ptr, stride, len }
    }

    /// No values (a buffer the cell does not use).
    pub(crate) fn empty() -> Self {
        Rows {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            stride: 0,
            len: 0,
        }
    }

    /// Whether the rows hold no values.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `i`, to write.
    ///
    /// # Safety
    /// Row `i` lies inside the allocation, and nothing else reads or writes it meanwhile.
    #[inline(always)]
    unsafe fn row<'a>(self, i: usize) -> &'a mut [F] {
        if self.len == 0 {
            return &mut [];
        }
        std::slice::from_raw_parts_mut(self.ptr.add(i * self.stride), self.len)
    }

    /// Row `i`, to read.
    ///
    /// # Safety
    /// Row `i` lies inside the allocation, and nothing writes it meanwhile.
    #[inline(always)]
    unsafe fn get<'a>(self, i: usize) -> &'a [F] {
        if self.len == 0 {
            return &[];
        }
        std::slice::from_raw_parts(self.ptr.add(i * self.stride), self.len)
    }
}

/// The operands of one block of a step forward, for rows `0..rows` (see [`forward_block`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForwardBlock<'a, F> {
    /// Active rows of the step.
    pub rows: usize,
    /// (w) per row: the state entering the step.
    pub h_prev: Rows<F>,
    /// (w) per row: the new state (LSTM: `o tanh(c')`, before any projection).
    pub h_new: Rows<F>,
    /// (w) per row, LSTM: the cell state, updated in place.
    pub c: Rows<F>,
    /// (G w) per row: the gate activations, saved for backward (RNN: empty when nothing is
    /// saved).
    pub gates: Rows<F>,
    /// (aux_width w) per row: values saved for backward.
    pub aux: Rows<F>,
    /// (G w) per row: `x W_ih^T` of the block, plus `h W_hh^T` for RNN and LSTM.
    pub xw: Rows<F>,
    /// (G w) per row, GRU: `h W_hh^T` of the block; empty for the other cells.
    pub hw: Rows<F>,
    /// (G w): the folded biases of the block (zeros without bias).
    pub bias: &'a [F],
    /// (w), GRU: `b_hn` of the block (zeros without bias); empty otherwise.
    pub b_hn: &'a [F],
    /// (w) per row: the layer's output rows, which receive a copy of `h_new`; empty for
    /// none (with a projection the output is `h_new W_hr^T`, a later product).
    pub out: Rows<F>,
    /// (w) per row: where the entering state `h_prev` is saved for backward; empty for none.
    pub saved_h_prev: Rows<F>,
}

/// One step forward of one block of units, row by row, compiled for AVX-512 or AVX2 + FMA
/// when the CPU has them.
///
/// # Safety
/// Every row of every operand lies inside its allocation and no other thread touches it
/// while this runs.
pub(crate) unsafe fn forward_block<F: Activations>(cell: Cell, op: &ForwardBlock<'_, F>) {
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
unsafe fn forward_block_avx2<F: Activations>(cell: Cell, op: &ForwardBlock<'_, F>) {
    forward_rows(cell, op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn forward_block_avx512<F: Activations>(cell: Cell, op: &ForwardBlock<'_, F>) {
    forward_rows(cell, op)
}

#[inline(always)]
unsafe fn forward_rows<F: Activations>(cell: Cell, op: &ForwardBlock<'_, F>) {
    for i in 0..op.rows {
        forward_row(
            cell,
            op.h_prev.get(i),
            op.h_new.row(i),
            op.c.row(i),
            op.gates.row(i),
            op.aux.row(i),
            op.xw.get(i),
            op.hw.get(i),
            op.bias,
            op.b_hn,
        );
        // While the row is in L1: the copies for the output and for backward.
        if !op.out.is_empty() {
            op.out.row(i).copy_from_slice(op.h_new.get(i));
        }
        if !op.saved_h_prev.is_empty() {
            op.saved_h_prev.row(i).copy_from_slice(op.h_prev.get(i));
        }
    }
}

/// Splits `v` into `K` consecutive slices of `n` values.
#[inline(always)]
fn parts<F, const K: usize>(v: &[F], n: usize) -> [&[F]; K] {
    std::array::from_fn(|k| &v[k * n..(k + 1) * n])
}

/// Splits `v` into `K` consecutive mutable slices of `n` values.
#[inline(always)]
fn parts_mut<F, const K: usize>(v: &mut [F], n: usize) -> [&mut [F]; K] {
    let mut rest = &mut v[..K * n];
    std::array::from_fn(|_| {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        part
    })
}

/// One row of one block of a step forward (`w = h_new.len()` units).
///
/// * `xw`, `bias`: (G w) pre-activation parts, gate-major: `xw` is `x W_ih^T + h W_hh^T` for
///   RNN and LSTM (the engine accumulates the second product into the first), `x W_ih^T` for
///   GRU, whose `hw` = `h W_hh^T` comes apart (its n gate scales it by `r`); `hw` is empty
///   for the other cells.
/// * `b_hn`: (w) GRU's `b_hn`; empty for other cells.
/// * `h_prev`: (w) the state entering the step (read by GRU); `h_new`: (w) out.
/// * `c`: (w) LSTM cell state, previous in, new out; empty for other cells.
/// * `gates`: (G w) saved activations; `aux`: (aux_width w) saved values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_row<F: Activations>(
    cell: Cell,
    h_prev: &[F],
    h_new: &mut [F],
    c: &mut [F],
    gates: &mut [F],
    aux: &mut [F],
    xw: &[F],
    hw: &[F],
    bias: &[F],
    b_hn: &[F],
) {
    let n = h_new.len();
    match cell.kind {
        CellKind::Rnn => {
            // The activation is the new state; `gates` keeps a copy for backward, and is empty
            // when nothing is saved (inference).
            let (xw, bias) = (&xw[..n], &bias[..n]);
            match cell.nonlinearity {
                Nonlinearity::Tanh => F::tanh_of_sum(h_new, [xw, bias]),
                Nonlinearity::Relu => {
                    for j in 0..n {
                        let v = xw[j] + bias[j]; // NaN propagates, as in PyTorch
                        h_new[j] = if v > F::zero() || v.is_nan() {
                            v
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
        CellKind::Lstm => {
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
        CellKind::Gru => {
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
    }
}

/// The operands of one block of a step backward, for rows `0..rows` (see [`backward_block`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackwardBlock<F> {
    /// Active rows of the step.
    pub rows: usize,
    /// (G w) per row, out: gradient of the input projection's pre-activations.
    pub dxw: Rows<F>,
    /// (G w) per row, out, GRU only: gradient of `h W_hh^T` (differs from `dxw` in the n
    /// block: times `r`); empty for RNN and LSTM, whose `dhw` equals `dxw`.
    pub dhw: Rows<F>,
    /// (w) per row: `dL/dh'` in (LSTM: `dL/d(o tanh c')`); GRU out: the part of `dL/dh` that
    /// bypasses `W_hh` (`dL/dh' z`); other cells leave it unchanged.
    pub dh: Rows<F>,
    /// (w) per row, LSTM: `dL/dc'` in, `dL/dc` out.
    pub dc: Rows<F>,
    /// (G w) per row: saved gate activations.
    pub gates: Rows<F>,
    /// (aux_width w) per row: saved values.
    pub aux: Rows<F>,
    /// (w) per row, GRU: the state that entered the step.
    pub h_prev: Rows<F>,
}

/// One step backward of one block of units, row by row, compiled for AVX-512 or AVX2 + FMA
/// when the CPU has them.
///
/// # Safety
/// As [`forward_block`].
pub(crate) unsafe fn backward_block<F: Activations>(cell: Cell, op: &BackwardBlock<F>) {
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
unsafe fn backward_block_avx2<F: Activations>(cell: Cell, op: &BackwardBlock<F>) {
    backward_rows(cell, op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn backward_block_avx512<F: Activations>(cell: Cell, op: &BackwardBlock<F>) {
    backward_rows(cell, op)
}

#[inline(always)]
unsafe fn backward_rows<F: Activations>(cell: Cell, op: &BackwardBlock<F>) {
    for i in 0..op.rows {
        backward_row(
            cell,
            op.dxw.row(i),
            op.dhw.row(i),
            op.dh.row(i),
            op.dc.row(i),
            op.gates.get(i),
            op.aux.get(i),
            op.h_prev.get(i),
        );
    }
}

/// One row of one block of a step backward (`w = dh.len()` units); operands as in
/// [`BackwardBlock`].
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
            let (dxw, gates) = (&mut dxw[..n], &gates[..n]);
            match cell.nonlinearity {
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
        CellKind::Lstm => {
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
        CellKind::Gru => {
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
}
