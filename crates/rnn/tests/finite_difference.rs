//! The hand-written backward through time checked against central finite differences in f64,
//! independently of the PyTorch fixtures: random small cases over cell x layers x direction x
//! bias x projection x variable lengths.

use ndarray::{Array2, Array3, ArrayD, IxDyn};
use rnn::engine::cells::params::layer_params;
use rnn::engine::{self, Batches, DirWeights};
use rnn::{CellKind, Nonlinearity, RecurrentConfig, Rng};

struct Case {
    config: RecurrentConfig,
    batch_sizes: Vec<usize>,
}

/// Parameters of every layer and direction as owned f64 arrays.
/// In the order of the cell's parameter list (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`,
/// `weight_hr`, then a variant's own).
fn random_params(c: &RecurrentConfig, rng: &mut Rng) -> Vec<Vec<ArrayD<f64>>> {
    let mut all = Vec::new();
    for layer in 0..c.num_layers {
        for _ in 0..c.num_directions() {
            let v = layer_params(c, layer)
                .into_iter()
                .map(|(_, shape)| {
                    ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.uniform(-0.6, 0.6) as f64)
                })
                .collect();
            all.push(v);
        }
    }
    all
}

fn weights<'a>(c: &RecurrentConfig, p: &'a [Vec<ArrayD<f64>>]) -> Vec<DirWeights<'a, f64>> {
    p.iter()
        .enumerate()
        .map(|(idx, v)| {
            let roles = layer_params(c, idx / c.num_directions());
            DirWeights::from_params(roles.into_iter().zip(v).map(|((r, _), a)| (r, a.view())))
        })
        .collect()
}

/// loss = sum(output * go) + sum(h_n * gh) + sum(c_n * gc).
#[allow(clippy::too_many_arguments)]
fn loss(
    c: &RecurrentConfig,
    p: &[Vec<ArrayD<f64>>],
    x: &Array2<f64>,
    b: &Batches,
    h0: &Array3<f64>,
    c0: &Option<Array3<f64>>,
    go: &Array2<f64>,
    gh: &Array3<f64>,
    gc: &Option<Array3<f64>>,
) -> f64 {
    let w = weights(c, p);
    let f = engine::forward(
        c,
        &w,
        engine::Input {
            x: x.view(),
            batches: b,
        },
        engine::InitialStates {
            h0: h0.view(),
            c0: c0.as_ref().map(|a| a.view()),
        },
        None,
        false,
    );
    let mut s = (&f.output * go).sum() + (&f.h_n * gh).sum();
    if let (Some(cn), Some(gc)) = (&f.c_n, gc) {
        s += (cn * gc).sum();
    }
    s
}

fn check(case: &Case, seed: u64) {
    let c = &case.config;
    let mut rng = Rng::new(seed);
    let b = Batches::from_batch_sizes(case.batch_sizes.clone()).unwrap();
    let n = b.batch();
    let ld = c.num_layers * c.num_directions();
    let mut r2 =
        |m: usize, k: usize| Array2::from_shape_simple_fn((m, k), || rng.uniform(-1.0, 1.0) as f64);
    let x = r2(b.rows(), c.input_size);
    let go = r2(b.rows(), c.output_size());
    let mut r3 = |d: (usize, usize, usize)| {
        Array3::from_shape_simple_fn(d, || rng.uniform(-1.0, 1.0) as f64)
    };
    let h0 = r3((ld, n, c.state_size()));
    let gh = r3((ld, n, c.state_size()));
    let is_lstm = c.cell == CellKind::Lstm;
    let c0 = is_lstm.then(|| r3((ld, n, c.hidden_size)));
    let gc = is_lstm.then(|| r3((ld, n, c.hidden_size)));
    let mut params = random_params(c, &mut rng);

    let w = weights(c, &params);
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
            c0: c0.as_ref().map(|a| a.view()),
        },
        None,
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
            dc_n: gc.as_ref().map(|a| a.view()),
        },
    );
    drop(w);
    let l1 = loss(c, &params, &x, &b, &h0, &c0, &go, &gh, &gc);
    let l2 = loss(c, &params, &x, &b, &h0, &c0, &go, &gh, &gc);
    assert_eq!(l1, l2, "forward is deterministic");
    let eps = 1e-6;
    let ctx = format!("{c:?} batch_sizes {:?}", case.batch_sizes);
    let assert_fd = |what: &str, analytic: f64, plus: f64, minus: f64| {
        let numeric = (plus - minus) / (2.0 * eps);
        assert!(
            (analytic - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
            "{ctx} {what}: backward {analytic}, finite difference {numeric}"
        );
    };
    // Input and initial states: a few coordinates each.
    for k in [0, x.len() / 2, x.len() - 1] {
        let (i, j) = (k / c.input_size, k % c.input_size);
        let mut xp = x.clone();
        xp[[i, j]] += eps;
        let mut xm = x.clone();
        xm[[i, j]] -= eps;
        assert_fd(
            "d input",
            g.input[[i, j]],
            loss(c, &params, &xp, &b, &h0, &c0, &go, &gh, &gc),
            loss(c, &params, &xm, &b, &h0, &c0, &go, &gh, &gc),
        );
        let idx = [k % ld, k % n, k % c.state_size()];
        let mut hp = h0.clone();
        hp[idx] += eps;
        let mut hm = h0.clone();
        hm[idx] -= eps;
        assert_fd(
            "d h0",
            g.h0[idx],
            loss(c, &params, &x, &b, &hp, &c0, &go, &gh, &gc),
            loss(c, &params, &x, &b, &hm, &c0, &go, &gh, &gc),
        );
        if let (Some(c0v), Some(dc0)) = (&c0, &g.c0) {
            let idx = [k % ld, k % n, k % c.hidden_size];
            let mut cp = c0v.clone();
            cp[idx] += eps;
            let mut cm = c0v.clone();
            cm[idx] -= eps;
            assert_fd(
                "d c0",
                dc0[idx],
                loss(c, &params, &x, &b, &h0, &Some(cp), &go, &gh, &gc),
                loss(c, &params, &x, &b, &h0, &Some(cm), &go, &gh, &gc),
            );
        }
    }
    // Every parameter tensor: its first, middle and last element.
    for d in 0..params.len() {
        let grads: Vec<ArrayD<f64>> = {
            let gd = &g.weights[d];
            let mut v = vec![gd.w_ih.clone().into_dyn(), gd.w_hh.clone().into_dyn()];
            if let (Some(bi), Some(bh)) = (&gd.b_ih, &gd.b_hh) {
                v.push(bi.clone().into_dyn());
                v.push(bh.clone().into_dyn());
            }
            if let Some(w) = &gd.w_hr {
                v.push(w.clone().into_dyn());
            }
            for (_, w) in &gd.per_unit {
                v.push(w.clone().into_dyn());
            }
            v
        };
        for t in 0..params[d].len() {
            let len = params[d][t].len();
            for k in [0, len / 2, len - 1] {
                let orig = params[d][t].as_slice().unwrap()[k];
                params[d][t].as_slice_mut().unwrap()[k] = orig + eps;
                let plus = loss(c, &params, &x, &b, &h0, &c0, &go, &gh, &gc);
                params[d][t].as_slice_mut().unwrap()[k] = orig - eps;
                let minus = loss(c, &params, &x, &b, &h0, &c0, &go, &gh, &gc);
                params[d][t].as_slice_mut().unwrap()[k] = orig;
                assert_fd(
                    &format!("d param {d}.{t}[{k}]"),
                    grads[t].as_slice().unwrap()[k],
                    plus,
                    minus,
                );
            }
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut seed = 0;
    for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
        for layers in [1, 2] {
            for bidirectional in [false, true] {
                for bias in [true, false] {
                    for (proj, relu) in [(0, false), (2, false), (0, true)] {
                        if proj > 0 && cell != CellKind::Lstm || relu && cell != CellKind::Rnn {
                            continue;
                        }
                        for batch_sizes in [vec![3, 3, 3], vec![3, 2, 2, 1]] {
                            let config = RecurrentConfig::new(cell, 3, 4)
                                .with_num_layers(layers)
                                .with_bidirectional(bidirectional)
                                .with_bias(bias)
                                .with_proj_size(proj)
                                .with_nonlinearity(if relu {
                                    Nonlinearity::Relu
                                } else {
                                    Nonlinearity::Tanh
                                });
                            seed += 1;
                            check(
                                &Case {
                                    config,
                                    batch_sizes,
                                },
                                seed,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Layers wide enough that the engine cuts their units into several blocks (threads work on
/// blocks; buffers are stored by block), with and without projection, packed and padded;
/// rows of 2 KiB, which the engine pads.
#[test]
fn wide_layers_match_finite_differences() {
    let cases = [
        (CellKind::Lstm, 70, 0, Nonlinearity::Tanh),
        (CellKind::Lstm, 140, 130, Nonlinearity::Tanh),
        (CellKind::Gru, 100, 0, Nonlinearity::Tanh),
        (CellKind::Rnn, 150, 0, Nonlinearity::Tanh),
        // Rows of 2 KiB in f64 (G H = 256; H = 256): padded work buffers.
        (CellKind::Lstm, 64, 0, Nonlinearity::Tanh),
        (CellKind::Gru, 256, 0, Nonlinearity::Tanh),
    ];
    for (seed, (cell, hidden, proj, nonlinearity)) in cases.into_iter().enumerate() {
        for batch_sizes in [vec![3, 3, 3], vec![3, 2, 2, 1]] {
            let config = RecurrentConfig::new(cell, 3, hidden)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_proj_size(proj)
                .with_nonlinearity(nonlinearity);
            check(
                &Case {
                    config,
                    batch_sizes,
                },
                100 + seed as u64,
            );
        }
    }
}

/// The cell variants (configuration options beyond PyTorch's layers): one and two layers, one
/// and two directions, packed and padded, one block of units and several (wide), and a long
/// sequence (the input projection in chunks, the weight gradients in slices of rows).
#[test]
fn variants_match_finite_differences() {
    let variants = [
        RecurrentConfig::new(CellKind::Gru, 3, 4).with_linear_before_reset(false),
        RecurrentConfig::new(CellKind::Lstm, 3, 4).with_peephole(true),
        RecurrentConfig::new(CellKind::Lstm, 3, 4)
            .with_peephole(true)
            .with_proj_size(2),
        RecurrentConfig::new(CellKind::Lstm, 3, 4).with_layer_norm(true),
        RecurrentConfig::new(CellKind::Lstm, 3, 4)
            .with_layer_norm(true)
            .with_proj_size(2),
    ];
    let mut seed = 300;
    for base in variants {
        for (layers, bidirectional, hidden, bias) in [
            (1, false, 4, true),
            (2, true, 4, true),
            (1, true, 4, false),
            (2, true, 100, true),
        ] {
            for batch_sizes in [vec![3, 3, 3], vec![3, 2, 2, 1]] {
                let mut config = base
                    .clone()
                    .with_num_layers(layers)
                    .with_bidirectional(bidirectional)
                    .with_bias(bias);
                config.hidden_size = hidden;
                seed += 1;
                check(
                    &Case {
                        config,
                        batch_sizes,
                    },
                    seed,
                );
            }
        }
        let mut config = base.clone().with_bidirectional(true);
        (config.input_size, config.hidden_size) = (2, 3);
        let batch_sizes: Vec<usize> = [vec![2; 1000], vec![1; 100]].concat();
        seed += 1;
        check(
            &Case {
                config,
                batch_sizes,
            },
            seed,
        );
    }
}

/// Sequences long enough that the forward pass computes the input projection in several
/// chunks of steps and the weight gradients are summed over several slices of rows (over 2048
/// rows), in both directions.
#[test]
fn long_sequences_match_finite_differences() {
    let batch_sizes: Vec<usize> = [vec![2; 1000], vec![1; 100]].concat();
    for (seed, cell) in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru]
        .into_iter()
        .enumerate()
    {
        let config = RecurrentConfig::new(cell, 2, 3).with_bidirectional(true);
        check(
            &Case {
                config,
                batch_sizes: batch_sizes.clone(),
            },
            200 + seed as u64,
        );
    }
}
