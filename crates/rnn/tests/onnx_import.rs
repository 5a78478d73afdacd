//! `rnn::onnx::import` against ONNX Runtime and PyTorch: every fixture of
//! `tools/fixtures/onnx_models.py` (exports by `torch.onnx.export`, TorchScript and dynamo, and
//! `onnx.helper` graphs; dynamo's nn.RNN is unrolled per step) imports to the expected configuration and reproduces the recorded
//! outputs and states within 1e-5; the forms rnn refuses give their one-line error; truncated
//! and corrupted files give errors, never panics.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use rnn::io::TensorFile;
use rnn::packed::{pack_padded_sequence, pad_packed_sequence};
use rnn::{RecurrentConfig, RecurrentOutput, Tensor};

const TOL: f32 = 1e-5;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir().join("cases.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>, what: &str) -> f32 {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes differ");
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `model` on the inputs of an io file as `rnn run` does (packed when `lengths` is given).
fn run(model: &rnn::Recurrent, io: &TensorFile) -> RecurrentOutput {
    let x = Tensor::new(io.f32("input").unwrap());
    let h0 = io
        .contains("h0")
        .then(|| Tensor::new(io.f32("h0").unwrap()));
    let c0 = io
        .contains("c0")
        .then(|| Tensor::new(io.f32("c0").unwrap()));
    rnn::no_grad(|| {
        if !io.contains("lengths") {
            return model.forward_states(&x, h0.as_ref(), c0.as_ref()).unwrap();
        }
        let lengths: Vec<usize> = io
            .i64("lengths")
            .unwrap()
            .iter()
            .map(|&l| l as usize)
            .collect();
        let bf = model.config().batch_first;
        let packed = pack_padded_sequence(&x, &lengths, bf, false).unwrap();
        let (out, h_n, c_n) = model
            .forward_packed(&packed, h0.as_ref(), c0.as_ref())
            .unwrap();
        let total = x.shape()[usize::from(bf)];
        let (output, _) = pad_packed_sequence(&out, bf, 0.0, Some(total)).unwrap();
        RecurrentOutput { output, h_n, c_n }
    })
}

#[test]
fn every_fixture_matches_onnx_runtime_and_pytorch() {
    let mut report = Vec::new();
    let mut worst: f32 = 0.0;
    let cases = cases();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let path = dir().join(format!("{name}.onnx"));
        if let Some(expected) = case.get("error") {
            let e = match rnn::onnx::import(&path) {
                Ok(s) => panic!("{name}: expected an error, imported {}", s[0].model),
                Err(e) => e.to_string(),
            };
            let want = expected.as_str().unwrap();
            assert!(e.contains(want), "{name}: {e:?} lacks {want:?}");
            assert!(!e.contains('\n'), "{name}: not one line: {e}");
            continue;
        }
        let stacks = rnn::onnx::import(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(stacks.len(), 1, "{name}");
        let mut model = stacks.into_iter().next().unwrap().model;
        let io = TensorFile::read(dir().join(format!("{name}.io.safetensors"))).unwrap();
        let want = RecurrentConfig::from_json(&io.metadata["config"]).unwrap();
        assert_eq!(model.config(), &want, "{name}");
        rnn::Module::set_training(&mut model, false);
        let out = run(&model, &io);
        let mut got = vec![
            ("output", out.output.to_array()),
            ("h_n", out.h_n.to_array()),
        ];
        if let Some(c) = &out.c_n {
            got.push(("c_n", c.to_array()));
        }
        let mut case_worst: f32 = 0.0;
        for prefix in ["", "torch."] {
            for (key, value) in &got {
                let k = format!("{prefix}{key}");
                if prefix.is_empty() || io.contains(&k) {
                    let d = max_diff(value, &io.f32(&k).unwrap(), &format!("{name} {k}"));
                    assert!(d <= TOL, "{name}: {k} differs by {d}");
                    case_worst = case_worst.max(d);
                }
            }
        }
        worst = worst.max(case_worst);
        report.push(format!("{name}: {case_worst:.1e}"));
    }
    eprintln!("{}\nworst {worst:.2e}", report.join("\n"));
}

#[test]
fn truncated_and_corrupted_files_are_errors() {
    // A deterministic mutation loop: prefixes of every length class, and single bytes
    // replaced at spread positions, for a few fixtures of each kind.
    let names = [
        "torchscript_lstm_l2_bi_bf_h0",
        "dynamo_gru_l1_bi_h0",
        "helper_lstm_seqlens_bi",
        "dynamo_rnn_l2_bi_bf_h0",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for name in names {
        let bytes = std::fs::read(dir().join(format!("{name}.onnx"))).unwrap();
        let d = dir();
        for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
            if rnn::onnx::import_bytes(&bytes[..cut], &d).is_err() {
                errors += 1;
            }
        }
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            // Either an error or a model: never a panic.
            let _ = rnn::onnx::import_bytes(&b, &d);
        }
    }
    assert!(errors > 200, "{errors} truncated files were errors");
    let e = rnn::onnx::import(dir().join("cases.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cases.json") && e.contains("not a"), "{e}");
    let e = rnn::onnx::import(dir().join("missing.onnx")).unwrap_err();
    assert!(matches!(e, rnn::Error::Io { .. }), "{e}");
}
