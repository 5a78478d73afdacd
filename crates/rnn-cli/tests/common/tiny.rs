//! A tiny character model and the text it learns, for the tests that run `rnn train`.

use std::process::Output;

use super::{rnn, TempDir};

/// About 6 KB of text with a lot of structure: a tiny model learns it in a few dozen steps.
pub fn text() -> String {
    let words = [
        "the cat",
        "sat on",
        "the mat.",
        "a dog",
        "ran to",
        "the park!",
        "\n",
    ];
    let mut s = String::new();
    let mut k = 7u64;
    while s.len() < 6000 {
        k = k
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(words[(k >> 33) as usize % words.len()]);
        s.push(' ');
    }
    s
}

/// A tiny model and schedule: each step takes about a millisecond.
pub const TINY: [&str; 14] = [
    "--hidden",
    "24",
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
    "--lr",
    "0.01",
];

/// `rnn train` of the [`TINY`] model on `text.txt` of `dir` into `out`, with `extra` flags.
pub fn train(dir: &TempDir, out: &str, extra: &[&str]) -> Output {
    let data = dir.arg("text.txt");
    let out = dir.arg(out);
    let mut args = vec!["train", "--data", &data, "--out", &out];
    args.extend(TINY);
    args.extend(extra);
    rnn(&args)
}

/// A temporary directory holding [`text`] as `text.txt`.
pub fn setup(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(dir.path("text.txt"), text()).unwrap();
    dir
}
