//! Variable-length batches, as PyTorch's `torch.nn.utils.rnn`: [`PackedSequence`],
//! [`pad_sequence`], [`pack_padded_sequence`], [`pack_sequence`], [`pad_packed_sequence`],
//! [`unpad_sequence`], [`unpack_sequence`], and packed input to the recurrent layers
//! ([`Recurrent::forward_packed`], [`Rnn::forward_packed`], [`Lstm::forward_packed`],
//! [`Gru::forward_packed`]).
//!
//! A packed batch stores only the real time steps. The sequences are sorted by decreasing
//! length (stable, as `torch.sort(lengths, descending=True)`), then the rows are laid out time
//! step by time step: `batch_sizes[t]` rows at step `t`, one per sequence still running. For
//! lengths `[3, 5, 1]` the order is `[1, 0, 2]`, `batch_sizes = [3, 2, 2, 1, 1]` and `data` has
//! 9 rows. A layer fed a packed batch runs each sequence for exactly its own length, so `h_n`
//! is the state after each sequence's last real step, never after padding.
//!
//! Everything here is differentiable: the gradient reaching a padded or unpacked result flows
//! back to the inputs, and positions that are padding get a zero gradient.
//!
//! ```
//! use rnn::packed::{pack_sequence, pad_packed_sequence};
//! use rnn::{Rnn, Tensor};
//!
//! // Three sequences of 3 features, lengths 2, 4 and 1 (in any order).
//! let seqs: Vec<Tensor> = [2, 4, 1].iter().map(|&n| Tensor::zeros(&[n, 3])).collect();
//! let packed = pack_sequence(&seqs, false).unwrap();
//! assert_eq!(packed.batch_sizes(), [3, 2, 1, 1]);
//! assert_eq!(packed.sorted_indices(), Some(&[1, 0, 2][..]));
//!
//! rnn::manual_seed(0);
//! let rnn = Rnn::new(3, 5).unwrap();
//! let (out, h_n) = rnn.forward_packed(&packed, None).unwrap();
//! assert_eq!(out.data().shape(), [7, 5]); // 2 + 4 + 1 rows
//! assert_eq!(h_n.shape(), [1, 3, 5]); // in the order the sequences were given
//! let (padded, lengths) = pad_packed_sequence(&out, false, 0.0, None).unwrap();
//! assert_eq!(padded.shape(), [4, 3, 5]); // (T, N, H), zero past each length
//! assert_eq!(lengths, [2, 4, 1]);
//! ```
//!
//! [`Recurrent::forward_packed`]: crate::Recurrent::forward_packed
//! [`Rnn::forward_packed`]: crate::Rnn::forward_packed
//! [`Lstm::forward_packed`]: crate::Lstm::forward_packed
//! [`Gru::forward_packed`]: crate::Gru::forward_packed

mod forward;
mod gather;
mod pad;
mod sequence;

pub use pad::{
    pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence, pad_sequence_with_side,
    unpack_sequence, unpad_sequence, PaddingSide,
};
pub use sequence::PackedSequence;
