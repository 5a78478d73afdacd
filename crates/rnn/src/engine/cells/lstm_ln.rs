//! The layer-normalised LSTM (`"layer_norm": true`; Ba et al. 2016, as Haste's
//! LayerNormLSTM), gates i, f, g, o in PyTorch's order:
//!
//! ```text
//! . = LN(x W_ih^T; g_ih) + LN(h W_hh^T; g_hh) + b_ih + b_hh
//! i = σ(.), f = σ(.), g = tanh(.), o = σ(.)
//! c' = f c + i g                                  (carried unnormalised)
//! h' = o tanh(LN(c'; g_c, β_c))                   (then h' W_hr^T with proj_size)
//! ```
//!
//! where `LN(v; g, β) = (v - mean(v)) / sqrt(var(v) + 1e-5) g + β` over all the units of a
//! row (`4 H` values for the products, `H` for `c'`; biased variance, as
//! `torch.nn.LayerNorm`). The statistics span every hidden unit, so the cell takes whole rows
//! (its description's `whole_rows`: one block), and the two products stay apart
//! (`products_apart`: `xw` holds `x W_ih^T`, `hw` holds `h W_hh^T`). The per-unit weights are
//! `[g_ih (4 H); g_hh (4 H); g_c (H); β_c (H)]` (`ln_ih_weight`, `ln_hh_weight`,
//! `ln_c_weight`, `ln_c_bias`).
//!
//! Forward saves the gates and, as auxiliary values, `[c; t; c'; a; b]` with `t =
//! tanh(LN(c'))`, `a = x W_ih^T` and `b = h W_hh^T` (4 H each); backward recomputes the
//! statistics from them (the same code, so the same values). Backward, with `x̂` the
//! normalised value of `x` and `r` its `1 / sqrt(var + eps)`:
//!
//! ```text
//! d o = dL/dh' t o (1 - o),  dy = dL/dh' o (1 - t^2),  dĉ = dy g_c
//! dc_t = dL/dc' + r_c (dĉ - mean(dĉ) - ĉ mean(dĉ ĉ))
//! dL/dc = dc_t f, d i = dc_t g i (1 - i), d f = dc_t c f (1 - f), d g = dc_t i (1 - g^2)
//! dp = [d i; d f; d g; d o]          (dL/d the pre-activations; bias gradients: Σ dp)
//! dL/da = r_a (dp g_ih - mean(dp g_ih) - â mean(dp g_ih â)), likewise dL/db with g_hh
//! d g_ih = Σ dp â, d g_hh = Σ dp b̂, d g_c = Σ dy ĉ, d β_c = Σ dy   (over all rows)
//! ```
//!
//! `dL/da` is `dxw`, `dL/db` is `dhw`; the row gradients (`drow`) are `[dp (4 H); dy (H)]`.

use ndarray::{s, Array1, Array2, ArrayView2};
use rayon::prelude::*;

use super::lstm::Lstm;
use super::{parts, parts_mut, BackwardRow, CellMath, Description, ForwardRow, Param, Variant};
use crate::engine::math::Activations;
use crate::linalg::Float;

/// `torch.nn.LayerNorm`'s default epsilon.
const EPS: f64 = 1e-5;

/// Partial sums kept apart in [`sum_of`], so that the loops vectorise.
const LANES: usize = 16;

/// `Σ_j f(v_0[j], v_1[j], ..)` over the `n = v_0.len()` values of the slices `v`, in
/// [`LANES`] partial sums (a fixed order, so every caller gets the same value for the same
/// inputs; every slice holds at least `n` values).
#[inline(always)]
fn sum_of<F: Float, const N: usize>(v: [&[F]; N], f: impl Fn([F; N]) -> F) -> F {
    let n = v[0].len();
    let v = v.map(|s| &s[..n]);
    let mut acc = [F::zero(); LANES];
    let whole = n - n % LANES;
    for j0 in (0..whole).step_by(LANES) {
        let chunk = v.map(|s| &s[j0..j0 + LANES]);
        for (k, a) in acc.iter_mut().enumerate() {
            *a += f(chunk.map(|c| c[k]));
        }
    }
    let mut total = F::zero();
    for j in whole..n {
        total += f(v.map(|s| s[j]));
    }
    acc.iter().fold(total, |s, &a| s + a)
}

/// The mean of `v` and `1 / sqrt(var + eps)` with the biased variance, in two passes.
#[inline(always)]
fn stats<F: Float>(v: &[F]) -> (F, F) {
    let n = <F as Float>::from_f64(v.len() as f64);
    let mean = sum_of([v], |[x]| x) / n;
    let var = sum_of([v], |[x]| (x - mean) * (x - mean)) / n;
    (mean, F::one() / (var + <F as Float>::from_f64(EPS)).sqrt())
}

/// `dL/dv` of `y = LN(v; g)` from `dy`: `r (dy g - mean(dy g) - v̂ mean(dy g v̂))`, into `out`.
#[inline(always)]
fn norm_backward<F: Float>(out: &mut [F], dy: &[F], g: &[F], v: &[F]) {
    let m = out.len();
    let (dy, g, v) = (&dy[..m], &g[..m], &v[..m]);
    let (mean, r) = stats(v);
    let inv = F::one() / <F as Float>::from_f64(m as f64);
    let m1 = sum_of([dy, g], |[d, g]| d * g) * inv;
    let m2 = sum_of([dy, g, v], |[d, g, v]| d * g * ((v - mean) * r)) * inv;
    for k in 0..m {
        out[k] = r * (dy[k] * g[k] - m1 - (v[k] - mean) * r * m2);
    }
}

/// The layer-normalised LSTM's math (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LstmLayerNorm;

impl CellMath for LstmLayerNorm {
    const DESCRIPTION: Description = Description {
        variant: Some(Variant {
            option: "layer_norm",
            chosen: |c| c.layer_norm,
        }),
        aux_width: 11,
        whole_rows: true,
        products_apart: true,
        row_grads: 5,
        unit_weights: 10,
        params: &[
            Param::WeightIh,
            Param::WeightHh,
            Param::BiasIh,
            Param::BiasHh,
            Param::WeightHr,
            Param::LnIhWeight,
            Param::LnHhWeight,
            Param::LnCWeight,
            Param::LnCBias,
        ],
        ..Lstm::DESCRIPTION
    };

    fn new(_cell: super::Cell) -> Self {
        LstmLayerNorm
    }

    #[inline(always)]
    fn forward_row<F: Activations>(self, row: ForwardRow<'_, F>) {
        let ForwardRow {
            h_new,
            c,
            gates,
            aux,
            xw,
            hw,
            bias,
            unit_weights,
            save,
            ..
        } = row;
        let n = h_new.len();
        let m = 4 * n;
        let [g_ih, g_hh] = parts(unit_weights, m);
        let (g_c, beta_c) = (&unit_weights[8 * n..9 * n], &unit_weights[9 * n..10 * n]);
        let (states, products) = aux[..11 * n].split_at_mut(3 * n);
        let [c_prev, t, c_new] = parts_mut(states, n);
        // The products are kept for backward in training; in inference they are read where
        // they are (`xw` and `hw` hold them for this step).
        let (a, b): (&[F], &[F]) = if save {
            let [a, b] = parts_mut(products, m);
            a.copy_from_slice(&xw[..m]);
            b.copy_from_slice(&hw[..m]);
            (a, b)
        } else {
            (&xw[..m], &hw[..m])
        };
        let ((ma, ra), (mb, rb)) = (stats(a), stats(b));
        let (gates, bias) = (&mut gates[..m], &bias[..m]);
        for k in 0..m {
            gates[k] = (a[k] - ma) * ra * g_ih[k] + (b[k] - mb) * rb * g_hh[k] + bias[k];
        }
        F::sigmoid_in_place(&mut gates[..2 * n]);
        F::tanh_in_place(&mut gates[2 * n..3 * n]);
        F::sigmoid_in_place(&mut gates[3 * n..]);
        let [gi, gf, gg, go] = parts(gates, n);
        let c = &mut c[..n];
        for j in 0..n {
            let cp = c[j];
            let cn = gf[j] * cp + gi[j] * gg[j];
            c_prev[j] = cp;
            c[j] = cn;
            c_new[j] = cn;
        }
        let (mc, rc) = stats(c_new);
        for j in 0..n {
            t[j] = (c_new[j] - mc) * rc * g_c[j] + beta_c[j];
        }
        F::tanh_in_place(t);
        for j in 0..n {
            h_new[j] = go[j] * t[j];
        }
    }

    #[inline(always)]
    fn backward_row<F: Activations>(self, row: BackwardRow<'_, F>) {
        let BackwardRow {
            dxw,
            dhw,
            dh,
            dc,
            gates,
            aux,
            unit_weights,
            drow,
            ..
        } = row;
        let n = dh.len();
        let m = 4 * n;
        let one = F::one();
        let [gi, gf, gg, go] = parts(gates, n);
        let [c_prev, t, c_new] = parts(&aux[..3 * n], n);
        let [a, b] = parts(&aux[3 * n..11 * n], m);
        let [g_ih, g_hh] = parts(unit_weights, m);
        let g_c = &unit_weights[8 * n..9 * n];
        let (dp, dy) = drow[..5 * n].split_at_mut(m);
        let dc = &mut dc[..n];
        for j in 0..n {
            dy[j] = dh[j] * go[j] * (one - t[j] * t[j]);
        }
        let (mc, rc) = stats(c_new);
        let inv_n = one / <F as Float>::from_f64(n as f64);
        let m1 = sum_of([&*dy, g_c], |[d, g]| d * g) * inv_n;
        let m2 = sum_of([&*dy, g_c, c_new], |[d, g, c]| d * g * ((c - mc) * rc)) * inv_n;
        let [di, df, dg, d_o] = parts_mut(dp, n);
        for j in 0..n {
            let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
            let c_hat = (c_new[j] - mc) * rc;
            let dct = dc[j] + rc * (dy[j] * g_c[j] - m1 - c_hat * m2);
            dc[j] = dct * f;
            di[j] = dct * g * i * (one - i);
            df[j] = dct * c_prev[j] * f * (one - f);
            dg[j] = dct * i * (one - g * g);
            d_o[j] = dh[j] * t[j] * o * (one - o);
        }
        let dp = &drow[..m];
        norm_backward(&mut dxw[..m], dp, g_ih, a);
        norm_backward(&mut dhw[..m], dp, g_hh, b);
    }

    fn unprojected_state<F: Float>(
        self,
        gates: ArrayView2<'_, F>,
        aux: ArrayView2<'_, F>,
    ) -> Array2<F> {
        Lstm.unprojected_state(gates, aux)
    }

    fn unit_weight_grads<F: Float>(
        self,
        _dxw: ArrayView2<'_, F>,
        drow: ArrayView2<'_, F>,
        aux: ArrayView2<'_, F>,
    ) -> Array1<F> {
        // Partial sums over slices of rows, in parallel, added in slice order: the same
        // result on any number of threads.
        let n = drow.ncols() / 5;
        let slices = drow.nrows().div_ceil(GRAD_ROWS);
        let partials: Vec<Vec<F>> = (0..slices)
            .into_par_iter()
            .map(|k| {
                let rows = k * GRAD_ROWS..((k + 1) * GRAD_ROWS).min(drow.nrows());
                unit_grads_of_rows(drow.slice(s![rows.clone(), ..]), aux.slice(s![rows, ..]), n)
            })
            .collect();
        let mut grads = Array1::zeros(10 * n);
        for part in partials {
            for (g, p) in grads.iter_mut().zip(part) {
                *g += p;
            }
        }
        grads
    }
}

/// Rows per partial sum of the unit weights' gradients.
const GRAD_ROWS: usize = 256;

/// `[Σ dp â; Σ dp b̂; Σ dy ĉ; Σ dy]` (10 n) over the rows of `drow` (rows, 5 n) and `aux`
/// (rows, 11 n), the statistics recomputed from the saved products and `c'`.
fn unit_grads_of_rows<F: Float>(
    drow: ArrayView2<'_, F>,
    aux: ArrayView2<'_, F>,
    n: usize,
) -> Vec<F> {
    let m = 4 * n;
    let mut grads = vec![F::zero(); 10 * n];
    let (g_ab, g_c) = grads.split_at_mut(8 * n);
    let [g_a, g_b] = parts_mut(g_ab, m);
    let (g_gc, g_beta) = g_c.split_at_mut(n);
    for (d, v) in drow.rows().into_iter().zip(aux.rows()) {
        let (d_copy, v_copy);
        let d = match d.as_slice() {
            Some(d) => d,
            None => {
                d_copy = d.to_vec();
                &d_copy
            }
        };
        let v = match v.as_slice() {
            Some(v) => v,
            None => {
                v_copy = v.to_vec();
                &v_copy
            }
        };
        let (dp, dy) = (&d[..m], &d[m..5 * n]);
        let c_new = &v[2 * n..3 * n];
        let [a, b] = parts(&v[3 * n..11 * n], m);
        let ((ma, ra), (mb, rb), (mc, rc)) = (stats(a), stats(b), stats(c_new));
        for (k, g) in g_a.iter_mut().enumerate() {
            *g += dp[k] * ((a[k] - ma) * ra);
        }
        for (k, g) in g_b.iter_mut().enumerate() {
            *g += dp[k] * ((b[k] - mb) * rb);
        }
        for (j, g) in g_gc.iter_mut().enumerate() {
            *g += dy[j] * ((c_new[j] - mc) * rc);
        }
        for (j, g) in g_beta.iter_mut().enumerate() {
            *g += dy[j];
        }
    }
    grads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_torch_layer_norms() {
        // Biased variance: [1, 2, 3, 4] has mean 2.5 and variance 1.25.
        let (mean, r) = stats(&[1.0f64, 2.0, 3.0, 4.0]);
        assert_eq!(mean, 2.5);
        assert!((r - 1.0 / (1.25f64 + 1e-5).sqrt()).abs() < 1e-15);
        // Sums in lanes equal the plain sum (of exact integers) for every tail length.
        for n in [0, 1, 15, 16, 17, 40] {
            let v: Vec<f64> = (0..n).map(|j| j as f64).collect();
            assert_eq!(sum_of([&v[..]], |[x]| x), v.iter().sum::<f64>());
        }
    }

    #[test]
    fn norm_backward_is_the_derivative() {
        // d/dv of sum(w * LN(v; g)) against central differences.
        let v = [0.3f64, -1.2, 0.7, 2.0, -0.4];
        let g = [1.5, -0.5, 0.8, 1.1, 0.9];
        let w = [0.2, -0.7, 1.3, 0.4, -1.1];
        let loss = |v: &[f64]| {
            let (mean, r) = stats(v);
            (0..5).map(|k| w[k] * (v[k] - mean) * r * g[k]).sum::<f64>()
        };
        let mut d = [0.0; 5];
        norm_backward(&mut d, &w, &g, &v);
        for k in 0..5 {
            let (mut p, mut q) = (v, v);
            p[k] += 1e-6;
            q[k] -= 1e-6;
            let fd = (loss(&p) - loss(&q)) / 2e-6;
            assert!((fd - d[k]).abs() < 1e-8, "{k}: {fd} vs {}", d[k]);
        }
    }
}
