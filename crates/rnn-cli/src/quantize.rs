//! `rnn quantize`: a model file (or an ONNX recurrent stack) as a quantized (int8) model
//! file: the weight matrices in I8 with one f32 scale per row, about 4x smaller, loaded by
//! `rnn run` (and `rnn::model_file::load_model`) as an int8 layer without quantizing again.
//! Key layout: `rnn::quantized`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use rnn::io::TensorFile;

/// `rnn quantize MODEL --out MODEL_INT8 [--force]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model file (safetensors with a "config" entry) or an .onnx file holding one
    /// recurrent stack
    #[arg(value_name = "MODEL")]
    model: PathBuf,
    /// The quantized model file to write (atomically)
    #[arg(long, value_name = "MODEL_INT8")]
    out: PathBuf,
    /// Replace the file if it exists
    #[arg(long)]
    force: bool,
}

/// Entry point of `rnn quantize`.
pub fn main(args: Args) -> Result<()> {
    if args.out.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.out.display());
    }
    if args.out.exists() && std::fs::canonicalize(&args.out)? == std::fs::canonicalize(&args.model)?
    {
        bail!(
            "--out {} is the model file itself: writing it would destroy the f32 weights; \
             choose another path",
            args.out.display()
        );
    }
    if args.model.is_dir() {
        bail!(
            "{} is a directory (a character model?): rnn quantize writes one recurrent layer's \
             model file; run a character model in int8 with rnn sample / rnn eval --precision int8",
            args.model.display()
        );
    }
    let model = if rnn::onnx::is_onnx_path(&args.model) {
        rnn::onnx::import_one(&args.model)?
    } else {
        let file = TensorFile::read(&args.model)?;
        if rnn::quantized::is_quantized_file(&file) {
            bail!("{} is already quantized", args.model.display());
        }
        rnn::model_file::load_model(&args.model)?
    };
    rnn::quantized::save_quantized(&args.out, &model)?;
    let (before, after) = (
        std::fs::metadata(&args.model)?.len(),
        std::fs::metadata(&args.out)?.len(),
    );
    println!(
        "wrote {} ({}, int8 weights with per-row scales): {after} bytes, {:.2}x smaller than {} \
         ({before} bytes)",
        args.out.display(),
        model.config().repr(),
        before as f64 / after.max(1) as f64,
        args.model.display(),
    );
    Ok(())
}
