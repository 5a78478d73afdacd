//! Backprop through inter-layer dropout, checked against central finite differences in f64 with
//! the dropout masks held fixed: every loss evaluation draws its masks from a generator seeded
//! the same way, so the masks are the same and the loss is a smooth function of the weights.
//! Covers every cell, 3 layers, one and two directions, with projection; the gradient reaching
//! layer 0 crosses two masks, so a backward pass that forgot a mask fails here.

use ndarray::{Array2, Array3, ArrayD, Ix1, Ix2, IxDyn};
use rnn::engine::{self, Batches, DirWeights};
use rnn::{CellKind, RecurrentConfig, Rng};

/// Parameters of every layer and direction, uniform in [-0.6, 0.6].
fn random_params(c: &RecurrentConfig, rng: &mut Rng) -> Vec<Vec<ArrayD<f64>>> {
    c.parameter_shapes()
        .chunks(if c.bias { 4 } else { 2 } + usize::from(c.proj_size > 0))
        .map(|dir| {
            dir.iter()
                .map(|(_, shape)| {
                    ArrayD::from_shape_simple_fn(IxDyn(shape), || f64::from(rng.uniform(-0.6, 0.6)))
                })
                .collect()
        })
        .collect()
}

fn weights<'a>(c: &RecurrentConfig, p: &'a [Vec<ArrayD<f64>>]) -> Vec<DirWeights<'a, f64>> {
    p.iter()
        .map(|v| {
            let w2 = |a: &'a ArrayD<f64>| a.view().into_dimensionality::<Ix2>().unwrap();
            let w1 = |a: &'a ArrayD<f64>| a.view().into_dimensionality::<Ix1>().unwrap();
            DirWeights {
                w_ih: w2(&v[0]),
                w_hh: w2(&v[1]),
                b_ih: c.bias.then(|| w1(&v[2])),
                b_hh: c.bias.then(|| w1(&v[3])),
                w_hr: (c.proj_size > 0).then(|| w2(v.last().unwrap())),
                per_unit: Vec::new(),
            }
        })
        .collect()
}

/// The seed of the dropout masks: the same masks at every evaluation.
const MASK_SEED: u64 = 77;

/// `sum(output * go) + sum(h_n * gh)` with the masks of [`MASK_SEED`].
fn loss(
    c: &RecurrentConfig,
    p: &[Vec<ArrayD<f64>>],
    x: &Array2<f64>,
    b: &Batches,
    h0: &Array3<f64>,
    go: &Array2<f64>,
    gh: &Array3<f64>,
) -> f64 {
    let w = weights(c, p);
    let mut rng = Rng::new(MASK_SEED);
    let f = engine::forward(
        c,
        &w,
        engine::Input {
            x: x.view(),
            batches: b,
        },
        engine::InitialStates {
            h0: h0.view(),
            c0: None,
        },
        Some(&mut rng),
        false,
    );
    (&f.output * go).sum() + (&f.h_n * gh).sum()
}

fn check(c: &RecurrentConfig, seed: u64) {
    let mut rng = Rng::new(seed);
    let b = Batches::from_batch_sizes(vec![3, 3, 2, 1]).unwrap();
    let ld = c.num_layers * c.num_directions();
    let mut r2 = |m: usize, k: usize| {
        Array2::from_shape_simple_fn((m, k), || f64::from(rng.uniform(-1.0, 1.0)))
    };
    let x = r2(b.rows(), c.input_size);
    let go = r2(b.rows(), c.output_size());
    let mut r3 = |d: (usize, usize, usize)| {
        Array3::from_shape_simple_fn(d, || f64::from(rng.uniform(-1.0, 1.0)))
    };
    let h0 = r3((ld, b.batch(), c.state_size()));
    let gh = r3((ld, b.batch(), c.state_size()));
    let mut params = random_params(c, &mut rng);

    let w = weights(c, &params);
    let mut mask_rng = Rng::new(MASK_SEED);
    let input = engine::Input {
        x: x.view(),
        batches: &b,
    };
    let f = engine::forward(
        c,
        &w,
        input,
        engine::InitialStates {
            h0: h0.view(),
            c0: None,
        },
        Some(&mut mask_rng),
        true,
    );
    let g = engine::backward(
        c,
        &w,
        f.saved.as_ref().unwrap(),
        input,
        engine::OutputGrads {
            d_output: go.view(),
            dh_n: Some(gh.view()),
            dc_n: None,
        },
    );
    drop(w);

    // The masks do something: the loss differs from the one without dropout.
    let plain = {
        let w = weights(c, &params);
        let f = engine::forward(
            c,
            &w,
            input,
            engine::InitialStates {
                h0: h0.view(),
                c0: None,
            },
            None,
            false,
        );
        (&f.output * &go).sum() + (&f.h_n * &gh).sum()
    };
    let with_masks = loss(c, &params, &x, &b, &h0, &go, &gh);
    assert!(
        (plain - with_masks).abs() > 1e-3,
        "{c:?}: dropout changed nothing"
    );

    let eps = 1e-6;
    let assert_fd = |what: &str, analytic: f64, plus: f64, minus: f64| {
        let numeric = (plus - minus) / (2.0 * eps);
        assert!(
            (analytic - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
            "{c:?} {what}: backward {analytic}, finite difference {numeric}"
        );
    };
    for k in 0..x.len() {
        let (i, j) = (k / c.input_size, k % c.input_size);
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[[i, j]] += eps;
        xm[[i, j]] -= eps;
        assert_fd(
            &format!("d input[{i}, {j}]"),
            g.input[[i, j]],
            loss(c, &params, &xp, &b, &h0, &go, &gh),
            loss(c, &params, &xm, &b, &h0, &go, &gh),
        );
    }
    // Every element of the first two weights of every layer and direction.
    for d in 0..params.len() {
        let grads = [&g.weights[d].w_ih, &g.weights[d].w_hh];
        for (t, grad) in grads.iter().enumerate() {
            for k in 0..params[d][t].len() {
                let orig = params[d][t].as_slice().unwrap()[k];
                params[d][t].as_slice_mut().unwrap()[k] = orig + eps;
                let plus = loss(c, &params, &x, &b, &h0, &go, &gh);
                params[d][t].as_slice_mut().unwrap()[k] = orig - eps;
                let minus = loss(c, &params, &x, &b, &h0, &go, &gh);
                params[d][t].as_slice_mut().unwrap()[k] = orig;
                assert_fd(
                    &format!("d param {d}.{t}[{k}]"),
                    grad.as_slice().unwrap()[k],
                    plus,
                    minus,
                );
            }
        }
    }
}

#[test]
fn backward_through_dropout_matches_finite_differences_with_the_masks_held() {
    let mut seed = 0;
    for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
        for bidirectional in [false, true] {
            for proj in [0, 2] {
                if proj > 0 && cell != CellKind::Lstm {
                    continue;
                }
                let c = RecurrentConfig::new(cell, 3, 4)
                    .with_num_layers(3)
                    .with_dropout(0.5)
                    .with_bidirectional(bidirectional)
                    .with_proj_size(proj);
                seed += 1;
                check(&c, seed);
            }
        }
    }
}
