//! Parity with PyTorch for the losses, a few ops, `Linear` and `Embedding`, from
//! `tests/fixtures/losses.safetensors` (written by `tools/fixtures/losses.py`, float64): every
//! loss value and every gradient, computed here in f32, within 1e-5 absolute + 1e-4 relative.
//! Plus the error messages of the losses.

use ndarray::{array, Array1, ArrayD, Ix1};
use rnn::embedding::Embedding;
use rnn::io::TensorFile;
use rnn::linear::Linear;
use rnn::loss::{self, CrossEntropyLoss, MSELoss, NLLLoss, Reduction};
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
            "/tests/fixtures/losses.safetensors"
        );
        let file =
            TensorFile::read(path).expect("run tools/make_fixtures.sh to create the fixtures");
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

    fn f64(&self, key: &str) -> ArrayD<f64> {
        self.file.f64(key).unwrap()
    }

    fn param(&self, key: &str) -> Tensor {
        Tensor::parameter(self.f32(key))
    }

    /// Compares `actual` with the fixture tensor `key`; returns a description of any mismatch.
    fn check(&self, key: &str, actual: &ArrayD<f32>) -> Option<String> {
        let expected = self.f64(key);
        if expected.shape() != actual.shape() {
            return Some(format!(
                "{key}: shape {:?}, expected {:?}",
                actual.shape(),
                expected.shape()
            ));
        }
        for (i, (&a, &e)) in actual.iter().zip(expected.iter()).enumerate() {
            let a = a as f64;
            let ok = if e.is_nan() {
                a.is_nan()
            } else {
                (a - e).abs() <= ABS + REL * e.abs()
            };
            if !ok {
                return Some(format!("{key}[{i}]: got {a}, PyTorch {e}"));
            }
        }
        None
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

/// Backward from `out`: with the fixture's `grad_output` for reduction "none", else 1.
fn backward(fx: &Fixture, name: &str, out: &Tensor) {
    match fx.file.contains(&format!("{name}.grad_output")) {
        true => out
            .backward_with(fx.f32(&format!("{name}.grad_output")))
            .unwrap(),
        false => out.backward().unwrap(),
    }
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn class_loss_case(fx: &Fixture, case: &Value) -> Vec<Option<String>> {
    let name = case["name"].as_str().unwrap();
    let key = |s: &str| format!("{name}.{s}");
    let input = fx.param(&key("input"));
    let target = fx.file.i64(&key("target")).unwrap();
    let weight: Option<Array1<f32>> = (case["weight"] == true)
        .then(|| fx.f32(&key("weight")).into_dimensionality::<Ix1>().unwrap());
    let ignore = case["ignore_index"].as_i64().unwrap();
    let out = if case["kind"] == "cross_entropy" {
        let mut l = CrossEntropyLoss::new()
            .with_ignore_index(ignore)
            .with_reduction(reduction(case))
            .with_label_smoothing(case["label_smoothing"].as_f64().unwrap() as f32);
        if let Some(w) = weight {
            l = l.with_weight(w);
        }
        l.forward(&input, &target)
    } else {
        let mut l = NLLLoss::new()
            .with_ignore_index(ignore)
            .with_reduction(reduction(case));
        if let Some(w) = weight {
            l = l.with_weight(w);
        }
        l.forward(&input, &target)
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => return vec![Some(format!("{name}: {e}"))],
    };
    backward(fx, name, &out);
    vec![
        fx.check(&key("loss"), &out.to_array()),
        fx.check(&key("grad.input"), &input.grad().unwrap()),
    ]
}

#[test]
fn cross_entropy_matches_pytorch() {
    let fx = Fixture::load();
    let cases = fx.cases("cross_entropy");
    // Every option is covered: smoothing with weights, ignore_index, (N, C, d...), (C).
    assert!(cases
        .iter()
        .any(|c| c["label_smoothing"].as_f64() > Some(0.0) && c["weight"] == true));
    assert!(cases
        .iter()
        .any(|c| c["input_shape"].as_array().unwrap().len() == 3));
    assert!(cases.len() >= 40, "{}", cases.len());
    assert_no_failures(
        cases
            .iter()
            .flat_map(|c| class_loss_case(&fx, c))
            .flatten()
            .collect(),
    );
}

#[test]
fn nll_matches_pytorch() {
    let fx = Fixture::load();
    let cases = fx.cases("nll");
    assert_no_failures(
        cases
            .iter()
            .flat_map(|c| class_loss_case(&fx, c))
            .flatten()
            .collect(),
    );
}

#[test]
fn mse_matches_pytorch() {
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for case in fx.cases("mse") {
        let name = case["name"].as_str().unwrap();
        let key = |s: &str| format!("{name}.{s}");
        let (x, y) = (fx.param(&key("input")), fx.param(&key("target")));
        let out = MSELoss::new()
            .with_reduction(reduction(case))
            .forward(&x, &y)
            .unwrap();
        backward(&fx, name, &out);
        failures.push(fx.check(&key("loss"), &out.to_array()));
        failures.push(fx.check(&key("grad.input"), &x.grad().unwrap()));
        failures.push(fx.check(&key("grad.target"), &y.grad().unwrap()));
    }
    assert_no_failures(failures.into_iter().flatten().collect());
}

#[test]
fn softmax_and_log_softmax_match_pytorch() {
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for kind in ["softmax", "log_softmax"] {
        for case in fx.cases(kind) {
            let name = case["name"].as_str().unwrap();
            let key = |s: &str| format!("{name}.{s}");
            let x = fx.param(&key("input"));
            let dim = case["dim"].as_i64().unwrap() as isize;
            let y = if kind == "softmax" {
                x.softmax(dim)
            } else {
                x.log_softmax(dim)
            }
            .unwrap();
            backward(&fx, name, &y);
            failures.push(fx.check(&key("output"), &y.to_array()));
            failures.push(fx.check(&key("grad.input"), &x.grad().unwrap()));
        }
    }
    assert_no_failures(failures.into_iter().flatten().collect());
}

#[test]
fn matmul_and_broadcasting_match_pytorch() {
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for kind in ["matmul", "add", "sub", "mul", "div"] {
        for case in fx.cases(kind) {
            let name = case["name"].as_str().unwrap();
            let key = |s: &str| format!("{name}.{s}");
            let (a, b) = (fx.param(&key("a")), fx.param(&key("b")));
            let y = match kind {
                "matmul" => a.matmul(&b),
                "add" => a.add(&b),
                "sub" => a.sub(&b),
                "mul" => a.mul(&b),
                _ => a.div(&b),
            }
            .unwrap();
            backward(&fx, name, &y);
            failures.push(fx.check(&key("output"), &y.to_array()));
            failures.push(fx.check(&key("grad.a"), &a.grad().unwrap()));
            failures.push(fx.check(&key("grad.b"), &b.grad().unwrap()));
        }
    }
    assert_no_failures(failures.into_iter().flatten().collect());
}

#[test]
fn linear_and_embedding_match_pytorch() {
    let fx = Fixture::load();
    let mut failures = Vec::new();
    for case in fx.cases("linear") {
        let name = case["name"].as_str().unwrap();
        let key = |s: &str| format!("{name}.{s}");
        let bias = (case["bias"] == true).then(|| fx.param(&key("bias")));
        let lin = Linear::from_parameters(fx.param(&key("weight")), bias.clone()).unwrap();
        let x = fx.param(&key("input"));
        let y = lin.forward(&x).unwrap();
        backward(&fx, name, &y);
        failures.push(fx.check(&key("output"), &y.to_array()));
        failures.push(fx.check(&key("grad.input"), &x.grad().unwrap()));
        failures.push(fx.check(&key("grad.weight"), &lin.weight().grad().unwrap()));
        if let Some(b) = bias {
            failures.push(fx.check(&key("grad.bias"), &b.grad().unwrap()));
        }
    }
    for case in fx.cases("embedding") {
        let name = case["name"].as_str().unwrap();
        let key = |s: &str| format!("{name}.{s}");
        let padding = case["padding_idx"].as_u64().map(|p| p as usize);
        let emb = Embedding::from_weight(fx.param(&key("weight")), padding).unwrap();
        let idx = fx.file.i64(&key("indices")).unwrap().mapv(|i| i as usize);
        let y = emb.forward(&idx).unwrap();
        backward(&fx, name, &y);
        failures.push(fx.check(&key("output"), &y.to_array()));
        failures.push(fx.check(&key("grad.weight"), &emb.weight().grad().unwrap()));
    }
    assert_no_failures(failures.into_iter().flatten().collect());
}

#[test]
fn loss_errors_name_what_is_wrong() {
    let x = Tensor::zeros(&[3, 5]);
    let e = loss::cross_entropy(&x, &array![0i64, 5, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("target 5 is out of bounds for 5 classes"), "{e}");
    let e = loss::cross_entropy(&x, &array![0i64, -1, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("target -1"), "{e}");
    // ignore_index itself is fine, in or out of range.
    assert!(CrossEntropyLoss::new()
        .with_ignore_index(-1)
        .forward(&x, &array![0i64, -1, 1])
        .is_ok());
    let e = loss::cross_entropy(&x, &array![0i64, 1])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expected shape (3,), got (2,)") && e.contains("batch_size (3)"),
        "{e}"
    );
    let e = loss::nll_loss(&Tensor::zeros(&[2, 4, 3]), &array![[0i64, 1], [1, 1]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected shape (2, 3), got (2, 2)"), "{e}");
    let e = CrossEntropyLoss::new()
        .with_weight(array![1.0f32, 2.0])
        .forward(&x, &array![0i64, 1, 1]);
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("expected shape (5,), got (2,)"));
    let e = CrossEntropyLoss::new()
        .with_label_smoothing(1.5)
        .forward(&x, &array![0i64, 1, 1]);
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("label_smoothing must be between 0.0 and 1.0"));
    let e = loss::mse_loss(&x, &Tensor::zeros(&[3, 1]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected shape (3, 5), got (3, 1)"), "{e}");
    assert!(loss::cross_entropy(&Tensor::scalar(1.0), &ndarray::arr0(0i64)).is_err());
}

#[test]
fn one_dimensional_input_with_a_scalar_target() {
    let x = Tensor::parameter(array![1.0f32, 2.0, 3.0].into_dyn());
    let l = loss::cross_entropy(&x, &ndarray::arr0(2i64)).unwrap();
    assert_eq!(l.shape(), Vec::<usize>::new());
    let z: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
    assert!((l.item().unwrap() - (z.ln() - 3.0)).abs() < 1e-6);
}
