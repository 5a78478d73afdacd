//! Mutation fuzzing of every loader, on the stable toolchain: safetensors files and model files
//! (rnn's and PyTorch's), `rnn run` input files with `lengths`, training checkpoints (resumed
//! and stepped), character models, `vocab.json` and training text. Each case mutates a valid
//! file and runs it through the loader and, when it loads, through what the command would do
//! next (a forward pass, a packed pass, a training step, sampling, evaluation). A case passes
//! when it ends in an `Ok` or an `Err`; a panic fails the test with the seed and case to
//! replay, and so does a case that takes 10 s or more.
//!
//! The mutations: byte flips, interesting bytes, insertions, deletions and truncations (most
//! end at the framing or the checksum); edits of the safetensors header (dtypes, shapes,
//! offsets, keys, the `config` JSON's fields set to 0, -1, 2^32, 10^19, ...), written without
//! a checksum as PyTorch's files are; and edits of the tensors' values and the metadata
//! (NaN, infinities, negatives, huge counts, dropped and renamed keys), written back with a
//! valid checksum so that they reach the checks behind it.
//!
//! CI runs a bounded number of cases per loader from fixed seeds. By hand:
//!
//! ```text
//! RNN_FUZZ_CASES=100000 RNN_FUZZ_SEED=$(date +%s) cargo test --release -p rnn --test fuzz_loaders -- --nocapture
//! ```
//!
//! `RNN_FUZZ_CASES` is the number of cases per loader, `RNN_FUZZ_SEED` the first seed (case
//! `k` uses seed `RNN_FUZZ_SEED + k`); a failure prints both, and `RNN_FUZZ_ONLY=<seed>` replays
//! one case. The memory budget is set to 512 MiB (`RNN_MEMORY_LIMIT`) so that a mutated size
//! is refused rather than allocated.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};
use rnn::charlm::{self, CharLmConfig, SampleOptions, Streams, TrainConfig, Trainer, Vocab};
use rnn::io::{TensorData, TensorFile};
use rnn::model_file::{load_model, save_model};
use rnn::packed::{pack_padded_sequence, pad_packed_sequence};
use rnn::{CellKind, Recurrent, RecurrentConfig, Rng, Tensor};

/// Cases per loader in CI.
const CI_CASES: u64 = 700;
/// A case slower than this is a hang.
const HANG: Duration = Duration::from_secs(10);

/// SplitMix64: a small deterministic generator for the mutations.
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
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NUMBERS: [&str; 18] = [
    "0",
    "1",
    "2",
    "3",
    "-1",
    "7",
    "255",
    "65536",
    "2147483647",
    "2147483648",
    "4294967296",
    "9007199254740993",
    "1000000000",
    "10000000000000000000",
    "18446744073709551615",
    "-9223372036854775808",
    "0.5",
    "1e308",
];
const DTYPES: [&str; 10] = [
    "F32", "F64", "F16", "BF16", "I32", "I64", "U8", "BOOL", "I8", "F8_E4M3",
];

/// Byte-level mutations: flips, interesting bytes, insertions, deletions, truncation.
fn mutate_bytes(g: &mut Gen, bytes: &mut Vec<u8>) {
    for _ in 0..1 + g.below(4) {
        if bytes.is_empty() {
            bytes.push(g.next() as u8);
            continue;
        }
        let at = g.below(bytes.len());
        match g.below(6) {
            0 => bytes[at] ^= 1 << g.below(8),
            1 => bytes[at] = *g.pick(&[0u8, 0xff, 0x7f, 0x80, b'9', b'-', b'"', b'{']),
            2 => {
                let v = g.next() as u8;
                bytes.insert(at, v);
            }
            3 => {
                let end = (at + 1 + g.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            4 => bytes.truncate(at),
            _ => {
                // The 8-byte header length, or a byte near the start of the header.
                let k = g.below(16.min(bytes.len()));
                bytes[k] = g.next() as u8;
            }
        }
    }
}

/// Splits a safetensors buffer into its JSON header and its data.
fn split(bytes: &[u8]) -> Option<(serde_json::Map<String, serde_json::Value>, &[u8])> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    Some((json.as_object()?.clone(), &bytes[8 + n..]))
}

/// Joins a header and data back into a safetensors buffer.
fn join(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let mut json = serde_json::to_string(header).unwrap().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    out
}

/// A JSON value from a text that may not be JSON (then a string).
fn json_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.into()))
}

/// Sets one field of a JSON object given as text (a `config`, `train` or `run` metadata
/// value) to an interesting value, or drops it, or adds one.
fn mutate_json_text(g: &mut Gen, text: &str) -> String {
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        let mut b = text.as_bytes().to_vec();
        mutate_bytes(g, &mut b);
        return String::from_utf8_lossy(&b).into_owned();
    };
    let keys: Vec<String> = obj.keys().cloned().collect();
    match g.below(8) {
        0 if !keys.is_empty() => {
            obj.remove(g.pick(&keys));
        }
        1 => {
            obj.insert("surprise".into(), json_of("1"));
        }
        _ if !keys.is_empty() => {
            let k = g.pick(&keys).clone();
            let v = match g.below(4) {
                0 => json_of(
                    g.pick::<&str>(&["\"lstm\"", "\"gru\"", "\"rnn\"", "\"cnn\"", "\"relu\""]),
                ),
                1 => json_of(g.pick::<&str>(&["true", "false", "null", "[]", "{}", "\"\""])),
                _ => json_of(g.pick::<&str>(&NUMBERS)),
            };
            obj.insert(k, v);
        }
        _ => {}
    }
    serde_json::Value::Object(obj).to_string()
}

/// Header-level mutations of a safetensors buffer (dtypes, shapes, offsets, keys, metadata),
/// written without the checksum (as PyTorch writes files) unless `keep_checksum`.
fn mutate_header(g: &mut Gen, bytes: &[u8]) -> Vec<u8> {
    let Some((mut header, data)) = split(bytes) else {
        let mut b = bytes.to_vec();
        mutate_bytes(g, &mut b);
        return b;
    };
    let keep_checksum = g.chance(15);
    if let Some(serde_json::Value::Object(meta)) = header.get_mut("__metadata__") {
        if !keep_checksum {
            meta.remove(rnn::io::CHECKSUM_KEY);
        }
    }
    let names: Vec<String> = header.keys().cloned().collect();
    for _ in 0..1 + g.below(3) {
        let name = g.pick(&names).clone();
        if name == "__metadata__" {
            let Some(serde_json::Value::Object(meta)) = header.get_mut("__metadata__") else {
                continue;
            };
            let keys: Vec<String> = meta.keys().cloned().collect();
            if keys.is_empty() {
                continue;
            }
            let k = g.pick(&keys).clone();
            match g.below(5) {
                0 => {
                    meta.remove(&k);
                }
                1 => {
                    meta.insert(k, json_of(g.pick::<&str>(&["1", "[]", "null", "{}"])));
                }
                _ => {
                    let v = meta[&k].as_str().unwrap_or("").to_string();
                    meta.insert(k, serde_json::Value::String(mutate_json_text(g, &v)));
                }
            }
            continue;
        }
        let Some(serde_json::Value::Object(info)) = header.get_mut(&name) else {
            continue;
        };
        match g.below(7) {
            0 => {
                info.insert("dtype".into(), json_of(&format!("\"{}\"", g.pick(&DTYPES))));
            }
            1 | 2 => {
                let mut shape: Vec<serde_json::Value> = info
                    .get("shape")
                    .and_then(|s| s.as_array().cloned())
                    .unwrap_or_default();
                match g.below(3) {
                    0 if !shape.is_empty() => {
                        let i = g.below(shape.len());
                        shape[i] = json_of(g.pick::<&str>(&NUMBERS));
                    }
                    1 => shape.push(json_of(g.pick::<&str>(&["1", "0", "2", "4294967296"]))),
                    _ => {
                        shape.pop();
                    }
                }
                info.insert("shape".into(), serde_json::Value::Array(shape));
            }
            3 => {
                let a = json_of(g.pick::<&str>(&NUMBERS));
                let b = json_of(g.pick::<&str>(&NUMBERS));
                info.insert("data_offsets".into(), serde_json::Value::Array(vec![a, b]));
            }
            4 => {
                let v = header.remove(&name).unwrap();
                let renamed = match g.below(3) {
                    0 => format!("rnn.{name}"),
                    1 => name.replace("l0", "l7"),
                    _ => "optimizer.step.99".to_string(),
                };
                header.insert(renamed, v);
            }
            5 => {
                header.remove(&name);
            }
            _ => {
                let v = info.clone();
                header.insert(format!("{name}_copy"), serde_json::Value::Object(v));
            }
        }
    }
    join(&header, data)
}

/// Value-level mutations of a decoded file, written back with a valid checksum.
fn mutate_values(g: &mut Gen, file: &TensorFile) -> Vec<u8> {
    let mut f = file.clone();
    let keys: Vec<String> = f.tensors.keys().cloned().collect();
    for _ in 0..1 + g.below(3) {
        if g.chance(25) && !f.metadata.is_empty() {
            let mk: Vec<String> = f.metadata.keys().cloned().collect();
            let k = g.pick(&mk).clone();
            if g.chance(20) {
                f.metadata.remove(&k);
            } else {
                let v = mutate_json_text(g, &f.metadata[&k]);
                f.metadata.insert(k, v);
            }
            continue;
        }
        if keys.is_empty() {
            break;
        }
        let k = g.pick(&keys).clone();
        let Some(t) = f.tensors.get(&k).cloned() else {
            continue;
        };
        let special = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            1e30,
            -1e38,
            0.5,
            1e-40,
            4294967296.0,
        ];
        let new = match g.below(6) {
            0 => {
                f.tensors.remove(&k);
                continue;
            }
            1 => {
                // Another shape.
                let shape: Vec<usize> = (0..g.below(4)).map(|_| g.below(5)).collect();
                TensorData::F32(ArrayD::from_elem(IxDyn(&shape), 0.25f32))
            }
            2 => match t {
                // Another dtype, same values.
                TensorData::F32(a) => {
                    if g.chance(50) {
                        TensorData::I64(a.mapv(|v| v as i64))
                    } else {
                        TensorData::F64(a.mapv(f64::from))
                    }
                }
                TensorData::F64(a) => TensorData::F32(a.mapv(|v| v as f32)),
                TensorData::I64(a) => TensorData::F32(a.mapv(|v| v as f32)),
                TensorData::I8(a) => TensorData::F32(a.mapv(f32::from)),
                TensorData::BF16(a) => TensorData::F32(a.mapv(half::bf16::to_f32)),
            },
            _ => match t {
                TensorData::F32(mut a) => {
                    if !a.is_empty() {
                        let i = g.below(a.len());
                        a.as_slice_mut().unwrap()[i] = *g.pick(&special) as f32;
                    }
                    TensorData::F32(a)
                }
                TensorData::F64(mut a) => {
                    if !a.is_empty() {
                        let i = g.below(a.len());
                        a.as_slice_mut().unwrap()[i] = *g.pick(&special);
                    }
                    TensorData::F64(a)
                }
                TensorData::I64(mut a) => {
                    if !a.is_empty() {
                        let i = g.below(a.len());
                        a.as_slice_mut().unwrap()[i] =
                            *g.pick(&[0, -1, 1, 3, i64::MAX, i64::MIN, 1 << 40]);
                    }
                    TensorData::I64(a)
                }
                TensorData::I8(mut a) => {
                    if !a.is_empty() {
                        let i = g.below(a.len());
                        a.as_slice_mut().unwrap()[i] = *g.pick(&[0, -1, 1, 127, -128]);
                    }
                    TensorData::I8(a)
                }
                TensorData::BF16(mut a) => {
                    if !a.is_empty() {
                        let i = g.below(a.len());
                        a.as_slice_mut().unwrap()[i] = half::bf16::from_f64(*g.pick(&special));
                    }
                    TensorData::BF16(a)
                }
            },
        };
        f.tensors.insert(k, new);
    }
    f.to_bytes().unwrap()
}

/// One mutated variant of a safetensors seed.
fn mutate_safetensors(g: &mut Gen, bytes: &[u8]) -> Vec<u8> {
    match g.below(10) {
        0..=3 => {
            let mut b = bytes.to_vec();
            mutate_bytes(g, &mut b);
            b
        }
        4..=6 => mutate_header(g, bytes),
        _ => match TensorFile::from_bytes(bytes, "seed") {
            Ok(f) => mutate_values(g, &f),
            Err(_) => bytes.to_vec(),
        },
    }
}

/// Counts and failures of one loader's campaign.
#[derive(Default)]
struct Report {
    cases: u64,
    loaded: u64,
    failures: Vec<String>,
    slowest: Duration,
}

fn settings() -> (u64, u64, Option<u64>) {
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        // SAFETY (edition 2021: a safe call): set once, before any case runs; every test of
        // this file goes through here first.
        std::env::set_var(rnn::budget::LIMIT_VAR, "512M");
        // Panics are caught and reported with their seed; the default hook's backtraces
        // would only be noise.
        std::panic::set_hook(Box::new(|_| {}));
    });
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    (
        var("RNN_FUZZ_CASES").unwrap_or(CI_CASES),
        var("RNN_FUZZ_SEED").unwrap_or(0),
        var("RNN_FUZZ_ONLY"),
    )
}

/// Runs `case(seed)` for every seed of the campaign, catching panics and timing each case;
/// `Ok(true)` means the file loaded.
fn campaign(name: &str, salt: u64, case: impl Fn(u64) -> rnn::Result<bool>) {
    let (cases, first, only) = settings();
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (0..cases).map(|k| first.wrapping_add(k)).collect(),
    };
    let mut report = Report::default();
    let started = Instant::now();
    for seed in seeds {
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| case(seed ^ salt)));
        let dt = t.elapsed();
        report.cases += 1;
        report.slowest = report.slowest.max(dt);
        match result {
            Ok(Ok(true)) => report.loaded += 1,
            Ok(_) => {}
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                report
                    .failures
                    .push(format!("{name}: panic at RNN_FUZZ_ONLY={seed}: {what}"));
            }
        }
        if dt >= HANG {
            report
                .failures
                .push(format!("{name}: RNN_FUZZ_ONLY={seed} took {dt:?}"));
        }
    }
    eprintln!(
        "fuzz {name}: {} cases, {} loaded, {} rejected, {} failures, slowest case {:?}, {:?} in all",
        report.cases,
        report.loaded,
        report.cases - report.loaded - report.failures.len() as u64,
        report.failures.len(),
        report.slowest,
        started.elapsed()
    );
    assert!(report.failures.is_empty(), "{}", report.failures.join("\n"));
}

/// A directory for the files a case writes, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rnn-fuzz-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cli")
            .join(name),
    )
    .unwrap()
}

/// A small input for `model` (L = 3, N = 2), or `None` when the pass would not fit the budget.
fn small_input(model: &Recurrent) -> Option<Tensor> {
    let c = model.config();
    rnn::budget::check(c.forward_bytes(6, true), String::new).ok()?;
    let shape = if c.batch_first {
        [2, 3, c.input_size]
    } else {
        [3, 2, c.input_size]
    };
    let mut rng = Rng::new(5);
    Some(Tensor::parameter(ArrayD::from_shape_simple_fn(
        IxDyn(&shape),
        || rng.uniform(-1.0, 1.0),
    )))
}

#[test]
fn fuzz_model_files() {
    let scratch = Scratch::new("model");
    let mut seeds = Vec::new();
    for config in [
        RecurrentConfig::new(CellKind::Lstm, 3, 4)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_proj_size(2),
        RecurrentConfig::new(CellKind::Gru, 2, 3).with_batch_first(true),
    ] {
        let m = Recurrent::with_rng(config, &mut Rng::new(1)).unwrap();
        let p = scratch.0.join("seed.safetensors");
        save_model(&p, &m).unwrap();
        seeds.push(std::fs::read(&p).unwrap());
    }
    // PyTorch's files (no checksum).
    seeds.push(fixture("rnn_relu_nobias.model.safetensors"));
    seeds.push(fixture("lstm_bi_proj.model.safetensors"));
    campaign("model files", 0x11, |seed| {
        let mut g = Gen(seed);
        let seed_bytes = g.pick(&seeds).clone();
        let bytes = mutate_safetensors(&mut g, &seed_bytes);
        let path = scratch.file("m.safetensors", &bytes);
        let model = load_model(&path)?;
        if let Some(x) = small_input(&model) {
            let out = model.forward_states(&x, None, None)?;
            out.output.backward_with(ArrayD::ones(out.output.shape()))?;
        }
        Ok(true)
    });
}

#[test]
fn fuzz_input_files_with_lengths() {
    let model = Recurrent::with_rng(
        RecurrentConfig::new(CellKind::Lstm, 2, 3).with_bidirectional(true),
        &mut Rng::new(2),
    )
    .unwrap();
    let mut rng = Rng::new(3);
    let mut file = TensorFile::new();
    let mut r =
        |shape: &[usize]| ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.uniform(-1.0, 1.0));
    file.insert("input", r(&[4, 3, 2]));
    file.insert("h0", r(&[2, 3, 3]));
    file.insert("c0", r(&[2, 3, 3]));
    file.insert("grad_output", r(&[4, 3, 6]));
    file.insert("lengths", ndarray::arr1(&[4i64, 2, 3]).into_dyn());
    let seed_bytes = file.to_bytes().unwrap();
    campaign("input files", 0x22, |seed| {
        let mut g = Gen(seed);
        let bytes = mutate_safetensors(&mut g, &seed_bytes);
        let f = TensorFile::from_bytes(&bytes, "input.safetensors")?;
        // What `rnn run` does with it, through the library's checks.
        let input = Tensor::parameter(f.f32("input")?);
        let lengths: Vec<usize> = match f.tensors.get("lengths") {
            Some(t) => t
                .to_i64("lengths")?
                .iter()
                .map(|&v| usize::try_from(v).map_err(|_| rnn::Error::Invalid("negative".into())))
                .collect::<rnn::Result<_>>()?,
            None => return Ok(true),
        };
        let state = |k: &str| f.tensors.get(k).map(|t| Tensor::parameter(t.to_f32()));
        let (h0, c0) = (state("h0"), state("c0"));
        let packed = pack_padded_sequence(&input, &lengths, false, false)?;
        let (out, h_n, _) = model.forward_packed(&packed, h0.as_ref(), c0.as_ref())?;
        let total = input.shape()[0];
        let (padded, _) = pad_packed_sequence(&out, false, 0.0, Some(total))?;
        match f.tensors.get("grad_output") {
            Some(g) if g.shape() == padded.shape().as_slice() => {
                padded.backward_with(g.to_f32())?;
            }
            _ => h_n.backward_with(ArrayD::ones(h_n.shape()))?,
        }
        Ok(true)
    });
}

/// A character model, its vocabulary and text, and a checkpoint after two steps.
struct CharSeeds {
    text: String,
    vocab: Vocab,
    model_bytes: Vec<u8>,
    checkpoint_bytes: Vec<u8>,
}

fn char_seeds(scratch: &Scratch) -> CharSeeds {
    let text = "to be or not to be, that is the question. ".repeat(8);
    let vocab = Vocab::from_text(&text).unwrap();
    let tokens = vocab.encode(&text).unwrap();
    let model = CharLmConfig {
        cell: CellKind::Lstm,
        vocab_size: vocab.len(),
        embed: 4,
        hidden_size: 6,
        num_layers: 2,
        dropout: 0.25,
        layer_norm: false,
        peephole: false,
        weight_drop: 0.0,
        zoneout: 0.0,
        variational_dropout: false,
    };
    let train = TrainConfig {
        seq_len: 8,
        batch: 3,
        lr: 0.01,
        clip: 1.0,
        seed: 4,
        steps: 10,
        val_fraction: 0.0,
        data: "text.txt".into(),
        data_hash: charlm::fingerprint(text.as_bytes()),
        optimizer: Default::default(),
        schedule: Default::default(),
    };
    let mut trainer = Trainer::new(model, train, tokens).unwrap();
    trainer.step().unwrap();
    trainer.step().unwrap();
    let p = scratch.0.join("model.safetensors");
    charlm::save_model(&p, trainer.model(), 2).unwrap();
    CharSeeds {
        model_bytes: std::fs::read(&p).unwrap(),
        checkpoint_bytes: trainer.checkpoint().to_bytes().unwrap(),
        text,
        vocab,
    }
}

#[test]
fn fuzz_checkpoints() {
    let scratch = Scratch::new("ckpt");
    let s = char_seeds(&scratch);
    let tokens = s.vocab.encode(&s.text).unwrap();
    campaign("checkpoints", 0x33, |seed| {
        let mut g = Gen(seed);
        let bytes = mutate_safetensors(&mut g, &s.checkpoint_bytes);
        let path = Path::new("checkpoint.safetensors");
        let f = TensorFile::from_bytes(&bytes, "checkpoint.safetensors")?;
        let mut trainer = Trainer::resume(&f, path, tokens.clone())?;
        if trainer.step_count() < trainer.config().steps {
            trainer.step()?;
        }
        Ok(true)
    });
}

#[test]
fn fuzz_character_models() {
    let scratch = Scratch::new("charlm");
    let s = char_seeds(&scratch);
    campaign("character models", 0x44, |seed| {
        let mut g = Gen(seed);
        let bytes = mutate_safetensors(&mut g, &s.model_bytes);
        let path = scratch.file("model.safetensors", &bytes);
        let mut model = charlm::load_model(&path)?;
        if model.config().vocab_size != s.vocab.len() {
            return Ok(true);
        }
        let mut rng = Rng::new(seed);
        charlm::sample(
            &mut model,
            &s.vocab,
            "to",
            8,
            SampleOptions::default(),
            &mut rng,
            |_| Ok(()),
        )?;
        let tokens = s.vocab.encode(&s.text[..40]).unwrap();
        charlm::evaluate(&mut model, &tokens, 7)?;
        Ok(true)
    });
}

#[test]
fn fuzz_vocabularies_and_text() {
    let scratch = Scratch::new("vocab");
    let s = char_seeds(&scratch);
    let model = charlm::load_model(scratch.file("model.safetensors", &s.model_bytes)).unwrap();
    let json = s.vocab.to_json().into_bytes();
    let text = s.text.clone().into_bytes();
    campaign("vocab.json and text", 0x55, |seed| {
        let mut g = Gen(seed);
        let mut vocab_bytes = json.clone();
        let mut text_bytes = text.clone();
        if g.chance(50) {
            if g.chance(50) {
                mutate_bytes(&mut g, &mut vocab_bytes);
            } else {
                let t = String::from_utf8_lossy(&vocab_bytes).into_owned();
                vocab_bytes = mutate_json_text(&mut g, &t).into_bytes();
            }
        } else {
            mutate_bytes(&mut g, &mut text_bytes);
            // Some non-ASCII characters too.
            if g.chance(30) {
                text_bytes.extend_from_slice("é\u{1F600}\u{0}".as_bytes());
            }
        }
        let vocab = Vocab::read(scratch.file("vocab.json", &vocab_bytes))?;
        let Ok(text) = String::from_utf8(text_bytes) else {
            return Ok(false);
        };
        let tokens = vocab.encode(&text)?;
        let _ = vocab.decode(&tokens);
        // Training streams over the text, and evaluation with the model when they agree.
        let streams = Streams::new(tokens.clone(), 1 + g.below(4), 1 + g.below(9), seed)?;
        for step in 0..3 {
            let _ = streams.chunk(step);
        }
        if vocab.len() == model.config().vocab_size && tokens.len() >= 2 {
            let mut m = model.clone();
            charlm::evaluate(&mut m, &tokens, 1 + g.below(16))?;
        }
        Ok(true)
    });
}

/// ONNX files (`rnn import`, `rnn run --model X.onnx`): byte mutations of files written by
/// PyTorch's two exporters and by `onnx.helper`, imported and, when they import, run.
#[test]
fn fuzz_onnx_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let seeds: Vec<Vec<u8>> = [
        "torchscript_gru_l1_bi_h0_dyn.onnx",
        "torchscript_lstm_l2_bi.onnx",
        "helper_lstm_seqlens_bi.onnx",
        "helper_rnn_relu_bi.onnx",
        "helper_lstm_peepholes.onnx",
    ]
    .iter()
    .map(|name| std::fs::read(dir.join(name)).unwrap())
    .collect();
    campaign("onnx files", 0x77, |seed| {
        let mut g = Gen(seed);
        let mut bytes = g.pick(&seeds).clone();
        mutate_bytes(&mut g, &mut bytes);
        let stacks = rnn::onnx::import_bytes(&bytes, &dir).map_err(|e| rnn::Error::Invalid(e.0))?;
        for stack in &stacks {
            if let Some(x) = small_input(&stack.model) {
                stack.model.forward_states(&x, None, None)?;
            }
        }
        Ok(true)
    });
}

/// Every crash the campaigns found, kept as a regression case (each was a panic or an abort
/// before the checks it names).
#[test]
fn regressions() {
    settings();
    let scratch = Scratch::new("regress");
    let config = |json: &str| {
        let mut f = TensorFile::new();
        f.metadata.insert("config".into(), json.into());
        scratch.file("m.safetensors", &f.to_bytes().unwrap())
    };
    // hidden_size 10^9 with no tensors: aborted allocating 64 GB.
    let e = load_model(config(
        r#"{"cell":"lstm","input_size":4,"hidden_size":1000000000}"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("hidden_size 1000000000") && e.contains("bytes"),
        "{e}"
    );
    // hidden_size 10^19: panicked in ndarray ("Shape too large").
    let e = load_model(config(
        r#"{"cell":"rnn","input_size":4,"hidden_size":10000000000000000000}"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("overflows"), "{e}");
    // num_layers 10^9: aborted.
    let e = load_model(config(
        r#"{"cell":"rnn","input_size":4,"hidden_size":4,"num_layers":1000000000}"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("num_layers 1000000000"), "{e}");
    // A valid small config whose file holds no tensors: refused before the layer is built.
    let e = load_model(config(r#"{"cell":"gru","input_size":2,"hidden_size":3}"#))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Missing key(s) in state_dict"), "{e}");
}
