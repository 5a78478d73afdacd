//! Gradient clipping, as `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
//!
//! Recurrent networks are where gradients explode (backpropagation through many time steps
//! multiplies by the recurrent weights again and again); clipping is called between
//! `loss.backward()` and `optimizer.step()`.
//!
//! ```
//! use ndarray::array;
//! use rnn::optim::clip_grad_norm_;
//! use rnn::Tensor;
//!
//! let w = Tensor::parameter(array![0.0f32, 0.0].into_dyn());
//! w.set_grad(Some(array![3.0f32, 4.0].into_dyn()));
//! let total = clip_grad_norm_(&[w.clone()], 1.0, 2.0).unwrap();
//! assert_eq!(total, 5.0); // the norm before clipping
//! let g = w.grad().unwrap();
//! assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
//! ```

use ndarray::ArrayD;

use super::maximum;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Scales the gradients of `params` in place so that their total `norm_type`-norm is at most
/// `max_norm`, and returns the total norm before clipping (`clip_grad_norm_(params, max_norm,
/// norm_type)`).
///
/// The total norm is the norm of the vector of per-parameter norms (the norm of all gradients
/// concatenated): `‖(‖g₁‖, ‖g₂‖, …)‖`. `norm_type` is a p ≥ 0 (`0` counts non-zero entries)
/// or `f64::INFINITY` (largest absolute value; `-∞`, the smallest, is accepted too). Every
/// gradient is multiplied by `min(max_norm / (total + 1e-6), 1)` in f32, even when that is 1,
/// as PyTorch does. Parameters without a gradient are ignored; with none at all the result is
/// 0. A non-finite total norm (a NaN or infinite gradient) is not an error here: the gradients
/// become NaN, as in PyTorch; see [`clip_grad_norm_error_if_nonfinite_`].
///
/// Fails on a negative or NaN `max_norm`, or a `norm_type` that is NaN or a negative finite
/// number.
pub fn clip_grad_norm_(params: &[Tensor], max_norm: f64, norm_type: f64) -> Result<f32> {
    clip(params, max_norm, norm_type, false)
}

/// [`clip_grad_norm_`] with `error_if_nonfinite=True`: if the total norm is NaN or infinite,
/// returns an [`Error::Invalid`] and leaves the gradients as they were.
pub fn clip_grad_norm_error_if_nonfinite_(
    params: &[Tensor],
    max_norm: f64,
    norm_type: f64,
) -> Result<f32> {
    clip(params, max_norm, norm_type, true)
}

fn clip(params: &[Tensor], max_norm: f64, norm_type: f64, error_if_nonfinite: bool) -> Result<f32> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::Invalid(format!(
            "clip_grad_norm_: max_norm must be >= 0, got {max_norm}"
        )));
    }
    if norm_type.is_nan() || (norm_type.is_finite() && norm_type < 0.0) {
        return Err(Error::Invalid(format!(
            "clip_grad_norm_: norm_type must be a p >= 0 or inf, got {norm_type}"
        )));
    }
    let grads: Vec<(&Tensor, ArrayD<f32>)> = params
        .iter()
        .filter_map(|p| p.grad().map(|g| (p, g)))
        .collect();
    if grads.is_empty() {
        return Ok(0.0);
    }
    let norms: Vec<f32> = grads
        .iter()
        .map(|(_, g)| vector_norm(g.iter().copied(), norm_type))
        .collect();
    let total = vector_norm(norms.iter().copied(), norm_type);
    if error_if_nonfinite && !total.is_finite() {
        return Err(Error::Invalid(format!(
            "The total norm of order {norm_type} for gradients from `parameters` is non-finite, so \
             it cannot be clipped. To scale the gradients by the non-finite norm anyway, use \
             clip_grad_norm_ (error_if_nonfinite=False)"
        )));
    }
    // clip_coef = max_norm / (total_norm + 1e-6); torch.clamp(clip_coef, max=1.0): f32 tensors.
    let clip_coef = max_norm as f32 / (total + 1e-6_f64 as f32);
    let clip_coef = if clip_coef.is_nan() {
        clip_coef
    } else {
        clip_coef.min(1.0)
    };
    for (p, mut g) in grads {
        g.mapv_inplace(|v| v * clip_coef);
        p.set_grad(Some(g));
    }
    Ok(total)
}

/// `torch.linalg.vector_norm(x, ord)` of f32 values, accumulated in f64 and rounded once.
fn vector_norm(values: impl Iterator<Item = f32>, ord: f64) -> f32 {
    if ord == f64::INFINITY {
        values.fold(0.0, |m, v| maximum(m, v.abs()))
    } else if ord == f64::NEG_INFINITY {
        values.fold(f32::INFINITY, |m, v| {
            if m.is_nan() || v.is_nan() {
                f32::NAN
            } else {
                m.min(v.abs())
            }
        })
    } else if ord == 0.0 {
        values
            .map(|v| if v != 0.0 { 1.0 } else { 0.0 })
            .sum::<f64>() as f32
    } else if ord == 1.0 {
        values.map(|v| f64::from(v.abs())).sum::<f64>() as f32
    } else if ord == 2.0 {
        values
            .map(|v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt() as f32
    } else {
        let sum: f64 = values.map(|v| f64::from(v.abs()).powf(ord)).sum();
        sum.powf(1.0 / ord) as f32
    }
}

/// Clamps every gradient of `params` to `[-clip_value, clip_value]` in place
/// (`clip_grad_value_`). NaN entries stay NaN. Fails on a negative or NaN `clip_value`.
pub fn clip_grad_value_(params: &[Tensor], clip_value: f64) -> Result<()> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::Invalid(format!(
            "clip_grad_value_: clip_value must be >= 0, got {clip_value}"
        )));
    }
    let c = clip_value as f32;
    for p in params {
        if let Some(mut g) = p.grad() {
            g.mapv_inplace(|v| v.clamp(-c, c));
            p.set_grad(Some(g));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn with_grad(g: ArrayD<f32>) -> Tensor {
        let p = Tensor::parameter(ArrayD::zeros(g.raw_dim()));
        p.set_grad(Some(g));
        p
    }

    #[test]
    fn total_norm_is_the_norm_of_the_norms() {
        let a = with_grad(array![3.0f32, 4.0].into_dyn());
        let b = with_grad(array![[12.0f32]].into_dyn());
        let none = Tensor::parameter(array![1.0f32].into_dyn());
        let total = clip_grad_norm_(&[a.clone(), none.clone(), b.clone()], 1000.0, 2.0).unwrap();
        assert_eq!(total, 13.0);
        assert_eq!(
            a.grad().unwrap(),
            array![3.0f32, 4.0].into_dyn(),
            "a coefficient of 1 changes nothing"
        );
        assert!(none.grad().is_none());
        let total = clip_grad_norm_(&[a.clone(), b.clone()], 1.0, f64::INFINITY).unwrap();
        assert_eq!(total, 12.0);
        let g = b.grad().unwrap();
        assert!((g[[0, 0]] - 12.0 / (12.0 + 1e-6)).abs() < 1e-6);
        assert_eq!(clip_grad_norm_(&[none], 1.0, 2.0).unwrap(), 0.0);
        let c = with_grad(array![1.0f32, 0.0, -2.0].into_dyn());
        // ord 0 counts non-zeros: the per-tensor norm is 2, the total norm counts one tensor.
        assert_eq!(
            clip_grad_norm_(std::slice::from_ref(&c), 10.0, 0.0).unwrap(),
            1.0
        );
        assert_eq!(clip_grad_norm_(&[c], 10.0, 1.0).unwrap(), 3.0);
    }

    #[test]
    fn nonfinite_norms() {
        let a = with_grad(array![f32::NAN, 1.0].into_dyn());
        let err = clip_grad_norm_error_if_nonfinite_(std::slice::from_ref(&a), 1.0, 2.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("non-finite"), "{err}");
        assert_eq!(
            a.grad().unwrap()[1],
            1.0,
            "an error leaves the gradients alone"
        );
        assert!(clip_grad_norm_(std::slice::from_ref(&a), 1.0, 2.0)
            .unwrap()
            .is_nan());
        assert!(
            a.grad().unwrap()[1].is_nan(),
            "PyTorch scales by the NaN coefficient"
        );
        assert!(clip_grad_norm_(std::slice::from_ref(&a), -1.0, 2.0).is_err());
        assert!(clip_grad_norm_(&[a], 1.0, f64::NAN).is_err());
    }

    #[test]
    fn value_clipping() {
        let a = with_grad(array![-2.0f32, 0.1, 5.0, f32::NAN].into_dyn());
        clip_grad_value_(std::slice::from_ref(&a), 0.5).unwrap();
        let g = a.grad().unwrap();
        assert_eq!(&g.as_slice().unwrap()[..3], &[-0.5, 0.1, 0.5]);
        assert!(g[3].is_nan());
        assert!(clip_grad_value_(&[a], -0.5).is_err());
    }
}
