//! `rnn import`: the recurrent stacks of an ONNX file as model files.
//!
//! `rnn import lstm.onnx --out lstm.safetensors` writes the one stack of the file there;
//! `--out DIR` writes `DIR/model.safetensors` (or `DIR/stack0.safetensors`, `stack1`, ... when
//! the file holds several stacks). Existing files are kept unless `--force` is given.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rnn::model_file::save_model;

/// `rnn import MODEL.onnx --out DIR_OR_FILE [--force]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX file (from torch.onnx.export, dynamo=False or True, or any graph of RNN, LSTM
    /// and GRU nodes)
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Where to write: a .safetensors file (one stack), or a directory
    #[arg(long, value_name = "DIR_OR_FILE")]
    out: PathBuf,
    /// Replace files that already exist
    #[arg(long)]
    force: bool,
}

/// Entry point of `rnn import`.
pub fn main(args: Args) -> Result<()> {
    let stacks = rnn::onnx::import(&args.model)?;
    let is_file = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let targets: Vec<PathBuf> = if is_file {
        if stacks.len() != 1 {
            bail!(
                "{} holds {} recurrent stacks: give --out a directory to write one file each",
                args.model.display(),
                stacks.len()
            );
        }
        vec![args.out.clone()]
    } else if stacks.len() == 1 {
        vec![args.out.join("model.safetensors")]
    } else {
        (0..stacks.len())
            .map(|i| args.out.join(format!("stack{i}.safetensors")))
            .collect()
    };
    for t in &targets {
        if t.exists() && !args.force {
            bail!("{} exists; pass --force to replace it", t.display());
        }
    }
    if !is_file {
        std::fs::create_dir_all(&args.out).map_err(|e| rnn::Error::io(&args.out, e))?;
    }
    for (stack, target) in stacks.iter().zip(&targets) {
        save_model(target, &stack.model)?;
        println!("{}", describe(stack, target));
    }
    Ok(())
}

/// `wrote m.safetensors: LSTM(3, 4, ...) from 2 nodes (...); reads "input", initial states
/// "h0", "c0"`.
fn describe(stack: &rnn::onnx::ImportedStack, target: &Path) -> String {
    let model = stack.model.to_string();
    let model = model.split("  #").next().unwrap_or(&model);
    let states = if stack.initial_states.is_empty() {
        "initial states zero".to_string()
    } else {
        format!(
            "initial states from {}",
            stack
                .initial_states
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let lengths = stack
        .lengths
        .as_ref()
        .map(|l| format!(", sequence lengths from {l:?} (give them as \"lengths\" to rnn run)"))
        .unwrap_or_default();
    format!(
        "wrote {}: {model} from {}; input {:?}, {states}{lengths}",
        target.display(),
        stack.nodes.join(", "),
        stack.input
    )
}
