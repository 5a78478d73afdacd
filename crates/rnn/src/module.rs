//! The `Module` trait: what every layer and model shares (parameters with PyTorch's names,
//! training mode), as `torch.nn.Module`.

use crate::tensor::Tensor;

/// A layer or a model made of layers.
pub trait Module {
    /// Parameters with their `state_dict` keys, in PyTorch's registration order
    /// (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, ...).
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Sets training mode (`model.train()`) or evaluation mode (`model.eval()`): dropout is
    /// active only in training mode. Modules without dropout ignore it.
    fn set_training(&mut self, _training: bool) {}

    /// The parameters, in order.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Clears every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.parameters() {
            p.zero_grad();
        }
    }

    /// Total number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|p| p.data().len()).sum()
    }
}

/// Prefixes the names of a sub-module's parameters: `prefix.name`, as PyTorch nests
/// `state_dict` keys (`rnn.weight_ih_l0`).
pub fn prefixed(prefix: &str, module: &dyn Module) -> Vec<(String, Tensor)> {
    module
        .named_parameters()
        .into_iter()
        .map(|(name, t)| (format!("{prefix}.{name}"), t))
        .collect()
}
