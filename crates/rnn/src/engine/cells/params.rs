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
}

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Uniform in (-1/sqrt(hidden_size), 1/sqrt(hidden_size)), PyTorch's `reset_parameters`
    /// (drawn in `state_dict` order from the layer's generator).
    Uniform,
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
        }
    }

    /// How the parameter starts.
    pub fn init(self) -> Init {
        Init::Uniform
    }
}

/// The parameters of one direction of layer `layer` with their shapes, in `state_dict` order.
pub fn layer_params(config: &RecurrentConfig, layer: usize) -> Vec<(Param, Vec<usize>)> {
    config
        .cell
        .description()
        .params
        .iter()
        .filter_map(|&p| p.shape(config, layer).map(|s| (p, s)))
        .collect()
}
