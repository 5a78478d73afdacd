//! Parity with PyTorch over the whole configuration matrix of `nn.RNN`, `nn.LSTM`, `nn.GRU`:
//! cell x num_layers 1..3 x bidirectional x batch_first x bias x nonlinearity x proj_size x
//! batched/unbatched x h0 given/absent. Fixtures: `tools/fixtures/recurrent.py`.
//!
//! Each case is checked twice: through the public f32 API (`Module`, `Tensor`, autograd) against
//! PyTorch's float64 numbers within 1e-5 (outputs) and 1e-4 relative / 1e-5 absolute
//! (gradients), and through the engine in f64 within 1e-10, which leaves no room for a wrong
//! equation hiding under f32 rounding.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::{Array2, Array3, ArrayD, Axis, Ix1, Ix2, Ix3};
use rnn::engine::{self, Batches, DirWeights};
use rnn::io::{load_state_dict, TensorData, TensorFile};
use rnn::{Module, Recurrent, RecurrentConfig, Tensor};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    config: RecurrentConfig,
    batched: bool,
    has_h0: bool,
}

fn fixture(name: &str) -> (TensorFile, Vec<Case>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let file = TensorFile::read(&path).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&file.metadata["cases"]).unwrap();
    assert!(!cases.is_empty());
    (file, cases)
}

/// Asserts |a - e| <= abs + rel * |e| elementwise, with shapes equal.
fn assert_close(what: &str, actual: &ArrayD<f32>, expected: &ArrayD<f64>, abs: f64, rel: f64) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let mut worst = (0.0f64, 0usize);
    for (k, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        let err = (*a as f64 - e).abs() - rel * e.abs();
        if err > worst.0 {
            worst = (err, k);
        }
    }
    let a = actual.iter().nth(worst.1).copied().unwrap_or(0.0);
    let e = expected.iter().nth(worst.1).copied().unwrap_or(0.0);
    assert!(
        worst.0 <= abs,
        "{what}: element {} is {a}, PyTorch says {e}",
        worst.1
    );
}

fn param_map(file: &TensorFile, case: &str, names: &[String]) -> BTreeMap<String, TensorData> {
    names
        .iter()
        .map(|n| {
            (
                n.clone(),
                TensorData::F64(file.f64(&format!("{case}.{n}")).unwrap()),
            )
        })
        .collect()
}

fn run_f32_case(file: &TensorFile, case: &Case) {
    let name = &case.name;
    let key = |k: &str| format!("{name}.{k}");
    let model = Recurrent::new(case.config.clone()).unwrap();
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    load_state_dict(&model, &param_map(file, name, &names), true).unwrap();

    let input = Tensor::parameter(file.f32(&key("input")).unwrap());
    let h0 = case
        .has_h0
        .then(|| Tensor::parameter(file.f32(&key("h0")).unwrap()));
    let is_lstm = case.config.cell == rnn::CellKind::Lstm;
    let c0 = (case.has_h0 && is_lstm).then(|| Tensor::parameter(file.f32(&key("c0")).unwrap()));
    let out = model
        .forward_states(&input, h0.as_ref(), c0.as_ref())
        .unwrap();

    let ctx = |k: &str| format!("{name} {:?} {k}", case.config);
    assert_close(
        &ctx("output"),
        &out.output.to_array(),
        &file.f64(&key("output")).unwrap(),
        1e-5,
        0.0,
    );
    assert_close(
        &ctx("h_n"),
        &out.h_n.to_array(),
        &file.f64(&key("h_n")).unwrap(),
        1e-5,
        0.0,
    );
    if is_lstm {
        let c_n = out.c_n.as_ref().expect("LSTM returns c_n");
        assert_close(
            &ctx("c_n"),
            &c_n.to_array(),
            &file.f64(&key("c_n")).unwrap(),
            1e-5,
            0.0,
        );
    } else {
        assert!(out.c_n.is_none());
    }
    // Inference (no gradient bookkeeping: nothing saved for backward) gives the same values.
    let inferred = rnn::no_grad(|| model.forward_states(&input, h0.as_ref(), c0.as_ref())).unwrap();
    assert_close(
        &ctx("output without gradients"),
        &inferred.output.to_array(),
        &file.f64(&key("output")).unwrap(),
        1e-5,
        0.0,
    );

    // loss = sum(output * g_out) + sum(h_n * g_h) [+ sum(c_n * g_c)]: by linearity, one
    // backward per output accumulates the same gradients.
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
        let expected = file.f64(&key(&format!("grad.{k}"))).unwrap();
        let actual = t
            .grad()
            .unwrap_or_else(|| panic!("{}: no gradient", ctx(k)));
        assert_close(&ctx(&format!("grad.{k}")), &actual, &expected, 1e-5, 1e-4);
    };
    grad(&input, "input");
    if let Some(h0) = &h0 {
        grad(h0, "h0");
    }
    if let Some(c0) = &c0 {
        grad(c0, "c0");
    }
    for (n, p) in model.named_parameters() {
        grad(&p, &n);
    }
}

/// The case in the engine's packed-row layout, in f64.
fn run_f64_engine_case(file: &TensorFile, case: &Case) {
    let c = &case.config;
    let name = &case.name;
    let key = |k: &str| format!("{name}.{k}");
    let f = |k: &str| file.f64(&key(k)).unwrap();
    // To time-major (L, N, F).
    let to_tm = |a: ArrayD<f64>| -> Array3<f64> {
        if !case.batched {
            a.insert_axis(Axis(1)).into_dimensionality().unwrap()
        } else if c.batch_first {
            a.into_dimensionality::<Ix3>()
                .unwrap()
                .permuted_axes([1, 0, 2])
                .as_standard_layout()
                .to_owned()
        } else {
            a.into_dimensionality().unwrap()
        }
    };
    let state = |a: ArrayD<f64>| -> Array3<f64> {
        if case.batched {
            a.into_dimensionality().unwrap()
        } else {
            a.insert_axis(Axis(1)).into_dimensionality().unwrap()
        }
    };
    let x = to_tm(f("input"));
    let (len, n, i) = x.dim();
    let x = x.into_shape_with_order((len * n, i)).unwrap();
    let batches = Batches::uniform(len, n);
    let ld = c.num_layers * c.num_directions();
    let is_lstm = c.cell == rnn::CellKind::Lstm;
    let h0 = if case.has_h0 {
        state(f("h0"))
    } else {
        Array3::zeros((ld, n, c.state_size()))
    };
    let c0 = is_lstm.then(|| {
        if case.has_h0 {
            state(f("c0"))
        } else {
            Array3::zeros((ld, n, c.hidden_size))
        }
    });

    let model = Recurrent::new(c.clone()).unwrap();
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let params: BTreeMap<String, ArrayD<f64>> = names.iter().map(|n| (n.clone(), f(n))).collect();
    let dirs = c.num_directions();
    let weights: Vec<DirWeights<f64>> = (0..ld)
        .map(|idx| {
            let sfx = format!(
                "_l{}{}",
                idx / dirs,
                if idx % dirs == 1 { "_reverse" } else { "" }
            );
            let w2 = |k: &str| {
                params[&format!("{k}{sfx}")]
                    .view()
                    .into_dimensionality::<Ix2>()
                    .unwrap()
            };
            let w1 = |k: &str| {
                params[&format!("{k}{sfx}")]
                    .view()
                    .into_dimensionality::<Ix1>()
                    .unwrap()
            };
            DirWeights {
                w_ih: w2("weight_ih"),
                w_hh: w2("weight_hh"),
                b_ih: c.bias.then(|| w1("bias_ih")),
                b_hh: c.bias.then(|| w1("bias_hh")),
                w_hr: (c.proj_size > 0).then(|| w2("weight_hr")),
                // The cell's per-unit parameters (peepholes, layer-norm gains), by role.
                per_unit: rnn::engine::cells::params::layer_roles(c)
                    .filter(|p| p.unit_width().is_some())
                    .map(|p| (p, w1(p.name())))
                    .collect(),
            }
        })
        .collect();
    let input = engine::Input {
        x: x.view(),
        batches: &batches,
    };
    let fwd = engine::forward(
        c,
        &weights,
        input,
        engine::InitialStates {
            h0: h0.view(),
            c0: c0.as_ref().map(|a| a.view()),
        },
        None,
        true,
    );
    let close = |what: &str, a: ArrayD<f64>, e: ArrayD<f64>| {
        assert_eq!(a.shape(), e.shape(), "{name} {what}");
        let err = a
            .iter()
            .zip(e.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(err <= 1e-10, "{name} {c:?} {what}: max error {err}");
    };
    let rows_to_tm = |rows: &Array2<f64>| {
        rows.clone()
            .into_shape_with_order((len, n, rows.ncols()))
            .unwrap()
    };
    close(
        "output",
        rows_to_tm(&fwd.output).into_dyn(),
        to_tm(f("output")).into_dyn(),
    );
    close(
        "h_n",
        fwd.h_n.clone().into_dyn(),
        state(f("h_n")).into_dyn(),
    );

    let g_out = to_tm(f("grad_output"));
    let g_out = g_out
        .into_shape_with_order((len * n, c.output_size()))
        .unwrap();
    let g_h = state(f("grad_h_n"));
    let g_c = is_lstm.then(|| state(f("grad_c_n")));
    let b = engine::backward(
        c,
        &weights,
        fwd.saved.as_ref().unwrap(),
        input,
        engine::OutputGrads {
            d_output: g_out.view(),
            dh_n: Some(g_h.view()),
            dc_n: g_c.as_ref().map(|a| a.view()),
        },
    );
    close(
        "grad.input",
        rows_to_tm(&b.input).into_dyn(),
        to_tm(f("grad.input")).into_dyn(),
    );
    if case.has_h0 {
        close("grad.h0", b.h0.into_dyn(), state(f("grad.h0")).into_dyn());
        if let Some(c0) = b.c0 {
            close("grad.c0", c0.into_dyn(), state(f("grad.c0")).into_dyn());
        }
    }
    for (idx, g) in b.weights.into_iter().enumerate() {
        let sfx = format!(
            "_l{}{}",
            idx / dirs,
            if idx % dirs == 1 { "_reverse" } else { "" }
        );
        let e = |k: &str| f(&format!("grad.{k}{sfx}"));
        close("grad.weight_ih", g.w_ih.into_dyn(), e("weight_ih"));
        close("grad.weight_hh", g.w_hh.into_dyn(), e("weight_hh"));
        if let (Some(bi), Some(bh)) = (g.b_ih, g.b_hh) {
            close("grad.bias_ih", bi.into_dyn(), e("bias_ih"));
            close("grad.bias_hh", bh.into_dyn(), e("bias_hh"));
        }
        if let Some(w) = g.w_hr {
            close("grad.weight_hr", w.into_dyn(), e("weight_hr"));
        }
        for (p, w) in g.per_unit {
            close(&format!("grad.{}", p.name()), w.into_dyn(), e(p.name()));
        }
    }
}

macro_rules! parity_tests {
    ($($test:ident: $file:expr, $runner:ident;)*) => {$(
        #[test]
        fn $test() {
            let (file, cases) = fixture($file);
            for case in &cases {
                $runner(&file, case);
            }
        }
    )*};
}

parity_tests! {
    rnn_matches_pytorch_f32: "recurrent_rnn.safetensors", run_f32_case;
    lstm_matches_pytorch_f32: "recurrent_lstm.safetensors", run_f32_case;
    gru_matches_pytorch_f32: "recurrent_gru.safetensors", run_f32_case;
    rnn_engine_matches_pytorch_f64: "recurrent_rnn.safetensors", run_f64_engine_case;
    lstm_engine_matches_pytorch_f64: "recurrent_lstm.safetensors", run_f64_engine_case;
    gru_engine_matches_pytorch_f64: "recurrent_gru.safetensors", run_f64_engine_case;
    // Variants, against a loop module whose outputs ONNX Runtime's operators confirm
    // (tools/fixtures/variants.py).
    gru_reset_before_matches_onnx_f32: "variants_gru.safetensors", run_f32_case;
    gru_reset_before_engine_matches_onnx_f64: "variants_gru.safetensors", run_f64_engine_case;
    lstm_peephole_matches_onnx_f32: "variants_lstm_peephole.safetensors", run_f32_case;
    lstm_peephole_engine_matches_onnx_f64: "variants_lstm_peephole.safetensors", run_f64_engine_case;
    // The layer-normalised LSTM, against the loop module alone (ONNX has no such operator).
    lstm_layer_norm_matches_loop_f32: "variants_lstm_layer_norm.safetensors", run_f32_case;
    lstm_layer_norm_engine_matches_loop_f64: "variants_lstm_layer_norm.safetensors", run_f64_engine_case;
}
