//! The regularisers (weight drop, zoneout, variational dropout; `rnn::regularisers`): backward
//! checked against central finite differences in f64 with the masks held fixed, for every cell
//! and variant, two layers, one and two directions, packed and batch-major rows, initial
//! states, in training mode (drawn masks) and at evaluation (zoneout's expectation); and the
//! masks themselves: their values, scaling and locking.

use ndarray::{Array2, Array3, ArrayD, IxDyn};
use rnn::engine::cells::params::layer_params;
use rnn::engine::{self, Batches, DirWeights, Zoneout};
use rnn::regularisers::{drop_weights, weight_drop_grad, Masks};
use rnn::{CellKind, RecurrentConfig, Rng};

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

/// The weights the pass runs: `weight_hh` times its DropConnect mask where there is one.
fn run_weights<'a>(
    c: &RecurrentConfig,
    p: &'a [Vec<ArrayD<f64>>],
    dropped: &'a [Array2<f64>],
) -> Vec<DirWeights<'a, f64>> {
    p.iter()
        .enumerate()
        .map(|(idx, v)| {
            let roles = layer_params(c, idx / c.num_directions());
            let mut w =
                DirWeights::from_params(roles.into_iter().zip(v).map(|((r, _), a)| (r, a.view())));
            if let Some(d) = dropped.get(idx) {
                w.w_hh = d.view();
            }
            w
        })
        .collect()
}

fn dropped(c: &RecurrentConfig, p: &[Vec<ArrayD<f64>>], masks: &Masks<f64>) -> Vec<Array2<f64>> {
    let plain = run_weights(c, p, &[]);
    masks
        .weight_drop
        .iter()
        .zip(&plain)
        .map(|(m, w)| drop_weights(w.w_hh, m))
        .collect()
}

struct Case {
    c: RecurrentConfig,
    b: Batches,
    x: Array2<f64>,
    h0: Array3<f64>,
    c0: Option<Array3<f64>>,
    go: Array2<f64>,
    gh: Array3<f64>,
    gc: Option<Array3<f64>>,
}

impl Case {
    fn loss(&self, p: &[Vec<ArrayD<f64>>], x: &Array2<f64>, masks: &Masks<f64>) -> f64 {
        self.loss_states(p, x, &self.h0, &self.c0, masks)
    }

    fn loss_states(
        &self,
        p: &[Vec<ArrayD<f64>>],
        x: &Array2<f64>,
        h0: &Array3<f64>,
        c0: &Option<Array3<f64>>,
        masks: &Masks<f64>,
    ) -> f64 {
        let d = dropped(&self.c, p, masks);
        let w = run_weights(&self.c, p, &d);
        let f = engine::forward_masked(
            &self.c,
            &w,
            engine::Input {
                x: x.view(),
                batches: &self.b,
            },
            engine::InitialStates {
                h0: h0.view(),
                c0: c0.as_ref().map(|a| a.view()),
            },
            masks.pass.clone(),
            false,
        );
        let mut l = (&f.output * &self.go).sum() + (&f.h_n * &self.gh).sum();
        if let (Some(c_n), Some(gc)) = (&f.c_n, &self.gc) {
            l += (c_n * gc).sum();
        }
        l
    }
}

fn check(c: &RecurrentConfig, b: Batches, training: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let ld = c.num_layers * c.num_directions();
    let has_c = c.cell.description().cell_state;
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
    let c0 = has_c.then(|| r3((ld, b.batch(), c.hidden_size)));
    let gc = has_c.then(|| r3((ld, b.batch(), c.hidden_size)));
    let mut params = random_params(c, &mut rng);
    let case = Case {
        c: c.clone(),
        b,
        x,
        h0,
        c0,
        go,
        gh,
        gc,
    };
    let mut mask_rng = Rng::new(seed + 1000);
    let masks = Masks::<f64>::draw(c, &case.b, training.then_some(&mut mask_rng));
    if training {
        assert_eq!(masks.weight_drop.len(), ld, "{c:?}");
        assert!(matches!(masks.pass.zoneout, Zoneout::Masks(_)), "{c:?}");
    } else {
        assert!(masks.weight_drop.is_empty());
        assert!(matches!(masks.pass.zoneout, Zoneout::Expectation(_)));
    }

    // Analytic gradients.
    let d = dropped(c, &params, &masks);
    let w = run_weights(c, &params, &d);
    let input = engine::Input {
        x: case.x.view(),
        batches: &case.b,
    };
    let f = engine::forward_masked(
        c,
        &w,
        input,
        engine::InitialStates {
            h0: case.h0.view(),
            c0: case.c0.as_ref().map(|a| a.view()),
        },
        masks.pass.clone(),
        true,
    );
    let mut g = engine::backward(
        c,
        &w,
        f.saved.as_ref().unwrap(),
        input,
        engine::OutputGrads {
            d_output: case.go.view(),
            dh_n: Some(case.gh.view()),
            dc_n: case.gc.as_ref().map(|a| a.view()),
        },
    );
    drop(w);
    for (k, m) in masks.weight_drop.iter().enumerate() {
        weight_drop_grad(&mut g.weights[k].w_hh, m);
    }

    // The masks do something: the loss differs from a pass without them.
    let plain = case.loss(&params, &case.x, &Masks::default());
    let with = case.loss(&params, &case.x, &masks);
    assert!(
        (plain - with).abs() > 1e-3,
        "{c:?}: the masks changed nothing"
    );

    let eps = 1e-6;
    let assert_fd = |what: &str, analytic: f64, plus: f64, minus: f64| {
        let numeric = (plus - minus) / (2.0 * eps);
        assert!(
            (analytic - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
            "{c:?} training={training} {what}: backward {analytic}, finite difference {numeric}"
        );
    };
    for k in 0..case.x.len() {
        let (mut xp, mut xm) = (case.x.clone(), case.x.clone());
        xp.as_slice_mut().unwrap()[k] += eps;
        xm.as_slice_mut().unwrap()[k] -= eps;
        assert_fd(
            &format!("d input[{k}]"),
            g.input.as_slice().unwrap()[k],
            case.loss(&params, &xp, &masks),
            case.loss(&params, &xm, &masks),
        );
    }
    for k in 0..case.h0.len() {
        let (mut hp, mut hm) = (case.h0.clone(), case.h0.clone());
        hp.as_slice_mut().unwrap()[k] += eps;
        hm.as_slice_mut().unwrap()[k] -= eps;
        assert_fd(
            &format!("d h0[{k}]"),
            g.h0.as_slice().unwrap()[k],
            case.loss_states(&params, &case.x, &hp, &case.c0, &masks),
            case.loss_states(&params, &case.x, &hm, &case.c0, &masks),
        );
    }
    if let Some(c0) = &case.c0 {
        let dc0 = g.c0.as_ref().unwrap();
        for k in 0..c0.len() {
            let (mut cp, mut cm) = (c0.clone(), c0.clone());
            cp.as_slice_mut().unwrap()[k] += eps;
            cm.as_slice_mut().unwrap()[k] -= eps;
            assert_fd(
                &format!("d c0[{k}]"),
                dc0.as_slice().unwrap()[k],
                case.loss_states(&params, &case.x, &case.h0, &Some(cp), &masks),
                case.loss_states(&params, &case.x, &case.h0, &Some(cm), &masks),
            );
        }
    }
    // Every element of every parameter of every layer and direction.
    for d in 0..params.len() {
        let roles = layer_params(c, d / c.num_directions());
        for (t, (role, _)) in roles.iter().enumerate() {
            let grad = g.weights[d].take(*role).unwrap();
            for k in 0..params[d][t].len() {
                let orig = params[d][t].as_slice().unwrap()[k];
                params[d][t].as_slice_mut().unwrap()[k] = orig + eps;
                let plus = case.loss(&params, &case.x, &masks);
                params[d][t].as_slice_mut().unwrap()[k] = orig - eps;
                let minus = case.loss(&params, &case.x, &masks);
                params[d][t].as_slice_mut().unwrap()[k] = orig;
                assert_fd(
                    &format!("d {}[{d}][{k}]", role.name()),
                    grad.as_slice().unwrap()[k],
                    plus,
                    minus,
                );
            }
        }
    }
}

/// Every cell and variant with all three regularisers.
fn configs() -> Vec<RecurrentConfig> {
    let base = |cell| {
        RecurrentConfig::new(cell, 3, 4)
            .with_num_layers(2)
            .with_dropout(0.4)
            .with_variational_dropout(true)
            .with_weight_drop(0.4)
            .with_zoneout(0.35)
    };
    vec![
        base(CellKind::Rnn),
        base(CellKind::Lstm),
        base(CellKind::Lstm).with_proj_size(2),
        base(CellKind::Lstm).with_peephole(true),
        base(CellKind::Gru),
        base(CellKind::Gru).with_linear_before_reset(false),
    ]
}

#[test]
fn backward_through_the_regularisers_matches_finite_differences_with_the_masks_held() {
    let mut seed = 0;
    for c in configs() {
        for bidirectional in [false, true] {
            let c = c.clone().with_bidirectional(bidirectional);
            seed += 1;
            // Packed (variable lengths, time-major) and padded batch-major rows.
            check(
                &c,
                Batches::from_batch_sizes(vec![3, 3, 2, 1]).unwrap(),
                true,
                seed,
            );
            let bm = Batches::uniform(3, 2).batch_major().unwrap();
            check(&c, bm, !bidirectional, seed + 100);
        }
    }
}

#[test]
fn drawn_masks_are_scaled_locked_and_deterministic() {
    let p = 0.25;
    let c = RecurrentConfig::new(CellKind::Lstm, 3, 16)
        .with_num_layers(2)
        .with_bidirectional(true)
        .with_dropout(p)
        .with_variational_dropout(true)
        .with_weight_drop(p)
        .with_zoneout(p);
    let b = Batches::from_batch_sizes(vec![4, 4, 3, 1]).unwrap();
    let draw = |seed| Masks::<f64>::draw(&c, &b, Some(&mut Rng::new(seed)));
    let m = draw(5);
    let scale = 1.0 / (1.0 - p);
    let (mut kept, mut total) = (0usize, 0usize);
    for w in &m.weight_drop {
        assert_eq!(w.dim(), (64, 16));
        for &v in w {
            assert!(v == 0.0 || v == scale, "weight drop mask value {v}");
            kept += usize::from(v != 0.0);
            total += 1;
        }
    }
    // About 1 - p kept (4096 draws: 0.75 +- 0.03 is over 4 standard deviations).
    let rate = kept as f64 / total as f64;
    assert!((rate - (1.0 - p)).abs() < 0.03, "kept {rate}");
    // Variational dropout: one mask per sequence and feature, the same at every step.
    let d = m.pass.dropout[0].as_ref().unwrap();
    assert_eq!(d.dim(), (b.rows(), 32));
    for &v in d {
        assert!(v == 0.0 || v == scale, "dropout mask value {v}");
    }
    let offsets = [0, 4, 8, 11];
    for (t, &off) in offsets.iter().enumerate() {
        for i in 0..b.batch_sizes()[t] {
            assert_eq!(d.row(off + i), d.row(i), "step {t}, sequence {i}");
        }
    }
    // Zoneout: 0/1 per unit, row and step, not locked.
    let Zoneout::Masks(z) = &m.pass.zoneout else {
        panic!("zoneout masks")
    };
    assert_eq!(z.len(), 4);
    for zm in z {
        let c_mask = zm.c.as_ref().unwrap();
        for &v in zm.h.iter().chain(c_mask.iter()) {
            assert!(v == 0.0 || v == 1.0);
        }
        assert_ne!(zm.h.row(0), zm.h.row(4), "a zoneout mask locked over time");
    }
    // Deterministic for a seed, different for another.
    let again = draw(5);
    assert_eq!(again.weight_drop, m.weight_drop);
    assert_eq!(again.pass.dropout, m.pass.dropout);
    assert_ne!(draw(6).weight_drop, m.weight_drop);
    // Per-element (not variational) dropout differs across steps.
    let plain = Masks::<f64>::draw(
        &c.clone().with_variational_dropout(false),
        &b,
        Some(&mut Rng::new(5)),
    );
    let d = plain.pass.dropout[0].as_ref().unwrap();
    assert_ne!(d.row(0), d.row(4));
}

#[test]
fn the_layers_alone_take_regularisers_and_onnx_refuses_zoneout() {
    // A cell is one step: a DropConnect mask per step, or zoneout, belong to the layer.
    for c in [
        RecurrentConfig::new(CellKind::Lstm, 3, 4).with_zoneout(0.1),
        RecurrentConfig::new(CellKind::Lstm, 3, 4).with_weight_drop(0.1),
    ] {
        let e = rnn::LstmCell::from_config(c).unwrap_err().to_string();
        assert!(e.contains("has no argument"), "{e}");
    }
    let dir = std::env::temp_dir().join(format!("rnn_regularisers_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let layer =
        rnn::Recurrent::new(RecurrentConfig::new(CellKind::Gru, 3, 4).with_zoneout(0.2)).unwrap();
    let e = rnn::onnx::export_recurrent(&layer, dir.join("z.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("zoneout = 0.2 has no ONNX form"), "{e}");
    // Weight drop and dropout are the identity at evaluation: exported as the plain layer.
    let layer = rnn::Recurrent::new(
        RecurrentConfig::new(CellKind::Gru, 3, 4)
            .with_num_layers(2)
            .with_dropout(0.5)
            .with_variational_dropout(true)
            .with_weight_drop(0.2),
    )
    .unwrap();
    rnn::onnx::export_recurrent(&layer, dir.join("w.onnx")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn evaluation_applies_no_mask_and_training_draws_from_the_global_generator() {
    use rnn::{Module, Tensor};
    let c = RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_num_layers(2)
        .with_dropout(0.5)
        .with_variational_dropout(true)
        .with_weight_drop(0.5);
    let mut layer = rnn::Recurrent::with_rng(c.clone(), &mut Rng::new(1)).unwrap();
    let plain = rnn::Recurrent::with_rng(
        RecurrentConfig::new(CellKind::Lstm, 3, 4).with_num_layers(2),
        &mut Rng::new(1),
    )
    .unwrap();
    let x = Tensor::new(ArrayD::from_shape_simple_fn(IxDyn(&[5, 2, 3]), || 0.7f32));
    let run = |l: &rnn::Recurrent| l.forward_states(&x, None, None).unwrap().output.to_array();
    // Training: masks drawn from the global generator, the same for the same seed.
    rnn::manual_seed(9);
    let a = run(&layer);
    rnn::manual_seed(9);
    assert_eq!(run(&layer), a);
    assert_ne!(a, run(&plain));
    // Evaluation: weight drop and dropout are the identity.
    layer.set_training(false);
    assert_eq!(run(&layer), run(&plain));
}
