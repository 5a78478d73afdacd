//! The single-step cells `RnnCell`, `LstmCell` and `GruCell` (PyTorch's `nn.RNNCell`,
//! `nn.LSTMCell`, `nn.GRUCell`).
//!
//! A cell is one timestep of a one-layer, one-direction recurrent pass, so each cell holds a
//! [`Recurrent`] with `num_layers = 1` and runs it on a sequence of length 1: the gate math,
//! the initialisation (uniform in ±1/sqrt(hidden_size), in PyTorch's parameter order) and the
//! backward are the engine's, shared with [`crate::Rnn`], [`crate::Lstm`] and [`crate::Gru`].
//! Only the parameter names differ: a cell has `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`
//! (no `_l0` suffix), as PyTorch's `state_dict`.
//!
//! Shapes, as in PyTorch (`H_in` = `input_size`, `H` = `hidden_size`):
//!
//! | tensor | batched | unbatched |
//! |---|---|---|
//! | input | (N, H_in) | (H_in,) |
//! | hx, cx (LSTM), h', c' (LSTM) | (N, H) | (H,) |
//!
//! An absent state is zeros. The equations (gates stacked in `weight_ih` / `weight_hh` in
//! PyTorch's order):
//!
//! - `RNNCell`: `h' = act(W_ih x + b_ih + W_hh h + b_hh)`, act = tanh or relu.
//! - `LSTMCell` (i, f, g, o): `c' = f * c + i * g`, `h' = o * tanh(c')`.
//! - `GRUCell` (r, z, n): `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`,
//!   `h' = (1 - z) * n + z * h`.
//!
//! ```
//! use rnn::{LstmCell, Module, Tensor};
//!
//! rnn::manual_seed(0);
//! let cell = LstmCell::new(3, 4).unwrap(); // torch.nn.LSTMCell(3, 4)
//! assert_eq!(cell.repr(), "LSTMCell(3, 4)");
//! assert_eq!(cell.num_parameters(), 4 * 4 * (3 + 4) + 2 * 4 * 4);
//!
//! // Unroll by hand over 5 steps of a batch of 2: the state is zeros at the first step.
//! let inputs: Vec<Tensor> = (0..5).map(|t| Tensor::zeros(&[2, 3]).add_scalar(t as f32)).collect();
//! let (mut h, mut c) = cell.forward(&inputs[0], None).unwrap();
//! for x in &inputs[1..] {
//!     (h, c) = cell.forward(x, Some((&h, &c))).unwrap();
//! }
//! assert_eq!(h.shape(), [2, 4]);
//! assert_eq!(c.shape(), [2, 4]);
//!
//! // Backprop through the unrolled steps reaches the weights.
//! h.sum().backward().unwrap();
//! assert!(cell.parameters().iter().all(|p| p.grad().is_some()));
//!
//! // Shapes are checked with PyTorch's messages.
//! let err = cell.forward(&Tensor::zeros(&[2, 5]), None).unwrap_err();
//! assert!(err.to_string().contains("input has inconsistent input_size: got 5 expected 3"));
//! ```

use std::fmt;

use crate::config::{CellKind, Nonlinearity, RecurrentConfig};
use crate::error::{Error, Result, Shape};
use crate::module::Module;
use crate::precision::{Precision, ToPrecision};
use crate::recurrent::Recurrent;
use crate::rng::{with_global_rng, Rng};
use crate::tensor::Tensor;

/// The body shared by the three cells: a one-layer [`Recurrent`] and the cell's shape rules.
#[derive(Clone, Debug)]
struct CellCore {
    inner: Recurrent,
}

impl CellCore {
    /// Checks that `config` describes a cell of kind `kind`: the layer-only arguments must keep
    /// their defaults.
    fn check_config(kind: CellKind, config: &RecurrentConfig) -> Result<()> {
        let name = cell_name(kind);
        if config.cell != kind {
            return Err(Error::Config(format!(
                "{name} built from a {} configuration",
                cell_name(config.cell)
            )));
        }
        let layer_only = [
            (
                "num_layers",
                config.num_layers != 1,
                config.num_layers.to_string(),
            ),
            ("bidirectional", config.bidirectional, "True".to_string()),
            ("batch_first", config.batch_first, "True".to_string()),
            ("dropout", config.dropout != 0.0, config.dropout.to_string()),
            (
                "proj_size",
                config.proj_size != 0,
                config.proj_size.to_string(),
            ),
            (
                "weight_drop",
                config.weight_drop != 0.0,
                config.weight_drop.to_string(),
            ),
            ("zoneout", config.zoneout != 0.0, config.zoneout.to_string()),
            (
                "variational_dropout",
                config.variational_dropout,
                "True".to_string(),
            ),
        ];
        if let Some((arg, _, value)) = layer_only.into_iter().find(|(_, set, _)| *set) {
            return Err(Error::Config(format!(
                "{name} has no argument {arg} (got {arg}={value}): it is one step of one layer; \
                 use {} for that",
                kind.torch_name()
            )));
        }
        if !kind.description().nonlinearity && config.nonlinearity != Nonlinearity::Tanh {
            return Err(Error::Config(format!(
                "{name}: nonlinearity is an argument of RNNCell only"
            )));
        }
        for (arg, size) in [
            ("input_size", config.input_size),
            ("hidden_size", config.hidden_size),
        ] {
            if size == 0 {
                return Err(Error::Config(format!(
                    "{name}: {arg} must be greater than zero"
                )));
            }
        }
        config.validate()
    }

    fn with_rng(kind: CellKind, config: RecurrentConfig, rng: &mut Rng) -> Result<Self> {
        Self::check_config(kind, &config)?;
        Ok(CellCore {
            inner: Recurrent::with_rng(config, rng)?,
        })
    }

    fn config(&self) -> &RecurrentConfig {
        self.inner.config()
    }

    fn name(&self) -> &'static str {
        cell_name(self.config().cell)
    }

    /// PyTorch's repr: `RNNCell(3, 4, bias=False, nonlinearity=relu)`.
    fn repr(&self) -> String {
        let c = self.config();
        let mut s = format!("{}({}, {}", self.name(), c.input_size, c.hidden_size);
        if !c.bias {
            s.push_str(", bias=False");
        }
        if c.nonlinearity == Nonlinearity::Relu {
            s.push_str(", nonlinearity=relu");
        }
        s.push(')');
        s
    }

    /// One step. `states` is `[hx]` or `[hx, cx]` (LSTM), or empty for zeros; returns h' and
    /// (LSTM) c' in the input's layout.
    fn step(&self, input: &Tensor, states: &[&Tensor]) -> Result<(Tensor, Option<Tensor>)> {
        let c = self.config();
        let name = self.name();
        let (input_size, hidden) = (c.input_size, c.hidden_size);
        let has_c = c.cell.description().cell_state;
        let state_what = |k: usize| {
            if has_c {
                format!("{name} hx[{k}]")
            } else {
                format!("{name} hx")
            }
        };

        // The checks in PyTorch's order: ranks (Python side), then sizes (ATen).
        let ishape = input.shape();
        if !(1..=2).contains(&ishape.len()) {
            return Err(Error::shape_hint(
                format!("{name} input"),
                format!("(N, {input_size}) or ({input_size},)"),
                &ishape,
                format!(
                    "{name}: Expected input to be 1D or 2D, got {}D instead",
                    ishape.len()
                ),
            ));
        }
        let sshapes: Vec<Vec<usize>> = states.iter().map(|s| s.shape()).collect();
        for (k, sshape) in sshapes.iter().enumerate() {
            if !(1..=2).contains(&sshape.len()) {
                let label = if has_c {
                    format!("hx[{k}]")
                } else {
                    "hidden".to_string()
                };
                return Err(Error::shape_hint(
                    state_what(k),
                    format!("(N, {hidden}) or ({hidden},)"),
                    sshape,
                    format!(
                        "{name}: Expected {label} to be 1D or 2D, got {}D instead",
                        sshape.len()
                    ),
                ));
            }
        }
        let batched = ishape.len() == 2;
        let n = if batched { ishape[0] } else { 1 };
        let layout = |width: usize| {
            if batched {
                Shape(vec![n, width])
            } else {
                Shape(vec![width])
            }
        };
        let features = ishape[ishape.len() - 1];
        if features != input_size {
            return Err(Error::shape_hint(
                format!("{name} input"),
                layout(input_size).to_string(),
                &ishape,
                format!("input has inconsistent input_size: got {features} expected {input_size}"),
            ));
        }
        for (k, sshape) in sshapes.iter().enumerate() {
            let expected = layout(hidden).to_string();
            // PyTorch unsqueezes the state of an unbatched input before checking that it is 2-D.
            let rank = if batched {
                sshape.len()
            } else {
                sshape.len() + 1
            };
            if rank != 2 {
                let why = if batched {
                    "a batched input (N, H_in) takes states (N, H)"
                } else {
                    "an unbatched input (H_in,) takes unbatched states (H,)"
                };
                return Err(Error::shape_hint(
                    state_what(k),
                    expected,
                    sshape,
                    format!("Expected 2D hidden{k} (batch x hidden_size), but got {rank}D tensor ({why})"),
                ));
            }
            let sn = if batched { sshape[0] } else { 1 };
            if sn != n {
                return Err(Error::shape_hint(
                    state_what(k),
                    expected,
                    sshape,
                    format!("Input batch size {n} doesn't match hidden{k} batch size {sn}"),
                ));
            }
            let width = sshape[sshape.len() - 1];
            if width != hidden {
                return Err(Error::shape_hint(
                    state_what(k),
                    expected,
                    sshape,
                    format!(
                        "hidden{k} has inconsistent hidden_size: got {width}, expected {hidden}"
                    ),
                ));
            }
        }

        let out_shape: Vec<usize> = if batched {
            vec![n, hidden]
        } else {
            vec![hidden]
        };
        if n == 0 {
            // PyTorch returns empty states for an empty batch; the engine needs a row.
            let zeros = || Tensor::zeros(&out_shape);
            return Ok((zeros(), has_c.then(zeros)));
        }

        // A sequence of one step: input (1, N, H_in), states (1, N, H); then h_n[0].
        let (n, input_size, hidden) = (n as isize, input_size as isize, hidden as isize);
        let x = input.reshape(&[1, n, input_size])?;
        let states = states
            .iter()
            .map(|s| s.reshape(&[1, n, hidden]))
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .inner
            .forward_states(&x, states.first(), states.get(1))?;
        let back: Vec<isize> = out_shape.iter().map(|&d| d as isize).collect();
        let h = out.h_n.reshape(&back)?;
        let c = out.c_n.map(|c| c.reshape(&back)).transpose()?;
        Ok((h, c))
    }

    /// The inner layer's parameters under the cell's names (`weight_ih_l0` → `weight_ih`).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.inner
            .named_parameters()
            .into_iter()
            .map(|(name, t)| {
                let short = name.strip_suffix("_l0").unwrap_or(&name).to_string();
                (short, t)
            })
            .collect()
    }
}

/// PyTorch's class name of the cell of `kind`: `RNNCell`, `LSTMCell` or `GRUCell`.
fn cell_name(kind: CellKind) -> &'static str {
    kind.description().torch_cell_name
}

/// Defines a cell type over [`CellCore`] with PyTorch's constructors.
macro_rules! cell_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(CellCore);

        impl $name {
            /// A cell with PyTorch's defaults (`bias=True`) for the two sizes, initialised
            /// from the global generator (see [`crate::manual_seed`]).
            pub fn new(input_size: usize, hidden_size: usize) -> Result<Self> {
                Self::from_config(RecurrentConfig::new($kind, input_size, hidden_size))
            }

            /// A cell from a configuration, initialised from the global generator. Only
            /// `input_size`, `hidden_size`, `bias` (and for `RNNCell` `nonlinearity`) apply to
            /// a cell; the layer-only arguments must keep their defaults.
            pub fn from_config(config: RecurrentConfig) -> Result<Self> {
                CellCore::check_config($kind, &config)?;
                with_global_rng(|rng| Self::with_rng(config, rng))
            }

            /// A cell from a configuration (as [`Self::from_config`]), initialised from `rng`.
            pub fn with_rng(config: RecurrentConfig, rng: &mut Rng) -> Result<Self> {
                CellCore::with_rng($kind, config, rng).map($name)
            }

            /// The constructor arguments (a one-layer configuration).
            pub fn config(&self) -> &RecurrentConfig {
                self.0.config()
            }

            /// `H_in`: features of the input.
            pub fn input_size(&self) -> usize {
                self.config().input_size
            }

            /// `H`: features of the hidden state.
            pub fn hidden_size(&self) -> usize {
                self.config().hidden_size
            }

            /// PyTorch's `repr(cell)`, e.g. `RNNCell(3, 4, bias=False, nonlinearity=relu)`.
            pub fn repr(&self) -> String {
                self.0.repr()
            }

            /// The one-layer [`Recurrent`] that runs the step (its parameters are named
            /// `weight_ih_l0`, ...).
            pub fn inner(&self) -> &Recurrent {
                &self.0.inner
            }

            /// A copy of the cell whose products run in `precision`
            /// ([`Recurrent::to_precision`]).
            pub fn to_precision(&self, precision: Precision) -> Result<Self> {
                let inner = self.0.inner.to_precision(precision)?;
                Ok($name(CellCore { inner }))
            }
        }

        impl ToPrecision for $name {
            fn to_precision(&self, precision: Precision) -> Result<Self> {
                $name::to_precision(self, precision)
            }
        }

        impl Module for $name {
            /// `weight_ih`, `weight_hh`, then `bias_ih`, `bias_hh` when `bias`.
            fn named_parameters(&self) -> Vec<(String, Tensor)> {
                self.0.named_parameters()
            }
        }

        impl fmt::Display for $name {
            /// PyTorch's repr, then the parameter count: `LSTMCell(3, 4)  # 144 parameters`.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}  # {} parameters", self.repr(), self.num_parameters())
            }
        }
    };
}

cell_type!(
    /// `torch.nn.RNNCell`: `h' = act(W_ih x + b_ih + W_hh h + b_hh)`, act = tanh (default) or
    /// relu (`config.with_nonlinearity(Nonlinearity::Relu)`).
    ///
    /// Parameters: `weight_ih` (H, H_in), `weight_hh` (H, H), `bias_ih`, `bias_hh` (H,).
    RnnCell,
    CellKind::Rnn
);
cell_type!(
    /// `torch.nn.LSTMCell`, gates i, f, g, o stacked in that order:
    /// `c' = f * c + i * g`, `h' = o * tanh(c')`.
    ///
    /// Parameters: `weight_ih` (4H, H_in), `weight_hh` (4H, H), `bias_ih`, `bias_hh` (4H,).
    LstmCell,
    CellKind::Lstm
);
cell_type!(
    /// `torch.nn.GRUCell`, gates r, z, n stacked in that order:
    /// `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, `h' = (1 - z) * n + z * h`.
    ///
    /// Parameters: `weight_ih` (3H, H_in), `weight_hh` (3H, H), `bias_ih`, `bias_hh` (3H,).
    GruCell,
    CellKind::Gru
);

impl RnnCell {
    /// `h' = cell(input, hx)`: input (N, H_in) or (H_in,), hx (N, H) or (H,) (zeros when
    /// `None`); h' has hx's shape.
    pub fn forward(&self, input: &Tensor, hx: Option<&Tensor>) -> Result<Tensor> {
        let states: Vec<&Tensor> = hx.into_iter().collect();
        Ok(self.0.step(input, &states)?.0)
    }
}

impl GruCell {
    /// `h' = cell(input, hx)`: input (N, H_in) or (H_in,), hx (N, H) or (H,) (zeros when
    /// `None`); h' has hx's shape.
    pub fn forward(&self, input: &Tensor, hx: Option<&Tensor>) -> Result<Tensor> {
        let states: Vec<&Tensor> = hx.into_iter().collect();
        Ok(self.0.step(input, &states)?.0)
    }
}

impl LstmCell {
    /// `h', c' = cell(input, (hx, cx))`: input (N, H_in) or (H_in,), hx and cx (N, H) or (H,)
    /// (both zeros when `None`); h' and c' have hx's shape.
    pub fn forward(
        &self,
        input: &Tensor,
        hx: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let states: Vec<&Tensor> = hx.map(|(h, c)| vec![h, c]).unwrap_or_default();
        let (h, c) = self.0.step(input, &states)?;
        Ok((h, c.expect("an LSTM step returns a cell state")))
    }
}
