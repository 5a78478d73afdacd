//! Layers wide enough that the engine cuts their hidden units into several blocks (which the
//! threads share out, and by which work buffers are laid out) against a plain step-by-step
//! reference written from the equations, in f64; and the same results, to the last bit, on one
//! thread and on two.

use ndarray::{s, Array1, Array2, Array3};
use rnn::engine::{self, Batches, DirWeights};
use rnn::{CellKind, RecurrentConfig, Rng};

struct Dir {
    w_ih: Array2<f64>,
    w_hh: Array2<f64>,
    b_ih: Array1<f64>,
    b_hh: Array1<f64>,
    w_hr: Option<Array2<f64>>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One direction, step by step: returns the output rows (R, H_out) and h_n, c_n.
fn reference(
    cell: CellKind,
    d: &Dir,
    x: &Array2<f64>,
    batch_sizes: &[usize],
    reverse: bool,
    h0: &Array2<f64>,
    c0: &Array2<f64>,
) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let hidden = d.w_hh.nrows() / cell.gates();
    let mut offsets = vec![0];
    for &b in batch_sizes {
        offsets.push(offsets.last().unwrap() + b);
    }
    let mut out = Array2::zeros((x.nrows(), d.w_hh.ncols()));
    let (mut h, mut c) = (h0.clone(), c0.clone());
    for step in 0..batch_sizes.len() {
        let t = if reverse {
            batch_sizes.len() - 1 - step
        } else {
            step
        };
        for i in 0..batch_sizes[t] {
            let row = offsets[t] + i;
            let a = d.w_ih.dot(&x.row(row)) + &d.b_ih;
            let b = d.w_hh.dot(&h.row(i)) + &d.b_hh;
            let part =
                |v: &Array1<f64>, k: usize| v.slice(s![k * hidden..(k + 1) * hidden]).to_owned();
            let new_h = match cell {
                CellKind::Rnn => (&a + &b).mapv(f64::tanh),
                CellKind::Lstm => {
                    let gate = |k| part(&a, k) + part(&b, k);
                    let (ig, fg) = (gate(0).mapv(sigmoid), gate(1).mapv(sigmoid));
                    let (gg, og) = (gate(2).mapv(f64::tanh), gate(3).mapv(sigmoid));
                    let new_c = &fg * &c.row(i) + &ig * &gg;
                    let m = &og * &new_c.mapv(f64::tanh);
                    c.row_mut(i).assign(&new_c);
                    match &d.w_hr {
                        Some(w_hr) => w_hr.dot(&m),
                        None => m,
                    }
                }
                CellKind::Gru => {
                    let r = (part(&a, 0) + part(&b, 0)).mapv(sigmoid);
                    let z = (part(&a, 1) + part(&b, 1)).mapv(sigmoid);
                    let n = (part(&a, 2) + &r * &part(&b, 2)).mapv(f64::tanh);
                    &n + &z * &(&h.row(i) - &n)
                }
            };
            out.row_mut(row).assign(&new_h);
            h.row_mut(i).assign(&new_h);
        }
    }
    (out, h, c)
}

#[test]
fn wide_layers_match_the_step_by_step_reference_on_any_thread_count() {
    let cases = [
        (CellKind::Lstm, 70, 0),
        (CellKind::Lstm, 140, 130),
        (CellKind::Gru, 100, 0),
        (CellKind::Rnn, 150, 0),
        // Rows of 256 f64 (2 KiB): the engine pads its state and gradient buffers.
        (CellKind::Rnn, 256, 0),
        (CellKind::Gru, 256, 0),
    ];
    for (cell, hidden, proj) in cases {
        // The third batch is wide enough for the threads to take rows each (the others make
        // them share every step by blocks of units); the last one is long enough for the
        // input projection to be computed in several chunks of steps.
        let long: Vec<usize> = [vec![5; 10], vec![4; 15], vec![2; 12]].concat();
        for batch_sizes in [
            vec![4, 4, 4, 4, 4],
            vec![5, 4, 4, 2, 1, 1],
            vec![40, 40, 31, 17, 3],
            long,
        ] {
            let config = RecurrentConfig::new(cell, 7, hidden)
                .with_bidirectional(true)
                .with_proj_size(proj);
            let mut rng = Rng::new(hidden as u64);
            let scale = 1.0 / (hidden as f64).sqrt();
            let mut r = |m: usize, k: usize| {
                Array2::from_shape_simple_fn((m, k), || rng.uniform(-1.0, 1.0) as f64 * scale)
            };
            let gh = cell.gates() * hidden;
            let h_out = config.state_size();
            let dirs: Vec<Dir> = (0..2)
                .map(|_| Dir {
                    w_ih: r(gh, 7),
                    w_hh: r(gh, h_out),
                    b_ih: r(1, gh).row(0).to_owned(),
                    b_hh: r(1, gh).row(0).to_owned(),
                    w_hr: (proj > 0).then(|| r(proj, hidden)),
                })
                .collect();
            let b = Batches::from_batch_sizes(batch_sizes.clone()).unwrap();
            let n = b.batch();
            let x = r(b.rows(), 7) / scale;
            let h0 =
                Array3::from_shape_fn((2, n, h_out), |(d, i, j)| ((d + i + j) % 5) as f64 * 0.1);
            let c0 = Array3::from_shape_fn((2, n, hidden), |(d, i, j)| {
                ((d + 2 * i + j) % 7) as f64 * 0.1
            });
            let weights: Vec<DirWeights<'_, f64>> = dirs
                .iter()
                .map(|d| DirWeights {
                    w_ih: d.w_ih.view(),
                    w_hh: d.w_hh.view(),
                    b_ih: Some(d.b_ih.view()),
                    b_hh: Some(d.b_hh.view()),
                    w_hr: d.w_hr.as_ref().map(|w| w.view()),
                    per_unit: Vec::new(),
                })
                .collect();
            let is_lstm = cell == CellKind::Lstm;
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let input = engine::Input {
                        x: x.view(),
                        batches: &b,
                    };
                    let f = engine::forward(
                        &config,
                        &weights,
                        input,
                        engine::InitialStates {
                            h0: h0.view(),
                            c0: is_lstm.then(|| c0.view()),
                        },
                        None,
                        true,
                    );
                    let go = Array2::from_shape_fn(f.output.dim(), |(i, j)| {
                        ((i * 3 + j) % 11) as f64 - 5.0
                    });
                    let g = engine::backward(
                        &config,
                        &weights,
                        f.saved.as_ref().unwrap(),
                        input,
                        engine::OutputGrads {
                            d_output: go.view(),
                            dh_n: None,
                            dc_n: None,
                        },
                    );
                    (f.output, f.h_n, f.c_n, g.input, g.weights)
                })
            };
            let one = run(1);
            let two = run(2);
            let ctx = format!("{cell:?} hidden {hidden} proj {proj} batch_sizes {batch_sizes:?}");
            assert_eq!(
                one.0, two.0,
                "{ctx}: output differs between 1 and 2 threads"
            );
            assert_eq!(one.1, two.1, "{ctx}: h_n differs");
            assert_eq!(one.3, two.3, "{ctx}: d input differs");
            for (a, b) in one.4.iter().zip(&two.4) {
                assert_eq!(a.w_ih, b.w_ih, "{ctx}: d w_ih differs");
                assert_eq!(a.w_hh, b.w_hh, "{ctx}: d w_hh differs");
                assert_eq!(a.b_hh, b.b_hh, "{ctx}: d b_hh differs");
                assert_eq!(a.w_hr, b.w_hr, "{ctx}: d w_hr differs");
            }
            for (d, dir) in dirs.iter().enumerate() {
                let (out, h_n, c_n) = reference(
                    cell,
                    dir,
                    &x,
                    &batch_sizes,
                    d == 1,
                    &h0.slice(s![d, .., ..]).to_owned(),
                    &c0.slice(s![d, .., ..]).to_owned(),
                );
                let got = two.0.slice(s![.., d * h_out..(d + 1) * h_out]);
                let worst = (&got - &out).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
                assert!(worst < 1e-12, "{ctx} direction {d}: output off by {worst}");
                let worst = (&two.1.slice(s![d, .., ..]) - &h_n)
                    .mapv(f64::abs)
                    .fold(0.0f64, |m, &v| m.max(v));
                assert!(worst < 1e-12, "{ctx} direction {d}: h_n off by {worst}");
                if let Some(cn) = &two.2 {
                    let worst = (&cn.slice(s![d, .., ..]) - &c_n)
                        .mapv(f64::abs)
                        .fold(0.0f64, |m, &v| m.max(v));
                    assert!(worst < 1e-12, "{ctx} direction {d}: c_n off by {worst}");
                }
            }
        }
    }
}
