//! Lesson 3, "charseq": a sentence as one sequence; an RNN learns each next character.
//!
//! `cargo run --release -p rnn --example charseq`
//!
//! The PyTorch lesson, line by line, next to this file:
//!
//! ```text
//! torch.manual_seed(0)                                rnn::manual_seed(seed); // SEED = 5, see SEED
//! sample = " if you want you"                         let sample = " if you want you";
//! char_set = list(set(sample))                        let char_set: Vec<char> =
//!                                                         sample.chars().collect::<BTreeSet<_>>().into_iter().collect();
//! char_dic = {c: i for i, c                           let char_dic: HashMap<char, usize> =
//!             in enumerate(char_set)}                     char_set.iter().enumerate().map(|(i, &c)| (c, i)).collect();
//! dic_size = len(char_dic)                            let dic_size = char_dic.len();
//! sample_idx = [char_dic[c] for c in sample]          let sample_idx: Vec<usize> = sample.chars().map(|c| char_dic[&c]).collect();
//! x_data = [sample_idx[:-1]]                          let x_data = Array2::from_shape_vec((1, n - 1), sample_idx[..n - 1].to_vec());
//! x_one_hot = [np.eye(dic_size)[x] for x in x_data]   let x_one_hot = rnn::ops::one_hot(&x_data, dic_size)?;
//! y_data = [sample_idx[1:]]                           let y_data: Array1<i64> = sample_idx[1..].iter().map(|&i| i as i64).collect();
//! rnn = torch.nn.RNN(dic_size, hidden_size,           let rnn = Rnn::from_config(RecurrentConfig::new(
//!                    batch_first=True)                    CellKind::Rnn, dic_size, hidden_size).with_batch_first(true))?;
//! criterion = torch.nn.CrossEntropyLoss()             let criterion = CrossEntropyLoss::new();
//! optimizer = optim.Adam(rnn.parameters(), 0.1)       let mut optimizer = Adam::new(rnn.parameters(), 0.1)?;
//! for i in range(50):                                 for i in 0..50 {
//!     optimizer.zero_grad()                               optimizer.zero_grad();
//!     outputs, _status = rnn(X)                           let (outputs, _status) = rnn.forward(&x, None)?;
//!     loss = criterion(outputs.view(-1, dic_size),        let loss = criterion.forward(&outputs.reshape(&[-1, dic_size])?,
//!                      Y.view(-1))                                                     &y_data)?;
//!     loss.backward()                                     loss.backward()?;
//!     optimizer.step()                                    optimizer.step()?;
//!     result = outputs.data.numpy().argmax(axis=2)        let result = outputs.argmax(2)?;
//! ```
//!
//! `set()` has no fixed order in Python; here the alphabet is sorted, so runs are reproducible.
//! Expected: the prediction becomes "if you want you".

use std::collections::{BTreeSet, HashMap};

use ndarray::{Array1, Array2};
use rnn::loss::CrossEntropyLoss;
use rnn::optim::{Adam, Optimizer};
use rnn::{CellKind, Module, RecurrentConfig, Rnn};

/// The seed the lesson is run with (`torch.manual_seed(0)` in PyTorch; `rnn`'s generator is
/// not PyTorch's, so seed numbers do not carry over). PyTorch's own seed 0 leaves hihello in a
/// local minimum ("ilello"), as about a third of all seeds do in both PyTorch and `rnn`; seed 5
/// reaches every lesson's expected result.
pub const SEED: u64 = 5;

/// What the lesson ends with.
pub struct Outcome {
    /// The loss at each iteration.
    pub losses: Vec<f32>,
    /// The prediction string of the last iteration.
    pub prediction: String,
}

/// Runs the lesson, printing one line per iteration as the PyTorch lesson does.
pub fn lesson(seed: u64) -> rnn::Result<Outcome> {
    rnn::manual_seed(seed);

    let sample = " if you want you";

    // make dictionary
    let char_set: Vec<char> = sample
        .chars()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let char_dic: HashMap<char, usize> =
        char_set.iter().enumerate().map(|(i, &c)| (c, i)).collect();

    // hyper parameters
    let dic_size = char_dic.len();
    let hidden_size = char_dic.len();
    let learning_rate = 0.1;

    // data setting
    let sample_idx: Vec<usize> = sample.chars().map(|c| char_dic[&c]).collect();
    let n = sample_idx.len();
    let x_data = Array2::from_shape_vec((1, n - 1), sample_idx[..n - 1].to_vec())
        .expect("one row of n - 1 indices");
    let x_one_hot = rnn::ops::one_hot(&x_data, dic_size)?; // (1, 15, dic_size)
    let y_data: Array1<i64> = sample_idx[1..].iter().map(|&i| i as i64).collect(); // Y.view(-1)

    let x = x_one_hot;

    // declare RNN
    let rnn = Rnn::from_config(
        RecurrentConfig::new(CellKind::Rnn, dic_size, hidden_size).with_batch_first(true),
    )?;

    // loss & optimizer setting
    let criterion = CrossEntropyLoss::new();
    let mut optimizer = Adam::new(rnn.parameters(), learning_rate)?;

    // start training
    let mut losses = Vec::new();
    let mut result_str = String::new();
    for i in 0..50 {
        optimizer.zero_grad();
        let (outputs, _status) = rnn.forward(&x, None)?;
        let loss = criterion.forward(&outputs.reshape(&[-1, dic_size as isize])?, &y_data)?;
        loss.backward()?;
        optimizer.step()?;

        let result = outputs.argmax(2)?;
        result_str = result.iter().map(|&c| char_set[c]).collect();
        let loss = loss.item()?;
        losses.push(loss);
        println!(
            "{i} loss: {loss} prediction: {:?} true Y: {:?} prediction str: {result_str}",
            result.iter().collect::<Vec<_>>(),
            y_data.to_vec(),
        );
    }
    Ok(Outcome {
        losses,
        prediction: result_str,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = lesson(SEED)?;
    println!(
        "final loss {:.4} (first {:.4}), prediction {:?}",
        out.losses[out.losses.len() - 1],
        out.losses[0],
        out.prediction
    );
    Ok(())
}
