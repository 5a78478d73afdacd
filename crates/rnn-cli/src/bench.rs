//! `rnn bench`: times one recurrent layer on a labelled workload, PyTorch's protocol.
//!
//! Warm-up runs, then repetitions until at least `--min-reps` runs and `--min-time` seconds;
//! prints the median, min and max wall time and the achieved GFLOP/s. `infer` is a forward
//! pass without gradient bookkeeping; `train` is forward, loss = sum of the outputs, backward
//! to every weight and to the input. Forward work is `2 * B * T * (I + H) * G * H` flops per
//! layer and direction (G = 1, 4, 3 for rnn, lstm, gru); training counts three times that.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args as ClapArgs, ValueEnum};
use ndarray::{ArrayD, IxDyn};
use rnn::{CellKind, Module, Precision, Recurrent, RecurrentConfig, Rng, Tensor};

/// The workloads of the speed issue: (batch, seq, input, hidden).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 3 x 5, input 4, hidden 2: the first lesson; only overhead counts.
    Seed,
    /// 32 x 50, input 64, hidden 128.
    Small,
    /// 64 x 100, input 256, hidden 512.
    Medium,
    /// 64 x 100, input 1024, hidden 1024.
    Large,
}

impl Preset {
    fn shape(self) -> (usize, usize, usize, usize) {
        match self {
            Preset::Seed => (3, 5, 4, 2),
            Preset::Small => (32, 50, 64, 128),
            Preset::Medium => (64, 100, 256, 512),
            Preset::Large => (64, 100, 1024, 1024),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Preset::Seed => "seed",
            Preset::Small => "small",
            Preset::Medium => "medium",
            Preset::Large => "large",
        }
    }
}

/// What is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Forward only, no gradient bookkeeping.
    Infer,
    /// Forward, sum of outputs, backward to every weight and the input.
    Train,
}

/// Arguments of `rnn bench`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// rnn (tanh), lstm or gru.
    #[arg(long, default_value = "lstm")]
    cell: String,
    /// A labelled workload; --batch/--seq/--input/--hidden override its sizes.
    #[arg(long, value_enum, default_value = "small")]
    preset: Preset,
    /// Batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Sequence length.
    #[arg(long)]
    seq: Option<usize>,
    /// Input features.
    #[arg(long)]
    input: Option<usize>,
    /// Hidden size.
    #[arg(long)]
    hidden: Option<usize>,
    /// Stacked layers.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Two directions.
    #[arg(long)]
    bidirectional: bool,
    /// LSTM with peephole connections (the model file's `"peephole": true`).
    #[arg(long)]
    peephole: bool,
    /// Layer-normalised LSTM (the model file's `"layer_norm": true`).
    #[arg(long)]
    layer_norm: bool,
    /// GRU with the reset gate applied before the recurrent product
    /// (`"linear_before_reset": false`).
    #[arg(long)]
    reset_before: bool,
    /// DropConnect on the recurrent weights with probability P (the model file's
    /// `"weight_drop"`): a fresh mask on W_hh at every run, as in training.
    #[arg(
        long = "weight-drop",
        value_name = "P",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    weight_drop: f64,
    /// Zoneout with probability P (the model file's `"zoneout"`): masks drawn at every run,
    /// as in training.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    zoneout: f64,
    /// infer or train.
    #[arg(long, value_enum, default_value = "infer")]
    mode: Mode,
    /// Precision of the products: f32, bf16 (bf16 operands, f32 sums) or int8 (dynamic
    /// quantization; infer only). Gate math and states stay f32.
    #[arg(long, value_name = "P", default_value_t = Precision::F32)]
    precision: Precision,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Variable lengths: every sequence gets a length drawn uniformly from 1..=seq and the
    /// batch runs packed (PyTorch's pack_padded_sequence, enforce_sorted=False).
    #[arg(long)]
    packed: bool,
    /// Print one JSON line instead of a sentence.
    #[arg(long)]
    json: bool,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// At least this many timed runs.
    #[arg(long, default_value_t = 5)]
    min_reps: usize,
    /// And at least this many seconds of timed runs (a finite number in [0, 3600]).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    min_time: f64,
}

/// Runs the benchmark.
pub fn main(args: Args) -> Result<()> {
    let cell: CellKind = args.cell.parse()?;
    if !(args.min_time.is_finite() && (0.0..=MAX_MIN_TIME).contains(&args.min_time)) {
        bail!(
            "--min-time must be a number of seconds in [0, {MAX_MIN_TIME}], got {}",
            args.min_time
        );
    }
    if args.min_reps > MAX_RUNS || args.warmup > MAX_RUNS {
        bail!("--min-reps and --warmup take at most {MAX_RUNS} runs each");
    }
    crate::threads::set(args.threads)?;
    let (b0, t0, i0, h0) = args.preset.shape();
    let (batch, seq, input, hidden) = (
        args.batch.unwrap_or(b0),
        args.seq.unwrap_or(t0),
        args.input.unwrap_or(i0),
        args.hidden.unwrap_or(h0),
    );
    if batch == 0 || seq == 0 {
        bail!("--batch and --seq must be at least 1");
    }
    let config = RecurrentConfig::new(cell, input, hidden)
        .with_num_layers(args.layers)
        .with_bidirectional(args.bidirectional)
        .with_peephole(args.peephole)
        .with_layer_norm(args.layer_norm)
        .with_linear_before_reset(!args.reset_before)
        .with_weight_drop(args.weight_drop)
        .with_zoneout(args.zoneout)
        .with_batch_first(true);
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}", flags(&e)))?;
    let grad = args.mode == Mode::Train;
    let bytes = rnn::budget::product(&[batch, seq, input])
        .and_then(|n| n.checked_mul(4))
        .and_then(|x| x.checked_add(config.forward_bytes(batch.checked_mul(seq)?, grad)?));
    rnn::budget::check(bytes, || {
        format!("--batch {batch} x --seq {seq} with --input {input} and --hidden {hidden}: one run")
    })?;
    if args.mode == Mode::Train && !args.precision.trainable() {
        bail!(
            "--precision {} is for inference only: use --mode infer, or --precision bf16 to \
             train with bf16 forward products",
            args.precision
        );
    }
    let model =
        Recurrent::with_rng(config.clone(), &mut Rng::new(0))?.to_precision(args.precision)?;
    let mut rng = Rng::new(1);
    let x = ArrayD::from_shape_simple_fn(IxDyn(&[batch, seq, input]), || rng.uniform(-1.0, 1.0));

    let lengths: Vec<usize> = (0..batch).map(|_| 1 + rng.below(seq)).collect();
    // One pass; returns the output whose sum is the training loss.
    let forward = |x: &Tensor| -> Result<Tensor> {
        if args.packed {
            let packed = rnn::packed::pack_padded_sequence(x, &lengths, true, false)?;
            let (out, _, _) = model.forward_packed(&packed, None, None)?;
            Ok(out.data().clone())
        } else {
            Ok(model.forward_states(x, None, None)?.output)
        }
    };
    // Inference reads the same input every time (as PyTorch's side does); training starts from
    // a fresh copy that requires grad (PyTorch's side clones too).
    let x_infer = Tensor::new(x.clone());
    let run_once = || -> Result<()> {
        match args.mode {
            Mode::Infer => {
                rnn::no_grad(|| forward(&x_infer))?;
            }
            Mode::Train => {
                model.zero_grad();
                let x = Tensor::parameter(x.clone());
                let out = forward(&x)?;
                out.backward_with(ArrayD::ones(out.shape()))?;
            }
        }
        Ok(())
    };
    let base_rss_mb = rss_mb("VmRSS:");
    for _ in 0..args.warmup {
        run_once()?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < args.min_reps.max(1) || started.elapsed().as_secs_f64() < args.min_time {
        let t = Instant::now();
        run_once()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        0.5 * (times[times.len() / 2 - 1] + times[times.len() / 2])
    };
    let flops =
        forward_flops(&config, batch, seq) * if args.mode == Mode::Train { 3.0 } else { 1.0 };
    let gflops = flops / (median * 1e-3) / 1e9;
    let threads = rayon::current_num_threads();
    let peak_rss_mb = rss_mb("VmHWM:");
    let mode = match args.mode {
        Mode::Infer => "infer",
        Mode::Train => "train",
    };
    // The preset's name only if its sizes were kept.
    let preset = if (batch, seq, input, hidden) == args.preset.shape() {
        args.preset.name()
    } else {
        "custom"
    };
    if args.json {
        let line = serde_json::json!({
            "cell": cell.name(), "preset": preset, "batch": batch, "seq": seq,
            "input": input, "hidden": hidden, "layers": args.layers,
            "bidirectional": args.bidirectional, "mode": mode, "threads": threads,
            "packed": args.packed,
            "reps": times.len(), "median_ms": median, "min_ms": times[0],
            "max_ms": times[times.len() - 1], "gflops": gflops, "peak_rss_mb": peak_rss_mb,
            "base_rss_mb": base_rss_mb,
            "parameters": model.num_parameters(), "isa": rnn::linalg::isa().name(),
            "precision": args.precision.name(), "kernel": args.precision.kernel_name(),
            "note": args.precision.speed_note(),
        });
        crate::stdout::line(&line.to_string())?;
    } else {
        crate::speed_note::print(args.precision);
        crate::stdout::line(&format!(
            "{} {mode} batch {batch} seq {seq}{} input {input} hidden {hidden} layers {} {}threads {threads}: \
             median {median:.3} ms (min {:.3}, max {:.3}, {} runs), {gflops:.1} GFLOP/s ({}, {} products on {})",
            cell.torch_name(),
            if args.packed { " (packed, lengths uniform in 1..=seq)" } else { "" },
            args.layers,
            if args.bidirectional { "bidirectional " } else { "" },
            times[0],
            times[times.len() - 1],
            times.len(),
            rnn::linalg::isa().name(),
            args.precision,
            args.precision.kernel_name(),
        ))?;
    }
    Ok(())
}

/// The longest `--min-time`, in seconds.
const MAX_MIN_TIME: f64 = 3600.0;
/// The most `--min-reps` and `--warmup` runs.
const MAX_RUNS: usize = 1_000_000;

/// A configuration error in terms of the command's flags.
fn flags(e: &rnn::Error) -> String {
    e.to_string()
        .replace("input_size", "--input")
        .replace("hidden_size", "--hidden")
        .replace("num_layers", "--layers")
        .replace("weight_drop", "--weight-drop")
        .replace("zoneout", "--zoneout")
}

/// Multiply-adds x 2 of one forward pass over all layers and directions.
fn forward_flops(c: &RecurrentConfig, batch: usize, seq: usize) -> f64 {
    let g = c.cell.gates() as f64;
    let h = c.hidden_size as f64;
    let mut total = 0.0;
    for layer in 0..c.num_layers {
        let i = c.layer_input_size(layer) as f64;
        let per_dir = 2.0 * (batch * seq) as f64 * (i + c.state_size() as f64) * g * h
            + if c.proj_size > 0 {
                2.0 * (batch * seq) as f64 * h * c.proj_size as f64
            } else {
                0.0
            };
        total += per_dir * c.num_directions() as f64;
    }
    total
}

/// A memory figure of this process in MiB (`VmRSS:` now, `VmHWM:` peak), where the OS
/// tells it.
fn rss_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
