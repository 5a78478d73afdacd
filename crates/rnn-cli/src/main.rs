//! The `rnn` command-line tool: run PyTorch recurrent models saved as safetensors, and the
//! lessons.
//!
//! One file per subcommand (`run.rs`, `basics.rs`, ...), each with an `Args` struct (clap
//! derive) and a `pub fn main(args) -> anyhow::Result<()>`; this file only dispatches.
//! Every error is printed as one line, `error: ...`, on stderr, with exit status 1 (2 for a
//! usage error, as clap decides).

mod basics;
mod bench;
mod completions;
mod corpus;
mod eval;
mod export;
mod import;
mod info;
mod memory;
mod metrics;
mod plot;
mod progress;
mod quantize;
mod run;
mod sample;
mod show;
mod speed_note;
mod stdout;
mod threads;
mod train;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// PyTorch's RNN, LSTM and GRU in pure Rust.
#[derive(Debug, Parser)]
#[command(
    name = "rnn",
    version,
    about,
    propagate_version = true,
    after_help = "Environment: RNN_MEMORY_LIMIT caps the memory a command may plan for (bytes, \
                  or 512M, 8G, ...; default: the memory available now); sizes from files and \
                  flags beyond it are refused before anything is allocated."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
// Parsed once per run: the size of the largest variant (`train`'s many options) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Train a character-level language model (char-rnn) on a text file, or on the built-in
    /// corpus; samples as it goes, checkpoints, resumes.
    Train(train::Args),
    /// Generate text from a trained character model, streaming it as it is drawn.
    Sample(sample::Args),
    /// Loss and bits per character of a character model on a text file.
    Eval(eval::Args),
    /// Run a model file on an input file and write the outputs (and gradients, when the input
    /// holds upstream gradients).
    Run(run::Args),
    /// Read the recurrent stacks of an ONNX file (torch.onnx.export's or any RNN/LSTM/GRU
    /// graph) into model files.
    Import(import::Args),
    /// Write a model file or a character model directory as ONNX, for ONNX Runtime.
    Export(export::Args),
    /// The first lesson: one-hot letters through one RNN layer, and what the shapes mean.
    Basics(basics::Args),
    /// Write a model file's weights in int8 with per-row scales (about 4x smaller), for
    /// inference with rnn run.
    Quantize(quantize::Args),
    /// Time one recurrent layer on a labelled workload (median, min, max, GFLOP/s).
    Bench(bench::Args),
    /// What a model file, model directory or checkpoint holds: config, tensors, dtypes,
    /// parameter counts, file sizes.
    Info(info::Args),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
}

fn main() -> ExitCode {
    set_panic_hook();
    memory::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::main(args),
        Command::Sample(args) => sample::main(args),
        Command::Eval(args) => eval::main(args),
        Command::Run(args) => run::main(args),
        Command::Import(args) => import::main(args),
        Command::Export(args) => export::main(args),
        Command::Basics(args) => basics::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Quantize(args) => quantize::main(args),
        Command::Info(args) => info::main(args),
        Command::Completions(args) => completions::main(args, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            report(&message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause that the message already
/// quotes (`rnn::Error::Io` prints its `std::io::Error`, which is also its source).
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Prints `error: <message>` as one line on stderr.
fn report(message: &str) {
    let line: String = message
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(std::io::stderr().lock(), "error: {line}");
}

/// A closed stdout (`rnn basics | head`) ends the program quietly, as for other Unix tools.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A bug must still print one line, not a backtrace: `error: internal error: ...`.
fn set_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        report(&format!(
            "internal error: {what}{place}; this is a bug in rnn, please report it"
        ));
    }));
}
