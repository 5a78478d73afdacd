//! The `rnn` command against bad sizes, outputs that must not be clobbered, unbounded flags,
//! damaged or inconsistent checkpoints, non-finite results, and the messages that say so: each
//! case checks the text of its one `error:` line.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{rnn, TempDir};
use rnn::io::{TensorData, TensorFile};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rnn/tests/fixtures/cli")
        .join(name)
        .display()
        .to_string()
}

/// Asserts a failure reported as exactly one `error: ...` line containing every `want`.
#[track_caller]
fn fails_with(o: Output, want: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "not one error line: {err:?}"
    );
    for w in want {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
    err
}

#[track_caller]
fn ok(o: Output) {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A model file whose `config` asks for `json` and that holds no tensors.
fn config_only(dir: &TempDir, json: &str) -> String {
    let mut f = TensorFile::new();
    f.metadata.insert("config".into(), json.into());
    f.write(dir.path("m.safetensors")).unwrap();
    dir.arg("m.safetensors")
}

#[test]
fn sizes_are_checked_before_memory_is_taken() {
    let dir = TempDir::new("sizes");
    let input = fixture("gru_h0.input.safetensors");
    let out = dir.arg("o.safetensors");
    for (json, want) in [
        (
            r#"{"cell":"lstm","input_size":4,"hidden_size":1000000000}"#,
            "hidden_size 1000000000, num_layers 1: the weights would take 16000000096000000000 \
             bytes (16.0 EB), more than the memory budget",
        ),
        (
            r#"{"cell":"rnn","input_size":4,"hidden_size":10000000000000000000}"#,
            "the size overflows 64 bits",
        ),
        (
            r#"{"cell":"rnn","input_size":4,"hidden_size":4,"num_layers":1000000000}"#,
            "num_layers 1000000000: the weights would take 160000000000 bytes",
        ),
    ] {
        let m = config_only(&dir, json);
        fails_with(rnn(&["run", "-m", &m, "-i", &input, "-o", &out]), &[want]);
    }
    // The budget can be set: 1 MiB refuses a layer of 4.7 MB of weights.
    let m = config_only(&dir, r#"{"cell":"lstm","input_size":64,"hidden_size":512}"#);
    let o = Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args(["run", "-m", &m, "-i", &input, "-o", &out])
        .env("RNN_MEMORY_LIMIT", "1M")
        .output()
        .unwrap();
    fails_with(
        o,
        &[
            "the weights would take 4734976 bytes (4.7 MB)",
            "RNN_MEMORY_LIMIT=1M",
        ],
    );
    let o = Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args(["run", "-m", &m, "-i", &input, "-o", &out])
        .env("RNN_MEMORY_LIMIT", "lots")
        .output()
        .unwrap();
    fails_with(o, &["RNN_MEMORY_LIMIT=\"lots\" is not a size"]);
    // Small sizes with no tensors: the tensors are compared with the config first.
    let m = config_only(&dir, r#"{"cell":"gru","input_size":3,"hidden_size":5}"#);
    fails_with(
        rnn(&["run", "-m", &m, "-i", &input, "-o", &out]),
        &["Missing key(s) in state_dict: \"weight_ih_l0\""],
    );
    fails_with(
        rnn(&["bench", "--batch", "18446744073709551615"]),
        &["--batch 18446744073709551615 x --seq 50", "overflows"],
    );
    fails_with(
        rnn(&["bench", "--preset", "seed", "--hidden", "100000000000"]),
        &["--hidden 100000000000", "overflows"],
    );
    let data = dir.path("t.txt");
    std::fs::write(&data, "abc ".repeat(300)).unwrap();
    let d = data.display().to_string();
    for (flag, value, want) in [
        ("--hidden", "1000000000", "--hidden 1000000000"),
        ("--layers", "1000000000", "--layers 1000000000"),
    ] {
        fails_with(
            rnn(&["train", "--data", &d, "--out", &dir.arg("r"), flag, value]),
            &[want, "the weights would take"],
        );
    }
    assert!(!dir.path("r").exists(), "nothing written");
}

#[test]
fn outputs_are_never_clobbered() {
    let dir = TempDir::new("outputs");
    let (m, i) = (
        fixture("gru_h0.model.safetensors"),
        fixture("gru_h0.input.safetensors"),
    );
    let run = |out: &str| rnn(&["run", "-m", &m, "-i", &i, "-o", out]);
    // A directory: refused, saying so (no temporary file named).
    let e = fails_with(run(&dir.arg("")), &["is a directory, not a file"]);
    assert!(!e.contains(".tmp"), "{e}");
    // The model or the input file itself: refused, the file untouched.
    let model = dir.path("model.safetensors");
    std::fs::copy(&m, &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let o = rnn(&[
        "run",
        "-m",
        &dir.arg("model.safetensors"),
        "-i",
        &i,
        "-o",
        &dir.arg("model.safetensors"),
    ]);
    fails_with(
        o,
        &["is the file given to --model", "choose another output path"],
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let input = dir.path("in.safetensors");
    std::fs::copy(&i, &input).unwrap();
    let o = rnn(&[
        "run",
        "-m",
        &m,
        "-i",
        &dir.arg("in.safetensors"),
        "-o",
        &dir.arg("in.safetensors"),
    ]);
    fails_with(o, &["is the file given to --input"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        // A symbolic link stays a link; its target gets the outputs.
        std::fs::write(dir.path("target"), b"old").unwrap();
        std::os::unix::fs::symlink("target", dir.path("link")).unwrap();
        ok(run(&dir.arg("link")));
        assert!(std::fs::symlink_metadata(dir.path("link"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(TensorFile::read(dir.path("target"))
            .unwrap()
            .contains("output"));
        // A character device is written through and stays a device.
        ok(run("/dev/null"));
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        // A full device: the write error, and the device is still a device.
        if std::fs::metadata("/dev/full").is_ok_and(|m| m.file_type().is_char_device()) {
            fails_with(run("/dev/full"), &["/dev/full: No space left on device"]);
            assert!(std::fs::metadata("/dev/full")
                .unwrap()
                .file_type()
                .is_char_device());
        }
    }
}

#[test]
fn caps_on_threads_steps_and_durations() {
    let dir = TempDir::new("caps");
    let data = dir.path("t.txt");
    std::fs::write(&data, "abc ".repeat(300)).unwrap();
    let d = data.display().to_string();
    let out = dir.arg("r");
    fails_with(
        rnn(&[
            "train",
            "--data",
            &d,
            "--out",
            &out,
            "--threads",
            "100000000",
        ]),
        &[
            "--threads 100000000 is too many",
            "leave it out for one per core",
        ],
    );
    fails_with(
        rnn(&["sample", "--model", &out, "--threads", "100000000"]),
        &["--threads 100000000 is too many"],
    );
    fails_with(
        rnn(&[
            "train",
            "--data",
            &d,
            "--out",
            &out,
            "--batch",
            "4",
            "--seq-len",
            "8",
            "--epochs",
            "1e300",
        ]),
        &[
            "--epochs 1e300 plans",
            "more than the 1000000000 a run may plan",
        ],
    );
    fails_with(
        rnn(&[
            "train",
            "--data",
            &d,
            "--out",
            &out,
            "--batch",
            "4",
            "--seq-len",
            "8",
            "--steps",
            "10000000000",
        ]),
        &["--steps 10000000000 is more than the 1000000000"],
    );
    fails_with(
        rnn(&["sample", "--model", &out, "--len", "1000000000000"]),
        &["--len 1000000000000 is more than the 100000000 characters"],
    );
    fails_with(
        rnn(&[
            "train",
            "--data",
            &d,
            "--out",
            &out,
            "--sample-len",
            "1000000000000",
        ]),
        &["--sample-len 1000000000000 is more than"],
    );
    for t in ["inf", "NaN", "-1", "3601"] {
        fails_with(
            rnn(&["bench", "--preset", "seed", "--min-time", t]),
            &["--min-time must be a number of seconds in [0, 3600], got"],
        );
    }
}

/// A trained model directory (2 steps, checkpoint every step) and its text's path.
fn trained(dir: &TempDir) -> String {
    let text = "to be or not to be, that is the question. ".repeat(10);
    std::fs::write(dir.path("text.txt"), &text).unwrap();
    ok(rnn(&[
        "train",
        "--data",
        &dir.arg("text.txt"),
        "--out",
        &dir.arg("m"),
        "--steps",
        "2",
        "--hidden",
        "6",
        "--embed",
        "4",
        "--batch",
        "2",
        "--seq-len",
        "8",
        "--sample-len",
        "0",
        "--val-fraction",
        "0",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
    ]));
    dir.arg("text.txt")
}

/// Rewrites `dir/m/checkpoint.safetensors` through `edit` (with a fresh checksum).
fn edit_checkpoint(dir: &TempDir, edit: impl FnOnce(&mut TensorFile)) {
    let p = dir.path("m").join("checkpoint.safetensors");
    let mut f = TensorFile::read(&p).unwrap();
    edit(&mut f);
    f.write(&p).unwrap();
}

#[test]
fn checkpoints_are_verified_field_by_field() {
    type Edit = Box<dyn FnOnce(&mut TensorFile)>;
    let set = |key: &'static str, value: f32| -> Edit {
        Box::new(move |f: &mut TensorFile| {
            let mut a = f.f32(key).unwrap();
            a.as_slice_mut().unwrap()[0] = value;
            f.insert(key, a);
        })
    };
    let cases: Vec<(Edit, &[&str])> = vec![
        (
            set("optimizer.exp_avg_sq.0", f32::NAN),
            &["\"optimizer.exp_avg_sq.0\" holds NaN"],
        ),
        (
            set("optimizer.exp_avg_sq.1", -1.0),
            &["\"optimizer.exp_avg_sq.1\" holds -1", "never negative"],
        ),
        (set("trainer.h", f32::NAN), &["\"trainer.h\" holds 1 NaN"]),
        (
            Box::new(|f: &mut TensorFile| f.insert("trainer.step", ndarray::arr0(1i64).into_dyn())),
            &["\"trainer.step\" is 1 but the \"step\" metadata says 2"],
        ),
        (
            Box::new(|f: &mut TensorFile| {
                f.insert("optimizer.step.0", ndarray::arr0(1.5f64).into_dyn())
            }),
            &["\"optimizer.step.0\" is 1.5, but the run is at step 2"],
        ),
        (
            Box::new(|f: &mut TensorFile| {
                f.insert("trainer.rng", ndarray::arr1(&[0i64, 0, 0, 0]).into_dyn())
            }),
            &["\"trainer.rng\" is all zeros"],
        ),
        (
            Box::new(|f: &mut TensorFile| {
                f.tensors.insert(
                    "trainer.step".into(),
                    TensorData::F32(ndarray::arr0(2.0f32).into_dyn()),
                );
            }),
            &["\"trainer.step\" has dtype F32, expected an integer"],
        ),
    ];
    for (edit, want) in cases {
        let dir = TempDir::new("ckpt");
        let data = trained(&dir);
        edit_checkpoint(&dir, edit);
        fails_with(
            rnn(&[
                "train",
                "--resume",
                "--out",
                &dir.arg("m"),
                "--data",
                &data,
                "--steps",
                "3",
            ]),
            want,
        );
    }
    // A flipped byte in the weights: the checksum.
    let dir = TempDir::new("ckpt-flip");
    let data = trained(&dir);
    let p = dir.path("m").join("checkpoint.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
    fails_with(
        rnn(&[
            "train",
            "--resume",
            "--out",
            &dir.arg("m"),
            "--data",
            &data,
            "--steps",
            "3",
        ]),
        &["checksum mismatch: the file is damaged"],
    );
}

#[test]
fn run_settings_survive_resume() {
    let dir = TempDir::new("settings");
    let data = trained(&dir);
    let ckpt = dir.path("m").join("checkpoint.safetensors");
    let run = TensorFile::read(&ckpt).unwrap().metadata["run"].clone();
    assert!(
        run.contains("\"checkpoint_every\":1") && run.contains("\"log_every\":1"),
        "{run}"
    );
    ok(rnn(&[
        "train",
        "--resume",
        "--out",
        &dir.arg("m"),
        "--data",
        &data,
        "--steps",
        "4",
    ]));
    let run = TensorFile::read(&ckpt).unwrap().metadata["run"].clone();
    assert!(
        run.contains("\"checkpoint_every\":1") && run.contains("\"sample_len\":0"),
        "{run}"
    );
    // Every step was logged (--log-every 1 kept): steps 1 to 4 in metrics.csv.
    let csv = std::fs::read_to_string(dir.path("m").join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    // A relative data path recorded in the checkpoint, gone: the message says where it came from.
    std::fs::copy(dir.path("text.txt"), dir.path("rel.txt")).unwrap();
    ok(Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args([
            "train",
            "--data",
            "rel.txt",
            "--out",
            "r",
            "--steps",
            "1",
            "--batch",
            "2",
            "--seq-len",
            "8",
            "--sample-len",
            "0",
            "--val-fraction",
            "0",
            "--hidden",
            "4",
            "--embed",
            "2",
        ])
        .current_dir(dir.path(""))
        .output()
        .unwrap());
    std::fs::remove_file(dir.path("rel.txt")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args(["train", "--resume", "--out", "r", "--steps", "2"])
        .current_dir(dir.path(""))
        .output()
        .unwrap();
    fails_with(
        o,
        &[
            "cannot read data file rel.txt",
            "recorded in r/checkpoint.safetensors",
            "give the text with --data",
        ],
    );
}

#[test]
fn non_finite_results_are_errors() {
    let dir = TempDir::new("nonfinite");
    let data = trained(&dir);
    let p = dir.path("m").join("model.safetensors");
    let mut f = TensorFile::read(&p).unwrap();
    let w = f.f32("fc.weight").unwrap().mapv(|_| 3e38f32);
    let b = f.f32("fc.bias").unwrap().mapv(|_| 3e38f32);
    // Every gate open: h is positive, so every logit is 3e38 * sum(h) + 3e38 = inf.
    let gates = f.f32("rnn.bias_ih_l0").unwrap().mapv(|_| 100f32);
    f.insert("fc.weight", w);
    f.insert("fc.bias", b);
    f.insert("rnn.bias_ih_l0", gates);
    f.write(&p).unwrap();
    let m = dir.arg("m");
    fails_with(
        rnn(&["eval", "--model", &m, "--data", &data]),
        &["the loss on", "overflow float32"],
    );
    fails_with(
        rnn(&["sample", "--model", &m, "--len", "50", "--seed", "1"]),
        &["the model's logits are not finite"],
    );
    // `rnn run`: gradients that overflow name the tensor.
    let mut model = TensorFile::read(fixture("gru_h0.model.safetensors")).unwrap();
    let w = model.f32("weight_hh_l0").unwrap().mapv(|_| 3e38f32);
    model.insert("weight_hh_l0", w);
    model.write(dir.path("g.safetensors")).unwrap();
    let o = rnn(&[
        "run",
        "-m",
        &dir.arg("g.safetensors"),
        "-i",
        &fixture("gru_h0.input.safetensors"),
        "-o",
        &dir.arg("o.safetensors"),
    ]);
    if !o.status.success() {
        fails_with(o, &["the gradient \"grad.", "overflow float32 arithmetic"]);
    }
}

#[test]
fn messages_teach() {
    let dir = TempDir::new("messages");
    let data = trained(&dir);
    let m = dir.arg("m");
    // An I32 tensor is called I32, and the accepted dtypes are all listed: a file as PyTorch
    // writes an int32 tensor.
    let shape = TensorFile::read(fixture("gru_h0.input.safetensors"))
        .unwrap()
        .f32("input")
        .unwrap()
        .shape()
        .to_vec();
    let count: usize = shape.iter().product();
    let json = format!(
        r#"{{"input":{{"dtype":"I32","shape":{shape:?},"data_offsets":[0,{}]}}}}"#,
        4 * count
    );
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, 4 * count));
    std::fs::write(dir.path("i32.safetensors"), &bytes).unwrap();
    fails_with(
        rnn(&[
            "run",
            "-m",
            &fixture("gru_h0.model.safetensors"),
            "-i",
            &dir.arg("i32.safetensors"),
            "-o",
            &dir.arg("o"),
        ]),
        &["tensor \"input\" has dtype I32", "(F32, F64, F16 or BF16)"],
    );
    let t = dir.arg("t.txt");
    std::fs::write(&t, "abcd ".repeat(40)).unwrap();
    let out = dir.arg("r");
    fails_with(
        rnn(&["train", "--data", &t, "--out", &out, "--batch", "0"]),
        &["--seq-len and --batch must be at least 1"],
    );
    fails_with(
        rnn(&["train", "--data", &t, "--out", &out, "--val-fraction", "0"]),
        &[
            "smaller than one batch: 32 streams x 64 characters",
            "a smaller --batch or --seq-len",
        ],
    );
    fails_with(
        rnn(&["train", "--data", &t, "--out", &out, "--lr", "-1"]),
        &["--lr must be positive, got -1"],
    );
    fails_with(
        rnn(&["train", "--data", &t, "--out", &out, "--clip=-2"]),
        &["--clip must be >= 0"],
    );
    let one = dir.arg("one.txt");
    std::fs::write(&one, "a").unwrap();
    fails_with(
        rnn(&[
            "train",
            "--data",
            &one,
            "--out",
            &out,
            "--batch",
            "1",
            "--seq-len",
            "1",
        ]),
        &["1 character leaves 0 for validation"],
    );
    fails_with(
        rnn(&["eval", "--model", &m, "--data", &one]),
        &["has 1 character: evaluation"],
    );
    let empty = dir.arg("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = fails_with(
        rnn(&["eval", "--model", &m, "--data", &empty]),
        &["is empty (0 bytes)"],
    );
    assert!(!e.contains("learn"), "{e}");
    fails_with(
        rnn(&["sample", "--model", &m, "--temperature", "inf"]),
        &["--temperature must be a finite number >= 0, got inf"],
    );
    fails_with(
        rnn(&["sample", "--model", &m, "--temperature", "-1"]),
        &["--temperature must be a finite number >= 0, got -1"],
    );
    let ckpt = dir
        .path("m")
        .join("checkpoint.safetensors")
        .display()
        .to_string();
    let e = fails_with(
        rnn(&["sample", "--model", &ckpt]),
        &["this is a training checkpoint", "model.safetensors"],
    );
    assert!(!e.contains("optimizer."), "{e}");
    fails_with(
        rnn(&["eval", "--model", &ckpt, "--data", &data]),
        &["this is a training checkpoint"],
    );
    let model = dir
        .path("m")
        .join("model.safetensors")
        .display()
        .to_string();
    fails_with(
        rnn(&[
            "run",
            "-m",
            &model,
            "-i",
            &fixture("gru_h0.input.safetensors"),
            "-o",
            &dir.arg("o"),
        ]),
        &["this is a character model", "rnn sample"],
    );
    #[cfg(unix)]
    if std::fs::metadata("/dev/full").is_ok() {
        let full = std::fs::File::create("/dev/full").unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_rnn"))
            .args(["sample", "--model", &m, "--len", "5", "--seed", "1"])
            .stdout(full)
            .output()
            .unwrap();
        fails_with(
            o,
            &["cannot write to standard output: No space left on device"],
        );
    }
}
