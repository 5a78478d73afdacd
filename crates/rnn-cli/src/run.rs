//! `rnn run`: a model file on an input file, outputs (and gradients) to an output file.
//!
//! The input file (safetensors) holds `input` and optionally `h0`, `c0` (LSTM), `lengths`
//! (int64, one per sequence: `input` is then a padded batch, run packed as
//! `pack_padded_sequence(input, lengths, batch_first, enforce_sorted=False)`), and upstream
//! gradients `grad_output`, `grad_h_n`, `grad_c_n`. The output file gets `output`, `h_n`,
//! `c_n` (LSTM), and, when upstream gradients were given, the gradients of
//! `sum(output*grad_output) + sum(h_n*grad_h_n) + sum(c_n*grad_c_n)` (absent terms are zero):
//! `grad.input`, `grad.h0`, `grad.c0` (when given) and `grad.<param>` for every parameter.
//! The model runs in evaluation mode (`model.eval()`: no dropout).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::{ArrayD, Dimension, IxDyn};
use rnn::io::{TensorData, TensorFile};
use rnn::model_file::load_model;
use rnn::packed::{pack_padded_sequence, pad_packed_sequence};
use rnn::{Error, Module, Recurrent, RecurrentOutput, Shape, Tensor};

/// `rnn run --model MODEL --input IN --output OUT`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model file: safetensors with the state_dict and a "config" metadata entry (JSON of the
    /// constructor arguments, e.g. {"cell": "lstm", "input_size": 4, "hidden_size": 8}), or an
    /// .onnx file holding one recurrent stack.
    #[arg(short, long, value_name = "MODEL")]
    model: PathBuf,
    /// Input file: safetensors with "input" and optionally "h0", "c0", "lengths",
    /// "grad_output", "grad_h_n", "grad_c_n".
    #[arg(short, long, value_name = "IN")]
    input: PathBuf,
    /// Where to write "output", "h_n", "c_n" and the "grad.*" tensors (f32 safetensors,
    /// written atomically: a new file replaces the old one whole; a symbolic link is followed
    /// and its target replaced; a character device or FIFO, e.g. /dev/stdout, is written
    /// through; a directory, or the --model or --input file itself, is refused).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Precision of the products: f32, bf16 or int8 (inference only: an input file with
    /// "grad_*" tensors is refused). Gate math and states stay f32. [default: the model
    /// file's: bf16 for a bf16 file, int8 for a quantized one, else f32]
    #[arg(long, value_name = "P")]
    precision: Option<rnn::Precision>,
}

/// Every key an input file may hold.
const KEYS: [&str; 7] = [
    "input",
    "h0",
    "c0",
    "lengths",
    "grad_output",
    "grad_h_n",
    "grad_c_n",
];

/// The tensors of an input file, checked for dtype and finiteness.
struct Inputs {
    input: ArrayD<f32>,
    h0: Option<ArrayD<f32>>,
    c0: Option<ArrayD<f32>>,
    lengths: Option<Vec<usize>>,
    grad_output: Option<ArrayD<f32>>,
    grad_h_n: Option<ArrayD<f32>>,
    grad_c_n: Option<ArrayD<f32>>,
}

impl Inputs {
    fn read(path: &Path) -> Result<Self> {
        let file = TensorFile::read(path)?;
        if let Some(key) = file.tensors.keys().find(|k| !KEYS.contains(&k.as_str())) {
            bail!(Error::format(
                path,
                format!(
                    "unexpected tensor \"{key}\": an input file holds \"input\" and optionally {}",
                    KEYS[1..]
                        .iter()
                        .map(|k| format!("\"{k}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            ));
        }
        let float = |key: &str| float_tensor(&file, path, key);
        let input = float("input")?.ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "no tensor named \"input\"; the tensor(s) present are: {}",
                    present(&file)
                ),
            )
        })?;
        let lengths = match file.tensors.get("lengths") {
            None => None,
            Some(t) => Some(lengths(t, path, &input)?),
        };
        Ok(Inputs {
            input,
            h0: float("h0")?,
            c0: float("c0")?,
            lengths,
            grad_output: float("grad_output")?,
            grad_h_n: float("grad_h_n")?,
            grad_c_n: float("grad_c_n")?,
        })
    }

    /// Whether upstream gradients were given.
    fn wants_grad(&self) -> bool {
        self.grad_output.is_some() || self.grad_h_n.is_some() || self.grad_c_n.is_some()
    }
}

fn present(file: &TensorFile) -> String {
    if file.tensors.is_empty() {
        "none".to_string()
    } else {
        file.tensors
            .keys()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The tensor `key` as f32 if present: F32 or F64 (rounded), every value finite.
fn float_tensor(file: &TensorFile, path: &Path, key: &str) -> Result<Option<ArrayD<f32>>> {
    let Some(t) = file.tensors.get(key) else {
        return Ok(None);
    };
    if let TensorData::I64(_) = t {
        bail!(Error::format(
            path,
            format!(
                "tensor \"{key}\" has dtype {}, expected a floating-point tensor (F32, F64, F16 \
                 or BF16)",
                file.dtype_in_file(key).unwrap_or(t.dtype())
            )
        ));
    }
    let a = t.to_f32();
    let bad = a.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        let first = a
            .indexed_iter()
            .find(|(_, v)| !v.is_finite())
            .map(|(i, v)| format!(" (the first, {v}, at {:?})", i.slice()))
            .unwrap_or_default();
        bail!(Error::format(
            path,
            format!(
                "tensor \"{key}\" has {bad} NaN or infinite value(s) of {}{first}{}; every value \
                 must be finite",
                a.len(),
                if t.dtype() == "F64" {
                    " after rounding to f32"
                } else {
                    ""
                }
            )
        ));
    }
    Ok(Some(a))
}

/// `lengths`: int64 of shape (N,), each in 1..=T, for a batched (3-D) `input`.
fn lengths(t: &TensorData, path: &Path, input: &ArrayD<f32>) -> Result<Vec<usize>> {
    let values = t
        .to_i64("lengths")
        .map_err(|e| Error::format(path, e.to_string()))?;
    if input.ndim() != 3 {
        bail!(Error::format(
            path,
            format!(
                "\"lengths\" is given, so \"input\" must be a padded batch (3-D), got shape {}",
                Shape::of(input.shape())
            )
        ));
    }
    if values.ndim() != 1 {
        bail!(Error::format(
            path,
            format!(
                "\"lengths\" must be 1-D, one length per sequence; got shape {}",
                Shape::of(values.shape())
            )
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            usize::try_from(v).ok().filter(|&v| v >= 1).ok_or_else(|| {
                Error::format(
                    path,
                    format!("\"lengths\"[{i}] is {v}; every sequence needs at least one step"),
                )
                .into()
            })
        })
        .collect()
}

/// Entry point of `rnn run`.
pub fn main(args: Args) -> Result<()> {
    for (flag, given) in [("--model", &args.model), ("--input", &args.input)] {
        if same_file(&args.output, given) {
            bail!(
                "--output {} is the file given to {flag}: writing it would destroy that file; \
                 choose another output path",
                args.output.display()
            );
        }
    }
    crate::threads::set(args.threads)?;
    let mut model = if rnn::onnx::is_onnx_path(&args.model) {
        rnn::onnx::import_one(&args.model)?
    } else {
        load_model(&args.model)?
    };
    model.set_training(false);
    let model = match args.precision {
        Some(p) => model.to_precision(p)?,
        None => model,
    };
    crate::speed_note::print(model.precision());
    let inputs = Inputs::read(&args.input)?;
    check_memory(&model, &inputs)?;
    let out = run(&model, &inputs).with_context(|| {
        format!(
            "running {} on {}",
            args.model.display(),
            args.input.display()
        )
    })?;
    check_finite_gradients(&out, &args.model)?;
    out.write(&args.output)?;
    Ok(())
}

/// Whether `a` and `b` name the same existing file (links followed).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
        _ => false,
    }
}

/// The pass's memory (outputs, gates, and what the backward pass keeps) against the budget,
/// before it runs: the input's `L * N` vectors times the model's widths.
fn check_memory(model: &Recurrent, inputs: &Inputs) -> Result<()> {
    let shape = inputs.input.shape();
    let vectors = shape[..shape.len().saturating_sub(1)]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let bytes = vectors.and_then(|v| model.config().forward_bytes(v, inputs.wants_grad()));
    rnn::budget::check(bytes, || {
        format!(
            "running {} on an input of shape {}",
            model.config().repr(),
            Shape::of(shape)
        )
    })?;
    Ok(())
}

/// Every gradient must be finite: a NaN or infinite gradient means the weights or the upstream
/// gradients overflow float32 arithmetic, and is an error naming the first such tensor. (The
/// outputs are written as computed, as PyTorch returns them.)
fn check_finite_gradients(out: &TensorFile, model_path: &Path) -> Result<()> {
    for (key, t) in &out.tensors {
        if !key.starts_with("grad.") {
            continue;
        }
        let values = t.to_f32();
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            bail!(
                "the gradient \"{key}\" has {bad} NaN or infinite value(s) of {}: the weights \
                 of {} or the upstream gradients overflow float32 arithmetic; nothing was written",
                values.len(),
                model_path.display()
            );
        }
    }
    Ok(())
}

/// Runs the model on `inputs`; the outputs, and the gradients when asked for.
fn run(model: &Recurrent, inputs: &Inputs) -> Result<TensorFile> {
    let mut file = TensorFile::new();
    if !inputs.wants_grad() {
        let out = rnn::no_grad(|| {
            forward(
                model,
                &Tensor::new(inputs.input.clone()),
                inputs.h0.clone().map(Tensor::new).as_ref(),
                inputs.c0.clone().map(Tensor::new).as_ref(),
                inputs.lengths.as_deref(),
            )
        })?;
        insert_outputs(&mut file, &out);
        return Ok(file);
    }

    let x = Tensor::parameter(inputs.input.clone());
    let h0 = inputs.h0.clone().map(Tensor::parameter);
    let c0 = inputs.c0.clone().map(Tensor::parameter);
    let out = forward(
        model,
        &x,
        h0.as_ref(),
        c0.as_ref(),
        inputs.lengths.as_deref(),
    )?;
    if inputs.grad_c_n.is_some() && out.c_n.is_none() {
        bail!(Error::Invalid(format!(
            "\"grad_c_n\" is given but {} has no cell state c_n (only LSTM has one)",
            model.config().cell.torch_name()
        )));
    }
    // loss = sum(output*grad_output) + sum(h_n*grad_h_n) + sum(c_n*grad_c_n): by linearity its
    // gradient is the sum of one backward pass per term, each accumulating into the leaves.
    let terms = [
        (
            "grad_output",
            "output",
            Some(&out.output),
            &inputs.grad_output,
        ),
        ("grad_h_n", "h_n", Some(&out.h_n), &inputs.grad_h_n),
        ("grad_c_n", "c_n", out.c_n.as_ref(), &inputs.grad_c_n),
    ];
    for (gname, tname, t, g) in &terms {
        if let (Some(t), Some(g)) = (t, g) {
            let shape = t.shape();
            if g.shape() != shape.as_slice() {
                bail!(Error::shape_hint(
                    *gname,
                    Shape(shape).to_string(),
                    g.shape(),
                    format!(
                        "an upstream gradient has the shape of what it multiplies, here {tname}"
                    )
                ));
            }
        }
    }
    for (_, _, t, g) in terms {
        if let (Some(t), Some(g)) = (t, g) {
            t.backward_with(g.clone())?;
        }
    }

    insert_outputs(&mut file, &out);
    file.insert("grad.input", grad_or_zeros(&x));
    if let Some(h0) = &h0 {
        file.insert("grad.h0", grad_or_zeros(h0));
    }
    if let Some(c0) = &c0 {
        file.insert("grad.c0", grad_or_zeros(c0));
    }
    for (name, p) in model.named_parameters() {
        file.insert(format!("grad.{name}"), grad_or_zeros(&p));
    }
    Ok(file)
}

fn grad_or_zeros(t: &Tensor) -> ArrayD<f32> {
    t.grad().unwrap_or_else(|| ArrayD::zeros(IxDyn(&t.shape())))
}

fn insert_outputs(file: &mut TensorFile, out: &RecurrentOutput) {
    file.insert("output", out.output.to_array());
    file.insert("h_n", out.h_n.to_array());
    if let Some(c_n) = &out.c_n {
        file.insert("c_n", c_n.to_array());
    }
}

/// One pass: plain, or packed when `lengths` is given (output padded back to the input's
/// length with zeros; states in the caller's batch order).
fn forward(
    model: &Recurrent,
    input: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    lengths: Option<&[usize]>,
) -> Result<RecurrentOutput> {
    let Some(lengths) = lengths else {
        return Ok(model.forward_states(input, h0, c0)?);
    };
    let batch_first = model.config().batch_first;
    let packed = pack_padded_sequence(input, lengths, batch_first, false)?;
    let (out, h_n, c_n) = model.forward_packed(&packed, h0, c0)?;
    let total_length = input.shape()[usize::from(batch_first)];
    let (output, _) = pad_packed_sequence(&out, batch_first, 0.0, Some(total_length))?;
    Ok(RecurrentOutput { output, h_n, c_n })
}
