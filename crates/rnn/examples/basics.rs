//! Lesson 1, "basics": one RNN layer over one-hot letters, and what the shapes of its outputs
//! mean. The batch size and the sequence length are never declared: they are read from the
//! input.
//!
//! `cargo run --release -p rnn --example basics` (the CLI's `rnn basics` tells the same story
//! at more length).
//!
//! The PyTorch lesson, line by line, next to this file:
//!
//! ```text
//! torch.manual_seed(0)                                 rnn::manual_seed(0); // rnn's generator, not PyTorch's
//! input_size = 4                                       let input_size = 4;
//! hidden_size = 2                                      let hidden_size = 2;
//! h = [1, 0, 0, 0]                                     let h = [1., 0., 0., 0.];
//! e = [0, 1, 0, 0]                                     let e = [0., 1., 0., 0.];
//! l = [0, 0, 1, 0]                                     let l = [0., 0., 1., 0.];
//! o = [0, 0, 0, 1]                                     let o = [0., 0., 0., 1.];
//! input_data_np = np.array([[h, e, l, l, o],           let words = [[h, e, l, l, o],
//!                           [e, o, l, l, l],                        [e, o, l, l, l],
//!                           [l, l, e, e, l]],                       [l, l, e, e, l]];
//!                          dtype=np.float32)           let input_data_np = Array3::from_shape_fn((3, 5, 4), ...);
//! input_data = torch.Tensor(input_data_np)             let input_data = Tensor::from(input_data_np.into_dyn());
//! rnn = torch.nn.RNN(input_size, hidden_size)          let rnn = Rnn::new(input_size, hidden_size)?;
//! outputs, _status = rnn(input_data)                   let (outputs, status) = rnn.forward(&input_data, None)?;
//! print(outputs)                                       println!("{}", outputs.to_array());
//! print(outputs.size())                                println!("{:?}", outputs.shape());
//! ```
//!
//! Expected: outputs of shape (3, 5, 2). The lesson reads (3, 5, 4) as 3 words of 5 letters,
//! but PyTorch's default layout (`batch_first=False`) reads it as a sequence of 3 steps over a
//! batch of 5: the output shape is (3, 5, 2) either way, the final hidden state tells them
//! apart: (1, 5, 2) here, (1, 3, 2) with `batch_first=True`.

use ndarray::Array3;
use rnn::{CellKind, RecurrentConfig, Rnn, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rnn::manual_seed(0);

    // One hot encoding
    let input_size = 4;
    let hidden_size = 2;
    let h = [1., 0., 0., 0.];
    let e = [0., 1., 0., 0.];
    let l = [0., 0., 1., 0.];
    let o = [0., 0., 0., 1.];
    let words = [[h, e, l, l, o], [e, o, l, l, l], [l, l, e, e, l]];
    let input_data_np = Array3::from_shape_fn((3, 5, 4), |(w, t, k)| words[w][t][k] as f32);

    // transform as torch tensor
    let input_data = Tensor::from(input_data_np.into_dyn());

    // declare RNN
    let rnn = Rnn::new(input_size, hidden_size)?;

    // check output
    let (outputs, status) = rnn.forward(&input_data, None)?;
    println!("{:.4}", outputs.to_array());
    println!("outputs: {:?}", outputs.shape());
    println!(
        "_status: {:?}  (num_layers, batch = 5, hidden_size)",
        status.shape()
    );

    // The same words read as a batch of 3 sequences of 5 letters.
    let batch_first = Rnn::from_config(
        RecurrentConfig::new(CellKind::Rnn, input_size, hidden_size).with_batch_first(true),
    )?;
    let (outputs, status) = batch_first.forward(&input_data, None)?;
    println!("batch_first=True:");
    println!("outputs: {:?}", outputs.shape());
    println!(
        "_status: {:?}  (num_layers, batch = 3, hidden_size)",
        status.shape()
    );
    Ok(())
}
