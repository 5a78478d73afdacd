//! Runs the built `rnn` binary: `rnn run` against PyTorch's numbers in
//! `crates/rnn/tests/fixtures/cli/` (README section 6), every kind of bad input, and
//! `rnn basics`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{rnn, TempDir};
use ndarray::{ArrayD, Dimension, IxDyn};
use rnn::io::TensorFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rnn/tests/fixtures/cli")
}

fn fixture(case: &str, kind: &str) -> PathBuf {
    fixtures().join(format!("{case}.{kind}.safetensors"))
}

fn run(model: &Path, input: &Path, output: &Path) -> Output {
    rnn(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
}

/// The case names in the fixture folder, by whether their input has `lengths`.
fn cases(packed: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".model.safetensors").map(str::to_string)
        })
        .filter(|c| {
            let input = TensorFile::read(fixture(c, "input")).unwrap();
            input.contains("lengths") == packed
        })
        .collect();
    names.sort();
    names
}

/// Compares every tensor of `expected` with `actual`: the same keys, shapes, and values within
/// 1e-5 (gradients: 1e-4 relative or 1e-5 absolute).
fn compare(case: &str, actual: &TensorFile, expected: &TensorFile) {
    let keys = |f: &TensorFile| f.tensors.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(actual), keys(expected), "{case}: keys");
    for (key, want) in &expected.tensors {
        let got = &actual.tensors[key];
        assert_eq!(got.dtype(), "F32", "{case}: {key} dtype");
        assert_eq!(got.shape(), want.shape(), "{case}: {key} shape");
        let (got, want) = (got.to_f32(), want.to_f32());
        let is_grad = key.starts_with("grad.");
        for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
            let err = (g - w).abs();
            let tol = if is_grad {
                (1e-4 * w.abs()).max(1e-5)
            } else {
                1e-5
            };
            assert!(
                err <= tol,
                "{case}: {key}[{i}] = {g}, PyTorch says {w} (error {err:e} > {tol:e})"
            );
        }
        assert!(got.iter().all(|v| v.is_finite()), "{case}: {key}");
    }
}

fn run_cases(packed: bool) {
    let names = cases(packed);
    assert!(
        names.len() >= if packed { 2 } else { 4 },
        "fixtures missing: {names:?}"
    );
    let dir = TempDir::new("fixtures");
    for case in &names {
        let out = dir.path(&format!("{case}.out.safetensors"));
        let o = run(&fixture(case, "model"), &fixture(case, "input"), &out);
        assert!(
            o.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stderr.is_empty(),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let actual = TensorFile::read(&out).unwrap();
        let expected = TensorFile::read(fixture(case, "expected")).unwrap();
        compare(case, &actual, &expected);
    }
    // Only the outputs are left: no temporary files.
    assert_eq!(dir.entries().len(), names.len());
}

#[test]
fn run_matches_pytorch() {
    run_cases(false);
}

#[test]
fn run_packed_matches_pytorch() {
    run_cases(true);
}

#[test]
fn a_mismatch_is_caught() {
    // The comparison itself must be able to fail: perturb one gradient by 1e-3.
    let case = "gru_h0";
    let expected = TensorFile::read(fixture(case, "expected")).unwrap();
    let mut wrong = expected.clone();
    let mut g = wrong.f32("grad.weight_hh_l0").unwrap();
    g[[3, 1]] += 1e-3;
    wrong.insert("grad.weight_hh_l0", g);
    let r = std::panic::catch_unwind(|| compare(case, &wrong, &expected));
    assert!(r.is_err());
}

/// Runs `rnn run` expecting failure: exit status 1, one line `error: ...` naming each of
/// `needles`, no panic, nothing written. Returns the line.
fn fails(model: &Path, input: &Path, needles: &[&str]) -> String {
    let dir = TempDir::new("fails");
    let out = dir.path("out.safetensors");
    let o = run(model, input, &out);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(o.stdout.is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.ends_with('\n'),
        "{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{stderr:?} lacks {n:?}");
    }
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    stderr
}

fn write(path: &Path, tensors: &[(&str, ArrayD<f32>)], metadata: &[(&str, &str)]) {
    let mut f = TensorFile::new();
    for (k, v) in tensors {
        f.insert(*k, v.clone());
    }
    for (k, v) in metadata {
        f.metadata.insert(k.to_string(), v.to_string());
    }
    f.write(path).unwrap();
}

#[test]
fn bad_model_files() {
    let dir = TempDir::new("bad-model");
    let input = fixture("gru_h0", "input");
    let good = fixture("gru_h0", "model");

    let missing = dir.path("missing.safetensors");
    let line = fails(&missing, &input, &["missing.safetensors", "No such file"]);
    assert_eq!(line.matches("No such file").count(), 1, "{line}");

    let truncated = dir.path("truncated.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    fails(&truncated, &input, &["truncated.safetensors"]);

    let garbage = dir.path("garbage.safetensors");
    std::fs::write(
        &garbage,
        b"this is not a safetensors file, just some text\n",
    )
    .unwrap();
    fails(&garbage, &input, &["garbage.safetensors", "header length"]);

    let weights = TensorFile::read(&good).unwrap();
    let mut no_config = weights.clone();
    no_config.metadata.clear();
    let p = dir.path("no-config.safetensors");
    no_config.write(&p).unwrap();
    fails(
        &p,
        &input,
        &["no-config.safetensors", "\"config\"", "json.dumps"],
    );

    let mut bad_json = weights.clone();
    bad_json.metadata.insert(
        "config".into(),
        "{\"cell\": \"gru\", \"input_size\": 3,".into(),
    );
    let p = dir.path("bad-json.safetensors");
    bad_json.write(&p).unwrap();
    fails(&p, &input, &["bad-json.safetensors", "bad JSON config"]);

    let mut unknown_field = weights.clone();
    unknown_field.metadata.insert(
        "config".into(),
        r#"{"cell": "gru", "input_size": 3, "hidden_size": 5, "hiden": 1}"#.into(),
    );
    unknown_field.write(&p).unwrap();
    fails(&p, &input, &["hiden"]);

    let mut wrong_size = weights.clone();
    wrong_size.metadata.insert(
        "config".into(),
        r#"{"cell": "gru", "input_size": 3, "hidden_size": 4}"#.into(),
    );
    wrong_size.write(&p).unwrap();
    fails(
        &p,
        &input,
        &["size mismatch for weight_ih_l0", "(15, 3)", "(12, 3)"],
    );
}

#[test]
fn bad_input_files() {
    let dir = TempDir::new("bad-input");
    let model = fixture("gru_h0", "model"); // GRU(3, 5)
    let x = |shape: &[usize]| {
        ArrayD::from_shape_fn(IxDyn(shape), |i| {
            i.slice().iter().sum::<usize>() as f32 * 0.1
        })
    };
    let p = dir.path("in.safetensors");

    fails(
        &dir.path("absent.safetensors"),
        &model,
        &["absent.safetensors"],
    );

    write(&p, &[("input", x(&[5, 3, 7]))], &[]);
    fails(&p, &p, &["not a model file"]); // an input file is no model file
    fails(&model, &p, &["(5, 3, 7)", "(L, N, 3)", "Expected 3, got 7"]);

    write(&p, &[("h0", x(&[1, 3, 5]))], &[]);
    fails(&model, &p, &["no tensor named \"input\"", "\"h0\""]);

    write(
        &p,
        &[("input", x(&[5, 3, 3])), ("hidden", x(&[1, 3, 5]))],
        &[],
    );
    fails(&model, &p, &["unexpected tensor \"hidden\""]);

    let mut nan = x(&[5, 3, 3]);
    nan[[2, 1, 0]] = f32::NAN;
    write(&p, &[("input", nan)], &[]);
    fails(&model, &p, &["\"input\"", "NaN", "[2, 1, 0]"]);

    let mut inf = x(&[1, 3, 5]);
    inf[[0, 0, 4]] = f32::NEG_INFINITY;
    write(&p, &[("input", x(&[5, 3, 3])), ("h0", inf)], &[]);
    fails(&model, &p, &["\"h0\"", "infinite"]);

    write(&p, &[("input", x(&[5, 3, 3])), ("h0", x(&[1, 2, 5]))], &[]);
    fails(&model, &p, &["h0", "(1, 3, 5)", "(1, 2, 5)"]);

    write(
        &p,
        &[
            ("input", x(&[5, 3, 3])),
            ("c0", x(&[1, 3, 5])),
            ("h0", x(&[1, 3, 5])),
        ],
        &[],
    );
    fails(&model, &p, &["c0"]);

    write(
        &p,
        &[("input", x(&[5, 3, 3])), ("grad_output", x(&[5, 3, 4]))],
        &[],
    );
    fails(&model, &p, &["grad_output", "(5, 3, 5)", "(5, 3, 4)"]);

    write(
        &p,
        &[("input", x(&[5, 3, 3])), ("grad_c_n", x(&[1, 3, 5]))],
        &[],
    );
    fails(&model, &p, &["grad_c_n", "GRU"]);

    let mut f = TensorFile::new();
    f.insert("input", x(&[5, 3, 3]));
    f.insert(
        "lengths",
        ArrayD::from_shape_vec(vec![3], vec![5i64, 0, 2]).unwrap(),
    );
    f.write(&p).unwrap();
    fails(&model, &p, &["lengths", "0"]);

    let mut f = TensorFile::new();
    f.insert(
        "input",
        ArrayD::from_shape_vec(vec![1], vec![1i64]).unwrap(),
    );
    f.write(&p).unwrap();
    fails(&model, &p, &["\"input\"", "I64"]);

    let bytes = std::fs::read(fixture("gru_h0", "input")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    fails(&model, &p, &["in.safetensors"]);
}

#[test]
fn output_into_a_missing_directory_is_an_error() {
    let dir = TempDir::new("out-dir");
    let o = run(
        &fixture("gru_h0", "model"),
        &fixture("gru_h0", "input"),
        &dir.path("no/such/dir/out.safetensors"),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no/such/dir/out.safetensors"), "{stderr}");
    assert!(dir.entries().is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let o = rnn(&["run", "--model", "m.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--input"));
    let o = rnn(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn basics_prints_the_lesson() {
    let o = rnn(&["basics"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in [
        "h = [1, 0, 0, 0]",
        "o = [0, 0, 0, 1]",
        "input shape (3, 5, 4)",
        "outputs.shape = (3, 5, 2)",
        "_status.shape = (1, 5, 2)",
        "hidden state (1, 3, 2)",
        "RNN(4, 2) with 16 parameters",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    // Seeded: the same numbers twice, other numbers with another seed.
    assert_eq!(rnn(&["basics"]).stdout, o.stdout);
    let other = rnn(&["basics", "--seed", "1"]);
    assert!(other.status.success());
    assert_ne!(other.stdout, o.stdout);
}
