//! The regularisers of recurrent language models (AWD-LSTM, Merity et al. 2017; Haste's
//! options), set in a layer's [`RecurrentConfig`] and applied by every cell kind with every
//! layer option (layers, bidirectional, `batch_first`, packed input, initial states):
//!
//! | config key | what it does in training mode | at evaluation |
//! |---|---|---|
//! | `"weight_drop": p` | DropConnect on `weight_hh_l{k}`: one Bernoulli mask per pass, kept entries scaled by `1 / (1 - p)` (PyTorch's dropout, as AWD-LSTM's `WeightDrop` applies `F.dropout` to the raw weight), the same mask at every step | identity |
//! | `"zoneout": p` | each unit of `h` (and of `c`, LSTM) keeps its previous value with probability `p`, per row and step: `h_t = m h_{t-1} + (1 - m) h~_t` (Krueger et al. 2016) | the expectation `p h_{t-1} + (1 - p) h~_t` |
//! | `"variational_dropout": true` | the inter-layer `dropout` draws one mask per sequence and feature, the same at every step (locked dropout), scaled by `1 / (1 - p)` | identity |
//!
//! Gradients: `dW_hh = mask * dW_hh'` where `W_hh' = mask * W_hh` is what the pass ran;
//! zoneout's in the engine (`engine/zoneout.rs`); dropout's masks multiply the gradient of the
//! next layer's input.
//!
//! **Zoneout at evaluation** is its expectation, not the identity: a network trained with
//! zoneout has learnt to expect that its units move only part of the way to their new
//! values; dropping that at test time changes the function it computes (unlike dropout, whose
//! `1 / (1 - p)` scaling keeps the expected value). The paper (section 3.1, "as in dropout,
//! we use the expectation of the random noise at test time") and Haste's `LSTM(zoneout=p)`
//! (`zoneout_prob * h_prev + (1 - zoneout_prob) * h_new` in inference) do the same.
//!
//! **With `proj_size`**, zoneout applies to the projected `h` (the state that recurs and is
//! output) and to `c`.
//!
//! The masks are drawn from the global generator ([`crate::manual_seed`]) at each training
//! pass, as the inter-layer dropout's always were: deterministic for a seed. Their order and
//! layout are [`Masks::draw`]'s; tests give their own with [`crate::Recurrent::forward_masked`].

use ndarray::{Array2, ArrayView2};

use crate::config::RecurrentConfig;
use crate::engine::{self, Batches};
use crate::error::{Error, Result};
use crate::linalg::Float;
use crate::rng::Rng;

/// Every random mask of one pass of a recurrent layer.
#[derive(Clone, Debug, Default)]
pub struct Masks<F> {
    /// The DropConnect mask of `weight_hh` of each layer and direction (index layer*D +
    /// direction), (G*H, H_out), entries 0 or `1 / (1 - p)`; empty: no weight drop.
    pub weight_drop: Vec<Array2<F>>,
    /// The engine's masks: inter-layer dropout and zoneout (rows in the pass's order: the
    /// input's rows time-major, batch-major with `batch_first`, or the packed rows).
    pub pass: engine::Masks<F>,
}

impl<F: Float> Masks<F> {
    /// The masks of a pass of `config` over `batches`: in training mode (`rng` given) the
    /// weight-drop masks of every layer and direction first (row-major, one `next_f64()`
    /// each, dropped where it is below `p`), then the engine's ([`engine::Masks::draw`]); at
    /// evaluation (`None`) none but zoneout's expectation.
    pub fn draw(config: &RecurrentConfig, batches: &Batches, mut rng: Option<&mut Rng>) -> Self {
        let mut weight_drop = Vec::new();
        if let Some(rng) = rng.as_deref_mut().filter(|_| config.weight_drop > 0.0) {
            let dim = (
                config.cell.gates() * config.hidden_size,
                config.state_size(),
            );
            for _ in 0..config.num_layers * config.num_directions() {
                weight_drop.push(engine::dropout_mask(rng, dim, config.weight_drop));
            }
        }
        Masks {
            weight_drop,
            pass: engine::Masks::draw(config, batches, rng),
        }
    }

    /// Checks the masks' counts and shapes against a pass of `config` over `batches`.
    pub fn check(&self, config: &RecurrentConfig, batches: &Batches) -> Result<()> {
        let ld = config.num_layers * config.num_directions();
        let rows = batches.rows();
        let shape = |what: String, a: &Array2<F>, want: (usize, usize)| {
            if a.dim() == want {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "{what} mask: expected shape ({}, {}), got {:?}",
                    want.0,
                    want.1,
                    a.shape()
                )))
            }
        };
        if !self.weight_drop.is_empty() {
            if self.weight_drop.len() != ld {
                return Err(Error::Invalid(format!(
                    "weight_drop masks: expected one per layer and direction ({ld}), got {}",
                    self.weight_drop.len()
                )));
            }
            let dim = (
                config.cell.gates() * config.hidden_size,
                config.state_size(),
            );
            for (k, m) in self.weight_drop.iter().enumerate() {
                shape(format!("weight_drop[{k}]"), m, dim)?;
            }
        }
        if self.pass.dropout.len() > config.num_layers.saturating_sub(1) {
            return Err(Error::Invalid(format!(
                "dropout masks: at most one per layer but the last ({}), got {}",
                config.num_layers.saturating_sub(1),
                self.pass.dropout.len()
            )));
        }
        for (k, m) in self.pass.dropout.iter().enumerate() {
            if let Some(m) = m {
                shape(format!("dropout[{k}]"), m, (rows, config.output_size()))?;
            }
        }
        if let engine::Zoneout::Masks(z) = &self.pass.zoneout {
            if z.len() != ld {
                return Err(Error::Invalid(format!(
                    "zoneout masks: expected one per layer and direction ({ld}), got {}",
                    z.len()
                )));
            }
            let has_c = config.cell.description().cell_state;
            for (k, m) in z.iter().enumerate() {
                shape(format!("zoneout[{k}].h"), &m.h, (rows, config.state_size()))?;
                match (&m.c, has_c) {
                    (Some(c), true) => {
                        shape(format!("zoneout[{k}].c"), c, (rows, config.hidden_size))?
                    }
                    (None, false) => {}
                    _ => {
                        return Err(Error::Invalid(format!(
                            "zoneout[{k}].c: a mask of c for a cell with a cell state (LSTM), \
                             none otherwise"
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

/// DropConnect forward: the weight the pass runs, `mask * w` (element-wise).
pub fn drop_weights<F: Float>(w: ArrayView2<'_, F>, mask: &Array2<F>) -> Array2<F> {
    &w * mask
}

/// DropConnect backward: `dL/dW = mask * dL/dW'` from the gradient of the weight the pass
/// ran, in place.
pub fn weight_drop_grad<F: Float>(grad: &mut Array2<F>, mask: &Array2<F>) {
    *grad *= mask;
}
