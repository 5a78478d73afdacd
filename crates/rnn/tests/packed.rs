//! Packed, variable-length batches against PyTorch (`torch.nn.utils.rnn`).
//!
//! - `packed_{rnn,lstm,gru}.safetensors` (written by `tools/fixtures/recurrent.py`, float64,
//!   section 2 of `tests/fixtures/README.md`): every case runs
//!   `pack_padded_sequence(enforce_sorted=false)` -> layer -> `pad_packed_sequence(total_length=6)`
//!   here in f32; output, h_n, c_n within 1e-5 absolute, every gradient (input, h0, c0, every
//!   parameter) within 1e-4 relative or 1e-5 absolute, and exactly zero output and input
//!   gradient past each length.
//! - `packed_sequence.safetensors` (section 3): every PackedSequence field and padded tensor
//!   exactly.
//! - The gradients of the packing functions themselves, their error messages, and a property
//!   test: each sequence of a packed batch gives the output and final state it gives alone.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis, Dimension, IxDyn};
use rnn::io::{load_state_dict, TensorData, TensorFile};
use rnn::packed::{
    pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence, unpack_sequence,
    unpad_sequence, PackedSequence,
};
use rnn::{CellKind, Gru, Lstm, Module, Recurrent, RecurrentConfig, Rng, Rnn, Tensor};
use serde_json::Value;

/// Padded sequence length of every packed layer case.
const TOTAL_LENGTH: usize = 6;

struct Fixture {
    file: TensorFile,
    cases: Vec<Value>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let file =
            TensorFile::read(&path).expect("run tools/make_fixtures.sh to create the fixtures");
        let cases: Vec<Value> =
            serde_json::from_str(&file.metadata["cases"]).expect("`cases` is a JSON list");
        assert!(!cases.is_empty(), "{name} has no cases");
        Fixture { file, cases }
    }

    fn f32(&self, key: &str) -> ArrayD<f32> {
        self.file.f32(key).unwrap()
    }

    fn usizes(&self, key: &str) -> Vec<usize> {
        self.file
            .i64(key)
            .unwrap()
            .iter()
            .map(|&v| v as usize)
            .collect()
    }

    /// The case's parameters under their bare `state_dict` keys.
    fn params(&self, name: &str) -> BTreeMap<String, TensorData> {
        const DATA: [&str; 11] = [
            "input",
            "lengths",
            "h0",
            "c0",
            "output",
            "h_n",
            "c_n",
            "grad_output",
            "grad_h_n",
            "grad_c_n",
            "grad",
        ];
        let prefix = format!("{name}.");
        self.file
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k, v)))
            .filter(|(k, _)| !DATA.contains(&k.split('.').next().unwrap_or("")))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// Compares `actual` with the fixture tensor `key`: each element within `abs`, or within
    /// `rel` of PyTorch's value. Returns the first mismatch.
    fn check(&self, key: &str, actual: &ArrayD<f32>, abs: f64, rel: f64) -> Option<String> {
        let expected = self.file.f64(key).unwrap();
        if expected.shape() != actual.shape() {
            return Some(format!(
                "{key}: shape {:?}, PyTorch {:?}",
                actual.shape(),
                expected.shape()
            ));
        }
        for ((i, &e), &a) in expected.indexed_iter().zip(actual.iter()) {
            let d = (a as f64 - e).abs();
            if !(d <= abs || d <= rel * e.abs()) {
                return Some(format!(
                    "{key}{:?}: got {a}, PyTorch {e} (difference {d:e})",
                    i.slice()
                ));
            }
        }
        None
    }

    /// `actual` must equal the fixture tensor `key` exactly (f32-exact values).
    fn exact(&self, key: &str, actual: &ArrayD<f32>) {
        let expected = self.file.f64(key).unwrap();
        assert_eq!(expected.shape(), actual.shape(), "{key}: shape");
        for ((i, &e), &a) in expected.indexed_iter().zip(actual.iter()) {
            assert_eq!(a as f64, e, "{key}{:?}", i.slice());
        }
    }
}

/// A layer of the right type, so that the typed `forward_packed` wrappers are exercised too.
enum Layer {
    Rnn(Rnn),
    Lstm(Lstm),
    Gru(Gru),
}

impl Layer {
    fn new(config: RecurrentConfig) -> Layer {
        match config.cell {
            CellKind::Rnn => Layer::Rnn(Rnn::from_config(config).unwrap()),
            CellKind::Lstm => Layer::Lstm(Lstm::from_config(config).unwrap()),
            CellKind::Gru => Layer::Gru(Gru::from_config(config).unwrap()),
        }
    }

    fn module(&self) -> &Recurrent {
        match self {
            Layer::Rnn(m) => m.inner(),
            Layer::Lstm(m) => m.inner(),
            Layer::Gru(m) => m.inner(),
        }
    }

    fn forward_packed(
        &self,
        input: &PackedSequence,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> rnn::Result<(PackedSequence, Tensor, Option<Tensor>)> {
        match self {
            Layer::Rnn(m) => m.forward_packed(input, h0).map(|(o, h)| (o, h, None)),
            Layer::Gru(m) => m.forward_packed(input, h0).map(|(o, h)| (o, h, None)),
            Layer::Lstm(m) => {
                let state = h0.zip(c0);
                m.forward_packed(input, state)
                    .map(|(o, (h, c))| (o, h, Some(c)))
            }
        }
    }
}

/// `sum(a * g)` as a tensor.
fn dot(a: &Tensor, g: ArrayD<f32>) -> Tensor {
    a.mul(&Tensor::new(g)).unwrap().sum()
}

/// Positions past each length in a padded (T, B, *) / (B, T, *) tensor must be exactly zero.
fn check_zero_past_lengths(
    what: &str,
    a: &ArrayD<f32>,
    lengths: &[usize],
    batch_first: bool,
) -> Option<String> {
    let (batch_axis, time_axis) = if batch_first { (0, 1) } else { (1, 0) };
    for (b, &len) in lengths.iter().enumerate() {
        let seq = a.index_axis(Axis(batch_axis), b);
        let time = if batch_first {
            time_axis - 1
        } else {
            time_axis
        };
        for t in len..seq.shape()[time] {
            if seq.index_axis(Axis(time), t).iter().any(|&v| v != 0.0) {
                return Some(format!(
                    "{what}: sequence {b} (length {len}) is not zero at step {t}"
                ));
            }
        }
    }
    None
}

/// Runs one case of a packed layer fixture; returns its mismatches.
fn run_layer_case(fx: &Fixture, case: &Value) -> Vec<String> {
    let name = case["name"].as_str().unwrap();
    assert_eq!(case["packed"], true, "{name}");
    let config: RecurrentConfig = serde_json::from_value(case["config"].clone()).unwrap();
    let bf = config.batch_first;
    let lstm = config.cell == CellKind::Lstm;
    let has_h0 = case["has_h0"].as_bool().unwrap();
    let key = |k: &str| format!("{name}.{k}");

    let layer = Layer::new(config);
    let module = layer.module();
    load_state_dict(module, &fx.params(name), true).unwrap();

    let lengths = fx.usizes(&key("lengths"));
    let x = Tensor::parameter(fx.f32(&key("input")));
    let h0 = has_h0.then(|| Tensor::parameter(fx.f32(&key("h0"))));
    let c0 = (has_h0 && lstm).then(|| Tensor::parameter(fx.f32(&key("c0"))));

    let packed = pack_padded_sequence(&x, &lengths, bf, false).unwrap();
    let (out, h_n, c_n) = layer
        .forward_packed(&packed, h0.as_ref(), c0.as_ref())
        .unwrap();
    assert_eq!(out.batch_sizes(), packed.batch_sizes(), "{name}");
    assert_eq!(out.sorted_indices(), packed.sorted_indices(), "{name}");
    let (output, out_lengths) = pad_packed_sequence(&out, bf, 0.0, Some(TOTAL_LENGTH)).unwrap();
    assert_eq!(out_lengths, lengths, "{name}");

    let mut problems = Vec::new();
    let fwd = |k: &str, a: &ArrayD<f32>| fx.check(&key(k), a, 1e-5, 0.0);
    problems.extend(fwd("output", &output.to_array()));
    problems.extend(check_zero_past_lengths(
        "output",
        &output.to_array(),
        &lengths,
        bf,
    ));
    problems.extend(fwd("h_n", &h_n.to_array()));
    if let Some(c_n) = &c_n {
        problems.extend(fwd("c_n", &c_n.to_array()));
    }

    let mut loss = dot(&output, fx.f32(&key("grad_output")))
        .add(&dot(&h_n, fx.f32(&key("grad_h_n"))))
        .unwrap();
    if let Some(c_n) = &c_n {
        loss = loss.add(&dot(c_n, fx.f32(&key("grad_c_n")))).unwrap();
    }
    loss.backward().unwrap();

    let grad = |k: &str, t: &Tensor| -> Option<String> {
        let g = t.grad().unwrap_or_else(|| ArrayD::zeros(IxDyn(&t.shape())));
        fx.check(&key(&format!("grad.{k}")), &g, 1e-5, 1e-4)
    };
    problems.extend(grad("input", &x));
    problems.extend(check_zero_past_lengths(
        "grad.input",
        &x.grad().unwrap(),
        &lengths,
        bf,
    ));
    if let Some(h0) = &h0 {
        problems.extend(grad("h0", h0));
    }
    if let Some(c0) = &c0 {
        problems.extend(grad("c0", c0));
    }
    for (pname, p) in module.named_parameters() {
        problems.extend(grad(&pname, &p));
    }
    problems
        .into_iter()
        .map(|p| format!("{name}: {p}"))
        .collect()
}

fn run_layer_fixture(file: &str, expected_cases: usize) {
    let fx = Fixture::load(file);
    assert_eq!(fx.cases.len(), expected_cases, "{file}");
    let problems: Vec<String> = fx
        .cases
        .iter()
        .flat_map(|c| run_layer_case(&fx, c))
        .collect();
    assert!(
        problems.is_empty(),
        "{file}: {} mismatches, first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn packed_rnn_matches_pytorch() {
    run_layer_fixture("packed_rnn.safetensors", 64);
}

#[test]
fn packed_lstm_matches_pytorch() {
    run_layer_fixture("packed_lstm.safetensors", 128);
}

#[test]
fn packed_gru_matches_pytorch() {
    run_layer_fixture("packed_gru.safetensors", 64);
}

/// GRU with `linear_before_reset = false`, against a loop module whose outputs ONNX Runtime's
/// GRU operator confirms (tools/fixtures/variants.py).
#[test]
fn packed_gru_reset_before_matches_onnx() {
    run_layer_fixture("variants_gru_packed.safetensors", 8);
}

/// LSTM with peepholes, likewise against ONNX Runtime's LSTM operator (its input `P`).
#[test]
fn packed_lstm_peephole_matches_onnx() {
    run_layer_fixture("variants_lstm_peephole_packed.safetensors", 8);
}

/// The layer-normalised LSTM (with a projection in one case), against the loop module of
/// tools/fixtures/variants.py (ONNX has no such operator).
#[test]
fn packed_lstm_layer_norm_matches_loop() {
    run_layer_fixture("variants_lstm_layer_norm_packed.safetensors", 9);
}

/// Checks a PackedSequence's fields and its unpacked forms against a `packed_sequence` case.
fn check_packed_fields(fx: &Fixture, name: &str, packed: &PackedSequence, batch_first: bool) {
    let key = |k: &str| format!("{name}.{k}");
    fx.exact(&key("data"), &packed.data().to_array());
    assert_eq!(
        packed.batch_sizes(),
        fx.usizes(&key("batch_sizes")),
        "{name}.batch_sizes"
    );
    if fx.file.contains(&key("sorted_indices")) {
        assert_eq!(
            packed.sorted_indices(),
            Some(&fx.usizes(&key("sorted_indices"))[..]),
            "{name}"
        );
        assert_eq!(
            packed.unsorted_indices(),
            Some(&fx.usizes(&key("unsorted_indices"))[..]),
            "{name}"
        );
    } else {
        assert_eq!(packed.sorted_indices(), None, "{name}");
        assert_eq!(packed.unsorted_indices(), None, "{name}");
    }
    let (unpacked, lengths) = pad_packed_sequence(packed, batch_first, 0.0, None).unwrap();
    fx.exact(&key("unpacked"), &unpacked.to_array());
    assert_eq!(lengths, fx.usizes(&key("unpacked_lengths")), "{name}");
    assert_eq!(packed.lengths(), lengths, "{name}");
}

#[test]
fn packed_sequence_fields_match_pytorch() {
    let fx = Fixture::load("packed_sequence.safetensors");
    let mut kinds = BTreeMap::new();
    for case in &fx.cases {
        let name = case["name"].as_str().unwrap();
        let kind = case["kind"].as_str().unwrap();
        *kinds.entry(kind.to_string()).or_insert(0) += 1;
        let bf = case["batch_first"].as_bool().unwrap();
        let key = |k: &str| format!("{name}.{k}");
        let lengths: Vec<usize> = case["lengths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        match kind {
            "pack_padded_sequence" => {
                assert_eq!(fx.usizes(&key("lengths")), lengths);
                let enforce_sorted = case["enforce_sorted"].as_bool().unwrap();
                let input = fx.f32(&key("input"));
                let packed =
                    pack_padded_sequence(&Tensor::new(input.clone()), &lengths, bf, enforce_sorted)
                        .unwrap();
                check_packed_fields(&fx, name, &packed, bf);
                // unpad_sequence gives each sequence cut to its length.
                let seqs = unpad_sequence(&Tensor::new(input.clone()), &lengths, bf).unwrap();
                let unpacked = unpack_sequence(&packed).unwrap();
                for (b, (s, u)) in seqs.iter().zip(&unpacked).enumerate() {
                    let v = input.index_axis(Axis(if bf { 0 } else { 1 }), b);
                    let v = v.slice_axis(Axis(0), ndarray::Slice::from(0..lengths[b]));
                    assert_eq!(s.to_array(), v.to_owned().into_dyn(), "{name} unpad {b}");
                    assert_eq!(u.to_array(), v.to_owned().into_dyn(), "{name} unpack {b}");
                }
            }
            "pack_sequence" => {
                let enforce_sorted = case["enforce_sorted"].as_bool().unwrap();
                let seqs: Vec<Tensor> = (0..lengths.len())
                    .map(|k| Tensor::new(fx.f32(&key(&format!("seq{k}")))))
                    .collect();
                let packed = pack_sequence(&seqs, enforce_sorted).unwrap();
                check_packed_fields(&fx, name, &packed, false);
                for (b, (s, u)) in seqs
                    .iter()
                    .zip(unpack_sequence(&packed).unwrap())
                    .enumerate()
                {
                    assert_eq!(s.to_array(), u.to_array(), "{name} unpack {b}");
                }
            }
            "pad_sequence" => {
                let pv = case["padding_value"].as_f64().unwrap() as f32;
                let seqs: Vec<Tensor> = (0..lengths.len())
                    .map(|k| Tensor::new(fx.f32(&key(&format!("seq{k}")))))
                    .collect();
                let padded = pad_sequence(&seqs, bf, pv).unwrap();
                fx.exact(&key("padded"), &padded.to_array());
                for (s, u) in seqs
                    .iter()
                    .zip(unpad_sequence(&padded, &lengths, bf).unwrap())
                {
                    assert_eq!(s.to_array(), u.to_array(), "{name} unpad");
                }
            }
            other => panic!("unknown case kind {other}"),
        }
    }
    let counts: Vec<(String, i32)> = kinds.into_iter().collect();
    assert_eq!(
        counts,
        [
            ("pack_padded_sequence".to_string(), 4),
            ("pack_sequence".into(), 2),
            ("pad_sequence".into(), 4)
        ]
    );
}

/// A constant (or parameter) of `shape` with standard normal values.
fn randn(rng: &mut Rng, shape: &[usize], parameter: bool) -> Tensor {
    let a = ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.normal());
    if parameter {
        Tensor::parameter(a)
    } else {
        Tensor::new(a)
    }
}

#[test]
fn gradients_flow_through_padding_and_packing() {
    let mut rng = Rng::new(7);
    // pad_sequence: each sequence gets its slice of the gradient; padding none.
    let seqs: Vec<Tensor> = [3, 1, 4]
        .iter()
        .map(|&n| randn(&mut rng, &[n, 2], true))
        .collect();
    let padded = pad_sequence(&seqs, true, -1.0).unwrap();
    assert_eq!(padded.shape(), [3, 4, 2]);
    let g = randn(&mut rng, &[3, 4, 2], false).to_array();
    padded.backward_with(g.clone()).unwrap();
    for (b, s) in seqs.iter().enumerate() {
        let expected = g
            .index_axis(Axis(0), b)
            .slice_axis(Axis(0), ndarray::Slice::from(0..s.shape()[0]))
            .to_owned();
        assert_eq!(
            s.grad().unwrap(),
            expected.into_dyn(),
            "pad_sequence grad {b}"
        );
    }

    // pack_padded_sequence then pad_packed_sequence: identity inside the lengths, zero
    // gradient outside (the input is random everywhere, as in the layer fixtures).
    for bf in [false, true] {
        let lengths = [2, 5, 1, 5, 3];
        let shape = if bf { [5, 6, 3] } else { [6, 5, 3] };
        let x = randn(&mut rng, &shape, true);
        let packed = pack_padded_sequence(&x, &lengths, bf, false).unwrap();
        let (y, _) = pad_packed_sequence(&packed, bf, 7.0, Some(6)).unwrap();
        let g = randn(&mut rng, &shape, false).to_array();
        y.backward_with(g.clone()).unwrap();
        let (xa, ya, dx) = (x.to_array(), y.to_array(), x.grad().unwrap());
        for (i, &v) in ya.indexed_iter() {
            let (t, b) = if bf { (i[1], i[0]) } else { (i[0], i[1]) };
            if t < lengths[b] {
                assert_eq!(v, xa[&i], "value at {:?}", i.slice());
                assert_eq!(dx[&i], g[&i], "grad at {:?}", i.slice());
            } else {
                assert_eq!(v, 7.0, "padding at {:?}", i.slice());
                assert_eq!(dx[&i], 0.0, "grad of padding at {:?}", i.slice());
            }
        }
    }

    // pack_sequence / unpack_sequence and unpad_sequence: the gradient comes back unchanged.
    let seqs: Vec<Tensor> = [2, 4, 1]
        .iter()
        .map(|&n| randn(&mut rng, &[n, 3], true))
        .collect();
    let packed = pack_sequence(&seqs, false).unwrap();
    let unpacked = unpack_sequence(&packed).unwrap();
    for (s, u) in seqs.iter().zip(&unpacked) {
        let g = randn(&mut rng, &s.shape(), false).to_array();
        u.backward_with(g.clone()).unwrap();
        assert_eq!(s.grad().unwrap(), g);
    }
    let x = randn(&mut rng, &[4, 3, 2], true);
    let parts = unpad_sequence(&x, &[4, 0, 2], false).unwrap();
    assert_eq!(parts[1].shape(), [0, 2]);
    parts[2]
        .backward_with(ArrayD::ones(IxDyn(&[2, 2])))
        .unwrap();
    let dx = x.grad().unwrap();
    assert_eq!(dx.sum(), 4.0);
    assert_eq!(
        dx.index_axis(Axis(1), 2)
            .slice_axis(Axis(0), ndarray::Slice::from(0..2))
            .sum(),
        4.0
    );
}

/// The error message of `r`, which must be an error.
fn err<T: std::fmt::Debug>(r: rnn::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn has_all(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should contain {p:?}");
    }
}

#[test]
fn errors_name_the_problem() {
    let x = Tensor::zeros(&[6, 3, 2]); // (T, B, F)
    has_all(
        &err(pack_padded_sequence(&x, &[2, 0, 1], false, false)),
        &["sequence 1 has length 0"],
    );
    has_all(
        &err(pack_padded_sequence(&x, &[2, 7, 1], false, false)),
        &["sequence 1 has length 7", "(6, 3, 2)", "only 6 time steps"],
    );
    // batch_first reads (6, 3, 2) as 6 sequences of 3 steps.
    has_all(
        &err(pack_padded_sequence(&x, &[2, 4, 1, 1, 1, 1], true, false)),
        &[
            "sequence 1 has length 4",
            "only 3 time steps",
            "batch_first=true",
        ],
    );
    has_all(
        &err(pack_padded_sequence(&x, &[2, 3, 1, 1], false, false)),
        &[
            "lengths",
            "expected shape (3,), got (4,)",
            "batch size 3",
            "4 lengths",
        ],
    );
    has_all(
        &err(pack_padded_sequence(&x, &[3, 2, 5], false, true)),
        &["enforce_sorted", "lengths[1] = 2 < lengths[2] = 5"],
    );
    has_all(
        &err(pack_padded_sequence(
            &Tensor::zeros(&[4]),
            &[4],
            false,
            false,
        )),
        &["(T, B, *)", "(4,)"],
    );
    has_all(
        &err(pack_padded_sequence(
            &Tensor::zeros(&[4, 0, 2]),
            &[],
            false,
            false,
        )),
        &["batch size 0"],
    );

    let packed = pack_padded_sequence(&x, &[2, 5, 1], false, false).unwrap();
    has_all(
        &err(pad_packed_sequence(&packed, false, 0.0, Some(4))),
        &["total_length = 4", "longest sequence (5 steps)"],
    );
    assert_eq!(
        pad_packed_sequence(&packed, false, 0.0, Some(5))
            .unwrap()
            .0
            .shape(),
        [5, 3, 2]
    );

    has_all(
        &err(pad_sequence(&[], false, 0.0)),
        &["non-empty list", "empty list"],
    );
    has_all(&err(pack_sequence(&[], false)), &["non-empty list"]);
    let odd = [
        Tensor::zeros(&[3, 2]),
        Tensor::zeros(&[2, 2]),
        Tensor::zeros(&[4, 5]),
    ];
    has_all(
        &err(pad_sequence(&odd, false, 0.0)),
        &[
            "sequence 2",
            "expected shape (*, 2), got (4, 5)",
            "trailing dimensions of sequence 0 (3, 2)",
        ],
    );
    has_all(&err(pack_sequence(&odd, false)), &["sequence 2", "(4, 5)"]);
    has_all(
        &err(pad_sequence(&[Tensor::scalar(1.0)], false, 0.0)),
        &["sequence 0", "time dimension"],
    );
    has_all(
        &err(pack_sequence(
            &[Tensor::zeros(&[2, 2]), Tensor::zeros(&[0, 2])],
            false,
        )),
        &["sequence 1 has length 0"],
    );
    has_all(
        &err(pack_sequence(
            &[Tensor::zeros(&[2, 2]), Tensor::zeros(&[3, 2])],
            true,
        )),
        &["enforce_sorted", "lengths[0] = 2 < lengths[1] = 3"],
    );
    has_all(
        &err(unpad_sequence(&x, &[2, 7, 1], false)),
        &["unpad_sequence", "sequence 1 has length 7"],
    );
    has_all(&err(unpad_sequence(&x, &[2, 1], false)), &["2 lengths"]);

    // Packed input to a layer: states in the caller's order with N sequences.
    rnn::manual_seed(1);
    let lstm = Lstm::new(2, 4).unwrap();
    let h0 = Tensor::zeros(&[1, 2, 4]);
    has_all(
        &err(lstm.forward_packed(&packed, Some((&h0, &h0)))),
        &[
            "LSTM h0",
            "expected shape (1, 3, 4), got (1, 2, 4)",
            "3 sequences",
        ],
    );
    let gru = Gru::new(5, 4).unwrap();
    has_all(
        &err(gru.forward_packed(&packed, None)),
        &["GRU packed input data", "(8, 5)", "(8, 2)"],
    );
    let rnn_layer = Recurrent::new(RecurrentConfig::new(CellKind::Rnn, 2, 4)).unwrap();
    let h = Tensor::zeros(&[1, 3, 4]);
    has_all(
        &err(rnn_layer.forward_packed(&packed, Some(&h), Some(&h))),
        &["no cell state c0"],
    );
}

/// Random lengths: every sequence of a packed batch gives, at each of its steps and at its
/// end, what it gives when run alone (batch 1, no padding).
#[test]
fn each_sequence_runs_as_if_alone() {
    let mut rng = Rng::new(2024);
    let mut trials = 0;
    for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
        for trial in 0..4 {
            let batch_first = trial % 2 == 1;
            let proj = if cell == CellKind::Lstm && trial >= 2 {
                2
            } else {
                0
            };
            let config = RecurrentConfig::new(cell, 3, 4)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_batch_first(batch_first)
                .with_proj_size(proj);
            let layer = Recurrent::with_rng(config.clone(), &mut rng).unwrap();
            let lstm = cell == CellKind::Lstm;
            let batch = 1 + rng.below(6);
            let lengths: Vec<usize> = (0..batch).map(|_| 1 + rng.below(7)).collect();
            let steps = lengths.iter().copied().max().unwrap() + rng.below(2);
            let shape = if batch_first {
                [batch, steps, 3]
            } else {
                [steps, batch, 3]
            };
            let x = randn(&mut rng, &shape, false);
            let (ld, hs, cs) = (4, config.state_size(), config.hidden_size);
            let with_h0 = trial % 3 != 0;
            let h0 = with_h0.then(|| randn(&mut rng, &[ld, batch, hs], false));
            let c0 = (with_h0 && lstm).then(|| randn(&mut rng, &[ld, batch, cs], false));

            let packed = pack_padded_sequence(&x, &lengths, batch_first, false).unwrap();
            let (out, h_n, c_n) = layer
                .forward_packed(&packed, h0.as_ref(), c0.as_ref())
                .unwrap();
            let (padded, _) = pad_packed_sequence(&out, batch_first, 0.0, None).unwrap();
            let (padded, h_n) = (padded.to_array(), h_n.to_array());
            let c_n = c_n.map(|c| c.to_array());
            let inputs = unpad_sequence(&x, &lengths, batch_first).unwrap();
            let outputs = unpad_sequence(&Tensor::new(padded), &lengths, batch_first).unwrap();

            for b in 0..batch {
                let ctx = format!("{cell:?} trial {trial} lengths {lengths:?} sequence {b}");
                // Alone: (L, 1, F), or (1, L, F) with batch_first.
                let alone = inputs[b]
                    .unsqueeze(if batch_first { 0 } else { 1 })
                    .unwrap();
                let state =
                    |s: &Option<Tensor>| s.as_ref().map(|s| s.narrow(1, b as isize, 1).unwrap());
                let (h0b, c0b) = (state(&h0), state(&c0));
                let single = layer
                    .forward_states(&alone, h0b.as_ref(), c0b.as_ref())
                    .unwrap();
                let expected_out = single.output.to_array();
                let expected_out =
                    expected_out.index_axis(Axis(if batch_first { 0 } else { 1 }), 0);
                assert_close(
                    &outputs[b].to_array(),
                    &expected_out.to_owned(),
                    &format!("{ctx}: output"),
                );
                let hb = h_n.index_axis(Axis(1), b).to_owned();
                assert_close(
                    &hb,
                    &single.h_n.to_array().index_axis(Axis(1), 0).to_owned(),
                    &format!("{ctx}: h_n"),
                );
                if let Some(c_n) = &c_n {
                    let cb = c_n.index_axis(Axis(1), b).to_owned();
                    let expected = single.c_n.as_ref().unwrap().to_array();
                    assert_close(
                        &cb,
                        &expected.index_axis(Axis(1), 0).to_owned(),
                        &format!("{ctx}: c_n"),
                    );
                }
            }
            trials += 1;
        }
    }
    assert_eq!(trials, 12);
}

fn assert_close(a: &ArrayD<f32>, e: &ArrayD<f32>, what: &str) {
    assert_eq!(a.shape(), e.shape(), "{what}: shape");
    let max = a
        .iter()
        .zip(e)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= 1e-5, "{what}: max difference {max:e}");
}

#[path = "../examples/packed.rs"]
#[allow(dead_code)]
mod lesson7;

/// Lesson 7 (`examples/packed.rs`): the shapes of the lesson, and each word's final state and
/// outputs in the packed batch equal running the word alone.
#[test]
fn lesson_7_words_of_different_lengths() {
    let out = lesson7::lesson().unwrap();
    assert_eq!(
        out.alphabet.iter().collect::<String>(),
        " acdeghilmnoprstuw"
    );
    assert_eq!(out.padded_shape, [5, 13]);
    assert_eq!(out.order, [4, 0, 2, 1, 3]); // lengths 13, 11, 11, 8, 4
    assert_eq!(out.output_lengths, [13, 11, 11, 8, 4]);
    assert_eq!(out.batch_sizes, [5, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 1, 1]);
    assert_eq!(out.output_shape, [5, 13, 30]);
    for (w, (h, o)) in lesson7::WORDS
        .iter()
        .zip(out.max_h_diff.iter().zip(&out.max_output_diff))
    {
        assert!(
            *h <= 1e-5 && *o <= 1e-5,
            "{w}: h_n differs by {h:e}, output by {o:e}"
        );
    }
}
