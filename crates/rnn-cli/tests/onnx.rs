//! `rnn import`, `rnn export` and `rnn run --model X.onnx` on the ONNX fixtures
//! (crates/rnn/tests/fixtures/onnx, written by tools/fixtures/onnx_models.py).

mod common;

use std::path::PathBuf;

use common::{rnn, TempDir};
use rnn::io::TensorFile;

fn onnx_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rnn/tests/fixtures/onnx")
        .join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The tensors an io fixture gives `rnn run` (input, h0, c0, lengths), as an input file.
fn input_file(io: &TensorFile, path: &std::path::Path) {
    let mut f = TensorFile::new();
    for key in ["input", "h0", "c0", "lengths"] {
        if let Some(t) = io.tensors.get(key) {
            f.tensors.insert(key.to_string(), t.clone());
        }
    }
    f.write(path).unwrap();
}

fn max_diff(out: &TensorFile, io: &TensorFile, key: &str) -> f32 {
    let (a, b) = (out.f32(key).unwrap(), io.f32(key).unwrap());
    assert_eq!(a.shape(), b.shape(), "{key}");
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn import_then_run_and_run_onnx_directly_match_onnx_runtime() {
    let dir = TempDir::new("import");
    for name in [
        "torchscript_lstm_l2_bi_bf_h0",
        "dynamo_gru_l2_bi",
        "helper_lstm_seqlens_bi",
        "helper_lstm_peepholes_bi_h0",
        "helper_gru_reset_before_bi_seqlens",
    ] {
        let io = TensorFile::read(onnx_fixture(&format!("{name}.io.safetensors"))).unwrap();
        let input = dir.path(&format!("{name}.input.safetensors"));
        input_file(&io, &input);
        let model = dir.arg(&format!("{name}.safetensors"));
        let onnx = onnx_fixture(&format!("{name}.onnx")).display().to_string();
        let o = rnn(&["import", &onnx, "--out", &model]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        assert!(text(&o.stdout).contains("wrote"), "{}", text(&o.stdout));
        // Existing files are kept.
        let o = rnn(&["import", &onnx, "--out", &model]);
        assert_eq!(o.status.code(), Some(1));
        assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
        for source in [model.clone(), onnx.clone()] {
            let out = dir.path(&format!("{name}.out.safetensors"));
            let o = rnn(&[
                "run",
                "--model",
                &source,
                "--input",
                &input.display().to_string(),
                "--output",
                &out.display().to_string(),
            ]);
            assert!(o.status.success(), "{name}: {}", text(&o.stderr));
            let got = TensorFile::read(&out).unwrap();
            for key in ["output", "h_n", "c_n"] {
                if io.contains(key) {
                    let d = max_diff(&got, &io, key);
                    assert!(d <= 1e-5, "{name} via {source}: {key} differs by {d}");
                }
            }
        }
    }
    // A directory as --out gets model.safetensors.
    let out = dir.path("into");
    let onnx = onnx_fixture("dynamo_lstm_l1.onnx").display().to_string();
    let o = rnn(&["import", &onnx, "--out", &out.display().to_string()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.join("model.safetensors").is_file());
}

#[test]
fn unsupported_forms_are_one_line_errors() {
    for (name, needle) in [
        ("helper_rnn_gemm_head", "Gemm node \"head\""),
        ("helper_gru_reverse", "direction = \"reverse\""),
    ] {
        let dir = TempDir::new("bad");
        let onnx = onnx_fixture(&format!("{name}.onnx")).display().to_string();
        let o = rnn(&["import", &onnx, "--out", &dir.arg("m.safetensors")]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let e = text(&o.stderr);
        assert!(
            e.starts_with("error: ") && e.contains(needle),
            "{name}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(dir.entries().is_empty());
    }
}

#[test]
fn export_then_import_round_trips_a_model_file() {
    let dir = TempDir::new("export");
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rnn/tests/fixtures/cli/gru_h0.model.safetensors");
    let model = model.display().to_string();
    let onnx = dir.arg("m.onnx");
    let o = rnn(&["export", &model, "--onnx", &onnx]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("opset 17"), "{}", text(&o.stdout));
    let back = dir.arg("back.safetensors");
    let o = rnn(&["import", &onnx, "--out", &back]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (a, b) = (
        TensorFile::read(&model).unwrap(),
        TensorFile::read(&back).unwrap(),
    );
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (k, t) in &a.tensors {
        assert_eq!(t.to_f32(), b.tensors[k].to_f32(), "{k}");
    }
    let (ca, cb) = (
        rnn::RecurrentConfig::from_json(&a.metadata["config"]).unwrap(),
        rnn::RecurrentConfig::from_json(&b.metadata["config"]).unwrap(),
    );
    assert_eq!(ca, cb);
    // proj_size: a one-line error, no file.
    let proj = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rnn/tests/fixtures/cli/lstm_bi_proj.model.safetensors");
    let o = rnn(&[
        "export",
        &proj.display().to_string(),
        "--onnx",
        &dir.arg("p.onnx"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("proj_size"), "{}", text(&o.stderr));
    assert!(!dir.path("p.onnx").exists());
}
