//! The regularisers against an independent reference: a PyTorch loop over time of the cells'
//! equations with weight drop, zoneout and variational dropout
//! (`tools/fixtures/regularisers.py`), fed the same masks, which the fixture holds. Every cell
//! and variant, two layers, both directions, `batch_first`, initial states; in training mode
//! (the fixture's masks through `Recurrent::forward_masked`) and at evaluation (no masks:
//! weight drop and dropout are the identity, zoneout its expectation). Outputs within 1e-5,
//! gradients within 1e-5 + 1e-4 relative, as `recurrent_parity.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::{Array2, ArrayD, Ix2};
use rnn::engine::{Masks as PassMasks, Zoneout, ZoneoutMasks};
use rnn::io::{load_state_dict, TensorData, TensorFile};
use rnn::regularisers::Masks;
use rnn::{Module, Recurrent, RecurrentConfig, Tensor};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    config: RecurrentConfig,
    training: bool,
}

fn assert_close(what: &str, actual: &ArrayD<f32>, expected: &ArrayD<f64>, abs: f64, rel: f64) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    for (k, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        let err = (f64::from(*a) - e).abs() - rel * e.abs();
        assert!(err <= abs, "{what}: element {k} is {a}, PyTorch says {e}");
    }
}

/// The fixture's masks, as rows of the pass (the input's layout flattened).
fn masks(file: &TensorFile, case: &Case) -> Masks<f32> {
    let c = &case.config;
    let ld = c.num_layers * c.num_directions();
    let get = |k: String| file.f32(&format!("{}.mask.{k}", case.name)).unwrap();
    let rows = |a: ArrayD<f32>| -> Array2<f32> {
        let width = *a.shape().last().unwrap();
        let n = a.len() / width;
        a.into_shape_with_order((n, width)).unwrap()
    };
    let has_c = c.cell == rnn::CellKind::Lstm;
    Masks {
        weight_drop: (0..ld)
            .map(|k| {
                get(format!("weight_drop.{k}"))
                    .into_dimensionality::<Ix2>()
                    .unwrap()
            })
            .collect(),
        pass: PassMasks {
            dropout: (0..c.num_layers - 1)
                .map(|l| Some(rows(get(format!("dropout.{l}")))))
                .collect(),
            zoneout: Zoneout::Masks(
                (0..ld)
                    .map(|k| ZoneoutMasks {
                        h: rows(get(format!("zoneout_h.{k}"))),
                        c: has_c.then(|| rows(get(format!("zoneout_c.{k}")))),
                    })
                    .collect(),
            ),
        },
    }
}

fn run_case(file: &TensorFile, case: &Case) {
    let name = &case.name;
    let key = |k: &str| format!("{name}.{k}");
    let ctx = |k: &str| format!("{name} training={} {:?} {k}", case.training, case.config);
    let mut model = Recurrent::new(case.config.clone()).unwrap();
    let params: BTreeMap<String, TensorData> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| {
            let data = TensorData::F64(file.f64(&key(&n)).unwrap());
            (n, data)
        })
        .collect();
    load_state_dict(&model, &params, true).unwrap();
    model.set_training(case.training);

    let input = Tensor::parameter(file.f32(&key("input")).unwrap());
    let h0 = Tensor::parameter(file.f32(&key("h0")).unwrap());
    let is_lstm = case.config.cell == rnn::CellKind::Lstm;
    let c0 = is_lstm.then(|| Tensor::parameter(file.f32(&key("c0")).unwrap()));
    let out = if case.training {
        model
            .forward_masked(&input, Some(&h0), c0.as_ref(), masks(file, case))
            .unwrap()
    } else {
        model
            .forward_states(&input, Some(&h0), c0.as_ref())
            .unwrap()
    };
    let expect = |k: &str| file.f64(&key(k)).unwrap();
    assert_close(
        &ctx("output"),
        &out.output.to_array(),
        &expect("output"),
        1e-5,
        0.0,
    );
    assert_close(&ctx("h_n"), &out.h_n.to_array(), &expect("h_n"), 1e-5, 0.0);
    if let Some(c_n) = &out.c_n {
        assert_close(&ctx("c_n"), &c_n.to_array(), &expect("c_n"), 1e-5, 0.0);
    }
    out.output
        .backward_with(file.f32(&key("grad_output")).unwrap())
        .unwrap();
    out.h_n
        .backward_with(file.f32(&key("grad_h_n")).unwrap())
        .unwrap();
    if let Some(c_n) = &out.c_n {
        c_n.backward_with(file.f32(&key("grad_c_n")).unwrap())
            .unwrap();
    }
    let grad = |t: &Tensor, k: &str| {
        let actual = t
            .grad()
            .unwrap_or_else(|| panic!("{}: no gradient", ctx(k)));
        assert_close(
            &ctx(&format!("grad.{k}")),
            &actual,
            &expect(&format!("grad.{k}")),
            1e-5,
            1e-4,
        );
    };
    grad(&input, "input");
    grad(&h0, "h0");
    if let Some(c0) = &c0 {
        grad(c0, "c0");
    }
    for (n, p) in model.named_parameters() {
        grad(&p, &n);
    }
}

#[test]
fn regularisers_match_a_pytorch_loop_fed_the_same_masks() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/regularisers.safetensors");
    let file = TensorFile::read(&path).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&file.metadata["cases"]).unwrap();
    assert_eq!(cases.len(), 28);
    for case in &cases {
        run_case(&file, case);
    }
}

#[test]
fn given_masks_of_the_wrong_shape_are_an_error() {
    let c = RecurrentConfig::new(rnn::CellKind::Lstm, 3, 4)
        .with_num_layers(2)
        .with_dropout(0.5)
        .with_zoneout(0.1);
    let layer = Recurrent::new(c).unwrap();
    let x = Tensor::zeros(&[5, 2, 3]);
    let bad = Masks {
        weight_drop: vec![Array2::zeros((16, 3)); 2],
        pass: PassMasks::default(),
    };
    let e = layer
        .forward_masked(&x, None, None, bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weight_drop[0] mask: expected shape (16, 4)"),
        "{e}"
    );
    let bad = Masks {
        weight_drop: Vec::new(),
        pass: PassMasks {
            dropout: Vec::new(),
            zoneout: Zoneout::Masks(vec![
                ZoneoutMasks {
                    h: Array2::zeros((10, 4)),
                    c: None,
                };
                2
            ]),
        },
    };
    let e = layer
        .forward_masked(&x, None, None, bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("zoneout[0].c"), "{e}");
}
