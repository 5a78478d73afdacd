//! Tests of the reduced-precision products: every kernel against a scalar oracle doing the
//! same rounding (bits), and against the exact product within the documented bounds.

use ndarray::{s, Array2, ArrayView2};

use super::bf16::{self, bf16_bits, round_bf16, PackedBf16};
use super::int8::{self, quantize_row, PackedInt8, RowQuant};
use super::lowp;
use super::matmul_reference;
use crate::rng::Rng;

fn random(rng: &mut Rng, m: usize, n: usize) -> Array2<f32> {
    Array2::from_shape_fn((m, n), |_| rng.uniform(-1.0, 1.0))
}

/// Edge sizes around the tiles (6 x 32, one-row groups of 4 panels), the pairs and quads of
/// `k` (odd `k`, `k % 4 != 0`) and the row blocks (120).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (5, 1, 17),
    (6, 16, 32),
    (7, 3, 33),
    (13, 33, 65),
    (2, 257, 31),
    (1, 300, 70),
    (1, 530, 150),
    (1, 40, 128),
    (4, 6, 20),
    (73, 19, 5),
    (64, 301, 48),
    (130, 65, 97),
    (15, 9, 33),
];

/// Runs `product(c, a, accumulate)` on A plain, A with a column stride of 2 and A a
/// transposed view, into every other column of C, overwriting and accumulating; checks that
/// the skipped columns are untouched and returns the (a, c0, c) triples for the caller's
/// checks.
fn each_case(
    rng: &mut Rng,
    m: usize,
    k: usize,
    n: usize,
    mut product: impl FnMut(&mut ndarray::ArrayViewMut2<'_, f32>, &ArrayView2<'_, f32>, bool),
    mut check: impl FnMut(&ArrayView2<'_, f32>, &Array2<f32>, &Array2<f32>, bool, &str),
) {
    let a_plain = random(rng, m, k);
    let a_wide = random(rng, m, 2 * k);
    let a_t = random(rng, k, m);
    let views = [
        ("A", a_plain.view()),
        ("A[:, ::2]", a_wide.slice(s![.., ..;2])),
        ("A^T view", a_t.t()),
    ];
    for (name, a) in views {
        for accumulate in [false, true] {
            let init = random(rng, m, 2 * n);
            let mut got = init.clone();
            product(&mut got.slice_mut(s![.., ..;2]), &a, accumulate);
            assert_eq!(
                got.slice(s![.., 1..;2]),
                init.slice(s![.., 1..;2]),
                "{name}"
            );
            let c0 = init.slice(s![.., ..;2]).to_owned();
            let c = got.slice(s![.., ..;2]).to_owned();
            check(
                &a,
                &c0,
                &c,
                accumulate,
                &format!("{m}x{k}x{n} {name} acc={accumulate}"),
            );
        }
    }
}

/// The bf16 oracle: both operands rounded, f32 sums in `vdpbf16ps`'s order (odd, even).
fn bf16_oracle(a: &ArrayView2<'_, f32>, b: &PackedBf16, i: usize, j: usize) -> f32 {
    let mut s = 0.0f32;
    for g in 0..b.k().div_ceil(2) {
        let (k0, k1) = (2 * g, 2 * g + 1);
        if k1 < b.k() {
            s += round_bf16(a[[i, k1]]) * b.get(k1, j);
        } else {
            s += 0.0 * b.get(k0, j); // the padded row of B is zero (keeps -0.0 as the kernels)
        }
        s += round_bf16(a[[i, k0]]) * b.get(k0, j);
    }
    s
}

#[test]
fn bf16_rounding_matches_the_half_crate() {
    let mut rng = Rng::new(1);
    let mut values: Vec<f32> = (0..10_000).map(|_| rng.normal() * 1e3).collect();
    values.extend([
        0.0,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        f32::from_bits(0x3f80_8000), // a tie: 1 + 2^-8, rounds to even (1.0)
        f32::from_bits(0x3f81_8000), // a tie rounding up
        f32::from_bits(0x3f80_8001),
    ]);
    for x in values {
        assert_eq!(bf16_bits(x), half::bf16::from_f32(x).to_bits(), "{x:e}");
    }
    assert!(round_bf16(f32::NAN).is_nan());
    assert_eq!(round_bf16(f32::from_bits(0x3f80_8000)), 1.0);
}

#[test]
fn bf16_every_kernel_gives_the_oracle_bits() {
    let mut rng = Rng::new(21);
    let kinds = bf16::kinds_available();
    eprintln!("bf16 kernels checked: {kinds:?}");
    for kind in kinds {
        for &(m, k, n) in SHAPES {
            let b = random(&mut rng, k, n);
            let packed = PackedBf16::new(&b.view());
            for threads in [1, 3] {
                each_case(
                    &mut rng,
                    m,
                    k,
                    n,
                    |c, a, acc| lowp::matmul_with(kind, threads, 0, c, a, &packed, acc),
                    |a, c0, c, acc, what| {
                        for ((i, j), &x) in c.indexed_iter() {
                            let s = bf16_oracle(a, &packed, i, j);
                            let want = if acc { c0[[i, j]] + s } else { s };
                            assert_eq!(
                                x.to_bits(),
                                want.to_bits(),
                                "{kind:?} threads {threads} {what}: C[{i}, {j}] = {x:e}, \
                                 expected {want:e}"
                            );
                        }
                    },
                );
            }
        }
    }
}

/// Against the exact product of the f32 operands: within `(2^-8 + 2^-16 + k 2^-24) sum|a b|`.
#[test]
fn bf16_error_within_the_documented_bound() {
    let mut rng = Rng::new(22);
    for &(m, k, n) in &[(9, 1000, 40), (3, 64, 33), (1, 512, 64)] {
        let (a, w) = (random(&mut rng, m, k), random(&mut rng, n, k));
        let packed = PackedBf16::transposed(&w.view());
        let mut got = Array2::zeros((m, n));
        super::matmul_bf16(&mut got.view_mut(), &a.view(), &packed, false);
        let mut exact = Array2::<f64>::zeros((m, n));
        let (a64, w64) = (a.mapv(|x| x as f64), w.mapv(|x| x as f64));
        matmul_reference(&mut exact.view_mut(), &a64.view(), &w64.t(), false);
        let tol = 2f64.powi(-8) + 2f64.powi(-16) + k as f64 * 2f64.powi(-24);
        let (mut worst, mut typical) = (0.0f64, 0.0f64);
        for ((i, j), &x) in got.indexed_iter() {
            let scale: f64 = (0..k).map(|p| (a64[[i, p]] * w64[[j, p]]).abs()).sum();
            let err = (x as f64 - exact[[i, j]]).abs();
            assert!(err <= tol * scale, "{m}x{k}x{n} C[{i}, {j}]: error {err:e}");
            worst = worst.max(err / scale);
            typical += err / scale / (m * n) as f64;
        }
        // The roundings are independent: far below the worst case on random operands.
        assert!(
            typical < 0.1 * tol,
            "{m}x{k}x{n}: mean relative error {typical:e}"
        );
        assert!(worst > 0.0, "{m}x{k}x{n}: bf16 rounding must show");
    }
}

#[test]
fn bf16_from_bf16_weights_equals_rounding_f32_weights() {
    let mut rng = Rng::new(23);
    let w = random(&mut rng, 37, 21);
    let w16 = w.mapv(half::bf16::from_f32);
    let (x, y) = (
        PackedBf16::transposed(&w.view()),
        PackedBf16::from_bf16_transposed(&w16.view()),
    );
    for kk in 0..21 {
        for j in 0..37 {
            assert_eq!(x.get(kk, j).to_bits(), y.get(kk, j).to_bits());
            assert_eq!(x.get(kk, j), w16[[j, kk]].to_f32());
        }
    }
    assert_eq!(x.bytes(), 2 * 32 * 11 * 2 * 2); // 2 panels, 32 columns, 11 pairs, 2 bytes
}

/// The int8 oracle: the same quantized operands, i64 sums, the same dequantization.
fn int8_oracle(q_a: &[u8], row: RowQuant, b: &PackedInt8, j: usize) -> f32 {
    let acc: i64 = (0..b.k()).map(|p| q_a[p] as i64 * b.get(p, j) as i64).sum();
    let sum: i64 = (0..b.k()).map(|p| b.get(p, j) as i64).sum();
    let d = acc - row.zero_point as i64 * sum;
    (d as i32 as f32 * row.scale) * b.scales()[j]
}

#[test]
fn int8_every_kernel_gives_the_oracle_bits() {
    let mut rng = Rng::new(31);
    let kinds = int8::kinds_available();
    eprintln!("int8 kernels checked: {kinds:?}");
    for kind in kinds {
        for &(m, k, n) in SHAPES {
            let b = random(&mut rng, k, n);
            let packed = PackedInt8::quantize(&b.view());
            for threads in [1, 3] {
                each_case(
                    &mut rng,
                    m,
                    k,
                    n,
                    |c, a, acc| lowp::matmul_with(kind, threads, 0, c, a, &packed, acc),
                    |a, c0, c, acc, what| {
                        let mut q = vec![0u8; k];
                        for i in 0..m {
                            let row = quantize_row(&a.row(i).to_vec(), &mut q);
                            for j in 0..n {
                                let s = int8_oracle(&q, row, &packed, j);
                                let want = if acc { c0[[i, j]] + s } else { s };
                                let x = c[[i, j]];
                                assert_eq!(
                                    x.to_bits(),
                                    want.to_bits(),
                                    "{kind:?} threads {threads} {what}: C[{i}, {j}] = {x:e}, \
                                     expected {want:e}"
                                );
                            }
                        }
                    },
                );
            }
        }
    }
}

/// Against the exact product: within `r_i / 2 sum|B| + s_j / 2 sum|A|` (+ f32 roundings).
#[test]
fn int8_error_within_the_documented_bound() {
    let mut rng = Rng::new(32);
    for &(m, k, n) in &[(9, 1000, 40), (3, 64, 33), (1, 512, 64)] {
        // One-sided rows too (a ReLU's output): the zero point then sits at an end.
        let mut a = random(&mut rng, m, k);
        a.row_mut(0).mapv_inplace(f32::abs);
        let w = random(&mut rng, n, k);
        let packed = PackedInt8::quantize_transposed(&w.view());
        let mut got = Array2::zeros((m, n));
        super::matmul_int8(&mut got.view_mut(), &a.view(), &packed, false);
        let mut exact = Array2::<f64>::zeros((m, n));
        let (a64, w64) = (a.mapv(|x| x as f64), w.mapv(|x| x as f64));
        matmul_reference(&mut exact.view_mut(), &a64.view(), &w64.t(), false);
        let mut q = vec![0u8; k];
        for i in 0..m {
            let r = quantize_row(&a.row(i).to_vec(), &mut q).scale as f64;
            let sum_a: f64 = a64.row(i).iter().map(|x| x.abs()).sum();
            for j in 0..n {
                let s = packed.scales()[j] as f64;
                let sum_b: f64 = w64.row(j).iter().map(|x| x.abs()).sum();
                let bound = (r * sum_b + s * sum_a) / 2.0 * (1.0 + 1e-5) + 1e-6;
                let err = (got[[i, j]] as f64 - exact[[i, j]]).abs();
                assert!(err <= bound, "{m}x{k}x{n} C[{i}, {j}]: {err:e} > {bound:e}");
            }
        }
    }
}

#[test]
fn int8_rows_with_zeros_nan_or_one_sign() {
    let mut q = vec![0u8; 4];
    let zero = quantize_row(&[0.0; 4], &mut q);
    assert_eq!(
        (zero.scale, zero.zero_point, &q[..]),
        (0.0, 0, &[0u8; 4][..])
    );
    assert!(quantize_row(&[1.0, f32::NAN, 0.0, 2.0], &mut q)
        .scale
        .is_nan());
    assert!(quantize_row(&[1.0, f32::INFINITY, 0.0, 2.0], &mut q)
        .scale
        .is_nan());
    let pos = quantize_row(&[0.0, 0.5, 1.01, 2.0], &mut q);
    assert_eq!((pos.zero_point, &q[..]), (0, &[0u8, 64, 129, 255][..]));
    let neg = quantize_row(&[0.0, -1.0, -2.0, -0.5], &mut q);
    assert_eq!((neg.zero_point, q[0], q[2]), (255, 255, 0));
    // A NaN in a row of A gives NaN in that row of C only.
    let w = Array2::from_shape_fn((5, 4), |(i, j)| (i + j) as f32 / 7.0 - 0.4);
    let packed = PackedInt8::quantize_transposed(&w.view());
    let mut a = Array2::from_elem((2, 4), 0.25f32);
    a[[1, 2]] = f32::NAN;
    let mut c = Array2::zeros((2, 5));
    super::matmul_int8(&mut c.view_mut(), &a.view(), &packed, false);
    assert!(c.row(0).iter().all(|x| x.is_finite()) && c.row(1).iter().all(|x| x.is_nan()));
}

#[test]
fn int8_quantized_weights_round_trip() {
    let mut rng = Rng::new(33);
    let w = random(&mut rng, 45, 13);
    let packed = PackedInt8::quantize_transposed(&w.view());
    let q = Array2::from_shape_fn((13, 45), |(kk, j)| packed.get(kk, j));
    let again = PackedInt8::from_quantized(&q.view(), packed.scales());
    for kk in 0..13 {
        for j in 0..45 {
            assert_eq!(again.get(kk, j), packed.get(kk, j));
            let err = (packed.get(kk, j) as f32 * packed.scales()[j] - w[[j, kk]]).abs();
            assert!(err <= packed.scales()[j] / 2.0 * 1.0001);
        }
        // Each column's largest magnitude maps to +-127.
    }
    for j in 0..45 {
        assert_eq!(
            (0..13).map(|kk| packed.get(kk, j).unsigned_abs()).max(),
            Some(127)
        );
    }
    assert_eq!(again.scales(), packed.scales());
    assert_eq!(packed.bytes(), 2 * 32 * 16); // 2 panels x 32 columns x 13 rows padded to 16
}

#[test]
fn empty_dimensions() {
    let b = PackedBf16::new(&Array2::zeros((0, 3)).view());
    let q = PackedInt8::quantize(&Array2::zeros((0, 3)).view());
    let mut c = Array2::from_elem((2, 3), f32::NAN);
    super::matmul_bf16(&mut c.view_mut(), &Array2::zeros((2, 0)).view(), &b, false);
    assert!(c.iter().all(|&x| x == 0.0), "k = 0 overwrites C with zeros");
    let mut c = Array2::from_elem((2, 3), 4.0f32);
    super::matmul_int8(&mut c.view_mut(), &Array2::zeros((2, 0)).view(), &q, true);
    assert!(
        c.iter().all(|&x| x == 4.0),
        "k = 0 leaves C when accumulating"
    );
    let b = PackedBf16::new(&Array2::ones((4, 5)).view());
    let mut c = Array2::<f32>::zeros((0, 5));
    super::matmul_bf16(&mut c.view_mut(), &Array2::zeros((0, 4)).view(), &b, false);
}

#[test]
#[should_panic(expected = "inner dimensions")]
fn int8_rejects_mismatched_inner_dimension() {
    let q = PackedInt8::quantize(&Array2::zeros((4, 5)).view());
    let mut c = Array2::zeros((2, 5));
    super::matmul_int8(&mut c.view_mut(), &Array2::zeros((2, 3)).view(), &q, false);
}

/// The SIMD compilations of the row quantization give the portable loop's bits: lengths around
/// the vector widths, rows of one sign, values on the rounding boundaries.
#[test]
fn int8_row_quantization_is_the_portable_loops_bits() {
    let mut rng = Rng::new(23);
    for len in [1, 7, 15, 16, 17, 31, 33, 64, 100, 512, 1027] {
        for shift in [0.0f32, 3.0, -3.0] {
            let row: Vec<f32> = random(&mut rng, 1, len).iter().map(|x| x + shift).collect();
            let (mut fast, mut portable) = (vec![0u8; len], vec![0u8; len]);
            let (a, b) = (
                quantize_row(&row, &mut fast),
                int8::quantize_row_loops(&row, &mut portable),
            );
            assert_eq!((a, &fast), (b, &portable), "length {len}, shift {shift}");
        }
    }
}
