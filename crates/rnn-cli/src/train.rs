//! `rnn train`: trains a character-level language model (karpathy's char-rnn) on a UTF-8 text,
//! by default the built-in corpus, and writes its model directory (see
//! `rnn::charlm::checkpoint`): `model.safetensors`, `vocab.json`, `checkpoint.safetensors`,
//! `metrics.csv` and `loss.svg`.
//!
//! The text is split into a training part and, at its end, a validation part. Training is
//! truncated backprop through time over `--batch` contiguous streams read in chunks of
//! `--seq-len` characters (see `rnn::charlm::data`), with Adam (or `--optimizer`), an optional
//! learning-rate `--schedule` (see `rnn::charlm::schedule`) and gradient-norm clipping.
//! Progress goes to stderr, samples to stdout. A checkpoint is written every
//! `--checkpoint-every` steps, at the end, and on Ctrl-C (then the exit status is 130);
//! `--resume` continues a run so that it ends with the weights an uninterrupted run would have.
//! `--init DIR` fine-tunes: it starts from the weights of a trained model, with a new optimizer,
//! on a text whose characters the model knows. `best.safetensors` keeps the model with the
//! lowest validation loss; `--log-json FILE` writes every metrics row as a JSON line.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rnn::charlm::checkpoint::{save_model, CHECKPOINT_FILE, MODEL_FILE, VOCAB_FILE};
use rnn::charlm::checkpoint::{BEST_FILE, MODEL_FORMAT};
use rnn::charlm::{best_of, load_dir, save_best, CharLm};
use rnn::charlm::{
    evaluate, fingerprint, sample, CharLmConfig, SampleOptions, TrainConfig, Trainer, Vocab,
};
use rnn::io::TensorFile;
use rnn::{CellKind, Module, Rng};

use crate::corpus::{read_text, BUILTIN_NAME};
use crate::metrics::{JsonLog, Metrics, Row};
use crate::progress::{clock, Progress, Status};

/// The checkpoint metadata entry holding the run's [`settings`].
pub const RUN_METADATA: &str = "run";

/// The settings of a run that do not change what it computes, as JSON (absent flags as
/// `null`, which keep their defaults): `--sample-every`, `--sample-len`, `--eval-every`,
/// `--checkpoint-every`, `--log-every`. Saved in every checkpoint; `--resume` keeps them
/// unless given again.
fn settings(args: &Args) -> String {
    serde_json::json!({
        "sample_every": args.sample_every,
        "sample_len": sample_len(args),
        "eval_every": args.eval_every,
        "checkpoint_every": args.checkpoint_every,
        "log_every": args.log_every,
    })
    .to_string()
}

/// Fills the settings not given on the command line from the checkpoint's `run` metadata
/// (a checkpoint without it keeps the defaults).
fn restore_settings(args: &mut Args, file: &TensorFile, ckpt: &Path) -> Result<()> {
    let Some(json) = file.metadata.get(RUN_METADATA) else {
        return Ok(());
    };
    let bad = |why: String| {
        anyhow!(
            "{}: metadata \"{RUN_METADATA}\" {json:?}: {why}",
            ckpt.display()
        )
    };
    let saved: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let get = |key: &str| -> Result<Option<u64>> {
        match saved.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(format!("\"{key}\" must be a count, got {v}"))),
        }
    };
    args.sample_every = args.sample_every.or(get("sample_every")?);
    args.eval_every = args.eval_every.or(get("eval_every")?);
    args.checkpoint_every = args.checkpoint_every.or(get("checkpoint_every")?);
    args.log_every = args.log_every.or(get("log_every")?);
    if args.sample_len.is_none() {
        args.sample_len = get("sample_len")?
            .map(|n| {
                usize::try_from(n).map_err(|_| bad(format!("\"sample_len\" {n} is too large")))
            })
            .transpose()?;
    }
    Ok(())
}

/// `--sample-len`, or its default.
fn sample_len(args: &Args) -> usize {
    args.sample_len.unwrap_or(300)
}

/// Checks the flags no other check covers: `--sample-len` against [`crate::sample::MAX_LEN`];
/// the regularisers' probabilities, `--variational-dropout` without `--dropout`, and
/// `--peephole` with a cell other than LSTM.
fn check_flags(args: &Args) -> Result<()> {
    if args.precision == rnn::Precision::Int8 {
        bail!(
            "--precision int8 is for inference (int8 products have no gradient): train with \
             --precision f32 or bf16, then run the model in int8 with `rnn sample --precision \
             int8`, `rnn eval --precision int8` or `rnn quantize`"
        );
    }
    for (flag, p) in [
        ("--weight-drop", args.weight_drop),
        ("--zoneout", args.zoneout),
    ] {
        if let Some(p) = p.filter(|p| !(0.0..1.0).contains(p)) {
            bail!("{flag} {p}: expected a probability in [0, 1) (0 turns it off)");
        }
    }
    if args.variational_dropout
        && args.dropout.unwrap_or(defaults::DROPOUT) == 0.0
        && args.init.is_none()
        && !args.resume
    {
        bail!(
            "--variational-dropout makes the --dropout masks the same at every time step, so it \
             needs --dropout P with P > 0 (e.g. --dropout 0.2 --variational-dropout)"
        );
    }
    if args.peephole {
        if let Some(cell) = args.cell.filter(|c| *c != CellKind::Lstm) {
            bail!(
                "--peephole is an option of --cell lstm only (peepholes connect an LSTM's cell \
                 state to its gates), got --cell {}",
                cell.name()
            );
        }
    }
    if sample_len(args) > crate::sample::MAX_LEN {
        bail!(
            "--sample-len {} is more than the {} characters a sample may have",
            sample_len(args),
            crate::sample::MAX_LEN
        );
    }
    Ok(())
}

/// The metrics file's name in `--out`.
pub const METRICS_FILE: &str = "metrics.csv";
/// The loss curve's file name in `--out`.
pub const PLOT_FILE: &str = "loss.svg";

/// Default architecture and schedule: about two minutes on 2 cores for the built-in corpus.
mod defaults {
    pub const CELL: rnn::CellKind = rnn::CellKind::Lstm;
    pub const EMBED: usize = 64;
    pub const HIDDEN: usize = 256;
    pub const LAYERS: usize = 1;
    pub const DROPOUT: f64 = 0.0;
    pub const SEQ_LEN: usize = 64;
    pub const BATCH: usize = 32;
    pub const STEPS: u64 = 1200;
    pub const LR: f64 = 2e-3;
    pub const CLIP: f64 = 5.0;
    pub const SEED: u64 = 0;
    pub const VAL_FRACTION: f64 = 0.05;
}

/// `rnn train [--data FILE] [--out DIR] [options]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// UTF-8 text file to learn from [default: the built-in corpus, five Shakespeare plays]
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Recurrent cell: lstm, gru or rnn [default: lstm]
    #[arg(long, value_name = "CELL")]
    cell: Option<CellKind>,
    /// Hidden state size of each layer [default: 256]
    #[arg(long, value_name = "H")]
    hidden: Option<usize>,
    /// Stacked recurrent layers [default: 1]
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Layer-normalised LSTM layers (Ba et al. 2016; the model file's `"layer_norm": true`)
    #[arg(long)]
    layer_norm: bool,
    /// Dropout between layers and before the output layer, in [0, 1) [default: 0]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    dropout: Option<f64>,
    /// LSTM with peephole connections: the input and forget gates also see the previous cell
    /// state c, the output gate the new one, through per-unit weights that start at zero
    /// (ONNX's LSTM; Gers and Schmidhuber 2000)
    #[arg(long)]
    peephole: bool,
    /// DropConnect on the recurrent weights W_hh with probability P in [0, 1): one random mask
    /// per training step, the same at every time step, so that the recurrence itself is
    /// regularised (AWD-LSTM's weight drop; 0.2-0.5 is usual); none at evaluation [default: 0]
    #[arg(long = "weight-drop", value_name = "P", allow_negative_numbers = true)]
    weight_drop: Option<f64>,
    /// Zoneout with probability P in [0, 1): at each time step each unit of h (and of c for
    /// an LSTM) keeps its previous value with probability P instead of updating, so that
    /// gradients and information flow further back in time (Krueger et al. 2016; 0.05-0.15 is
    /// usual); at evaluation every unit moves the expected (1 - P) of the way [default: 0]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    zoneout: Option<f64>,
    /// Variational (locked) dropout: the --dropout masks, between the layers and before the
    /// output layer, are drawn once per stream and chunk and kept at every time step, rather
    /// than redrawn at each step (Gal and Ghahramani 2016; AWD-LSTM); needs --dropout P > 0
    #[arg(long = "variational-dropout")]
    variational_dropout: bool,
    /// Embedding width; 0 feeds one-hot vectors instead [default: 64]
    #[arg(long, value_name = "E")]
    embed: Option<usize>,
    /// Characters per chunk (backprop through time is truncated there) [default: 64]
    #[arg(long = "seq-len", value_name = "L")]
    seq_len: Option<usize>,
    /// Streams per batch [default: 32]
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Training steps in all (one chunk of every stream per step) [default: 1200]
    #[arg(long, value_name = "N", conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Training length in passes over the training text instead of steps (may be fractional)
    #[arg(long, value_name = "E", allow_negative_numbers = true)]
    epochs: Option<f64>,
    /// Learning rate (the peak with --schedule onecycle) [default: 0.002]
    #[arg(long, value_name = "LR", allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Optimizer: adam, adamw, sgd (momentum 0.9) or rmsprop [default: adam]
    #[arg(long, value_name = "OPT")]
    optimizer: Option<rnn::charlm::OptimizerKind>,
    /// Learning-rate schedule: none, cosine, onecycle (both over the run's steps) or plateau
    /// (halve it when the validation loss stops improving) [default: none]
    #[arg(long, value_name = "SCHEDULE")]
    schedule: Option<rnn::charlm::ScheduleKind>,
    /// Clip the gradients' total 2-norm to this; 0 turns clipping off [default: 5]
    #[arg(long, value_name = "NORM", allow_negative_numbers = true)]
    clip: Option<f64>,
    /// Seed of the initialisation, dropout and data order [default: 0]
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
    /// Fraction of the text, at its end, held out for validation [default: 0.05]
    #[arg(long = "val-fraction", value_name = "F", allow_negative_numbers = true)]
    val_fraction: Option<f64>,
    /// Worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Precision of the products: f32, or bf16 for mixed precision as PyTorch's autocast (the
    /// forward products in bf16 with f32 sums; weights, optimizer state, gate math, states and
    /// the backward pass stay f32, and the bf16 copy of the weights is made anew after each
    /// step). int8 is for inference: train in f32 or bf16, then `rnn quantize`
    #[arg(long, value_name = "P", default_value_t = rnn::Precision::F32)]
    precision: rnn::Precision,
    /// Directory for the model, vocabulary, checkpoint, metrics.csv and loss.svg
    #[arg(long, value_name = "DIR", default_value = "runs/charlm")]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint (with the settings it started with)
    #[arg(long)]
    resume: bool,
    /// Start afresh even if --out holds a checkpoint, replacing it
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Print a sample every N steps; 0 = only at the end [default: a fifth of the run]
    #[arg(long = "sample-every", value_name = "N")]
    sample_every: Option<u64>,
    /// Characters per sample [default: 300]
    #[arg(long = "sample-len", value_name = "N")]
    sample_len: Option<usize>,
    /// Measure the validation loss every N steps; 0 = only at the end [default: a tenth of the run]
    #[arg(long = "eval-every", value_name = "N")]
    eval_every: Option<u64>,
    /// Write a checkpoint every N steps; 0 = only at the end and on Ctrl-C [default: 200]
    #[arg(long = "checkpoint-every", value_name = "N")]
    checkpoint_every: Option<u64>,
    /// Add a row to metrics.csv every N steps [default: 10]
    #[arg(long = "log-every", value_name = "N")]
    log_every: Option<u64>,
    /// Fine-tune: start from the weights of this model directory (or model file), with a new
    /// optimizer and step 0; the text may use only characters the model knows, and the
    /// architecture is the model's
    #[arg(long, value_name = "MODEL_DIR", conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// Also write every metrics row (and the start, best-model and end events) to FILE as JSON
    /// lines
    #[arg(long = "log-json", value_name = "FILE")]
    log_json: Option<PathBuf>,
}

/// What the loop needs besides the trainer.
struct Run {
    trainer: Trainer,
    vocab: Vocab,
    val: Vec<usize>,
    metrics: Metrics,
    out: PathBuf,
    label: String,
    /// The lowest validation loss so far, the one `best.safetensors` holds.
    best: Option<f64>,
    /// The `--log-json` file.
    log: Option<JsonLog>,
    /// [`settings`] of the run, kept in the checkpoint's `run` metadata.
    settings: String,
}

/// Entry point of `rnn train`.
pub fn main(mut args: Args) -> Result<()> {
    crate::threads::set(args.threads)?;
    check_flags(&args)?;
    let mut run = if args.resume {
        resume(&mut args)?
    } else {
        fresh(&args)?
    };
    crate::speed_note::print(args.precision);
    rnn::autocast(args.precision, || train(&args, &mut run))
}

/// A new run: reads and checks everything before the first write to `--out`.
fn fresh(args: &Args) -> Result<Run> {
    let out = &args.out;
    let ckpt = out.join(CHECKPOINT_FILE);
    if ckpt.exists() && !args.force {
        let step = TensorFile::read(&ckpt)
            .ok()
            .and_then(|f| f.metadata.get("step").cloned())
            .map_or(String::new(), |s| format!(" (step {s})"));
        bail!(
            "{} already holds a training checkpoint{step}: continue it with --resume, start \
             over with --force (replacing it), or choose another --out",
            out.display()
        );
    }
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(BUILTIN_NAME));
    let text = read_text(&data)?;
    let init = match &args.init {
        Some(dir) => Some(init_model(args, dir)?),
        None => None,
    };
    let (vocab, tokens) = match &init {
        Some((_, vocab, dir)) => {
            let tokens = vocab.encode(&text).map_err(|e| unseen(e, &data, dir))?;
            (vocab.clone(), tokens)
        }
        None => {
            let vocab = Vocab::from_text(&text)?;
            let tokens = vocab.encode(&text)?;
            (vocab, tokens)
        }
    };
    let val_fraction = args.val_fraction.unwrap_or(defaults::VAL_FRACTION);
    let (train, val) = split(&tokens, val_fraction, &data)?;

    let model = init.as_ref().map_or(
        CharLmConfig {
            cell: args.cell.unwrap_or(defaults::CELL),
            vocab_size: vocab.len(),
            embed: args.embed.unwrap_or(defaults::EMBED),
            hidden_size: args.hidden.unwrap_or(defaults::HIDDEN),
            num_layers: args.layers.unwrap_or(defaults::LAYERS),
            dropout: args.dropout.unwrap_or(defaults::DROPOUT),
            layer_norm: args.layer_norm,
            peephole: args.peephole,
            weight_drop: args.weight_drop.unwrap_or(0.0),
            zoneout: args.zoneout.unwrap_or(0.0),
            variational_dropout: args.variational_dropout,
        },
        |(m, _, _)| m.config().clone(),
    );
    model
        .validate()
        .map_err(|e| anyhow!("{}", option_message(&e)))?;
    let mut config = TrainConfig {
        seq_len: args.seq_len.unwrap_or(defaults::SEQ_LEN),
        batch: args.batch.unwrap_or(defaults::BATCH),
        lr: args.lr.unwrap_or(defaults::LR),
        clip: args.clip.unwrap_or(defaults::CLIP),
        seed: args.seed.unwrap_or(defaults::SEED),
        steps: 0,
        val_fraction,
        data: data.display().to_string(),
        data_hash: fingerprint(text.as_bytes()),
        optimizer: args.optimizer.unwrap_or_default(),
        schedule: args.schedule.unwrap_or_default(),
    };
    config
        .validate()
        .map_err(|e| anyhow!("{}", option_message(&e)))?;
    let label = data_label(&data);
    let trainer = match init {
        Some((weights, _, _)) => Trainer::from_model(weights, config.clone(), train),
        None => Trainer::new(model, config.clone(), train),
    };
    let mut trainer = trainer.map_err(|e| anyhow!("{label}: {}", option_message(&e)))?;
    config.steps = total_steps(args, trainer.streams().chunks_per_epoch(), None)?;
    trainer.set_total_steps(config.steps);

    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create --out {}", out.display()))?;
    remove_stale_temporaries(out);
    vocab
        .write(out.join(VOCAB_FILE))
        .with_context(|| format!("cannot write to --out {}", out.display()))?;
    let metrics = Metrics::create(&out.join(METRICS_FILE))?;
    // A best model of an earlier run in --out (replaced with --force) is not this run's.
    let _ = std::fs::remove_file(out.join(BEST_FILE));
    let log = match &args.log_json {
        Some(path) => Some(JsonLog::create(path)?),
        None => None,
    };
    let run = Run {
        trainer,
        vocab,
        val,
        metrics,
        out: out.clone(),
        label,
        best: None,
        log,
        settings: settings(args),
    };
    // A checkpoint at step 0: --resume works from the first moment, and PyTorch can start
    // from the same initial weights (tools/train_charlm.py --init).
    write_checkpoint(&run)?;
    Ok(run)
}

/// Continues the run in `--out` from `checkpoint.safetensors`.
fn resume(args: &mut Args) -> Result<Run> {
    let out = &args.out.clone();
    let ckpt = out.join(CHECKPOINT_FILE);
    if !ckpt.exists() {
        bail!(
            "--resume: {} has no {CHECKPOINT_FILE} to continue; start a run with `rnn train \
             --out {}`",
            out.display(),
            out.display()
        );
    }
    let file = TensorFile::read(&ckpt)?;
    let (model, config) = Trainer::configs_of(&file, &ckpt)?;
    restore_settings(args, &file, &ckpt)?;
    let saved_data = PathBuf::from(&config.data);
    let data = args.data.clone().unwrap_or(saved_data);
    let changed = |flag: &str, given: String, saved: String| -> Result<()> {
        bail!(
            "--resume: {flag} {given} differs from the run's {saved}; a resumed run keeps the \
             settings it started with (leave {flag} out, or start a new run with another --out)"
        )
    };
    macro_rules! keep {
        ($flag:literal, $given:expr, $saved:expr) => {
            if let Some(g) = $given {
                if g != $saved {
                    changed($flag, format!("{g}"), format!("{}", $saved))?;
                }
            }
        };
    }
    keep!("--cell", args.cell.map(|c| c.name()), model.cell.name());
    keep!("--hidden", args.hidden, model.hidden_size);
    keep!("--layers", args.layers, model.num_layers);
    keep!("--dropout", args.dropout, model.dropout);
    keep!(
        "--layer-norm",
        args.layer_norm.then_some(true),
        model.layer_norm
    );
    keep!("--embed", args.embed, model.embed);
    keep!("--weight-drop", args.weight_drop, model.weight_drop);
    keep!("--zoneout", args.zoneout, model.zoneout);
    keep!("--peephole", args.peephole.then_some(true), model.peephole);
    keep!(
        "--variational-dropout",
        args.variational_dropout.then_some(true),
        model.variational_dropout
    );
    keep!("--seq-len", args.seq_len, config.seq_len);
    keep!("--batch", args.batch, config.batch);
    keep!("--lr", args.lr, config.lr);
    keep!("--optimizer", args.optimizer, config.optimizer);
    keep!("--schedule", args.schedule, config.schedule);
    keep!("--clip", args.clip, config.clip);
    keep!("--seed", args.seed, config.seed);
    keep!("--val-fraction", args.val_fraction, config.val_fraction);

    let text = match read_text(&data) {
        Ok(text) => text,
        Err(e) if args.data.is_none() => bail!(
            "--resume: {e}; that path was recorded in {} when the run started (a relative path is \
             read from the directory rnn runs in): give the text with --data",
            ckpt.display()
        ),
        Err(e) => return Err(e),
    };
    if fingerprint(text.as_bytes()) != config.data_hash {
        bail!(
            "--resume: {} is not the text the run in {} was trained on ({}); give that file \
             with --data",
            data_label(&data),
            out.display(),
            config.data
        );
    }
    let vocab_path = out.join(VOCAB_FILE);
    let vocab = Vocab::read(&vocab_path)?;
    // A fine-tuned run (--init) keeps its model's vocabulary, which may hold more characters
    // than its text.
    let fine_tuned = Vocab::from_text(&text)? != vocab && vocab.encode(&text).is_ok();
    if (Vocab::from_text(&text)? != vocab && !fine_tuned) || vocab.len() != model.vocab_size {
        bail!(
            "--resume: {} does not match the training text's characters",
            vocab_path.display()
        );
    }
    let tokens = vocab.encode(&text)?;
    let (train, val) = split(&tokens, config.val_fraction, &data)?;
    let mut trainer = Trainer::resume(&file, &ckpt, train)?;
    let done = trainer.step_count();
    if args.steps.is_some() || args.epochs.is_some() {
        let total = total_steps(args, trainer.streams().chunks_per_epoch(), Some(done))?;
        trainer.set_total_steps(total);
    }
    remove_stale_temporaries(out);
    let metrics = Metrics::resume(&out.join(METRICS_FILE), done)
        .with_context(|| format!("cannot write to --out {}", out.display()))?;
    let best = best_of(out.join(BEST_FILE))
        .filter(|&(step, _)| step <= done)
        .map(|(_, loss)| loss);
    let log = match &args.log_json {
        Some(path) => Some(JsonLog::append(path)?),
        None => None,
    };
    Ok(Run {
        trainer,
        vocab,
        val,
        metrics,
        out: out.clone(),
        label: data_label(&data),
        best,
        log,
        settings: settings(args),
    })
}

/// The training loop, with progress, metrics, samples, checkpoints and Ctrl-C.
fn train(args: &Args, run: &mut Run) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Fails only if a handler is already installed (a second run in one process).
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let total = run.trainer.config().steps;
    let start_step = run.trainer.step_count();
    let cfg = run.trainer.config().clone();
    let chars_per_step = (cfg.batch * cfg.seq_len) as f64;
    let every = |given: Option<u64>, default: u64| given.unwrap_or(default);
    let sample_every = every(args.sample_every, (total / 5).max(1));
    let eval_every = every(args.eval_every, (total / 10).max(1));
    let checkpoint_every = every(args.checkpoint_every, 200);
    let log_every = args.log_every.unwrap_or(10).max(1);

    let mut progress = Progress::new();
    let model = run.trainer.model();
    let epochs = total as f64 / run.trainer.streams().chunks_per_epoch() as f64;
    let shown = model.to_string();
    let arch = shown.split("  #").next().unwrap_or(&shown);
    progress.message(&format!(
        "model: {arch}, {} parameters\n\
         data:  {}, {} characters ({} training, {} validation), vocabulary of {}\n\
         plan:  {total} steps ({epochs:.2} epochs) of {} x {}; {} lr {}{}, \
         clip {}, seed {}{}; writing {}",
        model.num_parameters(),
        run.label,
        run.trainer.streams().len() + run.val.len(),
        run.trainer.streams().len(),
        run.val.len(),
        run.vocab.len(),
        plural(cfg.batch, "stream"),
        plural(cfg.seq_len, "character"),
        cfg.optimizer,
        cfg.lr,
        match cfg.schedule {
            rnn::charlm::ScheduleKind::None => String::new(),
            s => format!(" ({s} schedule)"),
        },
        cfg.clip,
        cfg.seed,
        match args.precision {
            rnn::Precision::F32 => String::new(),
            p => format!(", {p} products"),
        },
        run.out.display()
    ));
    if start_step > 0 {
        progress.message(&format!("resuming at step {start_step}"));
    }
    if let Some(dir) = &args.init {
        progress.message(&format!(
            "init:  the weights of {} (fine-tuning with a new optimizer)",
            dir.display()
        ));
    }
    if let Some(log) = &mut run.log {
        log.write(&serde_json::json!({
            "event": "start",
            "step": start_step,
            "total_steps": total,
            "model": serde_json::from_str::<serde_json::Value>(&model.config().to_json())?,
            "train": serde_json::from_str::<serde_json::Value>(&cfg.to_json())?,
            "init": args.init.as_ref().map(|d| d.display().to_string()),
            "out": run.out.display().to_string(),
        }))?;
    }

    let session = Instant::now();
    let elapsed_before = run.metrics.elapsed();
    let mut step_time = Duration::ZERO;
    let (mut sum_loss, mut sum_norm, mut n_since, mut time_since) =
        (0f64, 0f64, 0u64, Duration::ZERO);
    let mut last_loss = None;
    let mut val_loss = run.metrics.last_val();
    let mut interrupted = false;
    let status = |step: u64, loss: Option<f64>, val: Option<f64>, step_time: Duration| {
        let done = step - start_step;
        let wall = session.elapsed().as_secs_f64();
        Status {
            step,
            total,
            train_bpc: loss.map(|v| v / std::f64::consts::LN_2),
            val_bpc: val.map(|v| v / std::f64::consts::LN_2),
            chars_per_sec: (done > 0)
                .then(|| done as f64 * chars_per_step / step_time.as_secs_f64().max(1e-9)),
            eta: (done > 0).then(|| {
                Duration::from_secs_f64(wall / done as f64 * (total.saturating_sub(step)) as f64)
            }),
        }
    };
    progress.update(&status(start_step, None, val_loss, step_time), true);

    while run.trainer.step_count() < total {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let t0 = Instant::now();
        let stats = run.trainer.step()?;
        let dt = t0.elapsed();
        step_time += dt;
        time_since += dt;
        sum_loss += f64::from(stats.loss);
        sum_norm += f64::from(stats.grad_norm);
        n_since += 1;
        let step = stats.step;
        let last = step == total;
        let due = |n: u64| last || (n > 0 && step % n == 0);

        let eval_now = !run.val.is_empty() && due(eval_every);
        if eval_now {
            let ev = evaluate(run.trainer.model_mut(), &run.val, cfg.seq_len)?;
            val_loss = Some(ev.loss);
            keep_best(run, step, ev.loss)?;
            run.trainer.after_evaluation(ev.loss);
        }
        if due(log_every) || eval_now {
            let loss = sum_loss / n_since as f64;
            last_loss = Some(loss);
            let row = Row {
                step,
                epoch: stats.epoch,
                train_loss: loss,
                val_loss: if eval_now { val_loss } else { None },
                grad_norm: sum_norm / n_since as f64,
                chars_per_sec: n_since as f64 * chars_per_step / time_since.as_secs_f64().max(1e-9),
                elapsed_s: elapsed_before + session.elapsed().as_secs_f64(),
            };
            if let Some(log) = &mut run.log {
                log.write(&row.to_json())?;
            }
            run.metrics.push(row)?;
            (sum_loss, sum_norm, n_since, time_since) = (0.0, 0.0, 0, Duration::ZERO);
        }
        let st = status(step, last_loss, val_loss, step_time);
        if eval_now {
            progress.line(&st);
        } else {
            progress.update(&st, false);
        }
        if !last && due(sample_every) {
            print_sample(run, sample_len(args), step, val_loss, &mut progress)?;
            progress.update(&st, true);
        }
        if due(checkpoint_every) {
            write_checkpoint(run)?;
        }
    }
    let step = run.trainer.step_count();
    if !interrupted {
        // The last sample goes above the last progress line, as the others do.
        write_checkpoint(run)?;
        print_sample(run, sample_len(args), step, val_loss, &mut progress)?;
    }
    progress.update(&status(step, last_loss, val_loss, step_time), true);
    progress.finish();
    if interrupted {
        write_checkpoint(run)?;
        eprintln!(
            "interrupted at step {step}/{total}: checkpoint written to {}; continue with \
             `rnn train --resume --out {}`",
            run.out.display(),
            run.out.display()
        );
        std::process::exit(130);
    }
    let wall = session.elapsed();
    let done = step - start_step;
    let mut summary = format!("done: {step} steps in {}", clock(wall));
    if done > 0 {
        summary.push_str(&format!(
            " ({:.0} training characters/s)",
            done as f64 * chars_per_step / step_time.as_secs_f64().max(1e-9)
        ));
    }
    if let Some(v) = val_loss {
        summary.push_str(&format!(
            "; validation {:.4} bits per character",
            v / std::f64::consts::LN_2
        ));
    }
    if let Some(best) = run.best {
        summary.push_str(&format!(
            " (best {:.4}, kept in {BEST_FILE})",
            best / std::f64::consts::LN_2
        ));
    }
    eprintln!("{summary}");
    if let Some(log) = &mut run.log {
        log.write(&serde_json::json!({
            "event": "done",
            "step": step,
            "seconds": wall.as_secs_f64(),
            "val_bpc": val_loss.map(|v| v / std::f64::consts::LN_2),
            "val_nats": val_loss,
            "best_val_bpc": run.best.map(|v| v / std::f64::consts::LN_2),
        }))?;
    }
    eprintln!(
        "model: {}; more text: `rnn sample --model {}`",
        run.out.join(MODEL_FILE).display(),
        run.out.display()
    );
    Ok(())
}

/// Reads the `--init` model directory (or model file) and checks the architecture flags
/// against it: a fine-tuned model keeps its architecture.
fn init_model(args: &Args, dir: &Path) -> Result<(CharLm, Vocab, PathBuf)> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b || a.parent() == Some(b.as_path()),
        _ => false,
    };
    if same(dir, &args.out) {
        bail!(
            "--init {} is --out too: a fine-tuned model is written to another directory, so \
             that the model it starts from is kept (choose another --out)",
            dir.display()
        );
    }
    let (model, vocab) = load_dir(dir).with_context(|| format!("--init {}", dir.display()))?;
    let c = model.config().clone();
    let differs = |flag: &str, given: String, saved: String| -> Result<()> {
        bail!(
            "--init: {flag} {given} differs from the model's {saved}; fine-tuning keeps the \
             model's architecture (leave {flag} out)"
        )
    };
    macro_rules! keep {
        ($flag:literal, $given:expr, $saved:expr) => {
            if let Some(g) = $given {
                if g != $saved {
                    differs($flag, format!("{g}"), format!("{}", $saved))?;
                }
            }
        };
    }
    keep!("--cell", args.cell.map(|c| c.name()), c.cell.name());
    keep!("--hidden", args.hidden, c.hidden_size);
    keep!("--layers", args.layers, c.num_layers);
    keep!("--dropout", args.dropout, c.dropout);
    keep!(
        "--layer-norm",
        args.layer_norm.then_some(true),
        c.layer_norm
    );
    keep!("--embed", args.embed, c.embed);
    keep!("--weight-drop", args.weight_drop, c.weight_drop);
    keep!("--zoneout", args.zoneout, c.zoneout);
    keep!("--peephole", args.peephole.then_some(true), c.peephole);
    keep!(
        "--variational-dropout",
        args.variational_dropout.then_some(true),
        c.variational_dropout
    );
    debug_assert_eq!(MODEL_FORMAT, "rnn.charlm/1");
    Ok((model, vocab, dir.to_path_buf()))
}

/// The error for a text with characters the `--init` model has never seen.
fn unseen(e: rnn::Error, data: &Path, dir: &Path) -> anyhow::Error {
    let m = match e {
        rnn::Error::Invalid(m) => m,
        other => other.to_string(),
    };
    anyhow!(
        "--init {}: {} has characters the model was not trained with ({m}); a fine-tuned \
         model keeps its vocabulary: remove them from the text, or train a new model without \
         --init",
        dir.display(),
        data_label(data)
    )
}

/// Writes `best.safetensors` when `val_loss` is the lowest validation loss of the run so far.
fn keep_best(run: &mut Run, step: u64, val_loss: f64) -> Result<()> {
    if run.best.is_some_and(|b| b <= val_loss) {
        return Ok(());
    }
    let path = run.out.join(BEST_FILE);
    save_best(&path, run.trainer.model(), step, val_loss)
        .with_context(|| format!("cannot write {}", path.display()))?;
    run.best = Some(val_loss);
    if let Some(log) = &mut run.log {
        log.write(&serde_json::json!({
            "event": "best",
            "step": step,
            "val_bpc": val_loss / std::f64::consts::LN_2,
            "val_nats": val_loss,
        }))?;
    }
    Ok(())
}

/// Writes `checkpoint.safetensors`, then `model.safetensors`, then `loss.svg`, each atomically.
fn write_checkpoint(run: &Run) -> Result<()> {
    let out = &run.out;
    let step = run.trainer.step_count();
    let context = || format!("cannot write the checkpoint to {}", out.display());
    let mut checkpoint = run.trainer.checkpoint();
    checkpoint
        .metadata
        .insert(RUN_METADATA.to_string(), run.settings.clone());
    checkpoint
        .write(out.join(CHECKPOINT_FILE))
        .with_context(context)?;
    save_model(out.join(MODEL_FILE), run.trainer.model(), step).with_context(context)?;
    let title = format!(
        "{} on {}: loss at step {step}",
        run.trainer.model().config().cell.torch_name(),
        run.label
    );
    rnn::io::write_atomic(out.join(PLOT_FILE), run.metrics.svg(&title).as_bytes())
        .with_context(context)?;
    Ok(())
}

/// Prints a sample of the model (temperature 0.8) on stdout, under a header line.
fn print_sample(
    run: &mut Run,
    len: usize,
    step: u64,
    val: Option<f64>,
    progress: &mut Progress,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    use std::io::Write;
    let seed = run.trainer.config().seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng::new(seed);
    let text = sample(
        run.trainer.model_mut(),
        &run.vocab,
        "",
        len,
        SampleOptions::default(),
        &mut rng,
        |_| Ok(()),
    )?;
    progress.clear();
    let val = val.map_or(String::new(), |v| {
        format!(", validation {:.3} bpc", v / std::f64::consts::LN_2)
    });
    // Samples are a side show: a closed stdout (`rnn train | head`) does not stop training.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "----- sample at step {step}{val} -----\n{}\n",
        text.trim_end()
    )
    .and_then(|()| stdout.flush());
    Ok(())
}

/// Removes the temporary files a killed run may have left while writing one of the run's files
/// (`model.safetensors.<pid>.<n>.tmp`, ...): the files themselves are always whole.
fn remove_stale_temporaries(out: &Path) {
    let names = [
        CHECKPOINT_FILE,
        MODEL_FILE,
        VOCAB_FILE,
        METRICS_FILE,
        PLOT_FILE,
        BEST_FILE,
    ];
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = names
            .iter()
            .any(|n| name.starts_with(&format!("{n}.")) && name.ends_with(".tmp"));
        if ours {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The training part and the validation part (the last `fraction` of the text).
pub fn split(tokens: &[usize], fraction: f64, data: &Path) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&fraction) {
        bail!("--val-fraction must be in [0, 1), got {fraction}");
    }
    let n = tokens.len();
    let n_val = (n as f64 * fraction).floor() as usize;
    if fraction > 0.0 && n_val < 2 {
        bail!(
            "{}: {} leave{} {n_val} for validation (--val-fraction {fraction}); use \
             more text, a larger --val-fraction, or --val-fraction 0",
            data_label(data),
            plural(n, "character"),
            if n == 1 { "s" } else { "" }
        );
    }
    Ok((tokens[..n - n_val].to_vec(), tokens[n - n_val..].to_vec()))
}

/// The most steps a run may plan (`--steps`, `--epochs`): a billion, days of training even at
/// a millisecond a step.
pub const MAX_STEPS: u64 = 1_000_000_000;

/// The planned number of steps: `--steps`, or `--epochs` times the chunks per epoch, or the
/// default. A resumed run cannot plan fewer steps than it has done.
fn total_steps(args: &Args, chunks: usize, done: Option<u64>) -> Result<u64> {
    let total = match (args.steps, args.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => {
            if !(e.is_finite() && e >= 0.0) {
                bail!("--epochs must be a number >= 0, got {e}");
            }
            let steps = (e * chunks as f64).ceil();
            if steps > MAX_STEPS as f64 {
                bail!(
                    "--epochs {e:?} plans {steps:.3e} steps ({chunks} per epoch), more than the \
                     {MAX_STEPS} a run may plan; ask for fewer epochs"
                );
            }
            steps as u64
        }
        (None, None) => defaults::STEPS,
    };
    if total > MAX_STEPS {
        bail!("--steps {total} is more than the {MAX_STEPS} a run may plan");
    }
    if let Some(done) = done {
        if total < done {
            bail!("--resume: the run is already at step {done}, past the {total} steps asked for");
        }
    }
    Ok(total)
}

/// `1 character`, `2 characters`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `file.txt` or `the built-in corpus`.
pub fn data_label(data: &Path) -> String {
    if data.as_os_str() == BUILTIN_NAME {
        "the built-in corpus".to_string()
    } else {
        format!("data file {}", data.display())
    }
}

/// A configuration error in terms of the command's options.
fn option_message(e: &rnn::Error) -> String {
    let m = match e {
        rnn::Error::Config(m) | rnn::Error::Invalid(m) => m.clone(),
        other => other.to_string(),
    };
    m.replace("seq_len and batch", "--seq-len and --batch")
        .replace("batch * seq_len", "--batch x --seq-len")
        .replace(
            "a smaller batch or seq_len",
            "a smaller --batch or --seq-len",
        )
        .replace("batch (", "--batch (")
        .replace("seq_len (", "--seq-len (")
        .replace("hidden_size", "--hidden")
        .replace("num_layers", "--layers")
        .replace("layer_norm", "--layer-norm")
        .replace("seq_len", "--seq-len")
        .replace("dropout must", "--dropout must")
        .replace("clip must", "--clip must")
        .replace("the learning rate", "--lr")
}
