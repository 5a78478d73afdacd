//! [`PackedSequence`]: the packed layout (`data`, `batch_sizes`, the sort permutation and its
//! inverse), its checks and accessors.

use crate::engine::Batches;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A batch of variable-length sequences packed time step by time step, as PyTorch's
/// `torch.nn.utils.rnn.PackedSequence`.
///
/// - `data` (sum(lengths), *): the rows of every sequence still running at step 0, then at
///   step 1, ..., each step in sorted order (longest sequence first).
/// - `batch_sizes` (max(lengths),): how many sequences run at each step; positive and
///   non-increasing.
/// - `sorted_indices`: `sorted_indices[k]` is the caller's index of the k-th longest sequence,
///   `None` when the batch was packed with `enforce_sorted = true` (already sorted).
/// - `unsorted_indices`: the inverse permutation, `unsorted_indices[b]` is the position of the
///   caller's sequence `b` in the sorted order; `None` exactly when `sorted_indices` is.
///
/// Build one with [`pack_padded_sequence`] or [`pack_sequence`] (or [`PackedSequence::new`]
/// from the fields); read it back with [`pad_packed_sequence`] or [`unpack_sequence`].
///
/// [`pack_padded_sequence`]: super::pack_padded_sequence
/// [`pack_sequence`]: super::pack_sequence
/// [`pad_packed_sequence`]: super::pad_packed_sequence
/// [`unpack_sequence`]: super::unpack_sequence
#[derive(Clone, Debug)]
pub struct PackedSequence {
    pub(super) data: Tensor,
    pub(super) batch_sizes: Vec<usize>,
    pub(super) sorted_indices: Option<Vec<usize>>,
    pub(super) unsorted_indices: Option<Vec<usize>>,
}

impl PackedSequence {
    /// `PackedSequence(data, batch_sizes, sorted_indices)`: checks that the fields agree and
    /// computes `unsorted_indices` as the inverse of `sorted_indices`, as PyTorch does.
    ///
    /// `batch_sizes` must be non-empty, positive and non-increasing, `data` must have
    /// `sum(batch_sizes)` rows, and `sorted_indices` must be a permutation of
    /// `0..batch_sizes[0]`.
    pub fn new(
        data: Tensor,
        batch_sizes: Vec<usize>,
        sorted_indices: Option<Vec<usize>>,
    ) -> Result<Self> {
        if batch_sizes.is_empty() {
            return Err(Error::Invalid(
                "PackedSequence: batch_sizes is empty; a packed batch needs at least one time step"
                    .into(),
            ));
        }
        let batches = Batches::from_batch_sizes(batch_sizes.clone())
            .map_err(|e| Error::Invalid(format!("PackedSequence: {}", strip_prefix(&e))))?;
        let shape = data.shape();
        if shape.is_empty() || shape[0] != batches.rows() {
            return Err(Error::shape_hint(
                "PackedSequence data",
                format!("({}, *)", batches.rows()),
                &shape,
                format!("data needs sum(batch_sizes) = {} rows", batches.rows()),
            ));
        }
        let unsorted_indices = match &sorted_indices {
            Some(p) => Some(invert_permutation(p, batches.batch())?),
            None => None,
        };
        Ok(PackedSequence {
            data,
            batch_sizes,
            sorted_indices,
            unsorted_indices,
        })
    }

    /// The packed rows, (sum(lengths), *).
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    /// Sequences running at each time step, (max(lengths),).
    pub fn batch_sizes(&self) -> &[usize] {
        &self.batch_sizes
    }

    /// Caller's index of the k-th longest sequence; `None` if packed with `enforce_sorted`.
    pub fn sorted_indices(&self) -> Option<&[usize]> {
        self.sorted_indices.as_deref()
    }

    /// Position in the sorted order of the caller's sequence `b`; `None` if packed with
    /// `enforce_sorted`.
    pub fn unsorted_indices(&self) -> Option<&[usize]> {
        self.unsorted_indices.as_deref()
    }

    /// Number of sequences, `batch_sizes[0]`.
    pub fn batch_size(&self) -> usize {
        self.batch_sizes[0]
    }

    /// The longest length, `batch_sizes.len()`.
    pub fn max_length(&self) -> usize {
        self.batch_sizes.len()
    }

    /// The length of each sequence, in the caller's order (what [`pad_packed_sequence`]
    /// returns next to the padded tensor).
    ///
    /// [`pad_packed_sequence`]: super::pad_packed_sequence
    pub fn lengths(&self) -> Vec<usize> {
        let sorted = sorted_lengths(&self.batch_sizes);
        (0..self.batch_size())
            .map(|b| sorted[self.position(b)])
            .collect()
    }

    /// The same batch with other rows, e.g. a `Linear` applied to `data`: PyTorch's
    /// `PackedSequence(f(p.data), p.batch_sizes, p.sorted_indices, p.unsorted_indices)`.
    /// `data` must have the same number of rows.
    pub fn with_data(&self, data: Tensor) -> Result<Self> {
        let shape = data.shape();
        let rows = self.rows();
        if shape.is_empty() || shape[0] != rows {
            return Err(Error::shape_hint(
                "PackedSequence data",
                format!("({rows}, *)"),
                &shape,
                format!("data needs sum(batch_sizes) = {rows} rows"),
            ));
        }
        Ok(PackedSequence {
            data,
            ..self.clone()
        })
    }

    /// The engine's view of the layout.
    pub fn batches(&self) -> Batches {
        Batches::from_batch_sizes(self.batch_sizes.clone())
            .expect("checked when the PackedSequence was built")
    }

    /// Total rows, `sum(batch_sizes)`.
    fn rows(&self) -> usize {
        self.batch_sizes.iter().sum()
    }

    /// Position in the sorted order of the caller's sequence `b`.
    pub(super) fn position(&self, b: usize) -> usize {
        self.unsorted_indices.as_ref().map_or(b, |u| u[b])
    }

    /// `data`'s shape, checked against `batch_sizes` (the tensor's values can be replaced
    /// in place through `data_mut`, so a consumer checks again).
    pub(super) fn checked_data_shape(&self, what: &str) -> Result<Vec<usize>> {
        let shape = self.data.shape();
        let rows = self.rows();
        if shape.is_empty() || shape[0] != rows {
            return Err(Error::shape_hint(
                format!("{what}: PackedSequence data"),
                format!("({rows}, *)"),
                &shape,
                format!("data needs sum(batch_sizes) = {rows} rows"),
            ));
        }
        Ok(shape)
    }
}

/// The message of an [`Error::Invalid`] without its "invalid argument: " prefix.
fn strip_prefix(e: &Error) -> String {
    match e {
        Error::Invalid(m) => m.clone(),
        other => other.to_string(),
    }
}

/// `invert_permutation(p)`: `inv[p[k]] = k`, after checking that `p` is a permutation of
/// `0..n`.
fn invert_permutation(p: &[usize], n: usize) -> Result<Vec<usize>> {
    if p.len() != n {
        return Err(Error::Invalid(format!(
            "PackedSequence: sorted_indices has {} entries but batch_sizes[0] = {n} sequences",
            p.len()
        )));
    }
    let mut inv = vec![usize::MAX; n];
    for (k, &i) in p.iter().enumerate() {
        if i >= n || inv[i] != usize::MAX {
            return Err(Error::Invalid(format!(
                "PackedSequence: sorted_indices {p:?} is not a permutation of 0..{n} (entry {k} is {i})"
            )));
        }
        inv[i] = k;
    }
    Ok(inv)
}

/// The length of the sequence at each sorted position: how many steps have more rows than it.
fn sorted_lengths(batch_sizes: &[usize]) -> Vec<usize> {
    let n = batch_sizes.first().copied().unwrap_or(0);
    (0..n)
        .map(|p| batch_sizes.iter().take_while(|&&b| b > p).count())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_permutations_are_inverted() {
        assert_eq!(sorted_lengths(&[4, 3, 3, 2, 1]), [5, 4, 3, 1]);
        assert_eq!(invert_permutation(&[1, 3, 0, 2], 4).unwrap(), [2, 0, 3, 1]);
        assert!(invert_permutation(&[1, 1, 0], 3).is_err());
        assert!(invert_permutation(&[0, 1], 3).is_err());
    }

    #[test]
    fn new_checks_the_fields() {
        let data = Tensor::zeros(&[6, 2]);
        let p = PackedSequence::new(data.clone(), vec![3, 2, 1], Some(vec![2, 0, 1])).unwrap();
        assert_eq!(p.unsorted_indices(), Some(&[1, 2, 0][..]));
        assert_eq!(p.lengths(), [2, 1, 3]);
        assert!(PackedSequence::new(data.clone(), vec![3, 2, 2], None).is_err()); // 7 rows
        assert!(PackedSequence::new(data.clone(), vec![2, 3, 1], None).is_err()); // increasing
        assert!(PackedSequence::new(data.clone(), vec![], None).is_err());
        assert!(PackedSequence::new(data.clone(), vec![3, 2, 1], Some(vec![0, 1])).is_err());
        assert!(p.with_data(Tensor::zeros(&[5, 4])).is_err());
        assert_eq!(
            p.with_data(Tensor::zeros(&[6, 4])).unwrap().data().shape(),
            [6, 4]
        );
    }
}
