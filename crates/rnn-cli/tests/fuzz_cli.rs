//! Mutation fuzzing of the `rnn` command's loaders end to end: `rnn run` on mutated input files
//! (with `lengths`) and model files, `rnn eval` on mutated text and `vocab.json`, `rnn sample`
//! on mutated character models, `rnn train --resume` on mutated checkpoints. Every run must end
//! with status 0, or 1 with one `error: ...` line; never a panic (status 101), a signal (an
//! abort) or 10 s without an end.
//!
//! CI runs a few cases per command from fixed seeds; by hand, `RNN_FUZZ_CASES=2000
//! RNN_FUZZ_SEED=$(date +%s) cargo test --release -p rnn-cli --test fuzz_cli -- --nocapture`.
//! The library's loaders are fuzzed in depth by `crates/rnn/tests/fuzz_loaders.rs`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{rnn, TempDir};
use ndarray::{ArrayD, IxDyn};
use rnn::io::{TensorData, TensorFile};

/// Cases per command in CI.
const CI_CASES: u64 = 40;

struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flips, overwrites, inserts, deletes, truncates.
fn mutate_bytes(g: &mut Gen, b: &mut Vec<u8>) {
    for _ in 0..1 + g.below(3) {
        if b.is_empty() {
            b.push(g.next() as u8);
            continue;
        }
        let at = g.below(b.len());
        match g.below(5) {
            0 => b[at] ^= 1 << g.below(8),
            1 => b[at] = [0u8, 0xff, b'9', b'"', 0x80][g.below(5)],
            2 => b.insert(at, g.next() as u8),
            3 => {
                b.remove(at);
            }
            _ => b.truncate(at),
        }
    }
}

/// A tensor's value, dtype or shape changed, written back with a valid checksum.
fn mutate_values(g: &mut Gen, f: &TensorFile) -> Vec<u8> {
    let mut f = f.clone();
    let keys: Vec<String> = f.tensors.keys().cloned().collect();
    let k = &keys[g.below(keys.len())];
    let t = f.tensors[k].clone();
    let new = match (g.below(5), t) {
        (0, _) => {
            f.tensors.remove(k);
            return f.to_bytes().unwrap();
        }
        (1, _) => {
            let shape: Vec<usize> = (0..g.below(4)).map(|_| g.below(6)).collect();
            TensorData::F32(ArrayD::from_elem(IxDyn(&shape), 0.5))
        }
        (2, TensorData::I64(a)) => TensorData::F32(a.mapv(|v| v as f32)),
        (_, TensorData::I64(mut a)) => {
            if !a.is_empty() {
                let i = g.below(a.len());
                a.as_slice_mut().unwrap()[i] = [0, -1, 99, i64::MAX, i64::MIN][g.below(5)];
            }
            TensorData::I64(a)
        }
        (_, t) => {
            let mut a = t.to_f32();
            if !a.is_empty() {
                let i = g.below(a.len());
                a.as_slice_mut().unwrap()[i] =
                    [f32::NAN, f32::INFINITY, -1e38, 1e30, -1.0][g.below(5)];
            }
            TensorData::F32(a)
        }
    };
    f.tensors.insert(k.clone(), new);
    f.to_bytes().unwrap()
}

fn mutate_file(g: &mut Gen, bytes: &[u8]) -> Vec<u8> {
    match (g.below(2), TensorFile::from_bytes(bytes, "seed")) {
        (0, Ok(f)) => mutate_values(g, &f),
        _ => {
            let mut b = bytes.to_vec();
            mutate_bytes(g, &mut b);
            b
        }
    }
}

/// Runs `rnn args` with a 10 s limit; the failure found, if any.
fn check_run(args: &[&str], what: &str) -> Option<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args(args)
        .env("RNN_MEMORY_LIMIT", "512M")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rnn runs");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            let code = status.code();
            let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
            return match code {
                Some(0) => None,
                Some(1) if lines.len() == 1 && !err.contains("internal error") => None,
                _ => Some(format!("{what}: status {status}, stderr {err:?}")),
            };
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Some(format!("{what}: still running after 10 s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn campaign(name: &str, case: impl Fn(&mut Gen, u64) -> Option<String>) {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = var("RNN_FUZZ_CASES").unwrap_or(CI_CASES);
    let first = var("RNN_FUZZ_SEED").unwrap_or(0);
    let mut failures = Vec::new();
    let started = Instant::now();
    for k in 0..cases {
        let seed = first.wrapping_add(k);
        let mut g = Gen(seed ^ name.len() as u64);
        if let Some(f) = case(&mut g, seed) {
            failures.push(format!("seed {seed}: {f}"));
        }
    }
    eprintln!(
        "fuzz {name}: {cases} runs, {} failures, {:?}",
        failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rnn/tests/fixtures/cli")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn fuzz_run_inputs_and_models() {
    let dir = TempDir::new("fuzz-run");
    let inputs = [
        std::fs::read(fixture("lstm_packed.input.safetensors")).unwrap(),
        std::fs::read(fixture("gru_packed_bi.input.safetensors")).unwrap(),
    ];
    let models = [
        fixture("lstm_packed.model.safetensors"),
        fixture("gru_packed_bi.model.safetensors"),
    ];
    campaign("rnn run", |g, _| {
        let which = g.below(2);
        let (input, model) = (dir.path("in.safetensors"), dir.path("m.safetensors"));
        let out = dir.arg("out.safetensors");
        if g.below(3) == 0 {
            let bytes = mutate_file(g, &std::fs::read(&models[which]).unwrap());
            std::fs::write(&model, bytes).unwrap();
            std::fs::write(&input, &inputs[which]).unwrap();
        } else {
            std::fs::write(&model, std::fs::read(&models[which]).unwrap()).unwrap();
            std::fs::write(&input, mutate_file(g, &inputs[which])).unwrap();
        }
        let (m, i) = (model.display().to_string(), input.display().to_string());
        check_run(&["run", "-m", &m, "-i", &i, "-o", &out], "rnn run")
    });
}

/// A trained model directory (2 steps) and its text.
fn trained(dir: &TempDir) -> String {
    let text = "to be or not to be, that is the question. ".repeat(10);
    std::fs::write(dir.path("text.txt"), &text).unwrap();
    let out = rnn(&[
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
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn fuzz_eval_sample_and_resume() {
    let dir = TempDir::new("fuzz-charlm");
    let text = trained(&dir);
    let m = dir.path("m");
    let files = ["model.safetensors", "vocab.json", "checkpoint.safetensors"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(m.join(f)).unwrap())
        .collect();
    campaign("rnn eval, sample, train --resume", |g, _| {
        let work = dir.path("w");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        for (f, b) in files.iter().zip(&originals) {
            std::fs::write(work.join(f), b).unwrap();
        }
        let mut t = text.clone().into_bytes();
        let target = g.below(4);
        match target {
            0 | 2 => {
                let i = if target == 0 { 0 } else { 2 };
                std::fs::write(work.join(files[i]), mutate_file(g, &originals[i])).unwrap();
            }
            1 => {
                let mut b = originals[1].clone();
                mutate_bytes(g, &mut b);
                std::fs::write(work.join(files[1]), b).unwrap();
            }
            _ => mutate_bytes(g, &mut t),
        }
        std::fs::write(dir.path("t.txt"), &t).unwrap();
        let w = work.display().to_string();
        let data = dir.arg("t.txt");
        let runs: Vec<Vec<&str>> = vec![
            vec!["eval", "--model", &w, "--data", &data, "--threads", "1"],
            vec![
                "sample",
                "--model",
                &w,
                "--len",
                "20",
                "--seed",
                "1",
                "--threads",
                "1",
            ],
            vec![
                "train",
                "--resume",
                "--out",
                &w,
                "--data",
                &data,
                "--steps",
                "3",
                "--threads",
                "1",
            ],
        ];
        runs.iter()
            .find_map(|args| check_run(args, &args.join(" ")))
    });
}
