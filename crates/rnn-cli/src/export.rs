//! `rnn export`: a model file or a character model directory as ONNX.
//!
//! A model file (safetensors with a `config`) becomes a graph with inputs `input`, `h0`
//! (`c0`) and outputs `output`, `h_n` (`c_n`); a character model directory (or its
//! `model.safetensors`) becomes `tokens`, `h0` (`c0`) -> `logits`, `h_n` (`c_n`), to be
//! stepped one character at a time. Opset 17, symbolic batch and sequence axes.

use std::path::PathBuf;

use anyhow::{bail, Result};
use rnn::charlm::checkpoint::{model_paths, MODEL_FORMAT};
use rnn::io::TensorFile;

/// `rnn export MODEL --onnx OUT.onnx [--force]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model file (safetensors with a "config" entry) or a character model directory
    #[arg(value_name = "MODEL")]
    model: PathBuf,
    /// The ONNX file to write
    #[arg(long, value_name = "OUT.onnx")]
    onnx: PathBuf,
    /// Replace the file if it exists
    #[arg(long)]
    force: bool,
}

/// Entry point of `rnn export`.
pub fn main(args: Args) -> Result<()> {
    if args.onnx.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.onnx.display());
    }
    let charlm = if args.model.is_dir() {
        true
    } else {
        let file = TensorFile::read(&args.model)?;
        file.metadata.get("format").map(String::as_str) == Some(MODEL_FORMAT)
    };
    if charlm {
        let (model, vocab) = rnn::charlm::load_dir(&args.model)?;
        rnn::onnx::export_charlm(&model, &vocab, &args.onnx)?;
        let (path, _) = model_paths(&args.model);
        println!(
            "wrote {} (opset {}) from {}: tokens, h0{} -> logits, h_n{}",
            args.onnx.display(),
            rnn::onnx::OPSET,
            path.display(),
            if model.config().cell == rnn::CellKind::Lstm {
                ", c0"
            } else {
                ""
            },
            if model.config().cell == rnn::CellKind::Lstm {
                ", c_n"
            } else {
                ""
            },
        );
    } else {
        let model = rnn::model_file::load_model(&args.model)?;
        rnn::onnx::export_recurrent(&model, &args.onnx)?;
        let lstm = model.config().cell == rnn::CellKind::Lstm;
        println!(
            "wrote {} (opset {}): input, h0{} -> output, h_n{}",
            args.onnx.display(),
            rnn::onnx::OPSET,
            if lstm { ", c0" } else { "" },
            if lstm { ", c_n" } else { "" },
        );
    }
    Ok(())
}
