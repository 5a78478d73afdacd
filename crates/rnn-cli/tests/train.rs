//! Runs the built `rnn` binary's character-model commands end to end on tiny models: `rnn train`
//! (the loss falls; a resumed or Ctrl-C-interrupted run ends with bit-identical weights),
//! `rnn sample` (length, determinism), `rnn eval` (output format), and every kind of bad
//! input (one `error:` line, a non-zero exit, an existing checkpoint left untouched).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::rnn;
use common::tiny::{setup, text, train, TINY};
use rnn::io::TensorFile;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts a failure reported as exactly one `error: ...` line; returns that line.
fn fails(o: Output) -> String {
    assert!(
        !o.status.success(),
        "expected a failure; stderr: {}",
        stderr(&o)
    );
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

/// The model tensors of a model directory.
fn weights(dir: &Path) -> TensorFile {
    TensorFile::read(dir.join("model.safetensors")).unwrap()
}

/// `metrics.csv` rows as (step, train_loss, val_loss).
fn metrics(dir: &Path) -> Vec<(u64, f64, Option<f64>)> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("step,epoch,train_bpc,val_bpc,grad_norm,chars_per_sec,elapsed_s,train_nats,val_nats")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[7].parse().unwrap(),
                (!f[8].is_empty()).then(|| f[8].parse().unwrap()),
            )
        })
        .collect()
}

#[test]
fn training_lowers_the_loss_and_writes_the_model_directory() {
    let dir = setup("lowers");
    let out = ok(train(&dir, "run", &["--steps", "80", "--eval-every", "40"]));
    assert!(
        out.contains("----- sample at step 80") || out.is_empty(),
        "{out}"
    );
    let run = dir.path("run");
    for f in [
        "model.safetensors",
        "vocab.json",
        "checkpoint.safetensors",
        "metrics.csv",
        "loss.svg",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let rows = metrics(&run);
    let (first_step, first_loss, _) = rows[0];
    assert_eq!(first_step, 10);
    let vals: Vec<(u64, f64)> = rows.iter().filter_map(|r| r.2.map(|v| (r.0, v))).collect();
    assert_eq!(vals.iter().map(|v| v.0).collect::<Vec<_>>(), [40, 80]);
    // ln(vocabulary of 18) = 2.89 nats at the start; the text is very regular.
    assert!(first_loss > 2.0, "{rows:?}");
    assert!(vals[1].1 < 1.3 && vals[1].1 < vals[0].1, "{rows:?}");
    // The model file: PyTorch keys with module prefixes and the config.
    let model = weights(&run);
    let keys: Vec<&str> = model.tensors.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "embed.weight",
            "fc.bias",
            "fc.weight",
            "rnn.bias_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.weight_ih_l0"
        ]
    );
    let config: serde_json::Value = serde_json::from_str(&model.metadata["config"]).unwrap();
    assert_eq!(config["cell"], "lstm");
    assert_eq!(config["hidden_size"], 24);
    assert_eq!(model.metadata["step"], "80");
    let svg = std::fs::read_to_string(run.join("loss.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    // `rnn eval` on the validation text agrees with the run's last validation loss.
    let all = text();
    let n_val = (all.chars().count() as f64 * 0.05).floor() as usize;
    let val: String = all.chars().skip(all.chars().count() - n_val).collect();
    std::fs::write(dir.path("val.txt"), val).unwrap();
    let line = ok(rnn(&[
        "eval",
        "--model",
        &dir.arg("run"),
        "--data",
        &dir.arg("val.txt"),
        "--seq-len",
        "16",
    ]));
    let loss: f64 = line
        .trim()
        .strip_prefix("loss=")
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((loss - vals[1].1).abs() < 1e-5, "{line} vs {vals:?}");
    // Without --data, `rnn eval` finds that validation text itself, from the run's checkpoint.
    let json: serde_json::Value =
        serde_json::from_str(&ok(rnn(&["eval", "--model", &dir.arg("run"), "--json"]))).unwrap();
    assert!(
        (json["loss"].as_f64().unwrap() - vals[1].1).abs() < 1e-5,
        "{json} vs {vals:?}"
    );
    assert_eq!(json["validation"], true);
    assert_eq!(json["data"], dir.arg("text.txt"));
    // ... and says why it cannot: a changed text, or no checkpoint.
    std::fs::write(dir.path("text.txt"), format!("{all} more")).unwrap();
    let err = fails(rnn(&["eval", "--model", &dir.arg("run")]));
    assert!(
        err.contains("is not the text the run") && err.contains("--data"),
        "{err}"
    );
    std::fs::remove_file(run.join("checkpoint.safetensors")).unwrap();
    let err = fails(rnn(&["eval", "--model", &dir.arg("run")]));
    assert!(
        err.contains("has no checkpoint.safetensors") && err.contains("--data"),
        "{err}"
    );
}

#[test]
fn a_resumed_run_ends_with_the_same_weights() {
    let dir = setup("resume");
    let extra = [
        "--layers",
        "2",
        "--dropout",
        "0.2",
        "--cell",
        "gru",
        "--seed",
        "5",
    ];
    let mut straight = extra.to_vec();
    straight.extend(["--steps", "40"]);
    ok(train(&dir, "straight", &straight));
    let mut half = extra.to_vec();
    half.extend(["--steps", "20"]);
    ok(train(&dir, "halves", &half));
    // The architecture and schedule come from the checkpoint; only the length changes.
    ok(rnn(&[
        "train",
        "--resume",
        "--out",
        &dir.arg("halves"),
        "--steps",
        "40",
        "--threads",
        "1",
        "--sample-len",
        "0",
    ]));
    let (a, b) = (weights(&dir.path("straight")), weights(&dir.path("halves")));
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(a.tensors.len(), 11); // embed, 2 GRU layers x 4, fc x 2
    assert_eq!(
        a.tensors, b.tensors,
        "resumed weights differ from the straight run's"
    );
    // The resumed metrics file continues the first half's rows.
    let steps: Vec<u64> = metrics(&dir.path("halves")).iter().map(|r| r.0).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert!(
        steps[0] <= 10 && steps.contains(&20) && steps.last() == Some(&40),
        "{steps:?}"
    );
    // A changed setting on --resume is refused; nothing is written.
    let before = std::fs::read(dir.path("halves/checkpoint.safetensors")).unwrap();
    let err = fails(rnn(&[
        "train",
        "--resume",
        "--out",
        &dir.arg("halves"),
        "--hidden",
        "32",
    ]));
    assert!(err.contains("--hidden 32") && err.contains("24"), "{err}");
    assert_eq!(
        std::fs::read(dir.path("halves/checkpoint.safetensors")).unwrap(),
        before
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_writes_a_checkpoint_and_resume_continues_exactly() {
    let dir = setup("ctrlc");
    let (data, out) = (dir.arg("text.txt"), dir.arg("run"));
    let mut args = vec![
        "train", "--data", &data, "--out", &out, "--steps", "1000000",
    ];
    args.extend(TINY);
    args.extend([
        "--log-every",
        "1",
        "--checkpoint-every",
        "0",
        "--eval-every",
        "0",
    ]);
    let child = Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until steps are being made (the handler is installed by then).
    let start = Instant::now();
    while metrics_rows(&dir.path("run")) < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("interrupted at step"),
        "{}",
        stderr(&output)
    );
    let ckpt = TensorFile::read(dir.path("run/checkpoint.safetensors")).unwrap();
    let step: u64 = ckpt.metadata["step"].parse().unwrap();
    assert!(step >= 5, "{step}");
    // Resume to step + 7 and compare with a straight run of that length.
    let target = (step + 7).to_string();
    ok(rnn(&[
        "train",
        "--resume",
        "--out",
        &out,
        "--steps",
        &target,
        "--threads",
        "1",
        "--sample-len",
        "0",
    ]));
    ok(train(&dir, "straight", &["--steps", &target]));
    assert_eq!(
        weights(&dir.path("run")).tensors,
        weights(&dir.path("straight")).tensors
    );
}

fn metrics_rows(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .map_or(0, |t| t.lines().count().saturating_sub(1))
}

#[test]
fn sample_streams_the_asked_length_deterministically() {
    let dir = setup("sample");
    ok(train(&dir, "run", &["--steps", "30"]));
    let model = dir.arg("run");
    let sample = |seed: &str, prime: &str| {
        ok(rnn(&[
            "sample", "--model", &model, "--prime", prime, "--len", "120", "--seed", seed,
            "--top-k", "5",
        ]))
    };
    let a = sample("7", "the ");
    assert!(a.starts_with("the "), "{a}");
    assert!(a.ends_with('\n'));
    assert_eq!(a.chars().count(), 4 + 120 + 1, "{a:?}");
    assert_eq!(a, sample("7", "the "));
    assert_ne!(a, sample("8", "the "));
    // Greedy decoding ignores the seed; the model file itself may be given.
    let greedy = |seed: &str| {
        ok(rnn(&[
            "sample",
            "--model",
            &dir.arg("run/model.safetensors"),
            "--len",
            "40",
            "--temperature",
            "0",
            "--seed",
            seed,
        ]))
    };
    assert_eq!(greedy("1"), greedy("2"));
    assert_eq!(greedy("1").chars().count(), 41);
}

#[test]
fn eval_prints_loss_and_bits_per_character() {
    let dir = setup("eval");
    ok(train(&dir, "run", &["--steps", "10"]));
    let model = dir.arg("run");
    let data = dir.arg("text.txt");
    let line = ok(rnn(&["eval", "--model", &model, "--data", &data]));
    let parts: Vec<&str> = line.trim().split(' ').collect();
    assert_eq!(parts.len(), 2, "{line}");
    let loss: f64 = parts[0].strip_prefix("loss=").unwrap().parse().unwrap();
    let bpc: f64 = parts[1].strip_prefix("bpc=").unwrap().parse().unwrap();
    assert!(loss > 0.5 && loss < 3.5, "{line}");
    assert!((bpc - loss / std::f64::consts::LN_2).abs() < 1e-5, "{line}");
    let json: serde_json::Value = serde_json::from_str(&ok(rnn(&[
        "eval", "--model", &model, "--data", &data, "--json",
    ])))
    .unwrap();
    assert!((json["loss"].as_f64().unwrap() - loss).abs() < 1e-6);
    assert!((json["bpc"].as_f64().unwrap() - bpc).abs() < 1e-6);
    // Every character is predicted but the first and the few that do not fill the last of the
    // (n - 1) / 256 evaluation streams.
    let n = text().chars().count();
    let streams = (n - 1) / 256;
    assert_eq!(
        json["chars"].as_u64().unwrap() as usize,
        streams * ((n - 1) / streams)
    );
}

#[test]
fn bad_data_files_are_one_line_errors() {
    let dir = setup("baddata");
    std::fs::write(dir.path("empty.txt"), "").unwrap();
    std::fs::write(dir.path("binary.bin"), b"abc\0def").unwrap();
    std::fs::write(dir.path("latin1.txt"), b"caf\xe9 au lait").unwrap();
    std::fs::write(dir.path("short.txt"), "a short text").unwrap();
    let cases: [(&str, &str); 5] = [
        ("missing.txt", "cannot read data file"),
        ("empty.txt", "is empty"),
        ("binary.bin", "NUL byte at offset 3"),
        ("latin1.txt", "not UTF-8 text: byte 0xE9 at offset 3"),
        ("short.txt", "smaller than one batch"),
    ];
    for (file, expected) in cases {
        let err = fails(rnn(&[
            "train",
            "--data",
            &dir.arg(file),
            "--out",
            &dir.arg("out"),
            "--val-fraction",
            "0",
        ]));
        assert!(
            err.contains(expected) && err.contains(file),
            "{file}: {err}"
        );
        assert!(!dir.path("out").exists(), "{file}: nothing may be written");
        let model = dir.arg("none");
        let err = fails(rnn(&["eval", "--model", &model, "--data", &dir.arg(file)]));
        assert!(err.contains("none"), "{err}");
    }
}

#[test]
fn bad_models_primes_and_outputs_are_one_line_errors() {
    let dir = setup("badmodel");
    ok(train(&dir, "run", &["--steps", "5"]));
    let model = dir.arg("run");
    // A prime with characters outside the vocabulary; nothing is printed.
    let o = rnn(&[
        "sample",
        "--model",
        &model,
        "--prime",
        "the zebra",
        "--seed",
        "1",
    ]);
    assert!(o.stdout.is_empty());
    let err = fails(o);
    assert!(
        err.contains("--prime") && err.contains("'z' (U+007A)") && err.contains("'b'"),
        "{err}"
    );
    // Evaluating a text with unknown characters.
    std::fs::write(dir.path("other.txt"), "the cat sat on the xylophone").unwrap();
    let err = fails(rnn(&[
        "eval",
        "--model",
        &model,
        "--data",
        &dir.arg("other.txt"),
    ]));
    assert!(err.contains("'x' (U+0078)"), "{err}");
    // A truncated model file.
    let bytes = std::fs::read(dir.path("run/model.safetensors")).unwrap();
    std::fs::create_dir_all(dir.path("cut")).unwrap();
    std::fs::copy(dir.path("run/vocab.json"), dir.path("cut/vocab.json")).unwrap();
    std::fs::write(dir.path("cut/model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(rnn(&["sample", "--model", &dir.arg("cut")]));
    assert!(err.contains("model.safetensors"), "{err}");
    // A vocabulary that does not belong to the model.
    std::fs::write(dir.path("cut/model.safetensors"), &bytes).unwrap();
    std::fs::write(dir.path("cut/vocab.json"), r#"{"chars": ["a", "b"]}"#).unwrap();
    let err = fails(rnn(&[
        "eval",
        "--model",
        &dir.arg("cut"),
        "--data",
        &dir.arg("text.txt"),
    ]));
    assert!(
        err.contains("vocab_size 18") && err.contains("2 characters"),
        "{err}"
    );
    // Weights that do not match the config.
    let mut file = TensorFile::read(dir.path("run/model.safetensors")).unwrap();
    file.metadata.insert(
        "config".into(),
        file.metadata["config"].replace("\"hidden_size\":24", "\"hidden_size\":32"),
    );
    file.write(dir.path("cut/model.safetensors")).unwrap();
    std::fs::copy(dir.path("run/vocab.json"), dir.path("cut/vocab.json")).unwrap();
    let err = fails(rnn(&["sample", "--model", &dir.arg("cut")]));
    assert!(err.contains("size mismatch"), "{err}");
    // A truncated training checkpoint cannot be resumed, and is left as it is.
    let ckpt = dir.path("run/checkpoint.safetensors");
    let whole = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &whole[..whole.len() - 100]).unwrap();
    let err = fails(rnn(&["train", "--resume", "--out", &model]));
    assert!(err.contains("checkpoint.safetensors"), "{err}");
    assert_eq!(std::fs::read(&ckpt).unwrap().len(), whole.len() - 100);
    std::fs::write(&ckpt, &whole).unwrap();
    // --out that cannot be created (a file is in the way).
    std::fs::write(dir.path("file"), "x").unwrap();
    let err = fails(train(&dir, "file/sub", &["--steps", "5"]));
    assert!(err.contains("cannot create --out"), "{err}");
    // --resume without a checkpoint.
    let err = fails(rnn(&["train", "--resume", "--out", &dir.arg("nothing")]));
    assert!(err.contains("no checkpoint.safetensors"), "{err}");
}

#[test]
fn an_existing_checkpoint_is_never_overwritten_by_accident() {
    let dir = setup("keep");
    ok(train(&dir, "run", &["--steps", "5"]));
    let files = [
        "checkpoint.safetensors",
        "model.safetensors",
        "vocab.json",
        "metrics.csv",
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.path("run").join(f)).unwrap())
        .collect();
    // A new run into the same directory is refused...
    let err = fails(train(&dir, "run", &["--steps", "5"]));
    assert!(
        err.contains("already holds a training checkpoint (step 5)") && err.contains("--resume"),
        "{err}"
    );
    // ...and so is --force with bad data, before anything is written.
    std::fs::write(dir.path("empty.txt"), "").unwrap();
    let err = fails(rnn(&[
        "train",
        "--force",
        "--data",
        &dir.arg("empty.txt"),
        "--out",
        &dir.arg("run"),
    ]));
    assert!(err.contains("is empty"), "{err}");
    // Resuming with another text is refused.
    std::fs::write(dir.path("other.txt"), text().replace("cat", "cow")).unwrap();
    let err = fails(rnn(&[
        "train",
        "--resume",
        "--data",
        &dir.arg("other.txt"),
        "--out",
        &dir.arg("run"),
    ]));
    assert!(err.contains("not the text the run"), "{err}");
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.path("run").join(f)).unwrap())
        .collect();
    assert!(before == after, "the run's files changed");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `--layer-norm` trains a layer-normalised LSTM: the model file says so in its config and
/// holds the layer norms' weights, `rnn sample` reads them back; other cells refuse the flag.
#[test]
fn layer_norm_trains_and_samples() {
    let dir = setup("layer-norm");
    ok(train(&dir, "run", &["--steps", "4", "--layer-norm"]));
    let run = dir.path("run");
    let file = weights(&run);
    assert!(
        file.metadata["config"].contains("\"layer_norm\":true"),
        "{:?}",
        file.metadata
    );
    assert!(file.tensors.contains_key("rnn.ln_c_bias_l0"));
    let model = run.display().to_string();
    ok(rnn(&["sample", "--model", &model, "--len", "5"]));
    let e = fails(train(
        &dir,
        "gru",
        &["--steps", "1", "--cell", "gru", "--layer-norm"],
    ));
    assert!(e.contains("--layer-norm is an option of LSTM only"), "{e}");
}
