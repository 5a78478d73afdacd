//! Parity of `RnnCell`, `LstmCell` and `GruCell` with PyTorch's `nn.RNNCell`, `nn.LSTMCell` and
//! `nn.GRUCell`, from `tests/fixtures/cells.safetensors` (README section 4, float64): every
//! case's outputs within 1e-5 and every gradient (input, hx, cx, each parameter) within 1e-5
//! absolute or 1e-4 relative, computed here in f32. Plus PyTorch's error messages, the repr,
//! the parameter names, and agreement with the layers unrolled by hand.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};
use rnn::io::{load_state_dict, TensorData, TensorFile};
use rnn::{
    CellKind, Gru, GruCell, Lstm, LstmCell, Module, Nonlinearity, RecurrentConfig, Rng, Rnn,
    RnnCell, Tensor,
};
use serde_json::Value;

const OUT_TOL: f64 = 1e-5;
const GRAD_ABS: f64 = 1e-5;
const GRAD_REL: f64 = 1e-4;
const PARAMS: [&str; 4] = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"];

/// Any of the three cells, behind one step function.
enum AnyCell {
    Rnn(RnnCell),
    Lstm(LstmCell),
    Gru(GruCell),
}

impl AnyCell {
    fn from_config(config: RecurrentConfig, rng: &mut Rng) -> rnn::Result<AnyCell> {
        Ok(match config.cell {
            CellKind::Rnn => AnyCell::Rnn(RnnCell::with_rng(config, rng)?),
            CellKind::Lstm => AnyCell::Lstm(LstmCell::with_rng(config, rng)?),
            CellKind::Gru => AnyCell::Gru(GruCell::with_rng(config, rng)?),
        })
    }

    fn module(&self) -> &dyn Module {
        match self {
            AnyCell::Rnn(c) => c,
            AnyCell::Lstm(c) => c,
            AnyCell::Gru(c) => c,
        }
    }

    /// One step; `state` is hx, or (hx, cx) for LSTM.
    fn step(
        &self,
        x: &Tensor,
        hx: Option<&Tensor>,
        cx: Option<&Tensor>,
    ) -> rnn::Result<(Tensor, Option<Tensor>)> {
        match self {
            AnyCell::Rnn(c) => c.forward(x, hx).map(|h| (h, None)),
            AnyCell::Gru(c) => c.forward(x, hx).map(|h| (h, None)),
            AnyCell::Lstm(c) => {
                let state = hx.zip(cx);
                c.forward(x, state).map(|(h, c)| (h, Some(c)))
            }
        }
    }
}

struct Fixture {
    file: TensorFile,
    cases: Vec<Value>,
}

impl Fixture {
    fn load() -> Fixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cells.safetensors"
        );
        let file =
            TensorFile::read(path).expect("run tools/make_fixtures.sh to create the fixtures");
        let cases = serde_json::from_str(&file.metadata["cases"]).expect("`cases` is a JSON list");
        Fixture { file, cases }
    }

    fn f32(&self, key: &str) -> ArrayD<f32> {
        self.file
            .f64(key)
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .mapv(|v| v as f32)
    }

    /// Compares `actual` with the fixture tensor `key`; a description of the first mismatch.
    fn check(&self, key: &str, actual: Option<ArrayD<f32>>, abs: f64, rel: f64) -> Option<String> {
        let expected = self.file.f64(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        let Some(actual) = actual else {
            return Some(format!("{key}: no value (no gradient reached it)"));
        };
        if expected.shape() != actual.shape() {
            return Some(format!(
                "{key}: shape {:?}, PyTorch {:?}",
                actual.shape(),
                expected.shape()
            ));
        }
        for (i, (&a, &e)) in actual.iter().zip(expected.iter()).enumerate() {
            let (a, d) = (a as f64, (a as f64 - e).abs());
            if !(d <= abs || d <= rel * e.abs()) {
                return Some(format!("{key}[{i}]: got {a}, PyTorch {e} (diff {d:e})"));
            }
        }
        None
    }
}

fn config_of(case: &Value) -> RecurrentConfig {
    let kind: CellKind = case["cell"].as_str().unwrap().parse().unwrap();
    let nonlinearity: Nonlinearity = case["nonlinearity"].as_str().unwrap().parse().unwrap();
    RecurrentConfig::new(
        kind,
        case["input_size"].as_u64().unwrap() as usize,
        case["hidden_size"].as_u64().unwrap() as usize,
    )
    .with_bias(case["bias"].as_bool().unwrap())
    .with_nonlinearity(nonlinearity)
}

/// Runs one fixture case; returns every mismatch found.
fn run_case(fx: &Fixture, case: &Value) -> Vec<String> {
    let name = case["name"].as_str().unwrap();
    let key = |k: &str| format!("{name}.{k}");
    let config = config_of(case);
    let is_lstm = config.cell == CellKind::Lstm;
    let cell = AnyCell::from_config(config, &mut Rng::new(7)).unwrap();

    // Every parameter key of the case, under the cell's names: a strict load checks both ways.
    let map: BTreeMap<String, TensorData> = PARAMS
        .iter()
        .filter(|p| fx.file.contains(&key(p)))
        .map(|p| (p.to_string(), fx.file.get(&key(p)).unwrap().clone()))
        .collect();
    load_state_dict(cell.module(), &map, true).unwrap_or_else(|e| panic!("{name}: {e}"));

    let x = Tensor::parameter(fx.f32(&key("input")));
    let has_hx = case["has_hx"].as_bool().unwrap();
    assert_eq!(fx.file.contains(&key("hx")), has_hx, "{name}: hx");
    let hx = has_hx.then(|| Tensor::parameter(fx.f32(&key("hx"))));
    let cx = (has_hx && is_lstm).then(|| Tensor::parameter(fx.f32(&key("cx"))));
    let (h, c) = cell.step(&x, hx.as_ref(), cx.as_ref()).unwrap();

    let mut bad = Vec::new();
    bad.extend(fx.check(&key("h"), Some(h.to_array()), OUT_TOL, 0.0));
    if is_lstm {
        bad.extend(fx.check(&key("c"), c.as_ref().map(|c| c.to_array()), OUT_TOL, 0.0));
    }

    // loss = sum(h * grad_h) [+ sum(c * grad_c)]
    let mut loss = h.mul(&Tensor::new(fx.f32(&key("grad_h")))).unwrap().sum();
    if let Some(c) = &c {
        let lc = c.mul(&Tensor::new(fx.f32(&key("grad_c")))).unwrap().sum();
        loss = loss.add(&lc).unwrap();
    }
    loss.backward().unwrap();
    let grad =
        |k: &str, t: &Tensor| fx.check(&key(&format!("grad.{k}")), t.grad(), GRAD_ABS, GRAD_REL);
    bad.extend(grad("input", &x));
    if let Some(hx) = &hx {
        bad.extend(grad("hx", hx));
    }
    if let Some(cx) = &cx {
        bad.extend(grad("cx", cx));
    }
    let params = cell.module().named_parameters();
    assert_eq!(params.len(), map.len(), "{name}: parameter count");
    for (pname, p) in &params {
        bad.extend(grad(pname, p));
    }
    bad.into_iter()
        .map(|m| format!("{name} ({case}): {m}"))
        .collect()
}

#[test]
fn every_fixture_case_matches_pytorch() {
    let fx = Fixture::load();
    assert_eq!(fx.cases.len(), 32, "cases k0-k31");
    for kind in ["rnn", "lstm", "gru"] {
        assert!(fx.cases.iter().any(|c| c["cell"] == kind), "no {kind} case");
    }
    assert!(fx.cases.iter().any(|c| c["nonlinearity"] == "relu"));
    let bad: Vec<String> = fx.cases.iter().flat_map(|c| run_case(&fx, c)).collect();
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn gradients_of_h_and_c_add_up_over_two_backward_calls() {
    // The same LSTM case as one loss, then as backward_with(grad_h) then backward_with(grad_c).
    let fx = Fixture::load();
    let case = fx
        .cases
        .iter()
        .find(|c| {
            c["cell"] == "lstm" && c["has_hx"] == true && c["batched"] == true && c["bias"] == true
        })
        .expect("a batched LSTM case with hx");
    let name = case["name"].as_str().unwrap();
    let key = |k: &str| format!("{name}.{k}");
    let cell = LstmCell::with_rng(config_of(case), &mut Rng::new(1)).unwrap();
    let map: BTreeMap<String, TensorData> = PARAMS
        .iter()
        .map(|p| (p.to_string(), fx.file.get(&key(p)).unwrap().clone()))
        .collect();
    load_state_dict(&cell, &map, true).unwrap();
    let x = Tensor::parameter(fx.f32(&key("input")));
    let hx = Tensor::parameter(fx.f32(&key("hx")));
    let cx = Tensor::parameter(fx.f32(&key("cx")));
    let (h, c) = cell.forward(&x, Some((&hx, &cx))).unwrap();
    h.backward_with(fx.f32(&key("grad_h"))).unwrap();
    c.backward_with(fx.f32(&key("grad_c"))).unwrap();
    let mut bad = Vec::new();
    for (k, t) in [("input", &x), ("hx", &hx), ("cx", &cx)] {
        bad.extend(fx.check(&key(&format!("grad.{k}")), t.grad(), GRAD_ABS, GRAD_REL));
    }
    for (pname, p) in cell.named_parameters() {
        bad.extend(fx.check(&key(&format!("grad.{pname}")), p.grad(), GRAD_ABS, GRAD_REL));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The error message of one step of `cell` on tensors of the given shapes.
fn step_error(cell: &AnyCell, x: &[usize], hx: Option<&[usize]>, cx: Option<&[usize]>) -> String {
    let t = |s: &[usize]| Tensor::zeros(s);
    let hx = hx.map(t);
    let cx = cx.map(t);
    match cell.step(&t(x), hx.as_ref(), cx.as_ref()) {
        Ok(_) => panic!("{x:?} {hx:?} {cx:?} should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shape_errors_use_pytorchs_words() {
    // The messages of torch 2.15 for nn.RNNCell(4, 2), nn.LSTMCell(4, 2), nn.GRUCell(4, 2).
    let mut rng = Rng::new(0);
    let rnn = AnyCell::from_config(RecurrentConfig::new(CellKind::Rnn, 4, 2), &mut rng).unwrap();
    let lstm = AnyCell::from_config(RecurrentConfig::new(CellKind::Lstm, 4, 2), &mut rng).unwrap();
    let gru = AnyCell::from_config(RecurrentConfig::new(CellKind::Gru, 4, 2), &mut rng).unwrap();
    type Case<'a> = (
        &'a AnyCell,
        &'a [usize],
        Option<&'a [usize]>,
        Option<&'a [usize]>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            &rnn,
            &[2, 3, 4],
            None,
            None,
            "RNNCell: Expected input to be 1D or 2D, got 3D instead",
        ),
        (
            &rnn,
            &[],
            None,
            None,
            "RNNCell: Expected input to be 1D or 2D, got 0D instead",
        ),
        (
            &rnn,
            &[3, 5],
            None,
            None,
            "input has inconsistent input_size: got 5 expected 4",
        ),
        (
            &rnn,
            &[5],
            None,
            None,
            "input has inconsistent input_size: got 5 expected 4",
        ),
        (
            &rnn,
            &[3, 4],
            Some(&[2, 2]),
            None,
            "Input batch size 3 doesn't match hidden0 batch size 2",
        ),
        (
            &rnn,
            &[3, 4],
            Some(&[3, 5]),
            None,
            "hidden0 has inconsistent hidden_size: got 5, expected 2",
        ),
        (
            &rnn,
            &[4],
            Some(&[3]),
            None,
            "hidden0 has inconsistent hidden_size: got 3, expected 2",
        ),
        (
            &rnn,
            &[4],
            Some(&[3, 2]),
            None,
            "Expected 2D hidden0 (batch x hidden_size), but got 3D tensor",
        ),
        (
            &rnn,
            &[3, 4],
            Some(&[2]),
            None,
            "Expected 2D hidden0 (batch x hidden_size), but got 1D tensor",
        ),
        (
            &rnn,
            &[3, 4],
            Some(&[1, 3, 2]),
            None,
            "RNNCell: Expected hidden to be 1D or 2D, got 3D instead",
        ),
        (
            &gru,
            &[1, 2, 4],
            None,
            None,
            "GRUCell: Expected input to be 1D or 2D, got 3D instead",
        ),
        (
            &gru,
            &[3, 4],
            Some(&[3, 2, 2]),
            None,
            "GRUCell: Expected hidden to be 1D or 2D, got 3D instead",
        ),
        (
            &lstm,
            &[3, 4],
            Some(&[3, 2]),
            Some(&[2, 2]),
            "Input batch size 3 doesn't match hidden1 batch size 2",
        ),
        (
            &lstm,
            &[3, 4],
            Some(&[3, 2]),
            Some(&[3, 5]),
            "hidden1 has inconsistent hidden_size: got 5, expected 2",
        ),
        (
            &lstm,
            &[3, 4],
            Some(&[3, 2, 1]),
            Some(&[3, 2]),
            "LSTMCell: Expected hx[0] to be 1D or 2D, got 3D instead",
        ),
        (
            &lstm,
            &[3, 4],
            Some(&[3, 2]),
            Some(&[3, 2, 1]),
            "LSTMCell: Expected hx[1] to be 1D or 2D, got 3D instead",
        ),
        (
            &lstm,
            &[3, 4],
            Some(&[2]),
            Some(&[2]),
            "Expected 2D hidden0 (batch x hidden_size), but got 1D tensor",
        ),
        (
            &lstm,
            &[3, 3],
            Some(&[3, 2]),
            Some(&[3, 2]),
            "input has inconsistent input_size: got 3 expected 4",
        ),
    ];
    for (cell, x, hx, cx, want) in cases {
        let msg = step_error(cell, x, hx, cx);
        assert!(
            msg.contains(want),
            "{x:?} {hx:?} {cx:?}: {msg:?} lacks {want:?}"
        );
    }
    // The rest of the message names the argument and the expected and actual shapes.
    assert_eq!(
        step_error(&rnn, &[3, 4], Some(&[2, 2]), None),
        "RNNCell hx: expected shape (3, 2), got (2, 2); Input batch size 3 doesn't match hidden0 batch size 2"
    );
    assert_eq!(
        step_error(&lstm, &[2, 3, 4], None, None),
        "LSTMCell input: expected shape (N, 4) or (4,), got (2, 3, 4); LSTMCell: Expected input to be 1D or 2D, \
         got 3D instead"
    );
    assert!(step_error(&lstm, &[3, 4], Some(&[3, 2]), Some(&[3, 5]))
        .starts_with("LSTMCell hx[1]: expected shape (3, 2)"));
}

#[test]
fn repr_display_and_parameter_names_follow_pytorch() {
    let mut rng = Rng::new(0);
    let plain = RnnCell::with_rng(RecurrentConfig::new(CellKind::Rnn, 3, 4), &mut rng).unwrap();
    assert_eq!(plain.repr(), "RNNCell(3, 4)");
    let relu = RecurrentConfig::new(CellKind::Rnn, 3, 4)
        .with_bias(false)
        .with_nonlinearity(Nonlinearity::Relu);
    let relu = RnnCell::with_rng(relu, &mut rng).unwrap();
    // torch 2.15 prints the nonlinearity without quotes.
    assert_eq!(relu.repr(), "RNNCell(3, 4, bias=False, nonlinearity=relu)");
    assert_eq!(
        relu.to_string(),
        "RNNCell(3, 4, bias=False, nonlinearity=relu)  # 28 parameters"
    );
    let lstm = LstmCell::with_rng(RecurrentConfig::new(CellKind::Lstm, 3, 4), &mut rng).unwrap();
    assert_eq!(lstm.to_string(), "LSTMCell(3, 4)  # 144 parameters");
    let gru = GruCell::with_rng(
        RecurrentConfig::new(CellKind::Gru, 3, 4).with_bias(false),
        &mut rng,
    )
    .unwrap();
    assert_eq!(gru.repr(), "GRUCell(3, 4, bias=False)");
    assert_eq!((gru.input_size(), gru.hidden_size()), (3, 4));

    let names_shapes = |m: &dyn Module| -> Vec<(String, Vec<usize>)> {
        m.named_parameters()
            .into_iter()
            .map(|(n, t)| (n, t.shape()))
            .collect()
    };
    let s = |n: &str, d: &[usize]| (n.to_string(), d.to_vec());
    assert_eq!(
        names_shapes(&lstm),
        [
            s("weight_ih", &[16, 3]),
            s("weight_hh", &[16, 4]),
            s("bias_ih", &[16]),
            s("bias_hh", &[16])
        ]
    );
    assert_eq!(
        names_shapes(&gru),
        [s("weight_ih", &[12, 3]), s("weight_hh", &[12, 4])]
    );
    assert_eq!(names_shapes(&plain).len(), 4);
    // The inner layer keeps PyTorch's layer names.
    assert_eq!(lstm.inner().named_parameters()[0].0, "weight_ih_l0");
}

#[test]
fn layer_only_arguments_are_refused() {
    let base = || RecurrentConfig::new(CellKind::Lstm, 3, 4);
    let bad = [
        (base().with_num_layers(2), "num_layers"),
        (base().with_bidirectional(true), "bidirectional"),
        (base().with_batch_first(true), "batch_first"),
        (base().with_dropout(0.5), "dropout"),
        (base().with_proj_size(2), "proj_size"),
        (
            base().with_nonlinearity(Nonlinearity::Relu),
            "nonlinearity is an argument of RNNCell only",
        ),
        (
            RecurrentConfig::new(CellKind::Lstm, 0, 4),
            "LSTMCell: input_size must be greater than zero",
        ),
        (
            RecurrentConfig::new(CellKind::Lstm, 3, 0),
            "LSTMCell: hidden_size must be greater than zero",
        ),
        (
            RecurrentConfig::new(CellKind::Gru, 3, 4),
            "LSTMCell built from a GRUCell configuration",
        ),
    ];
    for (config, want) in bad {
        let err = LstmCell::with_rng(config.clone(), &mut Rng::new(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{config:?}: {err:?} lacks {want:?}");
        assert!(LstmCell::from_config(config).is_err());
    }
    assert!(RnnCell::new(3, 4).is_ok());
    assert!(RnnCell::from_config(
        RecurrentConfig::new(CellKind::Rnn, 3, 4).with_nonlinearity(Nonlinearity::Relu)
    )
    .is_ok());
}

#[test]
fn init_is_uniform_in_one_over_sqrt_hidden_and_seeded() {
    let config = RecurrentConfig::new(CellKind::Gru, 5, 16);
    let a = GruCell::with_rng(config.clone(), &mut Rng::new(42)).unwrap();
    let b = GruCell::with_rng(config.clone(), &mut Rng::new(42)).unwrap();
    let other = GruCell::with_rng(config, &mut Rng::new(43)).unwrap();
    let k = 1.0 / 4.0; // 1/sqrt(16)
    let values: Vec<f32> = a
        .parameters()
        .iter()
        .flat_map(|p| p.to_array().into_iter())
        .collect();
    assert_eq!(values.len(), 48 * 5 + 48 * 16 + 2 * 48);
    assert!(values.iter().all(|v| v.abs() <= k), "outside ±{k}");
    // Spread over the whole range, not squeezed near zero.
    assert!(values.iter().any(|v| *v > 0.9 * k) && values.iter().any(|v| *v < -0.9 * k));
    let (pa, pb, po) = (a.parameters(), b.parameters(), other.parameters());
    for i in 0..pa.len() {
        assert_eq!(pa[i].to_array(), pb[i].to_array());
        assert_ne!(pa[i].to_array(), po[i].to_array());
    }
    // The global generator: same seed, same cell.
    rnn::manual_seed(3);
    let g1 = LstmCell::new(2, 3).unwrap();
    rnn::manual_seed(3);
    let g2 = LstmCell::new(2, 3).unwrap();
    assert_eq!(g1.parameters()[0].to_array(), g2.parameters()[0].to_array());
}

/// Loads the cell's parameters into a one-layer layer (adding `_l0`).
fn copy_to_layer(cell: &dyn Module, layer: &dyn Module) {
    let map: BTreeMap<String, TensorData> = cell
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (format!("{n}_l0"), TensorData::F32(t.to_array())))
        .collect();
    load_state_dict(layer, &map, true).unwrap();
}

fn random(shape: &[usize], rng: &mut Rng) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.normal())
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn unrolled_cells_match_the_layers() {
    // A cell stepped over a sequence equals the layer with the same weights: outputs and every
    // gradient (through the unrolled graph of reshape and step nodes).
    let (len, n, input, hidden) = (5, 3, 4, 6);
    for kind in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
        for nonlinearity in [Nonlinearity::Tanh, Nonlinearity::Relu] {
            if kind != CellKind::Rnn && nonlinearity == Nonlinearity::Relu {
                continue;
            }
            let mut rng = Rng::new(11);
            let config = RecurrentConfig::new(kind, input, hidden).with_nonlinearity(nonlinearity);
            let cell = AnyCell::from_config(config.clone(), &mut rng).unwrap();
            let xs = random(&[len, n, input], &mut rng);
            let h0 = random(&[1, n, hidden], &mut rng);
            let c0 = random(&[1, n, hidden], &mut rng);
            let gout = random(&[len, n, hidden], &mut rng);

            // The layer.
            let x_layer = Tensor::parameter(xs.clone());
            let h0_layer = Tensor::parameter(h0.clone());
            let c0_layer = Tensor::parameter(c0.clone());
            let (layer_params, out): (Vec<Tensor>, Tensor) = match kind {
                CellKind::Rnn => {
                    let l = Rnn::with_rng(config.clone(), &mut rng).unwrap();
                    copy_to_layer(cell.module(), &l);
                    (
                        l.parameters(),
                        l.forward(&x_layer, Some(&h0_layer)).unwrap().0,
                    )
                }
                CellKind::Gru => {
                    let l = Gru::with_rng(config.clone(), &mut rng).unwrap();
                    copy_to_layer(cell.module(), &l);
                    (
                        l.parameters(),
                        l.forward(&x_layer, Some(&h0_layer)).unwrap().0,
                    )
                }
                CellKind::Lstm => {
                    let l = Lstm::with_rng(config.clone(), &mut rng).unwrap();
                    copy_to_layer(cell.module(), &l);
                    (
                        l.parameters(),
                        l.forward(&x_layer, Some((&h0_layer, &c0_layer))).unwrap().0,
                    )
                }
            };
            out.backward_with(gout.clone()).unwrap();

            // The cell, unrolled.
            let x_cell = Tensor::parameter(xs.clone());
            let h0_cell = Tensor::parameter(
                h0.clone()
                    .into_shape_with_order(IxDyn(&[n, hidden]))
                    .unwrap(),
            );
            let c0_cell = Tensor::parameter(
                c0.clone()
                    .into_shape_with_order(IxDyn(&[n, hidden]))
                    .unwrap(),
            );
            let mut h = h0_cell.clone();
            let mut c = (kind == CellKind::Lstm).then(|| c0_cell.clone());
            let mut hs = Vec::new();
            for t in 0..len {
                let x_t = x_cell.select(0, t as isize).unwrap();
                let (h2, c2) = cell.step(&x_t, Some(&h), c.as_ref()).unwrap();
                hs.push(h2.clone());
                h = h2;
                c = c2;
            }
            let out_cell = Tensor::stack(&hs, 0).unwrap();
            assert!(
                max_diff(&out_cell.to_array(), &out.to_array()) < 1e-5,
                "{kind:?} output"
            );
            out_cell.backward_with(gout).unwrap();

            let tol = 1e-4;
            let g = |t: &Tensor| t.grad().expect("a gradient");
            assert!(
                max_diff(&g(&x_cell), &g(&x_layer)) < tol,
                "{kind:?} grad input"
            );
            let gh0 = g(&h0_layer)
                .into_shape_with_order(IxDyn(&[n, hidden]))
                .unwrap();
            assert!(max_diff(&g(&h0_cell), &gh0) < tol, "{kind:?} grad h0");
            if kind == CellKind::Lstm {
                let gc0 = g(&c0_layer)
                    .into_shape_with_order(IxDyn(&[n, hidden]))
                    .unwrap();
                assert!(max_diff(&g(&c0_cell), &gc0) < tol, "{kind:?} grad c0");
            }
            for ((name, p), q) in cell.module().named_parameters().iter().zip(&layer_params) {
                assert!(
                    max_diff(&g(p), &g(q)) < tol,
                    "{kind:?} {nonlinearity:?} grad {name}"
                );
            }
        }
    }
}

#[test]
fn unbatched_and_empty_batches() {
    let mut rng = Rng::new(5);
    let cell = RnnCell::with_rng(RecurrentConfig::new(CellKind::Rnn, 3, 4), &mut rng).unwrap();
    // Unbatched is the batched computation on one row.
    let x = random(&[3], &mut rng);
    let h = random(&[4], &mut rng);
    let one = cell
        .forward(&Tensor::new(x.clone()), Some(&Tensor::new(h.clone())))
        .unwrap();
    assert_eq!(one.shape(), [4]);
    let row = cell
        .forward(
            &Tensor::new(x.into_shape_with_order(IxDyn(&[1, 3])).unwrap()),
            Some(&Tensor::new(
                h.into_shape_with_order(IxDyn(&[1, 4])).unwrap(),
            )),
        )
        .unwrap();
    assert_eq!(
        row.to_array().into_shape_with_order(IxDyn(&[4])).unwrap(),
        one.to_array()
    );
    // An empty batch gives empty states, as PyTorch.
    let lstm = LstmCell::with_rng(RecurrentConfig::new(CellKind::Lstm, 3, 4), &mut rng).unwrap();
    let (h, c) = lstm.forward(&Tensor::zeros(&[0, 3]), None).unwrap();
    assert_eq!((h.shape(), c.shape()), (vec![0, 4], vec![0, 4]));
    // Nothing is recorded under no_grad.
    let h = rnn::no_grad(|| {
        cell.forward(&Tensor::parameter(random(&[2, 3], &mut rng)), None)
            .unwrap()
    });
    assert!(!h.requires_grad());
}
