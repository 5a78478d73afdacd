//! `rnn eval`: the loss of a character model on a text file, in nats and bits per character.

use std::path::PathBuf;

use anyhow::{bail, Result};
use rnn::charlm::{evaluate, load_dir};

use crate::corpus::read_text;

/// `rnn eval --model DIR --data FILE [--json]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (model.safetensors + vocab.json), or its model.safetensors
    #[arg(long, value_name = "DIR", default_value = "runs/charlm")]
    model: PathBuf,
    /// UTF-8 text to evaluate on; every character must be in the model's vocabulary
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// Characters per chunk (the state is carried across chunks)
    #[arg(long = "seq-len", value_name = "L", default_value_t = 100)]
    seq_len: usize,
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
    if args.seq_len == 0 {
        bail!("--seq-len must be at least 1");
    }
    let (mut model, vocab) = load_dir(&args.model)?;
    let text = read_text(&args.data)?;
    let tokens = match vocab.encode(&text) {
        Ok(t) => t,
        Err(e) => {
            let m = match e {
                rnn::Error::Invalid(m) => m,
                other => other.to_string(),
            };
            bail!("data file {}: {m}", args.data.display());
        }
    };
    if tokens.len() < 2 {
        bail!(
            "data file {} has {}: evaluation predicts each character from the ones before, so \
             it needs at least 2",
            args.data.display(),
            crate::train::plural(tokens.len(), "character")
        );
    }
    let ev = rnn::autocast(args.precision, || {
        evaluate(&mut model, &tokens, args.seq_len)
    })?;
    if !ev.loss.is_finite() {
        bail!(
            "the loss on {} is {}: the model's logits overflow float32 arithmetic (its weights \
             in {} are damaged or diverged)",
            args.data.display(),
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
            "data": args.data.display().to_string(),
        });
        crate::stdout::line(&obj.to_string())?;
    } else {
        crate::stdout::line(&format!("loss={:.6} bpc={:.6}", ev.loss, ev.bpc()))?;
    }
    Ok(())
}
