//! The `torch.nn.utils.rnn` functions between padded tensors, lists of sequences and
//! [`PackedSequence`]s, with the checks of their arguments.

use super::gather::{gather_rows, RowSource};
use super::sequence::PackedSequence;
use crate::error::{Error, Result, Shape};
use crate::tensor::Tensor;

/// `batch_sizes` of lengths sorted in decreasing order: at step t, the number of lengths > t.
fn batch_sizes_of(sorted: &[usize]) -> Vec<usize> {
    let steps = sorted.first().copied().unwrap_or(0);
    (0..steps)
        .map(|t| sorted.iter().take_while(|&&l| l > t).count())
        .collect()
}

/// `torch.sort(lengths, descending=True).indices` with ties in their original order (PyTorch's
/// CPU sort is stable; the fixtures check the tie order).
fn sort_descending(lengths: &[usize]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    idx
}

/// `enforce_sorted = true` requires non-increasing lengths; the error names the first pair
/// out of order.
fn check_sorted(what: &str, lengths: &[usize]) -> Result<()> {
    if let Some(k) = lengths.windows(2).position(|w| w[1] > w[0]) {
        return Err(Error::Invalid(format!(
            "{what}: lengths must be sorted in decreasing order when enforce_sorted=true, but \
             lengths[{k}] = {} < lengths[{}] = {} (lengths {lengths:?}); sort the batch first or \
             pass enforce_sorted=false to have it sorted (and unsorted) for you",
            lengths[k],
            k + 1,
            lengths[k + 1]
        )));
    }
    Ok(())
}

/// `(T, B)` of a padded tensor, after checking that it has both dimensions.
fn padded_dims(what: &str, shape: &[usize], batch_first: bool) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::shape_hint(
            format!("{what} input"),
            if batch_first {
                "(B, T, *) with batch_first=true"
            } else {
                "(T, B, *) with batch_first=false"
            },
            shape,
            "a padded batch needs a time dimension and a batch dimension",
        ));
    }
    Ok(if batch_first {
        (shape[1], shape[0])
    } else {
        (shape[0], shape[1])
    })
}

/// Checks `lengths` against a padded tensor of `steps` time steps and `batch` sequences:
/// one length per sequence, none longer than `steps`, and (when `allow_zero` is false) none 0.
fn check_lengths(
    what: &str,
    lengths: &[usize],
    shape: &[usize],
    batch_first: bool,
    allow_zero: bool,
) -> Result<()> {
    let (steps, batch) = padded_dims(what, shape, batch_first)?;
    let layout = if batch_first {
        "batch_first=true"
    } else {
        "batch_first=false"
    };
    if lengths.len() != batch {
        return Err(Error::shape_hint(
            format!("{what} lengths"),
            Shape(vec![batch]).to_string(),
            &[lengths.len()],
            format!(
                "one length per sequence: the input {} with {layout} has batch size {batch}, got {} lengths",
                Shape::of(shape),
                lengths.len()
            ),
        ));
    }
    if batch == 0 {
        return Err(Error::Invalid(format!(
            "{what}: the input {} has no sequences (batch size 0)",
            Shape::of(shape)
        )));
    }
    for (b, &len) in lengths.iter().enumerate() {
        if len == 0 && !allow_zero {
            return Err(Error::Invalid(format!(
                "{what}: sequence {b} has length 0 (lengths {lengths:?}); every sequence must have \
                 at least one step, drop empty sequences before packing"
            )));
        }
        if len > steps {
            return Err(Error::Invalid(format!(
                "{what}: sequence {b} has length {len}, but the padded input {} with {layout} has \
                 only {steps} time steps",
                Shape::of(shape)
            )));
        }
    }
    Ok(())
}

/// Checks a list of sequences (L_k, *) for [`pad_sequence`] and [`pack_sequence`]: not empty,
/// each at least 1-D, all with the trailing shape of the first. Returns the lengths and the
/// trailing shape.
fn check_sequences(what: &str, seqs: &[Tensor]) -> Result<(Vec<usize>, Vec<usize>)> {
    let first = seqs.first().ok_or_else(|| {
        Error::Invalid(format!(
            "{what}: expected a non-empty list of sequences, got an empty list"
        ))
    })?;
    let s0 = first.shape();
    let mut lengths = Vec::with_capacity(seqs.len());
    for (k, t) in seqs.iter().enumerate() {
        let s = t.shape();
        if s.is_empty() {
            return Err(Error::shape_hint(
                format!("{what} sequence {k}"),
                "(L, *)",
                &s,
                "each sequence needs a time dimension (dim 0)",
            ));
        }
        if s[1..] != s0[1..] {
            let mut expected: Vec<String> = s0.iter().map(|d| d.to_string()).collect();
            expected[0] = "*".into();
            let expected = if expected.len() == 1 {
                "(*,)".to_string()
            } else {
                format!("({})", expected.join(", "))
            };
            return Err(Error::shape_hint(
                format!("{what} sequence {k}"),
                expected,
                &s,
                format!(
                    "every sequence must have the trailing dimensions of sequence 0 {}; only the \
                     length (dim 0) may differ",
                    Shape::of(&s0)
                ),
            ));
        }
        lengths.push(s[0]);
    }
    Ok((lengths, s0[1..].to_vec()))
}

/// The output shape of a padded batch: (T, B, *) or (B, T, *) with `batch_first`.
fn padded_shape(steps: usize, batch: usize, trailing: &[usize], batch_first: bool) -> Vec<usize> {
    let mut shape = if batch_first {
        vec![batch, steps]
    } else {
        vec![steps, batch]
    };
    shape.extend_from_slice(trailing);
    shape
}

/// The row of step `t` of sequence `b` in a padded (T, B, *) or (B, T, *) tensor seen as a
/// (T*B, width) matrix.
fn padded_row(t: usize, b: usize, steps: usize, batch: usize, batch_first: bool) -> usize {
    if batch_first {
        b * steps + t
    } else {
        t * batch + b
    }
}

/// Which end of a padded sequence the padding goes to (`padding_side` of `pad_sequence`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PaddingSide {
    /// `'right'` (the default): the sequence starts at step 0, padding after it.
    #[default]
    Right,
    /// `'left'`: padding first, the sequence ends at the last step.
    Left,
}

/// `torch.nn.utils.rnn.pad_sequence(sequences, batch_first, padding_value)`: stacks sequences
/// (L_k, *) into one tensor (T, B, *), or (B, T, *) with `batch_first`, where T = max(L_k)
/// and every position past a sequence's length holds `padding_value`.
///
/// The sequences must share their trailing dimensions; lengths may differ (and may be 0).
/// The gradient of each sequence is its slice of the padded tensor's gradient. See
/// [`pad_sequence_with_side`] for `padding_side='left'`.
pub fn pad_sequence(seqs: &[Tensor], batch_first: bool, padding_value: f32) -> Result<Tensor> {
    pad_sequence_with_side(seqs, batch_first, padding_value, PaddingSide::Right)
}

/// `pad_sequence(sequences, batch_first, padding_value, padding_side)`: as [`pad_sequence`],
/// with the padding on the given side: with [`PaddingSide::Left`] step `t` of a sequence of
/// length `L` lands at step `T − L + t`.
///
/// ```
/// use rnn::packed::{pad_sequence_with_side, PaddingSide};
/// use rnn::Tensor;
/// let a = Tensor::from_vec(&[1], vec![1.0]).unwrap();
/// let b = Tensor::from_vec(&[3], vec![2.0, 3.0, 4.0]).unwrap();
/// let p = pad_sequence_with_side(&[a, b], true, 0.0, PaddingSide::Left).unwrap();
/// assert_eq!(p.to_array(), ndarray::array![[0.0f32, 0.0, 1.0], [2.0, 3.0, 4.0]].into_dyn());
/// ```
pub fn pad_sequence_with_side(
    seqs: &[Tensor],
    batch_first: bool,
    padding_value: f32,
    padding_side: PaddingSide,
) -> Result<Tensor> {
    let (lengths, trailing) = check_sequences("pad_sequence", seqs)?;
    let steps = lengths.iter().copied().max().unwrap_or(0);
    let batch = seqs.len();
    let mut index: Vec<RowSource> = vec![None; steps * batch];
    for (b, &len) in lengths.iter().enumerate() {
        let offset = match padding_side {
            PaddingSide::Right => 0,
            PaddingSide::Left => steps - len,
        };
        for t in 0..len {
            index[padded_row(offset + t, b, steps, batch, batch_first)] = Some((b, t));
        }
    }
    let width = trailing.iter().product();
    let shape = padded_shape(steps, batch, &trailing, batch_first);
    Ok(gather_rows(
        "PadSequenceBackward",
        seqs,
        width,
        &index,
        padding_value,
        shape,
    ))
}

/// `torch.nn.utils.rnn.pack_padded_sequence(input, lengths, batch_first, enforce_sorted)`:
/// packs a padded batch (T, B, *), or (B, T, *) with `batch_first`, whose sequence `b` has
/// `lengths[b]` real steps.
///
/// With `enforce_sorted = true` the lengths must already be non-increasing and the result has
/// no indices; otherwise the sequences are sorted by decreasing length (stable) and the result
/// remembers the permutation. Values past each length are never read (their gradient is
/// zero).
///
/// Errors, where PyTorch is silent or vague: a count of lengths other than B, a length 0, a
/// length longer than T (naming the sequence), unsorted lengths with `enforce_sorted`.
pub fn pack_padded_sequence(
    input: &Tensor,
    lengths: &[usize],
    batch_first: bool,
    enforce_sorted: bool,
) -> Result<PackedSequence> {
    const WHAT: &str = "pack_padded_sequence";
    let shape = input.shape();
    check_lengths(WHAT, lengths, &shape, batch_first, false)?;
    let (steps, batch) = padded_dims(WHAT, &shape, batch_first)?;
    let sorted_indices = if enforce_sorted {
        check_sorted(WHAT, lengths)?;
        None
    } else {
        Some(sort_descending(lengths))
    };
    let order: Vec<usize> = sorted_indices
        .clone()
        .unwrap_or_else(|| (0..batch).collect());
    let sorted: Vec<usize> = order.iter().map(|&b| lengths[b]).collect();
    let batch_sizes = batch_sizes_of(&sorted);
    let mut index = Vec::with_capacity(sorted.iter().sum());
    for (t, &n) in batch_sizes.iter().enumerate() {
        for &b in &order[..n] {
            index.push(Some((0, padded_row(t, b, steps, batch, batch_first))));
        }
    }
    let width = shape[2..].iter().product();
    let mut data_shape = vec![index.len()];
    data_shape.extend_from_slice(&shape[2..]);
    let data = gather_rows(
        "PackPaddedSequenceBackward",
        std::slice::from_ref(input),
        width,
        &index,
        0.0,
        data_shape,
    );
    PackedSequence::new(data, batch_sizes, sorted_indices)
}

/// `torch.nn.utils.rnn.pack_sequence(sequences, enforce_sorted)`: packs a list of sequences
/// (L_k, *) directly, as `pack_padded_sequence(pad_sequence(sequences), lengths)` would.
///
/// The sequences must share their trailing dimensions and have at least one step each; with
/// `enforce_sorted = true` they must be given longest first.
pub fn pack_sequence(seqs: &[Tensor], enforce_sorted: bool) -> Result<PackedSequence> {
    const WHAT: &str = "pack_sequence";
    let (lengths, trailing) = check_sequences(WHAT, seqs)?;
    if let Some(b) = lengths.iter().position(|&l| l == 0) {
        return Err(Error::Invalid(format!(
            "{WHAT}: sequence {b} has length 0 (lengths {lengths:?}); every sequence must have at \
             least one step, drop empty sequences before packing"
        )));
    }
    let sorted_indices = if enforce_sorted {
        check_sorted(WHAT, &lengths)?;
        None
    } else {
        Some(sort_descending(&lengths))
    };
    let order: Vec<usize> = sorted_indices
        .clone()
        .unwrap_or_else(|| (0..seqs.len()).collect());
    let sorted: Vec<usize> = order.iter().map(|&b| lengths[b]).collect();
    let batch_sizes = batch_sizes_of(&sorted);
    let mut index = Vec::with_capacity(sorted.iter().sum());
    for (t, &n) in batch_sizes.iter().enumerate() {
        index.extend(order[..n].iter().map(|&b| Some((b, t))));
    }
    let width = trailing.iter().product();
    let mut data_shape = vec![index.len()];
    data_shape.extend_from_slice(&trailing);
    let data = gather_rows("PackSequenceBackward", seqs, width, &index, 0.0, data_shape);
    PackedSequence::new(data, batch_sizes, sorted_indices)
}

/// `torch.nn.utils.rnn.pad_packed_sequence(sequence, batch_first, padding_value,
/// total_length)`: the inverse of [`pack_padded_sequence`]. Returns the padded tensor
/// (T, B, *), or (B, T, *) with `batch_first`, in the caller's batch order, and the lengths in
/// that order.
///
/// T is `total_length` if given (at least the longest length; useful to get back the padded
/// size of the input, e.g. under data parallelism), else the longest length. Positions past
/// each length hold `padding_value` and pass no gradient.
pub fn pad_packed_sequence(
    sequence: &PackedSequence,
    batch_first: bool,
    padding_value: f32,
    total_length: Option<usize>,
) -> Result<(Tensor, Vec<usize>)> {
    let shape = sequence.checked_data_shape("pad_packed_sequence")?;
    let max_len = sequence.max_length();
    let steps = match total_length {
        Some(t) if t < max_len => {
            return Err(Error::Invalid(format!(
                "pad_packed_sequence: total_length = {t} is smaller than the longest sequence \
                 ({max_len} steps); total_length must be at least max(lengths)"
            )))
        }
        Some(t) => t,
        None => max_len,
    };
    let batch = sequence.batch_size();
    let lengths = sequence.lengths();
    let offsets: Vec<usize> = sequence
        .batch_sizes
        .iter()
        .scan(0, |acc, &n| {
            let start = *acc;
            *acc += n;
            Some(start)
        })
        .collect();
    let mut index: Vec<RowSource> = vec![None; steps * batch];
    for (b, &len) in lengths.iter().enumerate() {
        let p = sequence.position(b);
        for (t, &offset) in offsets.iter().enumerate().take(len) {
            index[padded_row(t, b, steps, batch, batch_first)] = Some((0, offset + p));
        }
    }
    let trailing = &shape[1..];
    let width = trailing.iter().product();
    let out_shape = padded_shape(steps, batch, trailing, batch_first);
    let padded = gather_rows(
        "PadPackedSequenceBackward",
        std::slice::from_ref(&sequence.data),
        width,
        &index,
        padding_value,
        out_shape,
    );
    Ok((padded, lengths))
}

/// `torch.nn.utils.rnn.unpad_sequence(padded_sequences, lengths, batch_first)`: the list of
/// sequences (L_b, *) of a padded batch (T, B, *), or (B, T, *) with `batch_first`, cut to
/// their lengths. A length may be 0 (an empty sequence) but not more than T.
pub fn unpad_sequence(
    padded: &Tensor,
    lengths: &[usize],
    batch_first: bool,
) -> Result<Vec<Tensor>> {
    const WHAT: &str = "unpad_sequence";
    let shape = padded.shape();
    check_lengths(WHAT, lengths, &shape, batch_first, true)?;
    let (steps, batch) = padded_dims(WHAT, &shape, batch_first)?;
    let trailing = &shape[2..];
    let width = trailing.iter().product();
    Ok(lengths
        .iter()
        .enumerate()
        .map(|(b, &len)| {
            let index: Vec<RowSource> = (0..len)
                .map(|t| Some((0, padded_row(t, b, steps, batch, batch_first))))
                .collect();
            let mut out_shape = vec![len];
            out_shape.extend_from_slice(trailing);
            gather_rows(
                "UnpadSequenceBackward",
                std::slice::from_ref(padded),
                width,
                &index,
                0.0,
                out_shape,
            )
        })
        .collect())
}

/// `torch.nn.utils.rnn.unpack_sequence(packed_sequences)`: the list of sequences (L_b, *) in
/// the caller's order, the inverse of [`pack_sequence`].
pub fn unpack_sequence(sequence: &PackedSequence) -> Result<Vec<Tensor>> {
    let shape = sequence.checked_data_shape("unpack_sequence")?;
    let trailing = &shape[1..];
    let width = trailing.iter().product();
    let lengths = sequence.lengths();
    Ok(lengths
        .iter()
        .enumerate()
        .map(|(b, &len)| {
            let p = sequence.position(b);
            let mut offset = 0;
            let index: Vec<RowSource> = sequence.batch_sizes[..len]
                .iter()
                .map(|&n| {
                    let row = offset + p;
                    offset += n;
                    Some((0, row))
                })
                .collect();
            let mut out_shape = vec![len];
            out_shape.extend_from_slice(trailing);
            gather_rows(
                "UnpackSequenceBackward",
                std::slice::from_ref(&sequence.data),
                width,
                &index,
                0.0,
                out_shape,
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn seq(values: &[f32], width: usize) -> Tensor {
        Tensor::from_vec(&[values.len() / width, width], values.to_vec()).unwrap()
    }

    #[test]
    fn sorting_is_stable_and_descending() {
        assert_eq!(sort_descending(&[2, 6, 6, 1, 3]), [1, 2, 4, 0, 3]);
        assert_eq!(sort_descending(&[6, 6, 6]), [0, 1, 2]);
        assert_eq!(batch_sizes_of(&[5, 4, 3, 1]), [4, 3, 3, 2, 1]);
    }

    #[test]
    fn pack_then_pad_round_trips_and_keeps_the_order() {
        // Lengths 2, 3, 1 (B = 3), one feature: values 10*b + t.
        let seqs = [seq(&[0., 1.], 1), seq(&[10., 11., 12.], 1), seq(&[20.], 1)];
        let packed = pack_sequence(&seqs, false).unwrap();
        assert_eq!(packed.batch_sizes(), [3, 2, 1]);
        assert_eq!(packed.sorted_indices(), Some(&[1, 0, 2][..]));
        assert_eq!(packed.unsorted_indices(), Some(&[1, 0, 2][..]));
        assert_eq!(
            packed.data().to_array(),
            array![[10.0f32], [0.], [20.], [11.], [1.], [12.]].into_dyn()
        );
        assert_eq!(packed.lengths(), [2, 3, 1]);
        let (padded, lengths) = pad_packed_sequence(&packed, true, -1.0, Some(4)).unwrap();
        assert_eq!(lengths, [2, 3, 1]);
        assert_eq!(
            padded.to_array(),
            array![
                [[0.0f32], [1.], [-1.], [-1.]],
                [[10.], [11.], [12.], [-1.]],
                [[20.], [-1.], [-1.], [-1.]]
            ]
            .into_dyn()
        );
        let back = unpack_sequence(&packed).unwrap();
        for (a, b) in back.iter().zip(&seqs) {
            assert_eq!(a.to_array(), b.to_array());
        }
    }
}
