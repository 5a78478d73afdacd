//! Parity with PyTorch for the rest of the surface: the pointwise and binary losses,
//! CrossEntropyLoss with probability targets, LayerNorm, Embedding(max_norm),
//! pad_sequence(padding_side) and the tensor operators, from
//! `tests/fixtures/surface.safetensors` (written by `tools/fixtures/surface.py`, float64):
//! every output and every gradient, computed here in f32, within 1e-5 absolute + 1e-4
//! relative (the tolerance of `ops_losses.rs`). Plus the edge cases and error texts.

use ndarray::{Array1, ArrayD, Ix1};
use rnn::io::TensorFile;
use rnn::loss::{
    BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, Reduction, SmoothL1Loss,
};
use rnn::Tensor;
use serde_json::Value;

const ABS: f64 = 1e-5;
const REL: f64 = 1e-4;

struct Fixture {
    file: TensorFile,
    cases: Vec<Value>,
}

impl Fixture {
    fn load() -> Fixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/surface.safetensors"
        );
        let file = TensorFile::read(path).expect("run tools/fixtures/surface.py");
        let cases = serde_json::from_str(&file.metadata["cases"]).expect("`cases` is a JSON list");
        Fixture { file, cases }
    }

    /// The cases of one kind; there must be some.
    fn cases(&self, kind: &str) -> Vec<&Value> {
        let v: Vec<&Value> = self.cases.iter().filter(|c| c["kind"] == kind).collect();
        assert!(!v.is_empty(), "no {kind} cases in the fixture");
        v
    }

    fn f32(&self, key: &str) -> ArrayD<f32> {
        self.file.f64(key).unwrap().mapv(|v| v as f32)
    }

    fn param(&self, key: &str) -> Tensor {
        Tensor::parameter(self.f32(key))
    }

    /// Compares `actual` with the fixture tensor `key`; returns a description of any mismatch.
    fn check(&self, key: &str, actual: &ArrayD<f32>) -> Option<String> {
        let expected = self.file.f64(key).unwrap();
        if expected.shape() != actual.shape() {
            return Some(format!(
                "{key}: shape {:?}, expected {:?}",
                actual.shape(),
                expected.shape()
            ));
        }
        for (i, (&a, &e)) in actual.iter().zip(expected.iter()).enumerate() {
            let a = a as f64;
            if (a - e).abs() > ABS + REL * e.abs() {
                return Some(format!("{key}[{i}]: got {a}, PyTorch {e}"));
            }
        }
        None
    }

    /// Backward from `out`: with the case's `grad_output` for reduction "none", else 1.
    fn backward(&self, name: &str, out: &Tensor) {
        let key = format!("{name}.grad_output");
        if self.file.contains(&key) {
            out.backward_with(self.f32(&key)).unwrap()
        } else {
            out.backward().unwrap()
        }
    }
}

fn reduction(case: &Value) -> Reduction {
    match case["reduction"].as_str() {
        Some("none") => Reduction::None,
        Some("sum") => Reduction::Sum,
        Some("mean") => Reduction::Mean,
        other => panic!("unknown reduction {other:?}"),
    }
}

fn assert_no_failures(failures: Vec<Option<String>>) {
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn regression_losses_match_pytorch() {
    let fx = Fixture::load();
    let mut failures = Vec::new();
    let mut kinds = Vec::new();
    for kind in ["l1", "smooth_l1", "huber"] {
        for case in fx.cases(kind) {
            let name = case["name"].as_str().unwrap();
            kinds.push(name.to_string());
            let key = |s: &str| format!("{name}.{s}");
            let (x, y) = (fx.param(&key("input")), fx.param(&key("target")));
            let r = reduction(case);
            let out = match kind {
                "l1" => L1Loss::new().with_reduction(r).forward(&x, &y),
                "smooth_l1" => SmoothL1Loss::new()
                    .with_reduction(r)
                    .with_beta(case["beta"].as_f64().unwrap() as f32)
                    .unwrap()
                    .forward(&x, &y),
                _ => HuberLoss::new()
                    .with_reduction(r)
                    .with_delta(case["delta"].as_f64().unwrap() as f32)
                    .unwrap()
                    .forward(&x, &y),
            }
            .unwrap();
            fx.backward(name, &out);
            failures.push(fx.check(&key("loss"), &out.to_array()));
            failures.push(fx.check(&key("grad.input"), &x.grad().unwrap()));
            failures.push(fx.check(&key("grad.target"), &y.grad().unwrap()));
        }
    }
    assert_eq!(kinds.len(), 18, "{kinds:?}");
    assert_no_failures(failures);
}

#[test]
fn binary_cross_entropy_matches_pytorch() {
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for kind in ["bce", "bce_logits"] {
        for case in fx.cases(kind) {
            let name = case["name"].as_str().unwrap();
            let key = |s: &str| format!("{name}.{s}");
            let x = fx.param(&key("input"));
            let y = Tensor::new(fx.f32(&key("target")));
            let r = reduction(case);
            let weight = (case["weight"] == true).then(|| fx.f32(&key("weight")));
            let out = if kind == "bce" {
                let mut l = BCELoss::new().with_reduction(r);
                if let Some(w) = weight {
                    l = l.with_weight(w);
                }
                l.forward(&x, &y)
            } else {
                let mut l = BCEWithLogitsLoss::new().with_reduction(r);
                if let Some(w) = weight {
                    l = l.with_weight(w);
                }
                if case["pos_weight"] == true {
                    l = l.with_pos_weight(fx.f32(&key("pos_weight")));
                }
                l.forward(&x, &y)
            }
            .unwrap();
            fx.backward(name, &out);
            failures.push(fx.check(&key("loss"), &out.to_array()));
            failures.push(fx.check(&key("grad.input"), &x.grad().unwrap()));
        }
    }
    assert_no_failures(failures);
}

#[test]
fn cross_entropy_with_probability_targets_matches_pytorch() {
    let fx = Fixture::load();
    let mut failures = Vec::new();
    let cases = fx.cases("ce_probs");
    assert!(cases
        .iter()
        .any(|c| c["weight"] == true && c["label_smoothing"].as_f64() > Some(0.0)));
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let key = |s: &str| format!("{name}.{s}");
        let (x, t) = (fx.param(&key("input")), fx.param(&key("target")));
        let mut l = CrossEntropyLoss::new()
            .with_reduction(reduction(case))
            .with_label_smoothing(case["label_smoothing"].as_f64().unwrap() as f32);
        if case["weight"] == true {
            let w: Array1<f32> = fx.f32(&key("weight")).into_dimensionality::<Ix1>().unwrap();
            l = l.with_weight(w);
        }
        let out = l.forward_probs(&x, &t).unwrap();
        fx.backward(name, &out);
        failures.push(fx.check(&key("loss"), &out.to_array()));
        failures.push(fx.check(&key("grad.input"), &x.grad().unwrap()));
        failures.push(fx.check(&key("grad.target"), &t.grad().unwrap()));
    }
    assert_no_failures(failures);
}

#[test]
fn loss_edge_cases_and_errors_are_pytorchs() {
    let x = Tensor::from_vec(&[2, 3], vec![0.1, 0.2, 0.7, 0.3, 0.3, 0.4]).unwrap();
    let t = Tensor::from_vec(&[2, 3], vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]).unwrap();
    // ignore_index with probability targets is refused, as in PyTorch.
    let err = CrossEntropyLoss::new()
        .with_ignore_index(1)
        .forward_probs(&x, &t)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ignore_index is not supported for floating point target"),
        "{err}"
    );
    let short = Tensor::from_vec(&[1, 3], vec![0.0, 0.0, 1.0]).unwrap();
    let err = CrossEntropyLoss::new()
        .forward_probs(&x, &short)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Expected input batch_size (2) to match target batch_size (1)"),
        "{err}"
    );
    // BCE refuses inputs outside [0, 1] and names the value.
    let bad = Tensor::from_vec(&[2], vec![0.5, 1.5]).unwrap();
    let y = Tensor::from_vec(&[2], vec![1.0, 0.0]).unwrap();
    let err = BCELoss::new().forward(&bad, &y).unwrap_err().to_string();
    assert!(
        err.contains("all elements of input should be between 0 and 1") && err.contains("1.5"),
        "{err}"
    );
    // Probabilities of exactly 0 and 1 give a finite loss (logs clamped at -100).
    let edge = Tensor::from_vec(&[2], vec![0.0, 1.0]).unwrap();
    let l = BCELoss::new().forward(&edge, &y).unwrap().item().unwrap();
    assert_eq!(l, 100.0);
    // Weights that do not broadcast name both shapes.
    let err = BCEWithLogitsLoss::new()
        .with_pos_weight(ArrayD::zeros(ndarray::IxDyn(&[4])))
        .forward(&x, &t)
        .unwrap_err()
        .to_string();
    assert!(err.contains("(4,)") && err.contains("(2, 3)"), "{err}");
    // Shapes must agree; beta and delta are checked with PyTorch's words.
    let err = L1Loss::new().forward(&x, &y).unwrap_err().to_string();
    assert!(err.contains("(2, 3)") && err.contains("(2,)"), "{err}");
    let err = SmoothL1Loss::new().with_beta(-1.0).unwrap_err().to_string();
    assert!(
        err.contains("does not support negative values for beta"),
        "{err}"
    );
    let err = HuberLoss::new().with_delta(0.0).unwrap_err().to_string();
    assert!(
        err.contains("does not support non-positive values for delta"),
        "{err}"
    );
}

#[test]
fn layer_norm_matches_pytorch() {
    use rnn::{LayerNorm, Module};
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for case in fx.cases("layer_norm") {
        let name = case["name"].as_str().unwrap();
        let key = |s: &str| format!("{name}.{s}");
        let norm: Vec<usize> = case["normalized_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let ln = LayerNorm::new(&norm)
            .unwrap()
            .with_eps(case["eps"].as_f64().unwrap())
            .unwrap()
            .with_elementwise_affine(case["elementwise_affine"] == true)
            .with_bias(case["bias"] == true);
        assert_eq!(ln.to_string(), case["repr"].as_str().unwrap());
        for (pname, p) in ln.named_parameters() {
            *p.data_mut() = fx.f32(&key(&pname));
        }
        let x = fx.param(&key("input"));
        let y = ln.forward(&x).unwrap();
        y.backward_with(fx.f32(&key("grad_output"))).unwrap();
        failures.push(fx.check(&key("output"), &y.to_array()));
        failures.push(fx.check(&key("grad.input"), &x.grad().unwrap()));
        let names: Vec<String> = ln.named_parameters().into_iter().map(|(n, _)| n).collect();
        for (pname, p) in ln.named_parameters() {
            failures.push(fx.check(&key(&format!("grad.{pname}")), &p.grad().unwrap()));
        }
        for pname in ["weight", "bias"] {
            assert_eq!(
                fx.file.contains(&key(pname)),
                names.iter().any(|n| n == pname),
                "{name}: {pname}"
            );
        }
    }
    assert_no_failures(failures);
    let ln = LayerNorm::new(&[3, 4]).unwrap();
    let err = ln
        .forward(&Tensor::zeros(&[2, 4, 3]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "Given normalized_shape=[3, 4], expected input with shape [*, 3, 4], but got input \
             of size[2, 4, 3]"
        ),
        "{err}"
    );
    assert!(LayerNorm::new(&[]).is_err() && LayerNorm::new(&[3, 0]).is_err());
}

#[test]
fn embedding_max_norm_renormalises_in_place_as_pytorch() {
    use rnn::embedding::Embedding;
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for case in fx.cases("embedding_max_norm") {
        let name = case["name"].as_str().unwrap();
        let key = |s: &str| format!("{name}.{s}");
        let norm_type = match &case["norm_type"] {
            Value::String(s) if s == "inf" => f64::INFINITY,
            v => v.as_f64().unwrap(),
        };
        let padding_idx = case["padding_idx"].as_u64().map(|p| p as usize);
        let emb = Embedding::from_weight(fx.param(&key("weight")), padding_idx)
            .unwrap()
            .with_max_norm(Some(case["max_norm"].as_f64().unwrap()), norm_type)
            .unwrap();
        assert_eq!(emb.to_string(), case["repr"].as_str().unwrap());
        let idx = fx.file.i64(&key("indices")).unwrap().mapv(|v| v as usize);
        let y = emb.forward(&idx).unwrap();
        y.backward_with(fx.f32(&key("grad_output"))).unwrap();
        failures.push(fx.check(&key("output"), &y.to_array()));
        failures.push(fx.check(&key("weight_after"), &emb.weight().to_array()));
        failures.push(fx.check(&key("grad.weight"), &emb.weight().grad().unwrap()));
        // Renormalised rows are changed, the others are not.
        assert_ne!(emb.weight().to_array(), fx.f32(&key("weight")), "{name}");
    }
    assert_no_failures(failures);
    let err = Embedding::new(3, 2)
        .unwrap()
        .with_max_norm(Some(-1.0), 2.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_norm must be finite and > 0"), "{err}");
}

#[test]
fn pad_sequence_padding_side_matches_pytorch() {
    use rnn::packed::{pad_sequence, pad_sequence_with_side, PaddingSide};
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for case in fx.cases("pad_sequence") {
        let name = case["name"].as_str().unwrap();
        let n = case["lengths"].as_array().unwrap().len();
        let seqs: Vec<Tensor> = (0..n)
            .map(|i| fx.param(&format!("{name}.seq{i}")))
            .collect();
        let side = if case["padding_side"] == "left" {
            PaddingSide::Left
        } else {
            PaddingSide::Right
        };
        let batch_first = case["batch_first"] == true;
        let value = case["padding_value"].as_f64().unwrap() as f32;
        let out = pad_sequence_with_side(&seqs, batch_first, value, side).unwrap();
        failures.push(fx.check(&format!("{name}.output"), &out.to_array()));
        if side == PaddingSide::Right {
            let plain = pad_sequence(&seqs, batch_first, value).unwrap();
            assert_eq!(plain.to_array(), out.to_array());
        }
        // The gradient of each sequence is its own slice: all ones.
        out.sum().backward().unwrap();
        for s in &seqs {
            assert!(s.grad().unwrap().iter().all(|&g| g == 1.0), "{name}");
        }
    }
    assert_no_failures(failures);
}

#[test]
fn operators_record_the_methods_operations() {
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for case in fx.cases("operators") {
        let name = case["name"].as_str().unwrap();
        let key = |s: &str| format!("{name}.{s}");
        let (a, b) = (fx.param(&key("a")), fx.param(&key("b")));
        let y = match name {
            "operators_0" => (&a + &b) * &a - &b / 2.5 + (-&a) * 3.0 - 1.0,
            _ => (2.0 - &a) / (&b * &b + 1.0) + 1.5 / (&a * &a + 1.0) * &b,
        };
        y.backward_with(fx.f32(&key("grad_output"))).unwrap();
        failures.push(fx.check(&key("output"), &y.to_array()));
        failures.push(fx.check(&key("grad.a"), &a.grad().unwrap()));
        failures.push(fx.check(&key("grad.b"), &b.grad().unwrap()));
        // The same as the methods, to the bit.
        let (a2, b2) = (fx.param(&key("a")), fx.param(&key("b")));
        if name == "operators_0" {
            let m = a2
                .add(&b2)
                .unwrap()
                .mul(&a2)
                .unwrap()
                .sub(&b2.div_scalar(2.5))
                .unwrap()
                .add(&a2.neg().mul_scalar(3.0))
                .unwrap()
                .add_scalar(-1.0);
            assert_eq!(m.to_array(), y.to_array());
        }
    }
    assert_no_failures(failures);
    // Shapes that do not broadcast: the panic names both.
    let r = std::panic::catch_unwind(|| {
        let _ = Tensor::zeros(&[3, 4]) + Tensor::zeros(&[5]);
    });
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("(3, 4)") && msg.contains("(5,)"), "{msg}");
}
