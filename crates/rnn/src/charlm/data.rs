//! Batches for truncated backprop through time, and evaluation over a whole text.
//!
//! # Training streams
//!
//! The training text (`n` indices) is cut into `N = batch` contiguous streams of `S` characters,
//! each read in chunks of `L = seq_len`; step `t` is chunk `k` of epoch `e`:
//!
//! ```text
//! S = (n - L) / N                    stream length        C = S / L   chunks per epoch
//! e = t / C,  k = t % C              epoch and chunk      o_e = offset(seed, e) in [0, L)
//! input[i, b]  = text[o_e + b*S + k*L + i]                (L, N), sequence first
//! target[i, b] = text[o_e + b*S + k*L + i + 1]
//! ```
//!
//! The hidden state is carried from chunk `k` to chunk `k + 1` of each stream (detached: the
//! gradient stops at the chunk boundary) and reset to zero when an epoch starts. The offset
//! `o_e` moves the chunk boundaries from one epoch to the next. Everything is a pure function of
//! the seed and the step, so a resumed run reads exactly what an uninterrupted one would.
//!
//! `offset(seed, e) = Rng::new(seed + e * 0x9E3779B97F4A7C15).below(L)` (wrapping u64
//! arithmetic; see [`crate::Rng`]); `tools/train_charlm.py` computes the same numbers.
//!
//! # Evaluation
//!
//! [`evaluate`] reads a whole text as `N = clamp((n - 1) / 256, 1, 64)` streams of
//! `S = (n - 1) / N` characters, in chunks of at most `L`, carrying the state, and averages the
//! loss of the `N * S` predictions.

use ndarray::Array2;

use super::model::{CharLm, State};
use crate::error::{Error, Result};
use crate::module::Module;
use crate::rng::Rng;
use crate::tensor::no_grad;

/// The golden-ratio increment that separates the offset generators of successive epochs.
const EPOCH_STRIDE: u64 = 0x9E37_79B9_7F4A_7C15;

/// Evaluation streams are at least this long (fewer streams for short texts).
pub const EVAL_MIN_STREAM: usize = 256;

/// At most this many evaluation streams.
pub const EVAL_MAX_STREAMS: usize = 64;

/// The start offset of epoch `epoch`'s streams, in `[0, seq_len)`.
pub fn epoch_offset(seed: u64, epoch: u64, seq_len: usize) -> usize {
    Rng::new(seed.wrapping_add(epoch.wrapping_mul(EPOCH_STRIDE))).below(seq_len)
}

/// One training chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Input indices `(L, N)`.
    pub inputs: Array2<usize>,
    /// Target indices `(L, N)`: the inputs shifted by one character.
    pub targets: Array2<usize>,
    /// The epoch (0-based).
    pub epoch: u64,
    /// Whether this chunk starts an epoch (the state is reset before it).
    pub first: bool,
}

/// The training text cut into streams (see the module docs).
#[derive(Clone, Debug)]
pub struct Streams {
    tokens: Vec<usize>,
    batch: usize,
    seq_len: usize,
    seed: u64,
    stream_len: usize,
    chunks: usize,
}

impl Streams {
    /// Streams over `tokens`. Fails if the text is shorter than one batch needs,
    /// `batch * seq_len + seq_len` characters (one chunk per stream, plus the room the offset
    /// and the last target take).
    pub fn new(tokens: Vec<usize>, batch: usize, seq_len: usize, seed: u64) -> Result<Streams> {
        if batch == 0 || seq_len == 0 {
            return Err(Error::Invalid(format!(
                "batch ({batch}) and seq_len ({seq_len}) must be at least 1"
            )));
        }
        let need = batch
            .checked_mul(seq_len)
            .and_then(|n| n.checked_add(seq_len))
            .ok_or_else(|| Error::Invalid("batch * seq_len is too large".into()))?;
        if tokens.len() < need {
            let s = |n: usize| if n == 1 { "" } else { "s" };
            return Err(Error::Invalid(format!(
                "the training text has {} character{}, smaller than one batch: {batch} stream{} \
                 x {seq_len} character{} need at least {need}; use more text or a smaller batch \
                 or seq_len",
                tokens.len(),
                s(tokens.len()),
                s(batch),
                s(seq_len)
            )));
        }
        let stream_len = (tokens.len() - seq_len) / batch;
        Ok(Streams {
            chunks: stream_len / seq_len,
            tokens,
            batch,
            seq_len,
            seed,
            stream_len,
        })
    }

    /// `C`: chunks (steps) per epoch.
    pub fn chunks_per_epoch(&self) -> usize {
        self.chunks
    }

    /// `N`: streams per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// `L`: characters per chunk.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Characters in the training text.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false (construction needs at least one batch).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The chunk of step `step` (0-based).
    pub fn chunk(&self, step: u64) -> Chunk {
        let c = self.chunks as u64;
        let (epoch, k) = (step / c, (step % c) as usize);
        let base = epoch_offset(self.seed, epoch, self.seq_len) + k * self.seq_len;
        let (l, n, s) = (self.seq_len, self.batch, self.stream_len);
        let inputs = Array2::from_shape_fn((l, n), |(i, b)| self.tokens[base + b * s + i]);
        let targets = Array2::from_shape_fn((l, n), |(i, b)| self.tokens[base + b * s + i + 1]);
        Chunk {
            inputs,
            targets,
            epoch,
            first: k == 0,
        }
    }
}

/// The loss of a model over a whole text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy, nats per character.
    pub loss: f64,
    /// Characters predicted.
    pub chars: usize,
}

impl Evaluation {
    /// Bits per character: `loss / ln 2`.
    pub fn bpc(&self) -> f64 {
        self.loss / std::f64::consts::LN_2
    }
}

/// The mean loss of `model` predicting each character of `tokens` from those before it (see the
/// module docs for the streams), in evaluation mode (no dropout) and without a graph. Needs at
/// least 2 characters.
pub fn evaluate(model: &mut CharLm, tokens: &[usize], seq_len: usize) -> Result<Evaluation> {
    let n = tokens.len();
    if n < 2 {
        return Err(Error::Invalid(format!(
            "evaluation needs at least 2 characters, got {n}"
        )));
    }
    let seq_len = seq_len.max(1);
    let streams = ((n - 1) / EVAL_MIN_STREAM).clamp(1, EVAL_MAX_STREAMS);
    let s = (n - 1) / streams;
    let was_training = model.is_training();
    model.set_training(false);
    let result = no_grad(|| -> Result<Evaluation> {
        let mut state: Option<State> = None;
        let mut total = 0f64;
        let mut start = 0;
        while start < s {
            let l = seq_len.min(s - start);
            let inputs = Array2::from_shape_fn((l, streams), |(i, b)| tokens[b * s + start + i]);
            let targets =
                Array2::from_shape_fn((l, streams), |(i, b)| tokens[b * s + start + i + 1]);
            let (loss, next) = model.loss_sum(&inputs, &targets, state.as_ref())?;
            total += f64::from(loss.item()?);
            state = Some(next);
            start += l;
        }
        Ok(Evaluation {
            loss: total / (streams * s) as f64,
            chars: streams * s,
        })
    });
    model.set_training(was_training);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_streams() {
        let tokens: Vec<usize> = (0..1000).collect();
        let s = Streams::new(tokens, 4, 10, 7).unwrap();
        // S = (1000 - 10) / 4 = 247, C = 24.
        assert_eq!(s.chunks_per_epoch(), 24);
        let c0 = s.chunk(0);
        let o = epoch_offset(7, 0, 10);
        assert!(c0.first && c0.epoch == 0);
        assert_eq!(c0.inputs[[0, 0]], o);
        assert_eq!(c0.inputs[[3, 2]], o + 2 * 247 + 3);
        assert_eq!(c0.targets[[9, 3]], o + 3 * 247 + 10);
        let c1 = s.chunk(1);
        assert!(!c1.first);
        assert_eq!(c1.inputs[[0, 1]], o + 247 + 10);
        let c24 = s.chunk(24);
        assert!(c24.first && c24.epoch == 1);
        assert_eq!(c24.inputs[[0, 0]], epoch_offset(7, 1, 10));
        // Every index stays inside the text for every epoch.
        for step in 0..24 * 20 {
            let c = s.chunk(step);
            assert!(c.targets.iter().all(|&t| t < 1000));
        }
        // The offsets differ between epochs and seeds.
        let offsets: Vec<usize> = (0..8).map(|e| epoch_offset(7, e, 10)).collect();
        assert!(offsets.iter().any(|&o| o != offsets[0]), "{offsets:?}");
    }

    #[test]
    fn too_small_is_an_error() {
        let err = Streams::new(vec![0; 54], 5, 10, 0).unwrap_err().to_string();
        assert!(
            err.contains("smaller than one batch") && err.contains("60"),
            "{err}"
        );
        assert!(Streams::new(vec![0; 60], 5, 10, 0).is_ok());
    }
}
