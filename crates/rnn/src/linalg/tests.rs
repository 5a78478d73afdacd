//! Tests of the products against the f64 triple loop.

use ndarray::{s, Array2, ArrayView2};

use super::kernel::{kernels, kernels_of, portable, Kernels};
use super::packed::{matmul_packed_with, PARALLEL_MIN_WORK};
use super::*;
use crate::rng::Rng;

fn random<F: Float>(rng: &mut Rng, m: usize, n: usize) -> Array2<F> {
    Array2::from_shape_fn((m, n), |_| F::from_f64(rng.uniform(-1.0, 1.0) as f64))
}

/// Asserts `|got - want| <= tol * (sum_p |a_ip b_pj| + |c0_ij|)` element by element: the scale
/// of the rounding error of any summation order.
fn assert_close<F: Float>(
    got: &ArrayView2<'_, F>,
    want: &ArrayView2<'_, F>,
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    c0: &ArrayView2<'_, F>,
    tol: f64,
    what: &str,
) {
    assert_eq!(got.dim(), want.dim());
    for ((i, j), &x) in got.indexed_iter() {
        let y = want[[i, j]];
        let scale: f64 = (0..a.ncols())
            .map(|p| (a[[i, p]].to_f64() * b[[p, j]].to_f64()).abs())
            .sum::<f64>()
            + c0[[i, j]].to_f64().abs();
        let err = (x.to_f64() - y.to_f64()).abs();
        assert!(
            err <= tol * scale + 1e-30,
            "{what}: C[{i}, {j}] = {x:?}, expected {y:?} (error {err:e}, scale {scale:e})"
        );
    }
}

/// Runs the packed product on strided views of many shapes (A plain, A with a column stride of
/// 2, A a transposed view, A with reversed rows; C every other column; B = W^T, B = W and B
/// with reversed columns) and compares with [`matmul_reference`].
fn check_packed<F: Float>(
    kernels: &Kernels<F>,
    threads: usize,
    min_work: usize,
    shapes: &[(usize, usize, usize)],
) {
    let mut rng = Rng::new(11);
    let tol = if std::mem::size_of::<F>() == 4 {
        1e-5
    } else {
        1e-13
    };
    for &(m, k, n) in shapes {
        let a_plain = random::<F>(&mut rng, m, k);
        let a_wide = random::<F>(&mut rng, m, 2 * k);
        let a_t = random::<F>(&mut rng, k, m);
        let w = random::<F>(&mut rng, n, k); // PyTorch layout (out, in): B = W^T
        let b_plain = random::<F>(&mut rng, k, n); // B = W, row-major
        let a_views: [(&str, ArrayView2<'_, F>); 4] = [
            ("A", a_plain.view()),
            ("A[:, ::2]", a_wide.slice(s![.., ..;2])),
            ("A^T view", a_t.t()),
            ("A[::-1]", a_plain.slice(s![..;-1, ..])),
        ];
        let b_views = [
            ("W^T", w.t()),
            ("W", b_plain.view()),
            ("W[:, ::-1]", b_plain.slice(s![.., ..;-1])),
        ];
        for (b_name, b) in b_views {
            let packed = PackedWeights::new(&b);
            for (a_name, a) in &a_views {
                for accumulate in [false, true] {
                    let init = random::<F>(&mut rng, m, 2 * n);
                    let mut got = init.clone();
                    let mut want = init.clone();
                    let mut got_view = got.slice_mut(s![.., ..;2]);
                    let c = &mut got_view;
                    matmul_packed_with(kernels, threads, min_work, c, a, &packed, accumulate);
                    matmul_reference(&mut want.slice_mut(s![.., ..;2]), a, &b, accumulate);
                    let c0 = if accumulate {
                        init.slice(s![.., ..;2]).to_owned()
                    } else {
                        Array2::zeros((m, n))
                    };
                    let what = format!(
                        "{} {m}x{k}x{n} {a_name} {b_name} acc={accumulate} threads={threads}",
                        kernels.name
                    );
                    let (g, w) = (got.slice(s![.., ..;2]), want.slice(s![.., ..;2]));
                    assert_close(&g, &w, a, &b, &c0.view(), tol, &what);
                    // The skipped columns of C are untouched.
                    assert_eq!(
                        got.slice(s![.., 1..;2]),
                        init.slice(s![.., 1..;2]),
                        "{what}"
                    );
                }
            }
        }
    }
}

/// Edge sizes around the tile (6 x 16, or 6 x 32 for a pair kernel: odd panel counts), and
/// the blocking (KC = 256, MC = 72).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (5, 1, 17),
    (6, 16, 16),
    (7, 3, 15),
    (13, 33, 33),
    (2, 257, 31),
    (3, 513, 17),
    (7, 1030, 20),
    (73, 19, 5),
    (64, 300, 48),
    (12, 256, 64),
    (7, 511, 47),
    (8, 5, 20),
    (32, 40, 35),
    // One row: panels in groups of four, a partial last panel, several blocks of depth.
    (1, 300, 70),
    (1, 530, 100),
    (1, 40, 64),
];

#[test]
fn packed_matches_reference_f32_best_kernel() {
    check_packed::<f32>(&kernels(), 1, PARALLEL_MIN_WORK, SHAPES);
}

/// Every SIMD kernel this CPU runs, whichever `RNN_MAX_ISA` picks; both with AVX-512.
#[test]
fn packed_matches_reference_f32_every_simd_kernel() {
    for isa in [Isa::Avx2, Isa::Avx512] {
        match kernels_of(isa) {
            Some(k) => {
                assert_eq!(k.name, isa.name());
                check_packed::<f32>(&k, 1, PARALLEL_MIN_WORK, SHAPES);
                check_packed::<f32>(&k, 3, 0, &[(70, 300, 100), (150, 530, 18)]);
            }
            None => eprintln!("this CPU has no {}: its kernel is not checked", isa.name()),
        }
    }
}

#[test]
fn packed_matches_reference_f32_portable() {
    check_packed::<f32>(&portable(), 1, PARALLEL_MIN_WORK, SHAPES);
}

#[test]
fn packed_matches_reference_f64() {
    check_packed::<f64>(&kernels(), 1, PARALLEL_MIN_WORK, SHAPES);
}

#[test]
fn packed_matches_reference_split_over_threads() {
    // Every product split as far as it goes, with odd thread counts so the shares are unequal:
    // by columns (wide B), by rows (narrow B), and the edge shapes.
    let shapes = [
        (70, 300, 100),
        (150, 530, 18),
        (64, 257, 130),
        (7, 3, 40),
        (13, 33, 5),
    ];
    for threads in [2, 3, 5] {
        check_packed::<f32>(&kernels(), threads, 0, &shapes);
    }
    check_packed::<f64>(&kernels(), 2, 0, &shapes[..2]);
    // The default threshold splits large products on rayon's own pool.
    let large = [(150, 300, 100)];
    const { assert!(150 * 300 * 100 >= PARALLEL_MIN_WORK) };
    let threads = rayon::current_num_threads();
    check_packed::<f32>(&kernels(), threads, PARALLEL_MIN_WORK, &large);
}

/// A one-row product (several panels of `B` at once) gives every value the bits of the same
/// row of a taller product (one panel at a time), with every kernel this CPU runs.
#[test]
fn one_row_products_give_the_bits_of_taller_ones() {
    let mut rng = Rng::new(8);
    let all = [Isa::Scalar, Isa::Avx2, Isa::Avx512].map(kernels_of);
    for kernels in all.iter().flatten() {
        for (k, n) in [(1, 1), (7, 16), (300, 70), (530, 100), (40, 64), (9, 49)] {
            let a = random::<f32>(&mut rng, 3, k);
            let b = random::<f32>(&mut rng, k, n);
            let packed = PackedWeights::new(&b.view());
            for accumulate in [false, true] {
                let c0 = random::<f32>(&mut rng, 3, n);
                let (mut tall, mut one) = (c0.clone(), c0.slice(s![..1, ..]).to_owned());
                let huge = usize::MAX;
                let (a1, c1) = (a.slice(s![..1, ..]), &mut one.view_mut());
                matmul_packed_with(kernels, 1, huge, c1, &a1, &packed, accumulate);
                matmul_packed_with(
                    kernels,
                    1,
                    huge,
                    &mut tall.view_mut(),
                    &a.view(),
                    &packed,
                    accumulate,
                );
                let same = one
                    .iter()
                    .zip(tall.row(0))
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{} 1x{k}x{n} accumulate {accumulate}", kernels.name);
            }
        }
    }
}

/// AVX2 and AVX-512 accumulate each value in the same order with the same FMAs: the same bits.
#[test]
fn simd_kernels_give_the_same_bits() {
    let (Some(avx2), Some(avx512)) = (kernels_of(Isa::Avx2), kernels_of(Isa::Avx512)) else {
        eprintln!("this CPU does not run both SIMD kernels: nothing to compare");
        return;
    };
    let mut rng = Rng::new(5);
    for (m, k, n) in [(64, 300, 100), (7, 3, 40), (13, 530, 18), (1, 530, 100)] {
        let (a, a_t) = (random::<f32>(&mut rng, m, k), random::<f32>(&mut rng, k, m));
        let b = random::<f32>(&mut rng, k, n);
        let packed = PackedWeights::new(&b.view());
        let c0 = random::<f32>(&mut rng, m, n);
        // A read in place, and A packed (a transposed view).
        for a in [a.view(), a_t.t()] {
            let (mut narrow, mut wide) = (c0.clone(), c0.clone());
            for (kernels, c) in [(&avx2, &mut narrow), (&avx512, &mut wide)] {
                matmul_packed_with(kernels, 2, 0, &mut c.view_mut(), &a, &packed, true);
            }
            assert!(narrow
                .iter()
                .zip(&wide)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}

#[test]
fn packed_empty_dimensions() {
    let packed = PackedWeights::<f32>::new(&Array2::zeros((0, 3)).view());
    let mut c = Array2::from_elem((2, 3), f32::NAN);
    matmul_packed(
        &mut c.view_mut(),
        &Array2::zeros((2, 0)).view(),
        &packed,
        false,
    );
    assert!(c.iter().all(|&x| x == 0.0), "k = 0 overwrites C with zeros");
    let mut c = Array2::from_elem((2, 3), 4.0f32);
    matmul_packed(
        &mut c.view_mut(),
        &Array2::zeros((2, 0)).view(),
        &packed,
        true,
    );
    assert!(
        c.iter().all(|&x| x == 4.0),
        "k = 0 leaves C when accumulating"
    );
    let packed = PackedWeights::<f32>::new(&Array2::zeros((4, 0)).view());
    let mut c = Array2::<f32>::zeros((3, 0));
    matmul_packed(
        &mut c.view_mut(),
        &Array2::zeros((3, 4)).view(),
        &packed,
        false,
    );
    let packed = PackedWeights::<f32>::new(&Array2::ones((4, 5)).view());
    let mut c = Array2::<f32>::zeros((0, 5));
    matmul_packed(
        &mut c.view_mut(),
        &Array2::zeros((0, 4)).view(),
        &packed,
        false,
    );
}

#[test]
fn overwrite_ignores_nan_in_c() {
    let mut rng = Rng::new(3);
    let a = random::<f32>(&mut rng, 9, 20);
    let w = random::<f32>(&mut rng, 21, 20);
    let packed = PackedWeights::transposed(&w.view());
    let mut c = Array2::from_elem((9, 21), f32::NAN);
    matmul_packed(&mut c.view_mut(), &a.view(), &packed, false);
    let mut want = Array2::zeros((9, 21));
    matmul_reference(&mut want.view_mut(), &a.view(), &w.t(), false);
    let zero = Array2::zeros((9, 21));
    assert_close(
        &c.view(),
        &want.view(),
        &a.view(),
        &w.t(),
        &zero.view(),
        1e-5,
        "NaN C",
    );
}

#[test]
fn repack_reuses_and_resizes() {
    let mut rng = Rng::new(5);
    let a = random::<f32>(&mut rng, 10, 40);
    let mut packed = PackedWeights::new(&random::<f32>(&mut rng, 40, 50).view());
    for (k, n) in [(40, 20), (40, 50), (12, 3), (40, 90)] {
        let b = random::<f32>(&mut rng, k, n);
        packed.repack(&b.view());
        assert_eq!((packed.k(), packed.n()), (k, n));
        let a = a.slice(s![.., ..k]);
        let mut got = Array2::zeros((10, n));
        let mut want = Array2::zeros((10, n));
        matmul_packed(&mut got.view_mut(), &a, &packed, false);
        matmul_reference(&mut want.view_mut(), &a, &b.view(), false);
        let zero = Array2::zeros((10, n));
        let what = format!("repack {k}x{n}");
        assert_close(
            &got.view(),
            &want.view(),
            &a,
            &b.view(),
            &zero.view(),
            1e-5,
            &what,
        );
    }
}

#[test]
#[should_panic(expected = "inner dimensions")]
fn packed_rejects_mismatched_inner_dimension() {
    let packed = PackedWeights::<f32>::new(&Array2::zeros((4, 5)).view());
    let mut c = Array2::zeros((2, 5));
    matmul_packed(
        &mut c.view_mut(),
        &Array2::zeros((2, 3)).view(),
        &packed,
        false,
    );
}

#[test]
fn matmul_matches_reference_on_strided_views() {
    let mut rng = Rng::new(7);
    for &(m, k, n) in &[
        (1, 1, 1),
        (3, 5, 2),
        (17, 33, 9),
        (64, 80, 96),
        (2, 0, 3),
        (130, 300, 70),
    ] {
        let a = random::<f32>(&mut rng, m, k);
        let bt = random::<f32>(&mut rng, n, k); // use b = bt^T, a transposed view
        for accumulate in [false, true] {
            let init = random::<f32>(&mut rng, m, 2 * n);
            let mut c1 = init.clone();
            let mut c2 = init.clone();
            // Write into every other column: a strided output.
            matmul(
                &mut c1.slice_mut(s![.., ..;2]),
                &a.view(),
                &bt.t(),
                accumulate,
            );
            matmul_reference(
                &mut c2.slice_mut(s![.., ..;2]),
                &a.view(),
                &bt.t(),
                accumulate,
            );
            let c0 = if accumulate {
                init.slice(s![.., ..;2]).to_owned()
            } else {
                Array2::zeros((m, n))
            };
            let (got, want) = (c1.slice(s![.., ..;2]), c2.slice(s![.., ..;2]));
            let what = format!("matmul {m}x{k}x{n} acc={accumulate}");
            assert_close(&got, &want, &a.view(), &bt.t(), &c0.view(), 1e-5, &what);
        }
    }
}

/// `A [B_1 | B_2 | B_3]` through one concatenated packing equals the separate products, for
/// widths that put panel boundaries inside a source (and a source with strided rows), on
/// depths of one and of several packing blocks.
#[test]
fn concatenated_operands_give_the_products_side_by_side() {
    let mut rng = Rng::new(11);
    for k in [1, 37, 300] {
        let a = random::<f32>(&mut rng, 13, k);
        let b1 = random::<f32>(&mut rng, k, 7);
        let b2 = random::<f32>(&mut rng, k, 20);
        let b3_t = random::<f32>(&mut rng, 17, k); // used transposed: not row-contiguous
        let parts = [b1.view(), b2.view(), b3_t.t()];
        let packed = PackedWeights::concat(&parts);
        assert_eq!((packed.k(), packed.n()), (k, 44));
        let whole = ndarray::concatenate(ndarray::Axis(1), &parts).unwrap();
        assert_packed_product(&a, &whole, &packed, &format!("concat k = {k}"));
    }
}

/// `A B` through `packed` (B packed) equals the reference product with `whole` (= B).
fn assert_packed_product(
    a: &Array2<f32>,
    whole: &Array2<f32>,
    packed: &PackedWeights<f32>,
    what: &str,
) {
    let shape = (a.nrows(), whole.ncols());
    let mut got = Array2::from_elem(shape, f32::NAN);
    matmul_packed(&mut got.view_mut(), &a.view(), packed, false);
    let mut want = Array2::zeros(shape);
    matmul_reference(&mut want.view_mut(), &a.view(), &whole.view(), false);
    let zero = Array2::zeros(shape);
    let (got, want) = (got.view(), want.view());
    assert_close(
        &got,
        &want,
        &a.view(),
        &whole.view(),
        &zero.view(),
        1e-5,
        what,
    );
}

/// Operands of more than `PACK_PARALLEL_MIN_BYTES` bytes are packed by several threads,
/// a block of rows each: row-major sources, a concatenation, and transposed sources all give
/// the reference product, with a partial last block.
#[test]
fn large_operands_are_packed_by_several_threads() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        let mut rng = Rng::new(12);
        let k = 1100; // 4 full packing blocks and a partial one
        assert!(k * 300 * size_of::<f32>() >= crate::linalg::PACK_PARALLEL_MIN_BYTES);
        let a = random::<f32>(&mut rng, 13, k);
        let b1 = random::<f32>(&mut rng, k, 130);
        let b2_t = random::<f32>(&mut rng, 170, k);
        let whole = ndarray::concatenate(ndarray::Axis(1), &[b1.view(), b2_t.t()]).unwrap();
        let whole_t = whole.t().as_standard_layout().into_owned();
        let packings = [
            ("concat", PackedWeights::concat(&[b1.view(), b2_t.t()])),
            ("row-major", PackedWeights::new(&whole.view())),
            ("transposed", PackedWeights::transposed(&whole_t.view())),
        ];
        for (name, packed) in packings {
            assert_packed_product(&a, &whole, &packed, name);
        }
    });
}

#[test]
fn row_tiles_cover_the_block_without_one_or_two_row_tiles() {
    use super::kernel::MR;
    for mc in 1..=3 * MR + 2 {
        for balance in [false, true] {
            let tiles: Vec<(usize, usize)> = super::packed::row_tiles(mc, balance).collect();
            let mut next = 0;
            for &(r0, rows) in &tiles {
                assert_eq!(r0, next, "mc {mc}: tiles {tiles:?}");
                assert!((1..=MR).contains(&rows), "mc {mc}: tiles {tiles:?}");
                next += rows;
            }
            assert_eq!(next, mc, "mc {mc}: tiles {tiles:?}");
            let smallest = tiles.iter().map(|t| t.1).min().unwrap();
            if balance && mc > MR {
                assert!(smallest >= 3, "mc {mc}: tiles {tiles:?}");
            } else {
                assert!(tiles[..tiles.len() - 1].iter().all(|t| t.1 == MR));
            }
        }
    }
    let balanced: Vec<_> = super::packed::row_tiles(32, true).map(|t| t.1).collect();
    assert_eq!(balanced, [6, 6, 6, 6, 4, 4]);
}
