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

use ndarray::{ArrayD, IxDyn};

use crate::config::CellKind;
use crate::engine::Batches;
use crate::error::{Error, Result, Shape};
use crate::recurrent::{Gru, Lstm, Recurrent, Rnn};
use crate::tensor::{Backward, Tensor};

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
#[derive(Clone, Debug)]
pub struct PackedSequence {
    data: Tensor,
    batch_sizes: Vec<usize>,
    sorted_indices: Option<Vec<usize>>,
    unsorted_indices: Option<Vec<usize>>,
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
    fn position(&self, b: usize) -> usize {
        self.unsorted_indices.as_ref().map_or(b, |u| u[b])
    }

    /// `data`'s shape, checked against `batch_sizes` (the tensor's values can be replaced
    /// in place through `data_mut`, so a consumer checks again).
    fn checked_data_shape(&self, what: &str) -> Result<Vec<usize>> {
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

/// Where one output row of [`gather_rows`] comes from: `(source, row)`, or `None` for a row
/// filled with the padding value.
type RowSource = Option<(usize, usize)>;

/// `(output row, source row)`: one copy made by [`gather_rows`].
type RowPair = (usize, usize);

/// Copies rows of `sources` into a new tensor of shape `out_shape`, every tensor being seen as
/// a row-major (rows, `width`) matrix: output row `o` is row `index[o]` of its source, or
/// `fill` for `None`. Backward scatter-adds each output row's gradient into its source row;
/// filled rows pass no gradient.
fn gather_rows(
    name: &'static str,
    sources: &[Tensor],
    width: usize,
    index: &[RowSource],
    fill: f32,
    out_shape: Vec<usize>,
) -> Tensor {
    let mut pairs: Vec<Vec<RowPair>> = vec![Vec::new(); sources.len()];
    for (o, src) in index.iter().enumerate() {
        if let Some((s, r)) = *src {
            pairs[s].push((o, r));
        }
    }
    let mut out = vec![fill; index.len() * width];
    let mut shapes = Vec::with_capacity(sources.len());
    // One read lock at a time: the same tensor may appear twice in `sources`.
    for (t, pairs) in sources.iter().zip(&pairs) {
        let data = t.data();
        shapes.push(data.shape().to_vec());
        let data = data.as_standard_layout();
        let flat = data.as_slice().expect("standard layout");
        for &(o, r) in pairs {
            out[o * width..(o + 1) * width].copy_from_slice(&flat[r * width..(r + 1) * width]);
        }
    }
    let out = ArrayD::from_shape_vec(IxDyn(&out_shape), out)
        .expect("out_shape has index.len() rows of width");
    let op = GatherRows {
        name,
        width,
        sources: shapes.into_iter().zip(pairs).collect(),
    };
    Tensor::from_unary_op(out, sources.to_vec(), op)
}

/// Backward of [`gather_rows`]: scatter-add of the output rows into their source rows.
struct GatherRows {
    name: &'static str,
    width: usize,
    /// Per source: its shape and the `(output row, source row)` pairs it feeds.
    sources: Vec<(Vec<usize>, Vec<RowPair>)>,
}

impl Backward for GatherRows {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let Some(g) = &grads[0] else {
            return vec![None; inputs.len()];
        };
        let g = g.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let w = self.width;
        self.sources
            .iter()
            .zip(inputs)
            .map(|((shape, pairs), input)| {
                if !input.requires_grad() {
                    return None;
                }
                let mut d = vec![0.0f32; shape.iter().product()];
                for &(o, r) in pairs {
                    for (a, b) in d[r * w..(r + 1) * w].iter_mut().zip(&g[o * w..(o + 1) * w]) {
                        *a += b;
                    }
                }
                Some(ArrayD::from_shape_vec(IxDyn(shape), d).expect("source shape"))
            })
            .collect()
    }
}

/// `tensor.index_select(1, perm)` for a state (A, N, *): entry `j` of dim 1 of the result is
/// entry `perm[j]` of `state`. Differentiable.
fn select_batch(state: &Tensor, perm: &[usize]) -> Tensor {
    let shape = state.shape();
    let (a, n) = (shape[0], shape[1]);
    let width = shape[2..].iter().product();
    let index: Vec<RowSource> = (0..a)
        .flat_map(|i| perm.iter().map(move |&p| Some((0, i * n + p))))
        .collect();
    gather_rows(
        "IndexSelectBackward",
        std::slice::from_ref(state),
        width,
        &index,
        0.0,
        shape,
    )
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

/// `torch.nn.utils.rnn.pad_sequence(sequences, batch_first, padding_value)`: stacks sequences
/// (L_k, *) into one tensor (T, B, *), or (B, T, *) with `batch_first`, where T = max(L_k)
/// and every position past a sequence's length holds `padding_value`.
///
/// The sequences must share their trailing dimensions; lengths may differ (and may be 0).
/// The gradient of each sequence is its slice of the padded tensor's gradient.
pub fn pad_sequence(seqs: &[Tensor], batch_first: bool, padding_value: f32) -> Result<Tensor> {
    let (lengths, trailing) = check_sequences("pad_sequence", seqs)?;
    let steps = lengths.iter().copied().max().unwrap_or(0);
    let batch = seqs.len();
    let mut index: Vec<RowSource> = vec![None; steps * batch];
    for (b, &len) in lengths.iter().enumerate() {
        for t in 0..len {
            index[padded_row(t, b, steps, batch, batch_first)] = Some((b, t));
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

impl Recurrent {
    /// Runs the layer on a packed batch, as `module(packed, h0)` in PyTorch: each sequence runs
    /// for exactly its own length.
    ///
    /// `input.data()` is (sum(lengths), input_size). `h0` (D*num_layers, N, H_out) and `c0`
    /// (D*num_layers, N, hidden_size, LSTM only) are in the caller's batch order, as are the
    /// returned `h_n` and `c_n`; they are permuted to and from the sorted order here
    /// (differentiably). The output is a [`PackedSequence`] with the input's `batch_sizes` and
    /// indices and data (sum(lengths), D*H_out).
    pub fn forward_packed(
        &self,
        input: &PackedSequence,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<(PackedSequence, Tensor, Option<Tensor>)> {
        let c = self.config();
        let name = c.cell.torch_name();
        let n = input.batch_size();
        let ld = c.num_layers * c.num_directions();
        let to_sorted =
            |what: &str, state: Option<&Tensor>, width: usize| -> Result<Option<Tensor>> {
                let Some(state) = state else { return Ok(None) };
                let shape = state.shape();
                if shape != [ld, n, width] {
                    return Err(Error::shape_hint(
                        format!("{name} {what}"),
                        Shape(vec![ld, n, width]).to_string(),
                        &shape,
                        format!(
                        "with a PackedSequence of {n} sequences the states are (D*num_layers, {n}, \
                         {width}), in the order the sequences were given (before sorting)"
                    ),
                    ));
                }
                Ok(Some(match input.sorted_indices() {
                    Some(p) => select_batch(state, p),
                    None => state.clone(),
                }))
            };
        let h0 = to_sorted("h0", h0, c.state_size())?;
        // A c0 given to RNN or GRU is passed on for `forward_rows` to reject by name.
        let c0 = if c.cell == CellKind::Lstm {
            to_sorted("c0", c0, c.hidden_size)?
        } else {
            c0.cloned()
        };
        let out = self.forward_rows(input.data(), &input.batches(), h0.as_ref(), c0.as_ref())?;
        let to_caller = |state: Tensor| match input.unsorted_indices() {
            Some(p) => select_batch(&state, p),
            None => state,
        };
        let output = PackedSequence {
            data: out.output,
            ..input.clone()
        };
        Ok((output, to_caller(out.h_n), out.c_n.map(to_caller)))
    }
}

impl Rnn {
    /// `output, h_n = rnn(packed, h0)`: see [`Recurrent::forward_packed`]. `h0` and `h_n`
    /// are (D*num_layers, N, hidden_size) in the caller's batch order.
    pub fn forward_packed(
        &self,
        input: &PackedSequence,
        h0: Option<&Tensor>,
    ) -> Result<(PackedSequence, Tensor)> {
        let (output, h_n, _) = self.inner().forward_packed(input, h0, None)?;
        Ok((output, h_n))
    }
}

impl Gru {
    /// `output, h_n = gru(packed, h0)`: see [`Recurrent::forward_packed`]. `h0` and `h_n`
    /// are (D*num_layers, N, hidden_size) in the caller's batch order.
    pub fn forward_packed(
        &self,
        input: &PackedSequence,
        h0: Option<&Tensor>,
    ) -> Result<(PackedSequence, Tensor)> {
        let (output, h_n, _) = self.inner().forward_packed(input, h0, None)?;
        Ok((output, h_n))
    }
}

impl Lstm {
    /// `output, (h_n, c_n) = lstm(packed, (h0, c0))`: see [`Recurrent::forward_packed`]. The
    /// states are in the caller's batch order: h (D*num_layers, N, H_out), c
    /// (D*num_layers, N, hidden_size).
    pub fn forward_packed(
        &self,
        input: &PackedSequence,
        state: Option<(&Tensor, &Tensor)>,
    ) -> Result<(PackedSequence, (Tensor, Tensor))> {
        let (h0, c0) = state.unzip();
        let (output, h_n, c_n) = self.inner().forward_packed(input, h0, c0)?;
        Ok((output, (h_n, c_n.expect("an LSTM returns c_n"))))
    }
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
        assert_eq!(sorted_lengths(&[4, 3, 3, 2, 1]), [5, 4, 3, 1]);
        assert_eq!(invert_permutation(&[1, 3, 0, 2], 4).unwrap(), [2, 0, 3, 1]);
        assert!(invert_permutation(&[1, 1, 0], 3).is_err());
        assert!(invert_permutation(&[0, 1], 3).is_err());
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

    #[test]
    fn gather_backward_scatter_adds_and_skips_padding() {
        let x = Tensor::parameter(array![[1.0f32, 2.], [3., 4.]].into_dyn());
        // Rows: x1, pad, x0, x1.
        let index = [Some((0, 1)), None, Some((0, 0)), Some((0, 1))];
        let y = gather_rows("Test", std::slice::from_ref(&x), 2, &index, 9.0, vec![4, 2]);
        assert_eq!(
            y.to_array(),
            array![[3.0f32, 4.], [9., 9.], [1., 2.], [3., 4.]].into_dyn()
        );
        y.backward_with(array![[1.0f32, 2.], [100., 100.], [3., 4.], [5., 6.]].into_dyn())
            .unwrap();
        assert_eq!(x.grad().unwrap(), array![[3.0f32, 4.], [6., 8.]].into_dyn());
    }

    #[test]
    fn select_batch_permutes_dim_1() {
        let h = Tensor::parameter(ArrayD::from_shape_fn(IxDyn(&[2, 3, 1]), |i| {
            (10 * i[0] + i[1]) as f32
        }));
        let y = select_batch(&h, &[2, 0, 1]);
        assert_eq!(
            y.to_array().iter().copied().collect::<Vec<_>>(),
            [2., 0., 1., 12., 10., 11.]
        );
        y.backward_with(
            ArrayD::from_shape_vec(IxDyn(&[2, 3, 1]), vec![1., 2., 3., 4., 5., 6.]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            h.grad().unwrap().iter().copied().collect::<Vec<_>>(),
            [2., 3., 1., 5., 6., 4.]
        );
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
