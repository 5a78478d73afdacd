//! `rnn sample`: generates text from a character model directory (written by `rnn train` or by
//! `tools/train_charlm.py`), printing each character as it is drawn.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The most characters `--len` (and `rnn train --sample-len`) may ask for.
pub const MAX_LEN: usize = 100_000_000;

/// The context of a failed write of the text.
const STDOUT: &str = "cannot write to standard output";
use rnn::charlm::{load_dir, sample, SampleOptions};
use rnn::Rng;

/// `rnn sample [--model DIR] [--prime TEXT] [--len N] [--temperature T] [--top-k K] [--seed S]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (model.safetensors + vocab.json), or its model.safetensors
    #[arg(long, value_name = "DIR", default_value = "runs/charlm")]
    model: PathBuf,
    /// Text to start from; it is printed, then continued [default: none: the model starts after
    /// a newline, as at the start of a line]
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "",
        hide_default_value = true
    )]
    prime: String,
    /// Characters to generate after the prime (at most 100000000)
    #[arg(long, value_name = "N", default_value_t = 500)]
    len: usize,
    /// Sharpens (< 1) or flattens (> 1) the distribution; 0 always takes the likeliest; a
    /// finite number >= 0
    #[arg(
        long,
        value_name = "T",
        default_value_t = 0.8,
        allow_negative_numbers = true
    )]
    temperature: f64,
    /// Draw only among the K likeliest characters; 0 = all
    #[arg(long = "top-k", value_name = "K", default_value_t = 0)]
    top_k: usize,
    /// Seed of the draws: the same seed gives the same text [default: from the clock]
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
    /// Worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Precision of the products (recurrent layers and the linear head): f32, bf16 or int8.
    /// Gate math, states and the softmax stay f32.
    #[arg(long, value_name = "P", default_value_t = rnn::Precision::F32)]
    precision: rnn::Precision,
}

/// Entry point of `rnn sample`.
pub fn main(args: Args) -> Result<()> {
    crate::threads::set(args.threads)?;
    if args.len > MAX_LEN {
        bail!(
            "--len {} is more than the {MAX_LEN} characters one sample may have (the text is \
             also kept in memory)",
            args.len
        );
    }
    let options = SampleOptions {
        temperature: args.temperature,
        top_k: args.top_k,
    };
    if options.validate().is_err() {
        bail!(
            "--temperature must be a finite number >= 0, got {}",
            args.temperature
        );
    }
    let (mut model, vocab) = load_dir(&args.model)?;
    // Check the prime before printing anything.
    if let Err(e) = vocab.encode(&args.prime) {
        let m = match e {
            rnn::Error::Invalid(m) => m,
            other => other.to_string(),
        };
        bail!("--prime {:?}: {m}", args.prime);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    crate::speed_note::print(args.precision);
    let mut out = std::io::stdout().lock();
    out.write_all(args.prime.as_bytes())
        .and_then(|()| out.flush())
        .context(STDOUT)?;
    let mut io_error = None;
    let result = rnn::autocast(args.precision, || {
        sample(
            &mut model,
            &vocab,
            &args.prime,
            args.len,
            options,
            &mut rng,
            |c| {
                let mut buf = [0u8; 4];
                let written = out
                    .write_all(c.encode_utf8(&mut buf).as_bytes())
                    .and_then(|()| out.flush());
                written.map_err(|e| {
                    let err =
                        rnn::Error::io("<stdout>", std::io::Error::new(e.kind(), e.to_string()));
                    io_error = Some(e);
                    err
                })
            },
        )
    });
    if let Some(e) = io_error {
        return Err(anyhow::Error::new(e).context(STDOUT));
    }
    result?;
    writeln!(out).and_then(|()| out.flush()).context(STDOUT)?;
    Ok(())
}
