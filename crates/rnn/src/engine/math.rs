//! The activations of the gate math: `sigmoid` and `tanh`, fast and vectorisable in f32.
//!
//! libm's `tanhf`/`expf` are scalar calls and took half the time of an LSTM step. Here `exp` is
//! Cephes' range reduction `x = n ln2 + r` with a degree-6 polynomial for `e^r` and `2^n` built
//! from the exponent bits (relative error about 1e-7, i.e. 1-2 ulp), written without branches
//! so that the compiler vectorises the gate loops. NaN propagates. f64 uses the standard
//! library, so the f64 engine stays the exact oracle of the tests.

#![allow(clippy::excessive_precision)] // Cephes constants, kept as published.

use crate::linalg::Float;

/// `sigmoid` and `tanh` as the cells use them.
pub trait Activations: Float {
    /// `1 / (1 + exp(-x))`.
    fn sigmoid(self) -> Self;
    /// `tanh(x)`.
    fn tanh_fast(self) -> Self;
}

impl Activations for f64 {
    #[inline(always)]
    fn sigmoid(self) -> f64 {
        1.0 / (1.0 + (-self).exp())
    }
    #[inline(always)]
    fn tanh_fast(self) -> f64 {
        self.tanh()
    }
}

/// `exp(x)` for f32 without branches (see the module docs). Saturates to 0 below -87.3 and to
/// about 1.7e38 above 88.3 (never infinity, so `1 / (1 + exp)` stays finite).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const HI: f32 = 88.376_26;
    const LO: f32 = -87.336_55;
    // Comparisons rather than min/max so that NaN stays NaN.
    let x = if x > HI { HI } else { x };
    let x = if x < LO { LO } else { x };
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // 2^n from the exponent bits, with n clamped to [-126, 127] so that n + 127 is a valid
    // biased exponent. The integer is read from the mantissa after adding 1.5 * 2^23 rather
    // than with `as i32`, whose saturating NaN handling keeps the loop from vectorising.
    let n = if n < -126.0 { -126.0 } else { n };
    let n = if n > 127.0 { 127.0 } else { n };
    let e = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    y * f32::from_bits(e.wrapping_add(127) << 23)
}

impl Activations for f32 {
    #[inline(always)]
    fn sigmoid(self) -> f32 {
        1.0 / (1.0 + exp_f32(-self))
    }

    #[inline(always)]
    fn tanh_fast(self) -> f32 {
        // |x| < 0.625: odd polynomial (Cephes tanhf), else 1 - 2 / (exp(2|x|) + 1).
        let a = self.abs();
        let z = self * self;
        let small = ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z
            + 1.333_144_2e-1)
            * z
            - 3.333_328_2e-1)
            * z
            * self
            + self;
        let large = 1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0);
        let large = if self < 0.0 { -large } else { large };
        if a < 0.625 {
            small
        } else {
            large
        }
    }
}

/// Whether this CPU has AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_activations_match_libm() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut worst_sig = 0.0f64;
        for k in -200_000..=200_000 {
            let x = k as f32 * 4.5e-4; // [-90, 90]
            let e = (x as f64).exp();
            if e > 1e-37 && e < 1e38 {
                worst_exp = worst_exp.max(((exp_f32(x) as f64) - e).abs() / e);
            }
            worst_tanh = worst_tanh.max((x.tanh_fast() as f64 - (x as f64).tanh()).abs());
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            worst_sig = worst_sig.max((x.sigmoid() as f64 - s).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh}");
        assert!(worst_sig < 3e-7, "sigmoid absolute error {worst_sig}");
        // Small arguments keep their relative accuracy.
        for &x in &[1e-3f32, -2e-5, 0.3] {
            assert!(((x.tanh_fast() as f64 - (x as f64).tanh()) / (x as f64).tanh()).abs() < 1e-6);
        }
    }

    #[test]
    fn extremes_and_nan() {
        assert_eq!(1000f32.sigmoid(), 1.0);
        assert!((-1000f32).sigmoid() >= 0.0 && (-1000f32).sigmoid() < 1e-30);
        assert_eq!(300f32.tanh_fast(), 1.0);
        assert_eq!((-300f32).tanh_fast(), -1.0);
        assert_eq!(0f32.tanh_fast(), 0.0);
        assert!(f32::NAN.sigmoid().is_nan());
        assert!(f32::NAN.tanh_fast().is_nan());
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
