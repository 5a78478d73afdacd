//! The tool around training, end to end on tiny models: `rnn info` on every kind of file,
//! `rnn train --init` (fine-tuning: starts from the weights, refuses unseen characters and a
//! changed architecture), `best.safetensors`, `--log-json`, `rnn completions`, `rnn run
//! --threads`, and the help texts.

mod common;

use std::path::Path;
use std::process::Output;

use common::{rnn, TempDir};
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
    assert!(!o.status.success(), "expected a failure: {}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

/// A few KB of text over a small alphabet.
fn text() -> String {
    let words = [
        "the cat ",
        "sat on ",
        "the mat. ",
        "a dog ",
        "ran to ",
        "the park!\n",
    ];
    let mut s = String::new();
    let mut k = 11u64;
    while s.len() < 5000 {
        k = k
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(words[(k >> 33) as usize % words.len()]);
    }
    s
}

/// A tiny model and schedule.
const TINY: [&str; 14] = [
    "--hidden",
    "16",
    "--embed",
    "8",
    "--batch",
    "4",
    "--seq-len",
    "16",
    "--threads",
    "1",
    "--sample-len",
    "0",
    "--val-fraction",
    "0.1",
];

fn train(dir: &TempDir, data: &str, out: &str, extra: &[&str]) -> Output {
    let data = dir.arg(data);
    let out = dir.arg(out);
    let mut args = vec!["train", "--data", &data, "--out", &out];
    args.extend(TINY);
    args.extend(extra);
    rnn(&args)
}

fn setup(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(dir.path("text.txt"), text()).unwrap();
    dir
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn weights(path: &Path) -> TensorFile {
    TensorFile::read(path).unwrap()
}

#[test]
fn info_describes_every_kind_of_file() {
    let dir = setup("info");
    ok(train(
        &dir,
        "text.txt",
        "run",
        &["--steps", "20", "--eval-every", "10"],
    ));
    let run = dir.arg("run");

    let human = ok(rnn(&["info", &run]));
    for want in [
        "character model directory",
        "vocab.json: 18 characters",
        "best.safetensors: character model (best on validation)",
        "checkpoint.safetensors: training checkpoint",
        "model.safetensors: character model",
        "\"hidden_size\":16",
        // LSTM: 4 * 16 rows of 8 inputs.
        "rnn.weight_ih_l0  F32    [64, 8]",
        "total",
    ] {
        assert!(human.contains(want), "{want:?} in\n{human}");
    }
    // embed 18*8 + LSTM (64*8 + 64*16 + 2*64) + fc (18*16 + 18) = 144 + 1664 + 306.
    assert!(human.contains("2,114"), "{human}");

    let d = json(&ok(rnn(&["info", &run, "--json"])));
    assert_eq!(d["kind"], "character model directory");
    assert_eq!(d["files"]["vocab.json"]["characters"], 18);
    let model = &d["files"]["model.safetensors"];
    assert_eq!(model["parameters"], 2114);
    assert_eq!(model["config"]["cell"], "lstm");
    assert_eq!(model["metadata"]["step"], "20");
    let size = std::fs::metadata(dir.path("run/model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(model["file_size"], size);
    let tensors = model["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 7);
    let fc = tensors.iter().find(|t| t["name"] == "fc.weight").unwrap();
    assert_eq!(fc["dtype"], "F32");
    assert_eq!(fc["shape"], serde_json::json!([18, 16]));
    assert_eq!(fc["bytes"], 18 * 16 * 4);

    let ckpt = json(&ok(rnn(&[
        "info",
        &dir.arg("run/checkpoint.safetensors"),
        "--json",
    ])));
    assert_eq!(ckpt["kind"], "training checkpoint");
    assert_eq!(
        ckpt["parameters"], 2114,
        "the optimizer state is not counted"
    );
    assert_eq!(ckpt["train"]["batch"], 4);
    assert!(ckpt["state"].as_array().unwrap().len() > 7);
    let human = ok(rnn(&["info", &dir.arg("run/checkpoint.safetensors")]));
    assert!(human.contains("training state:"), "{human}");

    // A recurrent model file for `rnn run`, written by hand.
    let mut file = TensorFile::new();
    file.insert(
        "weight_ih_l0",
        ndarray::Array2::<f32>::zeros((6, 3)).into_dyn(),
    );
    file.insert(
        "weight_hh_l0",
        ndarray::Array2::<f32>::zeros((6, 2)).into_dyn(),
    );
    file.metadata.insert(
        "config".into(),
        r#"{"cell": "gru", "input_size": 3, "hidden_size": 2, "bias": false}"#.into(),
    );
    file.write(dir.path("gru.safetensors")).unwrap();
    let gru = json(&ok(rnn(&["info", &dir.arg("gru.safetensors"), "--json"])));
    assert_eq!(gru["kind"], "recurrent model (rnn run)");
    assert_eq!(gru["parameters"], 30);

    // Its int8 file: the scales (one per output row) are listed apart, not counted.
    ok(rnn(&[
        "quantize",
        &dir.arg("gru.safetensors"),
        "--out",
        &dir.arg("gru_int8.safetensors"),
    ]));
    let q = json(&ok(rnn(&[
        "info",
        &dir.arg("gru_int8.safetensors"),
        "--json",
    ])));
    assert_eq!(q["kind"], "int8 quantized model (rnn run)");
    assert_eq!(q["parameters"], 30, "the scales are not parameters");
    assert_eq!(q["scales"].as_array().unwrap().len(), 2);
    assert_eq!(q["state"].as_array().unwrap().len(), 0);
    let human = ok(rnn(&["info", &dir.arg("gru_int8.safetensors")]));
    assert!(
        human.contains("quantization scales: 2 tensors (KEY.scale, one per output row), 12 values"),
        "{human}"
    );

    // Bad input: one error line each.
    std::fs::write(dir.path("junk.safetensors"), b"not a safetensors file").unwrap();
    let e = fails(rnn(&["info", &dir.arg("junk.safetensors")]));
    assert!(e.contains("not a safetensors file"), "{e}");
    let e = fails(rnn(&["info", &dir.arg("missing")]));
    assert!(e.contains("no such file or directory"), "{e}");
    let e = fails(rnn(&["info", &dir.arg("")]));
    assert!(e.contains("not a model directory"), "{e}");
}

#[test]
fn init_fine_tunes_from_the_weights_and_refuses_unseen_characters() {
    let dir = setup("init");
    ok(train(&dir, "text.txt", "base", &["--steps", "30"]));
    // The new text uses a subset of the characters.
    let small: String = text().replace('!', ".");
    std::fs::write(dir.path("small.txt"), &small).unwrap();

    // Step 0 of a fine-tuned run holds exactly the weights it started from.
    ok(train(
        &dir,
        "small.txt",
        "tuned0",
        &["--init", &dir.arg("base"), "--steps", "0"],
    ));
    let base = weights(&dir.path("base/model.safetensors"));
    let tuned0 = weights(&dir.path("tuned0/model.safetensors"));
    assert_eq!(base.tensors, tuned0.tensors);
    assert_eq!(
        std::fs::read(dir.path("base/vocab.json")).unwrap(),
        std::fs::read(dir.path("tuned0/vocab.json")).unwrap(),
        "the model's vocabulary is kept"
    );

    // Training moves them, with a fresh optimizer (step counts from 0), and can be resumed.
    let err = stderr(&train(
        &dir,
        "small.txt",
        "tuned",
        &["--init", &dir.arg("base"), "--steps", "10"],
    ));
    assert!(err.contains("init:  the weights of"), "{err}");
    let tuned = weights(&dir.path("tuned/model.safetensors"));
    assert_ne!(base.tensors, tuned.tensors);
    assert_eq!(tuned.metadata["step"], "10");
    ok(train(
        &dir,
        "small.txt",
        "tuned",
        &["--resume", "--steps", "12"],
    ));

    // A character the model never saw: one error naming it.
    std::fs::write(dir.path("new.txt"), format!("{small}Zebra~")).unwrap();
    let e = fails(train(&dir, "new.txt", "bad", &["--init", &dir.arg("base")]));
    assert!(e.contains("--init"), "{e}");
    assert!(
        e.contains("'Z' (U+005A)") && e.contains("'~' (U+007E)"),
        "{e}"
    );
    assert!(!dir.path("bad").exists(), "nothing written");

    // The architecture is the model's.
    let e = fails(train(
        &dir,
        "small.txt",
        "bad",
        &["--init", &dir.arg("base"), "--cell", "gru"],
    ));
    assert!(
        e.contains("--cell gru differs from the model's lstm"),
        "{e}"
    );
    // The model it starts from is never overwritten.
    let e = fails(train(
        &dir,
        "small.txt",
        "base",
        &["--init", &dir.arg("base"), "--force"],
    ));
    assert!(e.contains("is --out too"), "{e}");
    let e = fails(train(
        &dir,
        "small.txt",
        "x",
        &["--init", &dir.arg("nowhere")],
    ));
    assert!(e.contains("nowhere"), "{e}");
}

#[test]
fn the_best_model_is_kept_and_json_logs_parse() {
    let dir = setup("best");
    let log = dir.arg("log.jsonl");
    // A learning rate this high makes the validation loss go up and down.
    let lr = [
        "--steps",
        "60",
        "--eval-every",
        "5",
        "--lr",
        "0.3",
        "--log-json",
        &log,
    ];
    ok(train(&dir, "text.txt", "run", &lr));

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(json)
        .collect();
    assert_eq!(lines[0]["event"], "start");
    assert_eq!(lines[0]["model"]["hidden_size"], 16);
    assert_eq!(lines.last().unwrap()["event"], "done");
    let metrics: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["event"] == "metrics").collect();
    let csv = std::fs::read_to_string(dir.path("run/metrics.csv")).unwrap();
    assert_eq!(
        metrics.len(),
        csv.lines().count() - 1,
        "one line per metrics.csv row"
    );
    let vals: Vec<(u64, f64)> = metrics
        .iter()
        .filter(|m| !m["val_nats"].is_null())
        .map(|m| (m["step"].as_u64().unwrap(), m["val_nats"].as_f64().unwrap()))
        .collect();
    assert_eq!(vals.len(), 12);
    for m in &metrics {
        let (nats, bpc) = (
            m["train_nats"].as_f64().unwrap(),
            m["train_bpc"].as_f64().unwrap(),
        );
        assert!((nats / std::f64::consts::LN_2 - bpc).abs() < 1e-12);
    }

    // best.safetensors holds the model of the lowest validation loss, and says so.
    let (best_step, best_loss) =
        vals.iter()
            .copied()
            .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let best = weights(&dir.path("run/best.safetensors"));
    assert_eq!(best.metadata["step"], best_step.to_string());
    let recorded: f64 = best.metadata["val_loss"].parse().unwrap();
    assert!(
        (recorded - best_loss).abs() < 1e-12,
        "{recorded} {best_loss}"
    );
    let bests: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"] == "best")
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(bests.last(), Some(&best_step));
    assert!(bests.windows(2).all(|w| w[0] < w[1]));
    // `rnn eval` on it gives the loss it was kept for (the same validation text, chunk length
    // 16, as training evaluated it).
    let text = text();
    let n_val = (text.len() as f64 * 0.1).floor() as usize;
    std::fs::write(dir.path("val.txt"), &text[text.len() - n_val..]).unwrap();
    let ev = json(&ok(rnn(&[
        "eval",
        "--model",
        &dir.arg("run/best.safetensors"),
        "--data",
        &dir.arg("val.txt"),
        "--seq-len",
        "16",
        "--json",
    ])));
    assert!(
        (ev["loss"].as_f64().unwrap() - best_loss).abs() < 1e-6,
        "{ev}"
    );
}

#[test]
fn completions_threads_and_help_texts() {
    let bash = ok(rnn(&["completions", "bash"]));
    assert!(bash.contains("_rnn()"), "{bash}");
    for sub in [
        "train",
        "sample",
        "info",
        "completions",
        "--init",
        "--log-json",
    ] {
        assert!(bash.contains(sub), "{sub}");
    }
    let zsh = ok(rnn(&["completions", "zsh"]));
    assert!(zsh.contains("#compdef rnn"));
    assert!(!rnn(&["completions", "tcsh"]).status.success());

    let e = fails(rnn(&[
        "run",
        "-m",
        "m",
        "-i",
        "i",
        "-o",
        "o",
        "--threads",
        "0",
    ]));
    assert!(e.contains("--threads must be at least 1"), "{e}");

    let sample = ok(rnn(&["sample", "--help"]));
    let prime = sample
        .lines()
        .skip_while(|l| !l.contains("--prime"))
        .take_while(|l| !l.contains("--len"))
        .collect::<String>();
    assert_eq!(prime.matches("[default:").count(), 1, "{prime}");
    let basics = ok(rnn(&["basics", "--help"]));
    assert!(basics.contains("rnn::manual_seed"), "{basics}");
    assert!(basics.contains("not PyTorch's"), "{basics}");
}
