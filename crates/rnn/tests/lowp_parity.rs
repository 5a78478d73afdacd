//! Reduced precision (bf16 products, int8 dynamic quantization) against PyTorch's float64
//! numbers over the whole parity matrix: every case of `recurrent_{rnn,lstm,gru}`,
//! `variants_*` and `packed_*` (cells x layers x bidirectional x batch_first x bias x
//! nonlinearity x proj_size x batched/unbatched x h0, packed variable-length batches), and
//! the cells. Outputs and final states must lie within the bounds documented in
//! `rnn::precision` (and they must differ from f32's: the precision must really apply).
//! CI runs this file again with `RNN_MAX_ISA=avx2`; `RNN_MAX_ISA=scalar` by hand.
//!
//! Also: a bad precision name, an int8 layer asked for gradients, autocast's scope, `Linear`.

use std::collections::BTreeMap;

use ndarray::ArrayD;
use rnn::io::{load_state_dict, TensorData, TensorFile};
use rnn::packed::{pack_padded_sequence, pad_packed_sequence};
use rnn::{
    autocast, no_grad, quantize_dynamic, Linear, Lstm, Module, Precision, Recurrent,
    RecurrentConfig, Tensor,
};
use serde_json::Value;

/// The tested bounds (`rnn::precision`'s module docs): largest absolute error against f64,
/// by precision and cell (the RNN's is the largest: its `tanh` does not damp the error).
const BF16_BOUND: f64 = 2e-2;
const INT8_BOUND: f64 = 3e-2;

fn bound(p: Precision, cell: &str) -> f64 {
    match (p, cell) {
        (Precision::Bf16, "rnn") => BF16_BOUND,
        (Precision::Bf16, _) => 1e-2,
        (Precision::Int8, "rnn") => INT8_BOUND,
        (Precision::Int8, _) => 2e-2,
        (Precision::F32, _) => 1e-5,
    }
}

fn load(name: &str) -> (TensorFile, Vec<Value>) {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = TensorFile::read(&path).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&file.metadata["cases"]).unwrap();
    (file, cases)
}

/// The case's tensors whose key is a parameter name.
fn params(file: &TensorFile, case: &str, names: &[String]) -> BTreeMap<String, TensorData> {
    names
        .iter()
        .map(|n| {
            let t = file.f64(&format!("{case}.{n}")).unwrap();
            (n.clone(), TensorData::F64(t))
        })
        .collect()
}

fn max_err(actual: &ArrayD<f32>, expected: &ArrayD<f64>) -> f64 {
    assert_eq!(actual.shape(), expected.shape());
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| (a as f64 - e).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

/// Runs one case of a layer fixture in `precision`; returns the worst error over the output
/// and the final states.
fn run_case(file: &TensorFile, case: &Value, precision: Precision) -> f64 {
    let name = case["name"].as_str().unwrap();
    let key = |k: &str| format!("{name}.{k}");
    let config: RecurrentConfig = serde_json::from_value(case["config"].clone()).unwrap();
    let f32_layer = Recurrent::new(config.clone()).unwrap();
    let names: Vec<String> = f32_layer
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    load_state_dict(&f32_layer, &params(file, name, &names), true).unwrap();
    let layer = f32_layer.to_precision(precision).unwrap();
    assert_eq!(layer.precision(), precision);
    let has_h0 = case["has_h0"].as_bool().unwrap();
    let lstm = config.cell == rnn::CellKind::Lstm;
    // Inputs that require gradients, as in training code: the int8 layer runs under no_grad.
    let x = Tensor::parameter(file.f32(&key("input")).unwrap());
    let h0 = has_h0.then(|| Tensor::parameter(file.f32(&key("h0")).unwrap()));
    let c0 = (has_h0 && lstm).then(|| Tensor::parameter(file.f32(&key("c0")).unwrap()));
    let (output, h_n, c_n) = no_grad(|| {
        if case["packed"].as_bool() == Some(true) {
            let lengths: Vec<usize> = file
                .i64(&key("lengths"))
                .unwrap()
                .iter()
                .map(|&v| v as usize)
                .collect();
            let bf = config.batch_first;
            let packed = pack_padded_sequence(&x, &lengths, bf, false).unwrap();
            let (out, h_n, c_n) = layer
                .forward_packed(&packed, h0.as_ref(), c0.as_ref())
                .unwrap();
            let (output, _) = pad_packed_sequence(&out, bf, 0.0, Some(6)).unwrap();
            (output, h_n, c_n)
        } else {
            let out = layer.forward_states(&x, h0.as_ref(), c0.as_ref()).unwrap();
            (out.output, out.h_n, out.c_n)
        }
    });
    let mut worst = max_err(&output.to_array(), &file.f64(&key("output")).unwrap());
    worst = worst.max(max_err(&h_n.to_array(), &file.f64(&key("h_n")).unwrap()));
    if let Some(c_n) = c_n {
        worst = worst.max(max_err(&c_n.to_array(), &file.f64(&key("c_n")).unwrap()));
    }
    worst
}

/// Every case of `fixtures` in `precision`: each cell's worst within its bound, and above
/// f32's rounding (the precision applies).
fn run_fixtures(fixtures: &[&str], precision: Precision) {
    let mut worst: BTreeMap<String, (f64, String)> = BTreeMap::new();
    for fixture in fixtures {
        let (file, list) = load(fixture);
        for case in &list {
            let e = run_case(&file, case, precision);
            let cell = case["config"]["cell"].as_str().unwrap().to_string();
            let w = worst.entry(cell).or_default();
            if e > w.0 {
                *w = (e, format!("{fixture} {}", case["name"]));
            }
        }
    }
    for (cell, (e, at)) in &worst {
        eprintln!(
            "{precision} ({}) {cell}: worst {e:.2e} at {at}",
            precision.kernel_name()
        );
        let b = bound(precision, cell);
        assert!(
            *e <= b,
            "{precision} {cell}: error {e:e} at {at} is over {b:e}"
        );
        assert!(
            *e > 1e-4,
            "{precision} {cell}: worst error {e:e}: the products did not run in {precision}"
        );
    }
}

const LAYERS: [&str; 5] = [
    "recurrent_rnn.safetensors",
    "recurrent_lstm.safetensors",
    "recurrent_gru.safetensors",
    "variants_gru.safetensors",
    "variants_lstm_peephole.safetensors",
];
const PACKED: [&str; 5] = [
    "packed_rnn.safetensors",
    "packed_lstm.safetensors",
    "packed_gru.safetensors",
    "variants_gru_packed.safetensors",
    "variants_lstm_peephole_packed.safetensors",
];

#[test]
fn bf16_layers_match_float64_within_the_bound() {
    run_fixtures(&LAYERS, Precision::Bf16);
}

#[test]
fn int8_layers_match_float64_within_the_bound() {
    run_fixtures(&LAYERS, Precision::Int8);
}

#[test]
fn bf16_packed_batches_match_float64_within_the_bound() {
    run_fixtures(&PACKED, Precision::Bf16);
}

#[test]
fn int8_packed_batches_match_float64_within_the_bound() {
    run_fixtures(&PACKED, Precision::Int8);
}

#[test]
fn cells_run_in_reduced_precision() {
    let (file, cases) = load("cells.safetensors");
    for precision in [Precision::Bf16, Precision::Int8] {
        let mut worst = 0.0f64;
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            let key = |k: &str| format!("{name}.{k}");
            let (i, h) = (
                case["input_size"].as_u64().unwrap() as usize,
                case["hidden_size"].as_u64().unwrap() as usize,
            );
            let mut config =
                RecurrentConfig::new(serde_json::from_value(case["cell"].clone()).unwrap(), i, h);
            config.bias = case["bias"].as_bool().unwrap();
            config.nonlinearity = serde_json::from_value(case["nonlinearity"].clone()).unwrap();
            let x = Tensor::new(file.f32(&key("input")).unwrap());
            let hx = case["has_hx"]
                .as_bool()
                .unwrap()
                .then(|| Tensor::new(file.f32(&key("hx")).unwrap()));
            let names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"];
            let p: BTreeMap<String, TensorData> = names
                .iter()
                .filter_map(|n| {
                    let t = file.f64(&key(n)).ok()?;
                    Some((n.to_string(), TensorData::F64(t)))
                })
                .collect();
            let out = no_grad(|| match config.cell {
                rnn::CellKind::Lstm => {
                    let cell = rnn::LstmCell::from_config(config).unwrap();
                    load_state_dict(&cell, &p, true).unwrap();
                    let cell = cell.to_precision(precision).unwrap();
                    let state = hx.as_ref().map(|h| {
                        let c = Tensor::new(file.f32(&key("cx")).unwrap());
                        (h.clone(), c)
                    });
                    let (h, c) = cell
                        .forward(&x, state.as_ref().map(|(h, c)| (h, c)))
                        .unwrap();
                    let e = max_err(&c.to_array(), &file.f64(&key("c")).unwrap());
                    worst = worst.max(e);
                    h
                }
                rnn::CellKind::Gru => {
                    let cell = rnn::GruCell::from_config(config).unwrap();
                    load_state_dict(&cell, &p, true).unwrap();
                    let cell = cell.to_precision(precision).unwrap();
                    cell.forward(&x, hx.as_ref()).unwrap()
                }
                rnn::CellKind::Rnn => {
                    let cell = rnn::RnnCell::from_config(config).unwrap();
                    load_state_dict(&cell, &p, true).unwrap();
                    let cell = cell.to_precision(precision).unwrap();
                    cell.forward(&x, hx.as_ref()).unwrap()
                }
            });
            worst = worst.max(max_err(&out.to_array(), &file.f64(&key("h")).unwrap()));
        }
        eprintln!("cells {precision}: worst {worst:.2e}");
        let b = bound(precision, "rnn");
        assert!(worst <= b && worst > 1e-5, "{precision}: {worst:e}");
    }
}

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|k| (k * 37 % 101) as f32 / 50.0 - 1.0).collect();
    Tensor::new(ArrayD::from_shape_vec(shape.to_vec(), v).unwrap())
}

#[test]
fn an_int8_layer_refuses_gradients_with_a_clear_error() {
    rnn::manual_seed(3);
    let lstm = Lstm::new(4, 6).unwrap();
    let int8 = quantize_dynamic(&lstm).unwrap();
    assert_eq!(int8.precision(), Precision::Int8);
    // Parameters require gradients and grad mode is on: this pass would train.
    let err = int8
        .forward(&input(&[3, 2, 4]), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("int8") && err.contains("inference") && err.contains("no_grad"),
        "{err}"
    );
    let err = autocast(Precision::Int8, || lstm.forward(&input(&[3, 2, 4]), None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("int8"), "{err}");
    // Inference is fine, and bf16 trains (forward products in bf16, backward in f32).
    assert!(no_grad(|| int8.forward(&input(&[3, 2, 4]), None)).is_ok());
    let bf16 = lstm.to_precision(Precision::Bf16).unwrap();
    let (y, _) = bf16.forward(&input(&[3, 2, 4]), None).unwrap();
    y.sum().backward().unwrap();
    assert!(bf16.parameters()[0].grad().is_some());
}

#[test]
fn a_bad_precision_name_is_a_clear_error() {
    let err = "int4".parse::<Precision>().unwrap_err().to_string();
    assert!(
        err.contains("\"int4\"") && err.contains("f32, bf16, int8"),
        "{err}"
    );
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
}

#[test]
fn autocast_switches_layers_and_linear_inside_its_scope_only() {
    rnn::manual_seed(5);
    let lstm = Lstm::new(16, 32).unwrap();
    let linear = Linear::new(32, 8).unwrap();
    let x = input(&[7, 3, 16]);
    let run = || {
        no_grad(|| {
            let (y, _) = lstm.forward(&x, None).unwrap();
            linear.forward(&y).unwrap().to_array()
        })
    };
    let f32_out = run();
    let bf16_out = autocast(Precision::Bf16, run);
    let int8_out = autocast(Precision::Int8, run);
    assert_eq!(run(), f32_out, "autocast leaked out of its scope");
    let diff = |a: &ArrayD<f32>| {
        a.iter()
            .zip(&f32_out)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
    };
    let (d16, d8) = (diff(&bf16_out), diff(&int8_out));
    assert!(d16 > 1e-5 && d16 < BF16_BOUND as f32, "bf16: {d16}");
    assert!(d8 > 1e-5 && d8 < INT8_BOUND as f32, "int8: {d8}");
    // A layer set to a precision keeps it under autocast.
    let int8_lstm = lstm.to_precision(Precision::Int8).unwrap();
    let a = no_grad(|| int8_lstm.forward(&x, None).unwrap().0.to_array());
    let b = autocast(Precision::Bf16, || {
        no_grad(|| int8_lstm.forward(&x, None).unwrap().0.to_array())
    });
    assert_eq!(a, b);
}

#[test]
fn linear_in_reduced_precision() {
    rnn::manual_seed(9);
    let linear = Linear::new(64, 10).unwrap();
    let x = input(&[5, 64]);
    let exact = no_grad(|| linear.forward(&x).unwrap().to_array());
    for p in [Precision::Bf16, Precision::Int8] {
        let l = linear.to_precision(p).unwrap();
        let y = no_grad(|| l.forward(&x).unwrap().to_array());
        let d = y
            .iter()
            .zip(&exact)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(d > 1e-6 && d < 2e-2, "{p}: {d}");
    }
    let int8 = quantize_dynamic(&linear).unwrap();
    let err = int8.forward(&x).map(|_| ()); // weights require gradients
    assert!(err.unwrap_err().to_string().contains("int8"));
}

/// One RNN step against the products by hand: `h1 = tanh(x W_ih^T + h0 W_hh^T + b_ih +
/// b_hh)` with both products through `matmul_bf16` / `matmul_int8`: equal within f32
/// rounding, so a wrong rounding, scale or operand in the layer's wiring (far above 1e-5)
/// fails here even where it stays within the bounds against f64.
#[test]
fn one_step_equals_the_reduced_precision_products_by_hand() {
    use ndarray::{Array2, Ix2};
    use rnn::linalg::{matmul_bf16, matmul_int8, PackedBf16, PackedInt8};
    rnn::manual_seed(11);
    let (i, h, n) = (24, 40, 3);
    let layer = rnn::Rnn::new(i, h).unwrap();
    let p: BTreeMap<String, ArrayD<f32>> = layer
        .named_parameters()
        .into_iter()
        .map(|(k, t)| (k, t.to_array()))
        .collect();
    let m = |k: &str| p[k].clone().into_dimensionality::<Ix2>().unwrap();
    let (w_ih, w_hh) = (m("weight_ih_l0"), m("weight_hh_l0"));
    let x = input(&[1, n, i]);
    let h0 = Tensor::new(input(&[1, n, h]).to_array().mapv(|v| v * 0.7));
    let x2 = x.to_array().into_shape_with_order((n, i)).unwrap();
    let h2 = h0.to_array().into_shape_with_order((n, h)).unwrap();
    for precision in [Precision::Bf16, Precision::Int8] {
        let mut xw = Array2::zeros((n, h));
        let mut hw = Array2::zeros((n, h));
        match precision {
            Precision::Bf16 => {
                let (a, b) = (
                    PackedBf16::transposed(&w_ih.view()),
                    PackedBf16::transposed(&w_hh.view()),
                );
                matmul_bf16(&mut xw.view_mut(), &x2.view(), &a, false);
                matmul_bf16(&mut hw.view_mut(), &h2.view(), &b, false);
            }
            _ => {
                let (a, b) = (
                    PackedInt8::quantize_transposed(&w_ih.view()),
                    PackedInt8::quantize_transposed(&w_hh.view()),
                );
                matmul_int8(&mut xw.view_mut(), &x2.view(), &a, false);
                matmul_int8(&mut hw.view_mut(), &h2.view(), &b, false);
            }
        }
        let bias = &p["bias_ih_l0"] + &p["bias_hh_l0"];
        let expected = (&xw + &hw + &bias).mapv(f32::tanh);
        let lowp = layer.to_precision(precision).unwrap();
        let (y, _) = no_grad(|| lowp.forward(&x, Some(&h0))).unwrap();
        let y = y.to_array().into_shape_with_order((n, h)).unwrap();
        let d = (&y - &expected).iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(d < 1e-5, "{precision}: {d}");
    }
}

/// The prepared rows are per row and the kernels' sums run in one order, so the results do
/// not depend on how the threads share the work (blocks, or rows each) nor on the layout.
#[test]
fn reduced_precision_results_do_not_depend_on_threads_or_layout() {
    rnn::manual_seed(21);
    let config = RecurrentConfig::new(rnn::CellKind::Lstm, 32, 48).with_bidirectional(true);
    let f32_layer = Recurrent::new(config.clone()).unwrap();
    let bf_layer = Recurrent::new(config.with_batch_first(true)).unwrap();
    load_state_dict(
        &bf_layer,
        &f32_layer
            .named_parameters()
            .into_iter()
            .map(|(k, t)| (k, TensorData::F32(t.to_array())))
            .collect(),
        true,
    )
    .unwrap();
    let x = input(&[7, 64, 32]);
    let x_bf = Tensor::new(
        x.to_array()
            .permuted_axes(vec![1, 0, 2])
            .as_standard_layout()
            .to_owned(),
    );
    for precision in [Precision::Bf16, Precision::Int8] {
        let (a, b) = (
            f32_layer.to_precision(precision).unwrap(),
            bf_layer.to_precision(precision).unwrap(),
        );
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                no_grad(|| {
                    let y = a.forward_states(&x, None, None).unwrap().output.to_array();
                    let y_bf = b
                        .forward_states(&x_bf, None, None)
                        .unwrap()
                        .output
                        .to_array();
                    (
                        y,
                        y_bf.permuted_axes(vec![1, 0, 2])
                            .as_standard_layout()
                            .to_owned(),
                    )
                })
            })
        };
        let (one, one_bf) = run(1);
        let (two, two_bf) = run(2);
        assert_eq!(one, two, "{precision}: 1 vs 2 threads");
        assert_eq!(one, one_bf, "{precision}: batch_first");
        assert_eq!(one, two_bf, "{precision}: batch_first, 2 threads");
    }
}
