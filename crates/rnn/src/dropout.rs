//! `Dropout`, as `torch.nn.Dropout`: in training mode each element is zeroed with probability
//! `p` and the kept ones are scaled by `1 / (1 - p)`, so the expected value is unchanged; in
//! evaluation mode it is the identity.
//!
//! The mask comes from [`Rng`]: the module draws from the global generator (seeded by
//! [`crate::manual_seed`]), [`dropout`] from the one it is given. Element `k` (row-major) is
//! kept when the `k`-th draw of `next_f32()` is `>= p`.
//!
//! ```
//! use rnn::{dropout::Dropout, Module, Tensor};
//! let mut drop = Dropout::new(0.5).unwrap();
//! drop.set_training(false);
//! let x = Tensor::zeros(&[2, 3]);
//! assert!(drop.forward(&x).same(&x)); // identity in evaluation mode
//! ```

use std::fmt;

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::module::Module;
use crate::rng::{with_global_rng, Rng};
use crate::tensor::{Backward, Tensor};

/// The dropout layer; starts in training mode, as PyTorch modules do.
#[derive(Clone, Debug)]
pub struct Dropout {
    p: f32,
    training: bool,
}

fn check_p(p: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::Config(format!(
            "dropout probability has to be between 0 and 1, but got {p}"
        )));
    }
    Ok(())
}

impl Dropout {
    /// `nn.Dropout(p)`; `p` must be in `[0, 1]`.
    pub fn new(p: f32) -> Result<Dropout> {
        check_p(p)?;
        Ok(Dropout { p, training: true })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Applies dropout with the global generator (identity in evaluation mode).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if !self.training || self.p == 0.0 {
            return x.clone();
        }
        with_global_rng(|rng| apply(x, self.p, rng))
    }
}

/// `F.dropout(x, p, training)` with the mask drawn from `rng`. Returns `x` itself when not
/// training or when `p = 0` (no draws are made then).
pub fn dropout(x: &Tensor, p: f32, training: bool, rng: &mut Rng) -> Result<Tensor> {
    check_p(p)?;
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    Ok(apply(x, p, rng))
}

/// `x * mask`, with `mask` = `1 / (1 - p)` (kept) or 0 (dropped); `p = 1` drops everything.
fn apply(x: &Tensor, p: f32, rng: &mut Rng) -> Tensor {
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let (out, mask) = {
        let xd = x.data();
        let mask = xd.mapv(|_| if rng.next_f32() >= p { scale } else { 0.0 });
        (&*xd * &mask, mask)
    };
    Tensor::from_unary_op(out, vec![x.clone()], Mask(mask))
}

/// Backward of dropout: `g * mask`.
struct Mask(ArrayD<f32>);

impl Backward for Mask {
    fn name(&self) -> &'static str {
        "DropoutBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        _inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        vec![grads[0].as_ref().map(|g| g * &self.0)]
    }
}

impl Module for Dropout {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

impl fmt::Display for Dropout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dropout(p={}, inplace=False)", self.p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn training_drops_about_p_and_rescales() {
        let x = Tensor::parameter(ArrayD::from_elem(IxDyn(&[100, 100]), 2.0f32));
        let y = dropout(&x, 0.3, true, &mut Rng::new(5)).unwrap();
        let v = y.to_array();
        let kept = v.iter().filter(|&&a| a != 0.0).count() as f32 / 10000.0;
        assert!((kept - 0.7).abs() < 0.02, "{kept}");
        assert!(v.iter().all(|&a| a == 0.0 || (a - 2.0 / 0.7).abs() < 1e-6));
        y.sum().backward().unwrap();
        let g = x.grad().unwrap();
        // The gradient goes through the same mask.
        assert!(g
            .iter()
            .zip(v.iter())
            .all(|(&g, &a)| (g == 0.0) == (a == 0.0)));
        // Same seed, same mask.
        assert_eq!(
            dropout(&x, 0.3, true, &mut Rng::new(5)).unwrap().to_array(),
            v
        );
    }

    #[test]
    fn edge_probabilities_and_modes() {
        let x = Tensor::new(ArrayD::from_elem(IxDyn(&[3, 4]), 1.0f32));
        let mut rng = Rng::new(0);
        assert_eq!(
            dropout(&x, 1.0, true, &mut rng).unwrap().to_array().sum(),
            0.0
        );
        assert!(dropout(&x, 0.0, true, &mut rng).unwrap().same(&x));
        assert!(dropout(&x, 0.9, false, &mut rng).unwrap().same(&x));
        assert!(dropout(&x, 1.5, true, &mut rng).is_err());
        let e = Dropout::new(-0.1).unwrap_err().to_string();
        assert!(e.contains("between 0 and 1, but got -0.1"), "{e}");
        let mut d = Dropout::new(0.5).unwrap();
        assert!(d.is_training());
        assert_eq!(d.to_string(), "Dropout(p=0.5, inplace=False)");
        d.set_training(false);
        assert!(d.forward(&x).same(&x));
        d.set_training(true);
        crate::manual_seed(9);
        let a = d.forward(&x).to_array();
        crate::manual_seed(9);
        assert_eq!(d.forward(&x).to_array(), a);
        assert!(a.iter().any(|&v| v == 0.0) && a.iter().any(|&v| v == 2.0));
    }
}
