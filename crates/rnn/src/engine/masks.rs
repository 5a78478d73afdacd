//! The random masks of the regularisers a pass applies inside the engine: dropout between
//! layers (per element, or variational: per sequence and feature) and zoneout (per unit, row
//! and step). They are drawn before the pass ([`Masks::draw`]) or given (tests fix them), and
//! kept for backward in [`super::Saved`].

use ndarray::Array2;

use super::Batches;
use crate::config::RecurrentConfig;
use crate::linalg::Float;
use crate::rng::Rng;

/// The masks of one pass. `Masks::default()` is a pass without any (evaluation without
/// zoneout).
#[derive(Clone, Debug, Default)]
pub struct Masks<F> {
    /// The dropout mask of the input of layer `k + 1` at index `k`, (R, D*H_out) in the rows'
    /// order, entries 0 or `1 / (1 - p)`; `None` or a short list: no dropout there.
    pub dropout: Vec<Option<Array2<F>>>,
    /// Zoneout of every layer and direction.
    pub zoneout: Zoneout<F>,
}

/// Zoneout in a pass (see `engine/zoneout.rs` for the equations).
#[derive(Clone, Debug, Default)]
pub enum Zoneout<F> {
    /// No zoneout.
    #[default]
    Off,
    /// Training: the masks of each layer and direction (index layer*D + direction).
    Masks(Vec<ZoneoutMasks<F>>),
    /// Evaluation: every mask is the expectation `p`.
    Expectation(F),
}

/// The zoneout masks of one layer and direction: 1 keeps the previous state's unit, 0 takes
/// the new one.
#[derive(Clone, Debug)]
pub struct ZoneoutMasks<F> {
    /// (R, H_out), rows in the pass's order.
    pub h: Array2<F>,
    /// (R, H) for a cell with a cell state, else `None`.
    pub c: Option<Array2<F>>,
}

impl<F: Float> Masks<F> {
    /// The masks of a pass of `config` over `batches`: in training mode (`rng` given) drawn
    /// from `rng`, layer by layer (each direction's zoneout masks, `h` then `c`, row-major,
    /// then the dropout mask of the layer's output), each value from one `next_f64()`, which
    /// is below `p` where a unit is dropped or zoned out; at evaluation (`None`) only
    /// zoneout's expectation.
    pub fn draw(config: &RecurrentConfig, batches: &Batches, rng: Option<&mut Rng>) -> Self {
        let Some(rng) = rng else {
            return Masks {
                dropout: Vec::new(),
                zoneout: if config.zoneout > 0.0 {
                    Zoneout::Expectation(F::from_f64(config.zoneout))
                } else {
                    Zoneout::Off
                },
            };
        };
        let rows = batches.rows();
        let dirs = config.num_directions();
        let has_c = config.cell.description().cell_state;
        let bernoulli = |rng: &mut Rng, dim: (usize, usize), p: f64| {
            Array2::from_shape_simple_fn(dim, || {
                if rng.next_f64() < p {
                    F::one()
                } else {
                    F::zero()
                }
            })
        };
        let mut dropout = Vec::new();
        let mut zoneout = Vec::new();
        for layer in 0..config.num_layers {
            if config.zoneout > 0.0 {
                for _ in 0..dirs {
                    let h = bernoulli(rng, (rows, config.state_size()), config.zoneout);
                    let c =
                        has_c.then(|| bernoulli(rng, (rows, config.hidden_size), config.zoneout));
                    zoneout.push(ZoneoutMasks { h, c });
                }
            }
            if layer + 1 < config.num_layers && config.dropout > 0.0 {
                let width = config.output_size();
                dropout.push(Some(if config.variational_dropout {
                    locked_mask(rng, batches, width, config.dropout)
                } else {
                    super::dropout_mask(rng, (rows, width), config.dropout)
                }));
            }
        }
        Masks {
            dropout,
            zoneout: if zoneout.is_empty() {
                Zoneout::Off
            } else {
                Zoneout::Masks(zoneout)
            },
        }
    }
}

/// A variational (locked) dropout mask: one draw per sequence and feature (N, width), each 0
/// with probability `p`, else `1 / (1 - p)`, repeated at every step of the sequence (R, width).
pub fn locked_mask<F: Float>(rng: &mut Rng, batches: &Batches, width: usize, p: f64) -> Array2<F> {
    let per_sequence = super::dropout_mask::<F>(rng, (batches.batch(), width), p);
    let mut mask = Array2::zeros((batches.rows(), width));
    for t in 0..batches.steps() {
        for i in 0..batches.active(t) {
            mask.row_mut(batches.row(t, i)).assign(&per_sequence.row(i));
        }
    }
    mask
}
