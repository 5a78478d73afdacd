//! `forward_packed`: the recurrent layers run on a [`PackedSequence`], each sequence for exactly
//! its own length.

use super::gather::select_batch;
use super::sequence::PackedSequence;
use crate::error::{Error, Result, Shape};
use crate::recurrent::{Gru, Lstm, Recurrent, Rnn};
use crate::tensor::Tensor;

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
        // A c0 given to a cell without a cell state is passed on for `forward_rows` to reject
        // by name.
        let c0 = if c.cell.description().cell_state {
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

/// Defines `forward_packed` on a layer type as a call of [`Recurrent::forward_packed`]:
/// `split` turns the layer's initial state into `(h0, c0)`, `join` turns `(h_n, c_n)` into the
/// layer's final state.
macro_rules! forward_packed {
    (
        $(#[$doc:meta])*
        $layer:ident($state:ident: $initial:ty) -> $final:ty,
        split: $split:expr,
        join: |$h_n:pat_param, $c_n:pat_param| $join:expr $(,)?
    ) => {
        impl $layer {
            $(#[$doc])*
            pub fn forward_packed(
                &self,
                input: &PackedSequence,
                $state: $initial,
            ) -> Result<(PackedSequence, $final)> {
                let (h0, c0) = $split;
                let (output, $h_n, $c_n) = self.inner().forward_packed(input, h0, c0)?;
                Ok((output, $join))
            }
        }
    };
}

forward_packed!(
    /// `output, h_n = rnn(packed, h0)`: see [`Recurrent::forward_packed`]. `h0` and `h_n`
    /// are (D*num_layers, N, hidden_size) in the caller's batch order.
    Rnn(h0: Option<&Tensor>) -> Tensor,
    split: (h0, None),
    join: |h_n, _| h_n,
);

forward_packed!(
    /// `output, h_n = gru(packed, h0)`: see [`Recurrent::forward_packed`]. `h0` and `h_n`
    /// are (D*num_layers, N, hidden_size) in the caller's batch order.
    Gru(h0: Option<&Tensor>) -> Tensor,
    split: (h0, None),
    join: |h_n, _| h_n,
);

forward_packed!(
    /// `output, (h_n, c_n) = lstm(packed, (h0, c0))`: see [`Recurrent::forward_packed`]. The
    /// states are in the caller's batch order: h (D*num_layers, N, H_out), c
    /// (D*num_layers, N, hidden_size).
    Lstm(state: Option<(&Tensor, &Tensor)>) -> (Tensor, Tensor),
    split: state.unzip(),
    join: |h_n, c_n| (h_n, c_n.expect("an LSTM returns c_n")),
);
