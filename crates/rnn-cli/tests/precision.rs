//! `--precision` and `rnn quantize` through the built binary: a quantized model file runs
//! within the int8 bound of PyTorch's numbers (`crates/rnn/tests/fixtures/cli/`), bf16 within
//! its bound, `rnn bench` reports the precision and kernel, and misuse is a clear error.

mod common;

use std::path::{Path, PathBuf};

use common::{rnn, TempDir};
use rnn::io::TensorFile;

fn fixture(case: &str, kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rnn/tests/fixtures/cli")
        .join(format!("{case}.{kind}.safetensors"))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The fixture's input without upstream gradients (int8 runs inference only).
fn inference_input(case: &str, dir: &TempDir) -> String {
    let mut f = TensorFile::read(fixture(case, "input")).unwrap();
    f.tensors.retain(|k, _| !k.starts_with("grad"));
    let path = dir.arg(&format!("{case}.input.safetensors"));
    f.write(&path).unwrap();
    path
}

fn worst(actual: &str, case: &str) -> f32 {
    let got = TensorFile::read(actual).unwrap();
    let want = TensorFile::read(fixture(case, "expected")).unwrap();
    let (g, w) = (got.f32("output").unwrap(), want.f32("output").unwrap());
    g.iter()
        .zip(w.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
}

#[test]
fn quantized_and_bf16_runs_stay_within_their_bounds() {
    let dir = TempDir::new("precision");
    for case in ["lstm_bi_proj", "gru_packed_bi", "gru_h0"] {
        let model = fixture(case, "model").display().to_string();
        let input = inference_input(case, &dir);
        let q = dir.arg(&format!("{case}.int8.safetensors"));
        let o = rnn(&["quantize", &model, "--out", &q]);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let again = rnn(&["quantize", &model, "--out", &q]);
        assert!(!again.status.success() && stderr(&again).contains("--force"));
        let out = dir.arg(&format!("{case}.int8.out.safetensors"));
        let o = rnn(&["run", "--model", &q, "--input", &input, "--output", &out]);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let e8 = worst(&out, case);
        let out16 = dir.arg(&format!("{case}.bf16.out.safetensors"));
        let o = rnn(&[
            "run",
            "--model",
            &model,
            "--input",
            &input,
            "--output",
            &out16,
            "--precision",
            "bf16",
        ]);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let e16 = worst(&out16, case);
        assert!(e8 > 1e-6 && e8 < 3e-2, "{case}: int8 {e8}");
        assert!(e16 > 1e-6 && e16 < 2e-2, "{case}: bf16 {e16}");
    }
}

/// `rnn run` keeps a model file's precision unless `--precision` says otherwise: a bf16 file
/// (`rnn::bf16_file`) runs bf16 products, a quantized file int8 ones.
#[test]
fn model_files_run_in_their_own_precision_by_default() {
    let dir = TempDir::new("precision-default");
    let case = "lstm_bi_proj";
    let model = fixture(case, "model").display().to_string();
    let input = inference_input(case, &dir);
    let bf16 = dir.arg("m.bf16.safetensors");
    let layer = rnn::model_file::load_model(&model).unwrap();
    rnn::model_file::save_model(&bf16, &layer.to_precision(rnn::Precision::Bf16).unwrap()).unwrap();
    let int8 = dir.arg("m.int8.safetensors");
    assert!(rnn(&["quantize", &model, "--out", &int8]).status.success());
    for (file, own) in [(&bf16, "bf16"), (&int8, "int8")] {
        let run = |precision: Option<&str>| {
            let out = dir.arg(&format!(
                "out.{own}.{}.safetensors",
                precision.unwrap_or("-")
            ));
            let mut args = vec!["run", "--model", file, "--input", &input, "--output", &out];
            if let Some(p) = precision {
                args.extend(["--precision", p]);
            }
            let o = rnn(&args);
            assert!(o.status.success(), "{own} {precision:?}: {}", stderr(&o));
            TensorFile::read(&out).unwrap().f32("output").unwrap()
        };
        let default = run(None);
        assert_eq!(
            default,
            run(Some(own)),
            "{own}: the default is not the file's precision"
        );
        assert_ne!(default, run(Some("f32")), "{own}");
        assert!(worst_of(&default, case) < 2e-2, "{own}");
    }
}

fn worst_of(got: &ndarray::ArrayD<f32>, case: &str) -> f32 {
    let want = TensorFile::read(fixture(case, "expected")).unwrap();
    got.iter()
        .zip(want.f32("output").unwrap().iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
}

#[test]
fn int8_gradients_and_bad_names_are_clear_errors() {
    let dir = TempDir::new("precision-errors");
    let model = fixture("lstm_bi_proj", "model").display().to_string();
    let input = fixture("lstm_bi_proj", "input").display().to_string();
    let out = dir.arg("out.safetensors");
    let o = rnn(&[
        "run",
        "--model",
        &model,
        "--input",
        &input,
        "--output",
        &out,
        "--precision",
        "int8",
    ]);
    let has_grads = TensorFile::read(&input).unwrap().contains("grad_output");
    if has_grads {
        assert!(!o.status.success());
        assert!(stderr(&o).contains("inference only"), "{}", stderr(&o));
    }
    let o = rnn(&["bench", "--precision", "fp4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("f32, bf16, int8"), "{}", stderr(&o));
    let o = rnn(&["bench", "--precision", "int8", "--mode", "train"]);
    assert!(!o.status.success() && stderr(&o).contains("inference only"));
    let o = rnn(&["sample", "--model", &model, "--precision", "int8"]);
    assert!(!o.status.success());
}

/// `rnn bench` on the seed workload in `precision`, one run without warm-up.
fn quick_bench(precision: &str) -> [&str; 11] {
    [
        "bench",
        "--preset",
        "seed",
        "--precision",
        precision,
        "--warmup",
        "0",
        "--min-reps",
        "1",
        "--min-time",
        "0",
    ]
}

#[test]
fn bench_reports_the_precision_and_its_kernel() {
    for p in ["f32", "bf16", "int8"] {
        let mut args = quick_bench(p).to_vec();
        args.push("--json");
        let o = rnn(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["precision"], p);
        assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    }
}

/// A precision whose fast instruction this CPU lacks (here forced with `RNN_MAX_ISA`) runs,
/// with a one-line note on stderr (and `"note"` in `rnn bench --json`); f32 has none.
#[test]
fn a_precision_without_its_instruction_is_a_note() {
    let bench = |isa: &str, precision: &str, json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rnn"));
        cmd.env("RNN_MAX_ISA", isa).args(quick_bench(precision));
        if json {
            cmd.arg("--json");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{isa} {precision}: {}", stderr(&o));
        o
    };
    for (isa, precision, says) in [
        ("avx2", "bf16", "AVX512_BF16"),
        ("avx2", "int8", "about f32's speed"),
        ("scalar", "int8", "several times slower than f32"),
        ("scalar", "bf16", "AVX512_BF16"),
    ] {
        let text = stderr(&bench(isa, precision, false));
        assert!(
            text.starts_with(&format!("note: {precision}: "))
                && text.contains(says)
                && text.lines().count() == 1,
            "{isa} {precision}: {text}"
        );
        let o = bench(isa, precision, true);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["note"].as_str().is_some_and(|n| n.contains(says)), "{v}");
        assert!(o.stderr.is_empty(), "--json keeps the note in its line");
    }
    let o = bench("scalar", "f32", true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["note"].is_null() && o.stderr.is_empty());
    assert!(bench("avx2", "f32", false).stderr.is_empty());
}

#[test]
fn training_takes_bf16_and_refuses_int8() {
    let dir = TempDir::new("precision-train");
    let out = dir.arg("run");
    let args = |precision: &'static str| {
        [
            "train",
            "--steps",
            "3",
            "--hidden",
            "8",
            "--batch",
            "2",
            "--seq-len",
            "8",
            "--threads",
            "1",
            "--force",
            "--out",
            &out,
            "--precision",
            precision,
        ]
        .map(String::from)
    };
    let run = |precision| {
        let a = args(precision);
        rnn(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run("int8");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("for inference"), "{}", stderr(&o));
    assert!(!Path::new(&out).join("model.safetensors").exists());
    let o = run("bf16");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bf16 products")
            || String::from_utf8_lossy(&o.stdout).contains("bf16 products")
    );
    assert!(Path::new(&out).join("model.safetensors").exists());
}
