//! The parameters a cell's layer has, by role: PyTorch's names, shapes and initialisation.
//!
//! A cell's [`Description`](super::Description) lists its roles in `state_dict` order; the
//! layer's parameter list, its state-dict keys (`{name}_l{k}` and `_reverse`), the engine's
//! weights and gradients of a direction and the order of the gradients the layer returns all
//! follow that list, so a parameter is named, shaped and ordered in one place.

use crate::config::RecurrentConfig;

/// What one parameter of a layer and direction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    /// `weight_ih`: (G * hidden_size, input of the layer).
    WeightIh,
    /// `weight_hh`: (G * hidden_size, H_out).
    WeightHh,
    /// `bias_ih`: (G * hidden_size), with `bias`.
    BiasIh,
    /// `bias_hh`: (G * hidden_size), with `bias`.
    BiasHh,
    /// `weight_hr`: (proj_size, hidden_size), with `proj_size > 0` (LSTM).
    WeightHr,
    /// `weight_ph`: (3 * hidden_size), the peephole weights `[p_i; p_f; p_o]` (LSTM with
    /// `peephole`).
    WeightPh,
    /// `ln_ih_weight`: (4 * hidden_size), the gain of the layer norm of `x W_ih^T` (LSTM with
    /// `layer_norm`).
    LnIhWeight,
    /// `ln_hh_weight`: (4 * hidden_size), the gain of the layer norm of `h W_hh^T`.
    LnHhWeight,
    /// `ln_c_weight`: (hidden_size), the gain of the layer norm of `c'`.
    LnCWeight,
    /// `ln_c_bias`: (hidden_size), the shift of the layer norm of `c'`.
    LnCBias,
}

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Uniform in (-1/sqrt(hidden_size), 1/sqrt(hidden_size)), PyTorch's `reset_parameters`
    /// (drawn in `state_dict` order from the layer's generator).
    Uniform,
    /// Zeros (a variant's extra weights: the layer starts as the plain cell).
    Zeros,
    /// Ones (a layer norm's gain, as `torch.nn.LayerNorm`).
    Ones,
}

impl Param {
    /// PyTorch's name without the layer suffix: `weight_ih`, ...
    pub fn name(self) -> &'static str {
        match self {
            Param::WeightIh => "weight_ih",
            Param::WeightHh => "weight_hh",
            Param::BiasIh => "bias_ih",
            Param::BiasHh => "bias_hh",
            Param::WeightHr => "weight_hr",
            Param::WeightPh => "weight_ph",
            Param::LnIhWeight => "ln_ih_weight",
            Param::LnHhWeight => "ln_hh_weight",
            Param::LnCWeight => "ln_c_weight",
            Param::LnCBias => "ln_c_bias",
        }
    }

    /// The shape in layer `layer` of `config`, or `None` where the configuration has no such
    /// parameter (no `bias`, no `proj_size`).
    pub fn shape(self, config: &RecurrentConfig, layer: usize) -> Option<Vec<usize>> {
        let gh = config.cell.gates() * config.hidden_size;
        match self {
            Param::WeightIh => Some(vec![gh, config.layer_input_size(layer)]),
            Param::WeightHh => Some(vec![gh, config.state_size()]),
            Param::BiasIh | Param::BiasHh => config.bias.then(|| vec![gh]),
            Param::WeightHr => {
                (config.proj_size > 0).then(|| vec![config.proj_size, config.hidden_size])
            }
            _ => {
                let width = self.unit_width().expect("a per-unit parameter");
                self.present(config)
                    .then(|| vec![width * config.hidden_size])
            }
        }
    }

    /// Whether a layer of `config` has the parameter (as [`Param::shape`] is `Some`, without
    /// building the shape: the layers ask at every pass).
    pub fn present(self, config: &RecurrentConfig) -> bool {
        match self {
            Param::WeightIh | Param::WeightHh => true,
            Param::BiasIh | Param::BiasHh => config.bias,
            Param::WeightHr => config.proj_size > 0,
            Param::WeightPh => config.peephole,
            Param::LnIhWeight | Param::LnHhWeight | Param::LnCWeight | Param::LnCBias => {
                config.layer_norm
            }
        }
    }

    /// Per-unit parameters (vectors of `k * hidden_size` values that the row math reads a
    /// block's part of): `Some(k)`; `None` for the matrices and the biases. A cell's per-unit
    /// parameters are its unit weights ([`super::Description::unit_weights`]), concatenated in
    /// `state_dict` order.
    pub fn unit_width(self) -> Option<usize> {
        match self {
            Param::WeightPh => Some(3),
            Param::LnIhWeight | Param::LnHhWeight => Some(4),
            Param::LnCWeight | Param::LnCBias => Some(1),
            Param::WeightIh | Param::WeightHh | Param::BiasIh | Param::BiasHh => None,
            Param::WeightHr => None,
        }
    }

    /// How the parameter starts.
    pub fn init(self) -> Init {
        match self {
            Param::WeightPh | Param::LnCBias => Init::Zeros,
            Param::LnIhWeight | Param::LnHhWeight | Param::LnCWeight => Init::Ones,
            _ => Init::Uniform,
        }
    }
}

/// The parameters of a direction of any layer of `config`, in `state_dict` order.
pub fn layer_roles(config: &RecurrentConfig) -> impl Iterator<Item = Param> + '_ {
    super::Cell::of(config)
        .description()
        .params
        .iter()
        .copied()
        .filter(|p| p.present(config))
}

/// The parameters of one direction of layer `layer` with their shapes, in `state_dict` order.
pub fn layer_params(config: &RecurrentConfig, layer: usize) -> Vec<(Param, Vec<usize>)> {
    super::Cell::of(config)
        .description()
        .params
        .iter()
        .filter_map(|&p| p.shape(config, layer).map(|s| (p, s)))
        .collect()
}
