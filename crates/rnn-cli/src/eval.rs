//! `rnn eval`: the loss of a character model on a text file, in nats and bits per character;
//! without `--data`, on the validation text held out by the run that trained the model (the
//! number `rnn train` reported).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use rnn::charlm::checkpoint::{model_paths, CHECKPOINT_FILE};
use rnn::charlm::{evaluate, fingerprint, load_dir, Trainer, Vocab};
use rnn::io::TensorFile;

use crate::corpus::read_text;
use crate::train::{data_label, split};

/// `rnn eval --model DIR [--data FILE] [--json]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (model.safetensors + vocab.json), or its model.safetensors
    #[arg(long, value_name = "DIR", default_value = "runs/charlm")]
    model: PathBuf,
    /// UTF-8 text to evaluate on; every character must be in the model's vocabulary
    /// [default: the validation text of the run that trained the model (the end of its text
    /// that training held out), as named in the directory's checkpoint]
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Characters per chunk (the state is carried across chunks) [default: 100, or the run's
    /// --seq-len on its validation text]
    #[arg(long = "seq-len", value_name = "L")]
    seq_len: Option<usize>,
    /// Print one JSON object instead of `loss=... bpc=...`
    #[arg(long)]
    json: bool,
    /// Worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Precision of the products (recurrent layers and the linear head): f32, bf16 or int8.
    /// Gate math, states and the softmax stay f32.
    #[arg(long, value_name = "P", default_value_t = rnn::Precision::F32)]
    precision: rnn::Precision,
}

/// Entry point of `rnn eval`.
pub fn main(args: Args) -> Result<()> {
    crate::threads::set(args.threads)?;
    if args.seq_len == Some(0) {
        bail!("--seq-len must be at least 1");
    }
    let (mut model, vocab) = load_dir(&args.model)?;
    let text = match &args.data {
        Some(data) => Text::of_file(data, &vocab)?,
        None => Text::validation_of_run(&args.model, &vocab)?,
    };
    if text.tokens.len() < 2 {
        bail!(
            "{} has {}: evaluation predicts each character from the ones before, so it needs \
             at least 2",
            text.label,
            crate::train::plural(text.tokens.len(), "character")
        );
    }
    let seq_len = args.seq_len.or(text.seq_len).unwrap_or(100);
    crate::speed_note::print(args.precision);
    let ev = rnn::autocast(args.precision, || {
        evaluate(&mut model, &text.tokens, seq_len)
    })?;
    if !ev.loss.is_finite() {
        bail!(
            "the loss on {} is {}: the model's logits overflow float32 arithmetic (its weights \
             in {} are damaged or diverged)",
            text.label,
            ev.loss,
            args.model.display()
        );
    }
    if args.json {
        let obj = serde_json::json!({
            "loss": ev.loss,
            "bpc": ev.bpc(),
            "chars": ev.chars,
            "model": args.model.display().to_string(),
            "data": text.name,
            "validation": args.data.is_none(),
        });
        crate::stdout::line(&obj.to_string())?;
    } else {
        crate::stdout::line(&format!("loss={:.6} bpc={:.6}", ev.loss, ev.bpc()))?;
    }
    Ok(())
}

/// The characters to evaluate on, as the model's tokens.
struct Text {
    tokens: Vec<usize>,
    /// For messages: `data file F` or `the validation text of ...`.
    label: String,
    /// For the JSON line: the file as given, or the run's.
    name: String,
    /// The run's `--seq-len`, for its validation text.
    seq_len: Option<usize>,
}

impl Text {
    /// All of `data`.
    fn of_file(data: &Path, vocab: &Vocab) -> Result<Text> {
        let text = read_text(data)?;
        let tokens = vocab.encode(&text).map_err(|e| {
            let m = match e {
                rnn::Error::Invalid(m) => m,
                other => other.to_string(),
            };
            anyhow!("data file {}: {m}", data.display())
        })?;
        Ok(Text {
            tokens,
            label: format!("data file {}", data.display()),
            name: data.display().to_string(),
            seq_len: None,
        })
    }

    /// The validation part of the text the run in `model`'s directory trained on: the text
    /// and the fraction its checkpoint records, the text checked against the recorded
    /// fingerprint.
    fn validation_of_run(model: &Path, vocab: &Vocab) -> Result<Text> {
        let (model_file, _) = model_paths(model);
        let dir = model_file.parent().unwrap_or(Path::new("."));
        let ckpt = dir.join(CHECKPOINT_FILE);
        if !ckpt.is_file() {
            bail!(
                "{} has no {CHECKPOINT_FILE}, which names the text a run trained on and the part \
                 it held out for validation: give the text to evaluate on with --data",
                dir.display()
            );
        }
        let file = TensorFile::read(&ckpt)?;
        let (_, config) = Trainer::configs_of(&file, &ckpt)?;
        let data = PathBuf::from(&config.data);
        let text = read_text(&data).map_err(|e| {
            anyhow!(
                "{e}; that path was recorded in {} when the run started (a relative path is read \
                 from the directory rnn runs in): give the text with --data",
                ckpt.display()
            )
        })?;
        if fingerprint(text.as_bytes()) != config.data_hash {
            bail!(
                "{} is not the text the run in {} was trained on (it has changed since): give \
                 the text to evaluate on with --data",
                data_label(&data),
                dir.display()
            );
        }
        if config.val_fraction == 0.0 {
            bail!(
                "the run in {} held no text out for validation (--val-fraction 0): give the \
                 text to evaluate on with --data",
                dir.display()
            );
        }
        let tokens = vocab.encode(&text).map_err(|e| {
            anyhow!(
                "{}: {e} (the vocabulary in {} is not the run's)",
                data_label(&data),
                dir.display()
            )
        })?;
        let (_, val) = split(&tokens, config.val_fraction, &data)?;
        Ok(Text {
            tokens: val,
            label: format!("the validation text of {}", data_label(&data)),
            name: config.data.clone(),
            seq_len: Some(config.seq_len),
        })
    }
}
