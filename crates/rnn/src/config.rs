//! Configuration of a recurrent layer: PyTorch's constructor arguments.
//!
//! ```
//! use rnn::{CellKind, RecurrentConfig};
//! // torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True, proj_size=3)
//! let config = RecurrentConfig::new(CellKind::Lstm, 4, 8)
//!     .with_num_layers(2)
//!     .with_bidirectional(true)
//!     .with_batch_first(true)
//!     .with_proj_size(3);
//! config.validate().unwrap();
//! assert_eq!(config.output_size(), 2 * 3);
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which recurrent cell a layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Elman RNN: `h' = act(W_ih x + b_ih + W_hh h + b_hh)`; one gate.
    Rnn,
    /// LSTM, gates in PyTorch's order i, f, g, o.
    Lstm,
    /// GRU, gates in PyTorch's order r, z, n.
    Gru,
}

impl CellKind {
    /// Every kind, in the order of this enum (the cells' descriptions are in
    /// `engine::cells`, one file per kind).
    pub const ALL: [CellKind; 3] = [CellKind::Rnn, CellKind::Lstm, CellKind::Gru];

    /// Number of gate blocks stacked in `weight_ih` / `weight_hh`: 1, 4 or 3.
    pub fn gates(self) -> usize {
        self.description().gates()
    }

    /// PyTorch's class name: `RNN`, `LSTM` or `GRU`.
    pub fn torch_name(self) -> &'static str {
        self.description().torch_name
    }

    /// The name used in model files and on the command line: `rnn`, `lstm` or `gru`.
    pub fn name(self) -> &'static str {
        self.description().name
    }
}

impl std::str::FromStr for CellKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        CellKind::ALL
            .into_iter()
            .find(|k| k.name() == lower)
            .ok_or_else(|| {
                let names: Vec<String> = CellKind::ALL
                    .iter()
                    .map(|k| format!("{:?}", k.name()))
                    .collect();
                let (last, rest) = names.split_last().expect("at least one kind");
                Error::Config(format!(
                    "unknown cell {lower:?}: expected {} or {last}",
                    rest.join(", ")
                ))
            })
    }
}

/// The activation of an Elman RNN (`nonlinearity` in `torch.nn.RNN`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// `tanh`, PyTorch's default.
    #[default]
    Tanh,
    /// `relu`.
    Relu,
}

impl std::str::FromStr for Nonlinearity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tanh" => Ok(Nonlinearity::Tanh),
            "relu" => Ok(Nonlinearity::Relu),
            other => Err(Error::Config(format!(
                "unknown nonlinearity {other:?}: expected \"tanh\" or \"relu\""
            ))),
        }
    }
}

/// PyTorch's constructor arguments of `nn.RNN`, `nn.LSTM` and `nn.GRU`, plus which cell.
///
/// Required fields go to [`RecurrentConfig::new`]; the rest take PyTorch's defaults and have
/// `with_*` builders. As JSON (the `config` metadata of a model file) absent fields take the
/// defaults: `{"cell": "lstm", "input_size": 4, "hidden_size": 8}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrentConfig {
    /// `rnn`, `lstm` or `gru`.
    pub cell: CellKind,
    /// `H_in`: features of each input vector.
    pub input_size: usize,
    /// `H_cell`: features of the hidden state.
    pub hidden_size: usize,
    /// Stacked layers; layer k > 0 reads the output of layer k - 1. Default 1.
    #[serde(default = "one")]
    pub num_layers: usize,
    /// `tanh` or `relu`; RNN only. Default `tanh`.
    #[serde(default)]
    pub nonlinearity: Nonlinearity,
    /// Whether the layers have `bias_ih` and `bias_hh`. Default true.
    #[serde(default = "yes")]
    pub bias: bool,
    /// Input and output as (N, L, H) instead of (L, N, H). States keep (D*num_layers, N, H).
    #[serde(default)]
    pub batch_first: bool,
    /// Dropout probability on the outputs of every layer but the last, in training mode.
    #[serde(default)]
    pub dropout: f64,
    /// Run a second, reverse-time direction and concatenate both outputs. Default false.
    #[serde(default)]
    pub bidirectional: bool,
    /// LSTM only: project `h` to this size with `weight_hr`; 0 (default) means no projection.
    #[serde(default)]
    pub proj_size: usize,
    /// GRU only: whether the reset gate scales the recurrent product (`true`, the default:
    /// PyTorch's and cuDNN's GRU, ONNX `linear_before_reset = 1`, `n = tanh(W_in x + b_in +
    /// r (W_hn h + b_hn))`) or the state before it (`false`: the original GRU of Cho et al.,
    /// ONNX `linear_before_reset = 0`, Keras `reset_after=False`: `n = tanh(W_in x + b_in +
    /// W_hn (r h) + b_hn)`). Same parameters either way; absent from JSON when `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub linear_before_reset: bool,
    /// LSTM only: peephole connections, ONNX's definition: `i` and `f` also see `c_{t-1}`,
    /// `o` sees `c_t`, through per-unit weights `weight_ph_l{k}` of shape (3 * hidden_size),
    /// `[p_i; p_f; p_o]` (ONNX's `P` is `[p_i; p_o; p_f]`), initialised to zero. Default false
    /// (absent from JSON).
    #[serde(default, skip_serializing_if = "is_false")]
    pub peephole: bool,
    /// LSTM only: layer normalisation (Ba et al. 2016, Haste's LayerNormLSTM): `gates =
    /// LN(x W_ih^T; g_ih) + LN(h W_hh^T; g_hh) + b_ih + b_hh`, `c' = f c + i g` (carried
    /// unnormalised), `h' = o tanh(LN(c'; g_c, beta_c))`, each `LN` over all units of a row
    /// (mean, biased variance, eps 1e-5, as `torch.nn.LayerNorm`). Parameters
    /// `ln_ih_weight_l{k}` and `ln_hh_weight_l{k}` (4 * hidden_size), `ln_c_weight_l{k}` and
    /// `ln_c_bias_l{k}` (hidden_size), initialised to ones and zeros. Default false (absent
    /// from JSON).
    #[serde(default, skip_serializing_if = "is_false")]
    pub layer_norm: bool,
    /// DropConnect on the recurrent weights (AWD-LSTM's `WeightDrop`, Merity et al. 2017): in
    /// training mode each pass multiplies every `weight_hh_l{k}` by one Bernoulli mask, each
    /// element zeroed with this probability and the kept ones scaled by `1 / (1 - p)`, the
    /// same mask at every step; identity at evaluation. In `[0, 1)`; default 0 (absent from
    /// JSON). Any cell. See [`crate::regularisers`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_drop: f64,
    /// Zoneout (Krueger et al. 2016): in training mode each unit of each row keeps its previous
    /// state with this probability at each step, `h_t = m h_{t-1} + (1 - m) h~_t` (and `c`
    /// likewise for LSTM, with its own mask), `m ~ Bernoulli(p)`; at evaluation the expectation
    /// `p h_{t-1} + (1 - p) h~_t`. With `proj_size` it applies to the projected `h` and to
    /// `c`. In `[0, 1)`; default 0 (absent from JSON). Any cell. See
    /// [`crate::regularisers`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zoneout: f64,
    /// Makes the inter-layer `dropout` variational (locked, Gal and Ghahramani 2016): one mask
    /// per sequence and feature, the same at every step, instead of a mask per element.
    /// Requires `dropout > 0`; default false (absent from JSON).
    #[serde(default, skip_serializing_if = "is_false")]
    pub variational_dropout: bool,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn is_true(v: &bool) -> bool {
    *v
}
fn is_false(v: &bool) -> bool {
    !*v
}
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl RecurrentConfig {
    /// A layer with PyTorch's defaults: one layer, tanh, bias, sequence-first, no dropout,
    /// one direction, no projection.
    pub fn new(cell: CellKind, input_size: usize, hidden_size: usize) -> Self {
        RecurrentConfig {
            cell,
            input_size,
            hidden_size,
            num_layers: 1,
            nonlinearity: Nonlinearity::Tanh,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            proj_size: 0,
            linear_before_reset: true,
            peephole: false,
            layer_norm: false,
            weight_drop: 0.0,
            zoneout: 0.0,
            variational_dropout: false,
        }
    }

    /// Sets `num_layers`.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }
    /// Sets `nonlinearity` (RNN only).
    pub fn with_nonlinearity(mut self, nonlinearity: Nonlinearity) -> Self {
        self.nonlinearity = nonlinearity;
        self
    }
    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// Sets `batch_first`.
    pub fn with_batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }
    /// Sets `dropout`.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }
    /// Sets `bidirectional`.
    pub fn with_bidirectional(mut self, bidirectional: bool) -> Self {
        self.bidirectional = bidirectional;
        self
    }
    /// Sets `proj_size` (LSTM only).
    pub fn with_proj_size(mut self, proj_size: usize) -> Self {
        self.proj_size = proj_size;
        self
    }

    /// Sets `linear_before_reset` (GRU only; `false` applies the reset gate before the
    /// recurrent product).
    pub fn with_linear_before_reset(mut self, linear_before_reset: bool) -> Self {
        self.linear_before_reset = linear_before_reset;
        self
    }

    /// Sets `peephole` (LSTM only).
    pub fn with_peephole(mut self, peephole: bool) -> Self {
        self.peephole = peephole;
        self
    }

    /// Sets `layer_norm` (LSTM only).
    pub fn with_layer_norm(mut self, layer_norm: bool) -> Self {
        self.layer_norm = layer_norm;
        self
    }

    /// Sets `weight_drop`: DropConnect on `weight_hh` with this probability.
    pub fn with_weight_drop(mut self, p: f64) -> Self {
        self.weight_drop = p;
        self
    }

    /// Sets `zoneout`: the probability that a unit keeps its previous state at a step.
    pub fn with_zoneout(mut self, p: f64) -> Self {
        self.zoneout = p;
        self
    }

    /// Sets `variational_dropout`: the inter-layer dropout mask is the same at every step.
    pub fn with_variational_dropout(mut self, variational: bool) -> Self {
        self.variational_dropout = variational;
        self
    }

    /// Whether a pass in training mode draws random masks (dropout between layers, weight
    /// drop, zoneout).
    pub fn has_noise(&self) -> bool {
        (self.dropout > 0.0 && self.num_layers > 1) || self.weight_drop > 0.0 || self.zoneout > 0.0
    }

    /// `D`: 2 if bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// `H_out`: `proj_size` if set, else `hidden_size`. The size of `h` and of each direction's
    /// output.
    pub fn state_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// Width of the layer's output: `D * H_out`.
    pub fn output_size(&self) -> usize {
        self.num_directions() * self.state_size()
    }

    /// Input width of layer `layer`: `input_size` for layer 0, `D * H_out` above.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }

    /// Checks PyTorch's rules for these arguments.
    pub fn validate(&self) -> Result<()> {
        let name = self.cell.torch_name();
        if self.input_size == 0 {
            return Err(Error::Config(format!(
                "{name}: input_size must be greater than zero"
            )));
        }
        if self.hidden_size == 0 {
            return Err(Error::Config(format!(
                "{name}: hidden_size must be greater than zero"
            )));
        }
        if self.num_layers == 0 {
            return Err(Error::Config(format!(
                "{name}: num_layers must be greater than zero"
            )));
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::Config(format!(
                "{name}: dropout should be a number in range [0, 1] representing the probability \
                 of an element being zeroed, got {}",
                self.dropout
            )));
        }
        for (p, key) in [(self.weight_drop, "weight_drop"), (self.zoneout, "zoneout")] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Config(format!(
                    "{name}: {key} is a probability in [0, 1) (0 turns it off), got {p}"
                )));
            }
        }
        if self.variational_dropout && self.dropout == 0.0 {
            return Err(Error::Config(format!(
                "{name}: variational_dropout makes the inter-layer dropout's mask the same at \
                 every step, so it needs dropout > 0 (and num_layers > 1)"
            )));
        }
        if self.proj_size > 0 {
            if !self.cell.description().projection {
                return Err(Error::Config(format!(
                    "{name}: proj_size argument is only supported for LSTM, not RNN or GRU"
                )));
            }
            if self.proj_size >= self.hidden_size {
                return Err(Error::Config(format!(
                    "{name}: proj_size ({}) has to be smaller than hidden_size ({})",
                    self.proj_size, self.hidden_size
                )));
            }
        }
        if !self.cell.description().nonlinearity && self.nonlinearity != Nonlinearity::Tanh {
            return Err(Error::Config(format!(
                "{name}: nonlinearity is an argument of RNN only"
            )));
        }
        crate::engine::Cell::of_options(self).map_err(|e| Error::Config(format!("{name}: {e}")))?;
        self.check_memory()
    }

    /// PyTorch's repr of the layer this configuration builds: `LSTM(4, 8, num_layers=2)`.
    pub fn repr(&self) -> String {
        let mut s = format!(
            "{}({}, {}",
            self.cell.torch_name(),
            self.input_size,
            self.hidden_size
        );
        if self.proj_size != 0 {
            s.push_str(&format!(", proj_size={}", self.proj_size));
        }
        if self.num_layers != 1 {
            s.push_str(&format!(", num_layers={}", self.num_layers));
        }
        if self.nonlinearity != Nonlinearity::Tanh {
            s.push_str(", nonlinearity='relu'");
        }
        if !self.bias {
            s.push_str(", bias=False");
        }
        if self.batch_first {
            s.push_str(", batch_first=True");
        }
        if self.dropout != 0.0 {
            s.push_str(&format!(", dropout={}", self.dropout));
        }
        if self.bidirectional {
            s.push_str(", bidirectional=True");
        }
        s.push(')');
        s
    }

    /// Every parameter's PyTorch key and shape, in `state_dict` order (layer by layer, the
    /// forward direction then `_reverse`), as the cell's description lists them
    /// ([`crate::engine::cells::params::layer_params`]): `weight_ih_l{k}` `(G*H, H_in or D*H_out)`,
    /// `weight_hh_l{k}` `(G*H, H_out)`, `bias_ih_l{k}` and `bias_hh_l{k}` `(G*H,)` when `bias`,
    /// `weight_hr_l{k}` `(proj_size, H)` when `proj_size > 0`, and a variant's own (LSTM
    /// `peephole`: `weight_ph_l{k}` `(3*H,)`; `layer_norm`: `ln_ih_weight_l{k}`, `ln_hh_weight_l{k}`
    /// `(4*H,)`, `ln_c_weight_l{k}`, `ln_c_bias_l{k}` `(H,)`). Computed from the configuration alone, so that a
    /// file's tensors can be checked before a layer is built; call it on a validated
    /// configuration (the list has `num_layers * D` entries per key).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        for layer in 0..self.num_layers {
            let params = crate::engine::cells::params::layer_params(self, layer);
            for d in 0..self.num_directions() {
                let suffix = if d == 1 { "_reverse" } else { "" };
                for (p, shape) in &params {
                    v.push((format!("{}_l{layer}{suffix}", p.name()), shape.clone()));
                }
            }
        }
        v
    }

    /// The number of parameters, with overflow-safe arithmetic: `None` when it does not fit
    /// 64 bits.
    pub fn parameter_count(&self) -> Option<u64> {
        let u = |v: usize| u64::try_from(v).ok();
        let gh = u(self.cell.gates())?.checked_mul(u(self.hidden_size)?)?;
        let h_out = u(self.state_size())?;
        let d = u(self.num_directions())?;
        let per_dir = |input: u64| -> Option<u64> {
            let mut n = gh.checked_mul(input.checked_add(h_out)?)?;
            if self.bias {
                n = n.checked_add(gh.checked_mul(2)?)?;
            }
            if self.proj_size > 0 {
                n = n.checked_add(u(self.proj_size)?.checked_mul(u(self.hidden_size)?)?)?;
            }
            if self.peephole {
                n = n.checked_add(u(self.hidden_size)?.checked_mul(3)?)?;
            }
            if self.layer_norm {
                n = n.checked_add(u(self.hidden_size)?.checked_mul(10)?)?;
            }
            Some(n)
        };
        let first = per_dir(u(self.input_size)?)?;
        let rest = per_dir(d.checked_mul(h_out)?)?;
        let layers = first.checked_add(rest.checked_mul(u(self.num_layers)? - 1)?)?;
        layers.checked_mul(d)
    }

    /// An estimate of the f32 bytes one pass over `steps` = `L * N` input vectors takes beyond
    /// the input and the weights, with overflow-safe arithmetic (`None` on overflow): per
    /// vector, each layer and direction's gates, states and output (`G H + 2 H + H_out`), kept
    /// for every layer when `grad` (the backward pass reads them, and writes as much again),
    /// plus what a layer-normalised LSTM keeps and, when `grad`, zoneout's masks.
    pub fn forward_bytes(&self, steps: usize, grad: bool) -> Option<u64> {
        let u = |v: usize| u64::try_from(v).ok();
        let g = u(self.cell.gates())?;
        let h = u(self.hidden_size)?;
        // A layer-normalised LSTM keeps 18 H more per vector: both products and c' (9 H)
        // forward, its row gradients and dL/d(h W_hh^T) (9 H) backward. Zoneout's masks on h
        // and c (2 H) are drawn for every vector of a training pass.
        let ln = if self.layer_norm { 18 } else { 0 };
        let zoneout = if grad && self.zoneout > 0.0 { 2 } else { 0 };
        let extra = ln + zoneout;
        let per_dir = g
            .checked_add(2 + extra)?
            .checked_mul(h)?
            .checked_add(u(self.state_size())?)?;
        let per_layer = per_dir.checked_mul(u(self.num_directions())?)?;
        let layers = if grad {
            u(self.num_layers)?.checked_mul(2)?
        } else {
            2
        };
        u(steps)?
            .checked_mul(per_layer)?
            .checked_mul(layers)?
            .checked_mul(4)
    }

    /// The weights' f32 bytes against the memory budget (see [`crate::budget`]): a refusal
    /// names the sizes and the bytes.
    fn check_memory(&self) -> Result<()> {
        let bytes = self.parameter_count().and_then(|n| n.checked_mul(4));
        crate::budget::check(bytes, || {
            let mut sizes = format!(
                "{}: input_size {}, hidden_size {}, num_layers {}",
                self.cell.torch_name(),
                self.input_size,
                self.hidden_size,
                self.num_layers
            );
            if self.proj_size > 0 {
                sizes.push_str(&format!(", proj_size {}", self.proj_size));
            }
            if self.bidirectional {
                sizes.push_str(", bidirectional");
            }
            format!("{sizes}: the weights")
        })
    }

    /// Parses the JSON of a model file's `config` metadata and validates it.
    pub fn from_json(json: &str) -> Result<Self> {
        let config: RecurrentConfig = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("bad JSON config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// The JSON written into a model file's `config` metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a config always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory estimate counts the variants' extra buffers. LSTM(4, 8), per vector and layer:
    /// (G + 2) H + H_out = 56 floats; zoneout's masks add 2 H in training, the layer norms 18 H.
    #[test]
    fn forward_bytes_count_layer_norm_and_zoneout() {
        let plain = RecurrentConfig::new(CellKind::Lstm, 4, 8);
        let bytes = |c: &RecurrentConfig, grad| c.forward_bytes(10, grad).unwrap();
        assert_eq!(bytes(&plain, false), 10 * 56 * 2 * 4);
        assert_eq!(bytes(&plain, true), 10 * 56 * 2 * 4);
        let zoneout = plain.clone().with_zoneout(0.1);
        assert_eq!(bytes(&zoneout, false), bytes(&plain, false));
        assert_eq!(bytes(&zoneout, true), 10 * (56 + 16) * 2 * 4);
        let ln = plain.with_layer_norm(true);
        assert_eq!(bytes(&ln, false), 10 * (56 + 144) * 2 * 4);
    }

    #[test]
    fn pytorch_rules() {
        let ok = RecurrentConfig::new(CellKind::Lstm, 4, 8).with_proj_size(3);
        ok.validate().unwrap();
        assert!(RecurrentConfig::new(CellKind::Lstm, 4, 8)
            .with_proj_size(8)
            .validate()
            .is_err());
        assert!(RecurrentConfig::new(CellKind::Gru, 4, 8)
            .with_proj_size(2)
            .validate()
            .is_err());
        assert!(RecurrentConfig::new(CellKind::Rnn, 4, 8)
            .with_dropout(1.5)
            .validate()
            .is_err());
        assert!(RecurrentConfig::new(CellKind::Rnn, 4, 0)
            .validate()
            .is_err());
        assert!(RecurrentConfig::new(CellKind::Rnn, 4, 2)
            .with_num_layers(0)
            .validate()
            .is_err());
        assert!(RecurrentConfig::new(CellKind::Gru, 4, 2)
            .with_nonlinearity(Nonlinearity::Relu)
            .validate()
            .is_err());
    }

    #[test]
    fn regularisers_are_checked_and_absent_from_json_when_off() {
        let plain = RecurrentConfig::new(CellKind::Lstm, 4, 8).with_num_layers(2);
        let json = plain.to_json();
        for key in ["weight_drop", "zoneout", "variational_dropout"] {
            assert!(!json.contains(key), "{json}");
        }
        let on = plain
            .clone()
            .with_dropout(0.3)
            .with_variational_dropout(true)
            .with_weight_drop(0.5)
            .with_zoneout(0.1);
        on.validate().unwrap();
        assert_eq!(RecurrentConfig::from_json(&on.to_json()).unwrap(), on);
        for (c, message) in [
            (
                plain.clone().with_weight_drop(1.0),
                "weight_drop is a probability in [0, 1)",
            ),
            (
                plain.clone().with_zoneout(-0.1),
                "zoneout is a probability in [0, 1)",
            ),
            (
                plain.clone().with_zoneout(f64::NAN),
                "zoneout is a probability",
            ),
            (
                plain.clone().with_variational_dropout(true),
                "variational_dropout makes the inter-layer dropout's mask the same",
            ),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(message), "{e}");
        }
    }

    #[test]
    fn parameter_shapes_and_count_agree_with_the_layer() {
        let configs = [
            RecurrentConfig::new(CellKind::Lstm, 3, 5)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_proj_size(2),
            RecurrentConfig::new(CellKind::Gru, 4, 6).with_bias(false),
            RecurrentConfig::new(CellKind::Rnn, 1, 2).with_num_layers(3),
        ];
        for c in configs {
            let layer = crate::Recurrent::with_rng(c.clone(), &mut crate::Rng::new(0)).unwrap();
            let named: Vec<(String, Vec<usize>)> = crate::Module::named_parameters(&layer)
                .into_iter()
                .map(|(k, t)| (k, t.shape()))
                .collect();
            assert_eq!(c.parameter_shapes(), named);
            let count: usize = named.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            assert_eq!(c.parameter_count(), Some(count as u64));
        }
    }

    #[test]
    fn sizes_beyond_memory_are_refused_before_allocation() {
        for (c, field) in [
            (
                RecurrentConfig::new(CellKind::Lstm, 4, 1_000_000_000),
                "hidden_size 1000000000",
            ),
            (
                RecurrentConfig::new(CellKind::Rnn, 4, 10_000_000_000_000_000_000),
                "overflows",
            ),
            (
                RecurrentConfig::new(CellKind::Rnn, 4, 4).with_num_layers(usize::MAX),
                "num_layers 18446744073709551615",
            ),
            (
                RecurrentConfig::new(CellKind::Gru, usize::MAX, 1),
                "overflows",
            ),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
            assert!(crate::Recurrent::with_rng(c, &mut crate::Rng::new(0)).is_err());
        }
    }

    #[test]
    fn json_defaults_and_round_trip() {
        let c = RecurrentConfig::from_json(
            r#"{"cell": "lstm", "input_size": 4, "hidden_size": 8, "num_layers": 2,
                "bidirectional": true, "batch_first": true, "proj_size": 3}"#,
        )
        .unwrap();
        assert_eq!(c.num_layers, 2);
        assert!(c.bias);
        assert_eq!(c.output_size(), 6);
        assert_eq!(RecurrentConfig::from_json(&c.to_json()).unwrap(), c);
        assert!(RecurrentConfig::from_json(r#"{"cell": "lstm"}"#).is_err());
        assert!(RecurrentConfig::from_json(
            r#"{"cell": "cnn", "input_size": 1, "hidden_size": 1}"#
        )
        .is_err());
        assert!(RecurrentConfig::from_json("{not json").is_err());
    }
}
