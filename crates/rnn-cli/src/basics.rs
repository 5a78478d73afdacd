//! `rnn basics`: the first lesson. One-hot letters h, e, l, o; three five-letter words stacked
//! into a (3, 5, 4) tensor; `RNN(input_size=4, hidden_size=2)`; the outputs and what their
//! shapes mean, in both layouts.

use std::io::Write;

use anyhow::Result;
use ndarray::{Array3, ArrayD};
use rnn::{Module, RecurrentConfig, Rnn, Tensor};

use crate::show;

/// `rnn basics [--seed N]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seed of the weight initialisation (`rnn::manual_seed`, the counterpart of
    /// `torch.manual_seed`: rnn's generator is not PyTorch's, so the same seed gives other
    /// weights than in PyTorch).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Decimals printed for each value.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=8))]
    precision: u8,
}

/// The letters and their one-hot codes.
const LETTERS: [(char, [f32; 4]); 4] = [
    ('h', [1., 0., 0., 0.]),
    ('e', [0., 1., 0., 0.]),
    ('l', [0., 0., 1., 0.]),
    ('o', [0., 0., 0., 1.]),
];

/// The lesson's three words.
const WORDS: [&str; 3] = ["hello", "eolll", "lleel"];

/// Entry point of `rnn basics`.
pub fn main(args: Args) -> Result<()> {
    let p = args.precision as usize;
    let out = &mut std::io::stdout().lock();

    writeln!(
        out,
        "One-hot letters (input_size = 4, the width of each input vector):"
    )?;
    for (c, code) in LETTERS {
        let a = ArrayD::from_shape_vec(vec![4], code.to_vec())?;
        writeln!(out, "  {c} = {}", show::array(a.view(), p, 0))?;
    }

    let inputs = one_hot_words()?;
    writeln!(out)?;
    writeln!(
        out,
        "The words {} stacked: input shape {}",
        WORDS.map(|w| format!("\"{w}\"")).join(", "),
        shape(inputs.shape())
    )?;
    writeln!(out, "inputs = {}", show::array(inputs.view(), p, 9))?;

    // torch.manual_seed(seed); cell = torch.nn.RNN(input_size=4, hidden_size=2)
    rnn::manual_seed(args.seed);
    let cell = Rnn::new(4, 2)?;
    writeln!(out)?;
    writeln!(
        out,
        "cell = {}  (torch.nn.RNN(input_size=4, hidden_size=2), seed {})",
        repr(&cell),
        args.seed
    )?;
    writeln!(
        out,
        "Only the two sizes are declared: the sequence length and the batch size are read from \
         the input."
    )?;
    let x = Tensor::new(inputs.clone());
    let (outputs, status) = rnn::no_grad(|| cell.forward(&x, None))?;
    writeln!(out)?;
    writeln!(out, "outputs, _status = cell(inputs)")?;
    writeln!(out, "outputs.shape = {}", shape(&outputs.shape()))?;
    writeln!(
        out,
        "outputs = {}",
        show::array(outputs.to_array().view(), p, 10)
    )?;
    writeln!(out, "_status.shape = {}", shape(&status.shape()))?;
    writeln!(
        out,
        "_status = {}",
        show::array(status.to_array().view(), p, 10)
    )?;

    // The same weights read with batch_first=True, to show the other layout's shapes.
    let config = RecurrentConfig::new(rnn::CellKind::Rnn, 4, 2).with_batch_first(true);
    let first = Rnn::from_config(config)?;
    rnn::io::load_state_dict(
        &first,
        &rnn::io::state_dict(&cell)
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect(),
        true,
    )?;
    let (outputs_bf, status_bf) = rnn::no_grad(|| first.forward(&x, None))?;
    let (d0, d1, d2) = (inputs.shape()[0], inputs.shape()[1], inputs.shape()[2]);
    writeln!(out)?;
    writeln!(
        out,
        "batch_first=False (the default) reads {} as (sequence {d0}, batch {d1}, features {d2}): \
         outputs {}, final hidden state (num_layers, batch, hidden) = {}.",
        shape(inputs.shape()),
        shape(&outputs.shape()),
        shape(&status.shape())
    )?;
    writeln!(
        out,
        "batch_first=True reads it as (batch {d0}, sequence {d1}, features {d2}): outputs {}, final \
         hidden state {}: the states are (num_layers, batch, hidden) in both layouts.",
        shape(&outputs_bf.shape()),
        shape(&status_bf.shape())
    )?;
    out.flush()?;
    Ok(())
}

/// `words[w][t]` one-hot: (3, 5, 4).
fn one_hot_words() -> Result<ArrayD<f32>> {
    let code = |c: char| {
        LETTERS
            .iter()
            .find(|(l, _)| *l == c)
            .map(|(_, code)| *code)
            .unwrap_or([0.0; 4])
    };
    let words: Vec<Vec<[f32; 4]>> = WORDS
        .iter()
        .map(|w| w.chars().map(code).collect())
        .collect();
    let a = Array3::from_shape_fn((words.len(), words[0].len(), 4), |(w, t, k)| words[w][t][k]);
    Ok(a.into_dyn())
}

/// `(3, 5, 2)`.
fn shape(dims: &[usize]) -> String {
    rnn::Shape::of(dims).to_string()
}

/// `RNN(4, 2)  # 16 parameters` as `RNN(4, 2) with 16 parameters`.
fn repr(cell: &Rnn) -> String {
    let shown = cell.to_string();
    let head = shown.split("  #").next().unwrap_or(&shown);
    format!("{head} with {} parameters", cell.num_parameters())
}
