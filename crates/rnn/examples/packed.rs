//! Lesson 7, packed sequences: a batch of words of different lengths through one RNN, with no
//! step ever run on padding.
//!
//! `cargo run --release -p rnn --example packed`
//!
//! The PyTorch lesson, line by line, next to this file:
//!
//! ```text
//! data = ['hello world', 'midnight', 'calculation',    let words = ["hello world", "midnight", "calculation",
//!         'path', 'short circuit']                                  "path", "short circuit"];
//! char_set = sorted(set(''.join(data)))               let alphabet = sorted unique characters;
//! X = [torch.LongTensor([char2idx[c] for c in seq])    let seqs: Vec<Tensor> = words as index sequences;
//!      for seq in data]
//! padded = pad_sequence(X, batch_first=True)           let padded = pad_sequence(&seqs, true, 0.0)?;  // (5, 13)
//! lengths = torch.LongTensor([len(s) for s in X])      let lengths: Vec<usize> = ...;
//! sorted_lengths, sorted_idx = lengths.sort(           let order = indices sorted by length, descending;
//!                                  descending=True)
//! sorted_X = padded[sorted_idx]                        let sorted = Tensor::stack(&rows in that order, 0)?;
//! one_hot = torch.eye(len(char_set))[sorted_X]         let one_hot = rnn::ops::one_hot(&indices, alphabet.len())?;
//! packed = pack_padded_sequence(one_hot,               let packed = pack_padded_sequence(&one_hot,
//!              sorted_lengths, batch_first=True)                    &sorted_lengths, true, true)?;
//! rnn = torch.nn.RNN(len(char_set), 30,                let rnn = Rnn::from_config(RecurrentConfig::new(
//!                    batch_first=True)                     CellKind::Rnn, alphabet.len(), 30).with_batch_first(true))?;
//! packed_out, h_n = rnn(packed)                        let (packed_out, h_n) = rnn.forward_packed(&packed, None)?;
//! out, out_lengths = pad_packed_sequence(              let (out, out_lengths) = pad_packed_sequence(
//!                        packed_out, batch_first=True)                        &packed_out, true, 0.0, None)?;
//! ```
//!
//! Here the alphabet is the sorted unique characters of the words (the space included), and
//! the padding index 0 is the space: padded positions are never read, so what they hold does
//! not matter. Expected: each word's final hidden state, and each of its outputs, equals
//! running that word alone with no padding (differences at f32 rounding level, or exactly 0).

use rnn::packed::{pack_padded_sequence, pad_packed_sequence, pad_sequence};
use rnn::{CellKind, RecurrentConfig, Rnn, Shape, Tensor};

/// The words of the lesson.
pub const WORDS: [&str; 5] = [
    "hello world",
    "midnight",
    "calculation",
    "path",
    "short circuit",
];

/// What the lesson shows.
pub struct Outcome {
    /// The alphabet: the sorted unique characters of the words.
    pub alphabet: Vec<char>,
    /// `pad_sequence(batch_first=True)` of the index sequences: (5, 13).
    pub padded_shape: Vec<usize>,
    /// The batch order after sorting by length, descending.
    pub order: Vec<usize>,
    /// The packed batch's `batch_sizes`.
    pub batch_sizes: Vec<usize>,
    /// The padded output's shape, (5, 13, 30).
    pub output_shape: Vec<usize>,
    /// Lengths returned by `pad_packed_sequence` (sorted order, as the batch was packed).
    pub output_lengths: Vec<usize>,
    /// Per word (in `WORDS` order): max |h_n(batch) - h_n(alone)|.
    pub max_h_diff: Vec<f32>,
    /// Per word: max |output(batch) - output(alone)| over the word's steps.
    pub max_output_diff: Vec<f32>,
}

/// Runs the lesson, printing the shapes as the PyTorch lesson does.
pub fn lesson() -> rnn::Result<Outcome> {
    rnn::manual_seed(0);

    // The alphabet and the words as index sequences.
    let mut alphabet: Vec<char> = WORDS.iter().flat_map(|w| w.chars()).collect();
    alphabet.sort_unstable();
    alphabet.dedup();
    let index = |c: char| {
        alphabet
            .iter()
            .position(|&a| a == c)
            .expect("from the words")
    };
    let sequences: Vec<Vec<usize>> = WORDS
        .iter()
        .map(|w| w.chars().map(index).collect())
        .collect();
    println!(
        "alphabet ({} characters): {:?}",
        alphabet.len(),
        alphabet.iter().collect::<String>()
    );
    for (w, s) in WORDS.iter().zip(&sequences) {
        println!("{w:>15} -> {s:?}");
    }

    // pad_sequence: the index sequences, stacked and padded with 0, batch first.
    let seqs: Vec<Tensor> = sequences
        .iter()
        .map(|s| Tensor::from_vec(&[s.len()], s.iter().map(|&i| i as f32).collect()))
        .collect::<rnn::Result<_>>()?;
    let padded = pad_sequence(&seqs, true, 0.0)?;
    println!("padded: {}", Shape(padded.shape())); // (5, 13)

    // Sort by length, descending (stable, as torch.sort here).
    let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
    let mut order: Vec<usize> = (0..WORDS.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let sorted_lengths: Vec<usize> = order.iter().map(|&i| lengths[i]).collect();
    let rows = order
        .iter()
        .map(|&i| padded.select(0, i as isize))
        .collect::<rnn::Result<Vec<_>>>()?;
    let sorted = Tensor::stack(&rows, 0)?;
    println!("lengths: {lengths:?}, sorted: {sorted_lengths:?}, order: {order:?}");

    // One-hot characters (B, T, C), then pack.
    let indices = sorted.data().mapv(|v| v as usize);
    let one_hot = rnn::ops::one_hot(&indices, alphabet.len())?;
    println!("one-hot input: {}", Shape(one_hot.shape()));
    let packed = pack_padded_sequence(&one_hot, &sorted_lengths, true, true)?;
    println!(
        "PackedSequence: data {}, batch_sizes {:?}",
        Shape(packed.data().shape()),
        packed.batch_sizes()
    );

    // The RNN on the packed batch, then back to a padded tensor.
    let rnn = Rnn::from_config(
        RecurrentConfig::new(CellKind::Rnn, alphabet.len(), 30).with_batch_first(true),
    )?;
    println!("{rnn}");
    let (packed_out, h_n) = rnn.forward_packed(&packed, None)?;
    let (out, out_lengths) = pad_packed_sequence(&packed_out, true, 0.0, None)?;
    println!(
        "packed output: data {}; padded output {}, lengths {out_lengths:?}; h_n {}",
        Shape(packed_out.data().shape()),
        Shape(out.shape()),
        Shape(h_n.shape())
    );

    // Each word alone: (1, L, C), no padding, no packing.
    let (out_a, h_a) = (out.to_array(), h_n.to_array());
    let mut max_h_diff = vec![0.0; WORDS.len()];
    let mut max_output_diff = vec![0.0; WORDS.len()];
    for (k, &w) in order.iter().enumerate() {
        let alone = rnn::ops::one_hot(
            &ndarray::Array2::from_shape_vec((1, lengths[w]), sequences[w].clone()).expect("1 x L"),
            alphabet.len(),
        )?;
        let (o, h) = rnn.forward(&alone, None)?;
        let (o, h) = (o.to_array(), h.to_array());
        let max_diff = |a: ndarray::ArrayViewD<f32>, b: ndarray::ArrayViewD<f32>| {
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        let hb = h_a.slice(ndarray::s![.., k..k + 1, ..]).into_dyn();
        let ob = out_a
            .slice(ndarray::s![k..k + 1, ..lengths[w], ..])
            .into_dyn();
        max_h_diff[w] = max_diff(hb, h.view());
        max_output_diff[w] = max_diff(ob, o.view());
        println!(
            "{:>15} (length {:2}): max |h_n - alone| = {:e}, max |output - alone| = {:e}",
            WORDS[w], lengths[w], max_h_diff[w], max_output_diff[w]
        );
    }

    Ok(Outcome {
        alphabet,
        padded_shape: padded.shape(),
        order,
        batch_sizes: packed.batch_sizes().to_vec(),
        output_shape: out.shape(),
        output_lengths: out_lengths,
        max_h_diff,
        max_output_diff,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = lesson()?;
    let worst = out
        .max_h_diff
        .iter()
        .chain(&out.max_output_diff)
        .fold(0.0f32, |a, &b| a.max(b));
    println!("largest difference between the batch and the words alone: {worst:e}");
    Ok(())
}
