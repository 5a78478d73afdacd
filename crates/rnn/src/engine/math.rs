//! The activations of the gate math: `sigmoid` and `tanh`, fast and vectorisable in f32.
//!
//! libm's `tanhf`/`expf` are scalar calls and took half the time of an LSTM step. Here `exp` is
//! Cephes' range reduction `x = n ln2 + r` with `e^r = 1 + r + r^2 p(r)`, `p` of degree 5, and
//! `2^n` built from the exponent bits (relative error about 1e-7, i.e. 1-2 ulp), written without
//! branches so that the compiler vectorises the gate loops. NaN propagates. f64 uses the standard
//! library, so the f64 engine stays the exact oracle of the tests.

#![allow(clippy::excessive_precision)] // Cephes constants, kept as published.

use crate::linalg::Float;

/// `sigmoid` and `tanh` as the cells use them, one value at a time and over slices.
///
/// The slice forms are what the gate math calls: f32 overrides them with 8-wide AVX2 + FMA
/// code when the CPU has it (about three times faster than the compiler's vectorisation of
/// the scalar forms, which cannot contract to FMA); the defaults loop over the scalar forms.
/// Each takes `out.len()` values from every input slice.
pub trait Activations: Float {
    /// `1 / (1 + exp(-x))`.
    fn sigmoid(self) -> Self;
    /// `tanh(x)`.
    fn tanh_fast(self) -> Self;

    /// `out[k] = sigmoid(inputs[0][k] + inputs[1][k] + ...)`, summed left to right.
    #[inline(always)]
    fn sigmoid_of_sum<const N: usize>(out: &mut [Self], inputs: [&[Self]; N]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = sum_at(&inputs, k).sigmoid();
        }
    }

    /// `out[k] = tanh(inputs[0][k] + inputs[1][k] + ...)`, summed left to right.
    #[inline(always)]
    fn tanh_of_sum<const N: usize>(out: &mut [Self], inputs: [&[Self]; N]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = sum_at(&inputs, k).tanh_fast();
        }
    }

    /// `x[k] = tanh(x[k])`.
    #[inline(always)]
    fn tanh_in_place(x: &mut [Self]) {
        for v in x.iter_mut() {
            *v = v.tanh_fast();
        }
    }
}

/// `inputs[0][k] + inputs[1][k] + ...`, left to right.
#[inline(always)]
fn sum_at<F: Float, const N: usize>(inputs: &[&[F]; N], k: usize) -> F {
    let mut v = inputs[0][k];
    for input in &inputs[1..] {
        v += input[k];
    }
    v
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

/// `1.5 * 2^23`: adding it rounds an f32 of magnitude below `2^22` to an integer, which is
/// then the low bits of the sum's mantissa.
const ROUNDING: f32 = 12_582_912.0;

/// `exp(x) = 2^n e^r` for f32, as `(2^n, e^r - 1)`, without branches: `x` is clamped to
/// `[-87.34, 88]`, `n = round(x / ln 2)` and `r = x - n ln 2` in `[-ln2/2, ln2/2]` (Cody-Waite:
/// `ln 2` in two parts); `e^r - 1 = r + r^2 p(r)` with Cephes' degree-5 `p`, evaluated in
/// Estrin's order (two independent halves) rather than Horner's, for a shorter dependency chain.
/// NaN stays NaN in the second value.
#[inline(always)]
fn exp_parts_f32(x: f32) -> (f32, f32) {
    // Comparisons rather than min/max so that NaN stays NaN.
    let x = if x > 88.0 { 88.0 } else { x };
    let x = if x < -87.336_55 { -87.336_55 } else { x };
    // n is in [-126, 127] for the clamped x, so 2^n is a normal number; the integer is read
    // from the rounded sum's bits (`as i32`'s saturating NaN handling would keep the loop
    // from vectorising).
    let t = x * std::f32::consts::LOG2_E + ROUNDING;
    let n = t - ROUNDING;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let r2 = r * r;
    let p = (1.666_666_5e-1 * r + 5.000_000_1e-1)
        + (8.333_452e-3 * r + 4.166_579_6e-2) * r2
        + (1.987_569_1e-4 * r + 1.398_199_9e-3) * (r2 * r2);
    let scale = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    (scale, p * r2 + r)
}

/// `exp(x)` for f32 without branches: `2^n e^r` from `exp_parts_f32` (relative error about
/// 1e-7, i.e. 1-2 ulp). Saturates to 0 below -87.3 and to about 1.65e38 above 88 (never
/// infinity, so `1 / (1 + exp)` stays finite).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let (scale, em1) = exp_parts_f32(x);
    scale * em1 + scale
}

/// `1 + exp(x)` as `2^n (e^r - 1) + (2^n + 1)` (see [`exp_f32`]), the denominator of
/// `sigmoid` and of `tanh`'s large branch.
#[inline(always)]
fn one_plus_exp_f32(x: f32) -> f32 {
    let (scale, em1) = exp_parts_f32(x);
    scale * em1 + (scale + 1.0)
}

impl Activations for f32 {
    #[inline(always)]
    fn sigmoid(self) -> f32 {
        1.0 / one_plus_exp_f32(-self)
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
        let large = 1.0 - 2.0 / one_plus_exp_f32(2.0 * a);
        let large = if self < 0.0 { -large } else { large };
        if a < 0.625 {
            small
        } else {
            large
        }
    }

    #[inline(always)]
    fn sigmoid_of_sum<const N: usize>(out: &mut [f32], inputs: [&[f32]; N]) {
        map_sum_f32::<false, N>(out, inputs);
    }

    #[inline(always)]
    fn tanh_of_sum<const N: usize>(out: &mut [f32], inputs: [&[f32]; N]) {
        map_sum_f32::<true, N>(out, inputs);
    }

    #[inline(always)]
    fn tanh_in_place(x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { avx2::tanh_in_place(x) };
            return;
        }
        for v in x.iter_mut() {
            *v = v.tanh_fast();
        }
    }
}

/// `out[k] = act(inputs[0][k] + inputs[1][k] + ...)` in f32, `act` = `tanh` if `TANH` else
/// `sigmoid`: eight at a time when the CPU has AVX2 and FMA.
#[inline(always)]
fn map_sum_f32<const TANH: bool, const N: usize>(out: &mut [f32], inputs: [&[f32]; N]) {
    let inputs = inputs.map(|input| &input[..out.len()]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; the inputs have `out.len()` values.
        unsafe {
            if TANH {
                avx2::map_sum::<avx2::Tanh, N>(out, inputs)
            } else {
                avx2::map_sum::<avx2::Sigmoid, N>(out, inputs)
            }
        };
        return;
    }
    for (k, o) in out.iter_mut().enumerate() {
        let v = sum_at(&inputs, k);
        *o = if TANH { v.tanh_fast() } else { v.sigmoid() };
    }
}

/// The f32 activations eight at a time with AVX2 + FMA: the same formulas and constants as
/// the scalar [`exp_f32`] and [`Activations::tanh_fast`], with fused multiply-adds (so the
/// last bit may differ from the scalar forms) and the same handling of extremes and NaN
/// (`max(lo, x)` and `min(hi, x)` return `x` when it is NaN).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// An activation of 8 values.
    pub(super) trait Lanes {
        /// Applies it.
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA.
        unsafe fn apply(x: __m256) -> __m256;
    }

    /// [`sigmoid8`] as a [`Lanes`].
    pub(super) struct Sigmoid;
    /// [`tanh8`] as a [`Lanes`].
    pub(super) struct Tanh;

    impl Lanes for Sigmoid {
        #[inline(always)]
        unsafe fn apply(x: __m256) -> __m256 {
            sigmoid8(x)
        }
    }

    impl Lanes for Tanh {
        #[inline(always)]
        unsafe fn apply(x: __m256) -> __m256 {
            tanh8(x)
        }
    }

    /// `(2^n, e^r - 1)` of 8 values; see [`super::exp_parts_f32`].
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA (as for every function here).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exp_parts8(x: __m256) -> (__m256, __m256) {
        let set = _mm256_set1_ps;
        let x = _mm256_min_ps(set(88.0), _mm256_max_ps(set(-87.336_55), x));
        let t = _mm256_fmadd_ps(x, set(std::f32::consts::LOG2_E), set(super::ROUNDING));
        let n = _mm256_sub_ps(t, set(super::ROUNDING));
        let r = _mm256_fnmadd_ps(n, set(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, set(-2.121_944_4e-4), r);
        let r2 = _mm256_mul_ps(r, r);
        let p01 = _mm256_fmadd_ps(set(1.666_666_5e-1), r, set(5.000_000_1e-1));
        let p23 = _mm256_fmadd_ps(set(8.333_452e-3), r, set(4.166_579_6e-2));
        let p45 = _mm256_fmadd_ps(set(1.987_569_1e-4), r, set(1.398_199_9e-3));
        let p = _mm256_fmadd_ps(p45, _mm256_mul_ps(r2, r2), _mm256_fmadd_ps(p23, r2, p01));
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_castps_si256(t),
            _mm256_set1_epi32(127),
        ));
        (_mm256_castsi256_ps(scale), _mm256_fmadd_ps(p, r2, r))
    }

    /// `1 + exp(x)` of 8 values; see [`super::one_plus_exp_f32`].
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn one_plus_exp8(x: __m256) -> __m256 {
        let (scale, em1) = exp_parts8(x);
        _mm256_fmadd_ps(scale, em1, _mm256_add_ps(scale, _mm256_set1_ps(1.0)))
    }

    /// `1 / (1 + exp(-x))` of 8 values.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn sigmoid8(x: __m256) -> __m256 {
        let e1 = one_plus_exp8(_mm256_xor_ps(x, _mm256_set1_ps(-0.0)));
        _mm256_div_ps(_mm256_set1_ps(1.0), e1)
    }

    /// `tanh` of 8 values: the odd polynomial below 0.625 in magnitude, else
    /// `1 - 2 / (exp(2|x|) + 1)` with the sign of `x`.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn tanh8(x: __m256) -> __m256 {
        let set = _mm256_set1_ps;
        let sign = _mm256_and_ps(x, set(-0.0));
        let a = _mm256_andnot_ps(set(-0.0), x);
        let z = _mm256_mul_ps(x, x);
        let mut p = _mm256_fmadd_ps(set(-5.704_988_7e-3), z, set(2.063_908_9e-2));
        p = _mm256_fmadd_ps(p, z, set(-5.373_971_6e-2));
        p = _mm256_fmadd_ps(p, z, set(1.333_144_2e-1));
        p = _mm256_fmadd_ps(p, z, set(-3.333_328_2e-1));
        let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
        let e1 = one_plus_exp8(_mm256_add_ps(a, a));
        let large = _mm256_sub_ps(set(1.0), _mm256_div_ps(set(2.0), e1));
        let large = _mm256_or_ps(large, sign);
        _mm256_blendv_ps(large, small, _mm256_cmp_ps::<_CMP_LT_OQ>(a, set(0.625)))
    }

    /// Loads `len < 8` values from `p` (zeros in the other lanes), and the lane mask.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `p` is readable for `len` values.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load_part(p: *const f32, len: usize) -> (__m256, __m256i) {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), lanes);
        (_mm256_maskload_ps(p, mask), mask)
    }

    /// `out[k] = L(inputs[0][k] + inputs[1][k] + ...)`.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; every input has at least `out.len()` values.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn map_sum<L: Lanes, const N: usize>(out: &mut [f32], inputs: [&[f32]; N]) {
        let n = out.len();
        debug_assert!(inputs.iter().all(|input| input.len() >= n));
        map::<L, N>(out.as_mut_ptr(), inputs.map(|input| input.as_ptr()), n);
    }

    /// `x[k] = tanh(x[k])`.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn tanh_in_place(x: &mut [f32]) {
        let p = x.as_mut_ptr();
        map::<Tanh, 1>(p, [p.cast_const()], x.len());
    }

    /// `out[k] = L(sum of inputs[i][k])` for `k < n`, 8 at a time; the tail through masked
    /// loads and stores, so that every value goes through the same arithmetic. `out` may be
    /// one of the inputs: each vector is read before it is written.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `out` is writable and every input readable for `n` values.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn map<L: Lanes, const INPUTS: usize>(
        out: *mut f32,
        inputs: [*const f32; INPUTS],
        n: usize,
    ) {
        let mut k = 0;
        // Four independent vectors per iteration: one activation is a long dependency chain,
        // and four of them side by side keep the FMA pipes busy (1.4x faster than one).
        while k + 32 <= n {
            let v0 = L::apply(sum(inputs, k));
            let v1 = L::apply(sum(inputs, k + 8));
            let v2 = L::apply(sum(inputs, k + 16));
            let v3 = L::apply(sum(inputs, k + 24));
            _mm256_storeu_ps(out.add(k), v0);
            _mm256_storeu_ps(out.add(k + 8), v1);
            _mm256_storeu_ps(out.add(k + 16), v2);
            _mm256_storeu_ps(out.add(k + 24), v3);
            k += 32;
        }
        while k + 8 <= n {
            _mm256_storeu_ps(out.add(k), L::apply(sum(inputs, k)));
            k += 8;
        }
        if k < n {
            let (mut v, mask) = load_part(inputs[0].add(k), n - k);
            for input in &inputs[1..] {
                v = _mm256_add_ps(v, _mm256_maskload_ps(input.add(k), mask));
            }
            _mm256_maskstore_ps(out.add(k), mask, L::apply(v));
        }
    }

    /// The sum of 8 values from each input, from value `k` on (left to right, as the scalar
    /// forms add).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; each input is readable for values `k..k + 8`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn sum<const INPUTS: usize>(inputs: [*const f32; INPUTS], k: usize) -> __m256 {
        let mut v = _mm256_loadu_ps(inputs[0].add(k));
        for input in &inputs[1..] {
            v = _mm256_add_ps(v, _mm256_loadu_ps(input.add(k)));
        }
        v
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
        // About 1 ulp of 1 (6e-8) and of values in [1, 2) (1.2e-7); measured 8.1e-8, 6.2e-8 and
        // 8.9e-8.
        assert!(worst_exp < 1.2e-7, "exp relative error {worst_exp}");
        assert!(worst_tanh < 1e-7, "tanh absolute error {worst_tanh}");
        assert!(worst_sig < 1.2e-7, "sigmoid absolute error {worst_sig}");
        // Small arguments keep their relative accuracy.
        for &x in &[1e-3f32, -2e-5, 0.3] {
            assert!(((x.tanh_fast() as f64 - (x as f64).tanh()) / (x as f64).tanh()).abs() < 1e-6);
        }
    }

    /// The slice forms (AVX2 on this CPU when it has it, tails included) agree with the
    /// scalar forms to a few ulp, and keep the extremes and NaN.
    #[test]
    fn slice_forms_match_scalar_forms() {
        let mut x: Vec<f32> = (-100_000..=100_000).map(|k| k as f32 * 9e-4).collect();
        x.extend([
            f32::NAN,
            1e30,
            -1e30,
            0.0,
            -0.0,
            1e-20,
            88.5,
            -88.5,
            0.625,
            -0.625,
        ]);
        let zeros = vec![0.0f32; x.len()];
        let halves: Vec<f32> = x.iter().map(|v| v / 2.0).collect();
        // Every tail length: slices of 0 to 17 values.
        for len in (0..18).chain([x.len()]) {
            let (a, b) = (&halves[..len], &halves[..len]);
            let mut sig = vec![0.0f32; len];
            let mut tanh = vec![0.0f32; len];
            // Three inputs and two (the fused pre-activation plus the bias).
            f32::sigmoid_of_sum(&mut sig, [a, b, &zeros]);
            f32::tanh_of_sum(&mut tanh, [a, b]);
            let mut in_place = x[..len].to_vec();
            f32::tanh_in_place(&mut in_place);
            for k in 0..len {
                let v = x[k];
                let close = |got: f32, want: f32| {
                    (got.is_nan() && want.is_nan())
                        || (got - want).abs() <= 2e-7 * want.abs().max(1e-3)
                };
                assert!(
                    close(sig[k], v.sigmoid()),
                    "sigmoid({v}): {} vs {}",
                    sig[k],
                    v.sigmoid()
                );
                assert!(
                    close(tanh[k], v.tanh_fast()),
                    "tanh({v}): {} vs {}",
                    tanh[k],
                    v.tanh_fast()
                );
                assert!(close(in_place[k], v.tanh_fast()), "tanh({v}) in place");
            }
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
