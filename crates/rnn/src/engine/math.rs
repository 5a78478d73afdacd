//! The activations of the gate math: `sigmoid` and `tanh`, fast and vectorisable in f32.
//!
//! libm's `tanhf`/`expf` are scalar calls and took half the time of an LSTM step. Here `exp` is
//! Cephes' range reduction `x = n ln2 + r` with `e^r = 1 + r + r^2 p(r)`, `p` of degree 5, and
//! `2^n` built from the exponent bits (relative error about 1e-7, i.e. 1-2 ulp), written without
//! branches so that the compiler vectorises the gate loops. NaN propagates. f64 uses the standard
//! library, so the f64 engine stays the exact oracle of the tests.

#![allow(clippy::excessive_precision)] // Cephes constants, kept as published.

use crate::linalg::{isa, Float, Isa};

/// `sigmoid` and `tanh` as the cells use them, one value at a time and over slices.
///
/// The slice forms are what the gate math calls: f32 overrides them with 16-wide AVX-512 or
/// 8-wide AVX2 + FMA code when the CPU has it (AVX2 is about three times faster than the
/// compiler's vectorisation of the scalar forms, which cannot contract to FMA; AVX-512 takes
/// 0.27 ns per sigmoid against AVX2's 0.38 on a Zen 4 core, same bits); the defaults loop over
/// the scalar forms.
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

    /// `x[k] = sigmoid(x[k])`.
    #[inline(always)]
    fn sigmoid_in_place(x: &mut [Self]) {
        for v in x.iter_mut() {
            *v = v.sigmoid();
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

/// The largest f32 whose sigmoid PyTorch rounds to 0: at and below it, `exp(-x)` overflows
/// float32 and `1 / (1 + inf)` is 0. ([`exp_f32`] saturates at 88 instead, which would leave
/// about 6e-39.) Sigmoid is 0 for `x < SIGMOID_ZERO`, where this is the next f32 above.
pub(crate) const SIGMOID_ZERO: f32 = f32::from_bits(0xC2B1_7217); // -88.72283

impl Activations for f32 {
    #[inline(always)]
    fn sigmoid(self) -> f32 {
        let y = 1.0 / one_plus_exp_f32(-self);
        // A select, not a branch: both sides are computed, and NaN keeps `y`.
        if self < SIGMOID_ZERO {
            0.0
        } else {
            y
        }
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
        let p = x.as_mut_ptr();
        // SAFETY: `x` is read and written in place, `x.len()` values.
        unsafe { map_f32::<true, 1>(p, [p.cast_const()], x.len()) };
    }

    #[inline(always)]
    fn sigmoid_in_place(x: &mut [f32]) {
        let p = x.as_mut_ptr();
        // SAFETY: `x` is read and written in place, `x.len()` values.
        unsafe { map_f32::<false, 1>(p, [p.cast_const()], x.len()) };
    }
}

/// `out[k] = act(inputs[0][k] + inputs[1][k] + ...)` in f32, `act` = `tanh` if `TANH` else
/// `sigmoid`.
#[inline(always)]
fn map_sum_f32<const TANH: bool, const N: usize>(out: &mut [f32], inputs: [&[f32]; N]) {
    // Slicing checks that every input has `out.len()` values.
    let inputs = inputs.map(|input| input[..out.len()].as_ptr());
    // SAFETY: `out` and every input hold `out.len()` values; `out` is borrowed mutably, so it
    // is none of the inputs.
    unsafe { map_f32::<TANH, N>(out.as_mut_ptr(), inputs, out.len()) };
}

/// `out[k] = act(inputs[0][k] + ...)` for `k < n` through raw pointers (`out` may be one of
/// the inputs): 16 lanes at a time with AVX-512, 8 with AVX2 + FMA, one by one otherwise.
///
/// # Safety
/// `out` is writable and every input readable for `n` values.
#[inline(always)]
unsafe fn map_f32<const TANH: bool, const N: usize>(
    out: *mut f32,
    inputs: [*const f32; N],
    n: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let level = isa();
        if level != Isa::Scalar {
            // SAFETY: the CPU has the instruction set; the pointers as the caller vouched.
            unsafe {
                if TANH {
                    simd::map::<simd::Tanh, N>(level, out, inputs, n)
                } else {
                    simd::map::<simd::Sigmoid, N>(level, out, inputs, n)
                }
            };
            return;
        }
    }
    for k in 0..n {
        // SAFETY: `k < n`, as the caller vouched.
        unsafe {
            let mut v = *inputs[0].add(k);
            for input in &inputs[1..] {
                v += *input.add(k);
            }
            *out.add(k) = if TANH { v.tanh_fast() } else { v.sigmoid() };
        }
    }
}

/// Whether the f32 code may use AVX2 and FMA: the CPU has them and `RNN_MAX_ISA` does not cap
/// them (see [`Isa`]).
pub fn has_avx2_fma() -> bool {
    isa() != Isa::Scalar
}

/// The f32 activations on SIMD registers, written once over the register width ([`simd::Lanes`]):
/// the same formulas and constants as the scalar [`exp_f32`] and [`Activations::tanh_fast`],
/// with fused multiply-adds (so the last bit may differ from the scalar forms, but not between
/// the two widths) and the same handling of extremes and NaN (`max(lo, x)` and `min(hi, x)`
/// return `x` when it is NaN).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use crate::linalg::Isa;

    /// A register of `f32` lanes and the operations the activations use. Every method is
    /// `unsafe`: the CPU must have the instruction set of the implementation.
    pub(super) trait Lanes: Copy {
        /// Values per register.
        const WIDTH: usize;
        unsafe fn splat(v: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(self, p: *mut f32);
        /// The first `len < WIDTH` values from `p`, zeros in the other lanes.
        unsafe fn load_part(p: *const f32, len: usize) -> Self;
        /// Stores the first `len < WIDTH` lanes at `p`.
        unsafe fn store_part(self, p: *mut f32, len: usize);
        unsafe fn add(self, b: Self) -> Self;
        unsafe fn sub(self, b: Self) -> Self;
        unsafe fn mul(self, b: Self) -> Self;
        unsafe fn div(self, b: Self) -> Self;
        /// `self * b + c`, one rounding.
        unsafe fn mul_add(self, b: Self, c: Self) -> Self;
        /// `c - self * b`, one rounding.
        unsafe fn neg_mul_add(self, b: Self, c: Self) -> Self;
        /// `min(self, b)`: `b` when either is NaN.
        unsafe fn min(self, b: Self) -> Self;
        /// `max(self, b)`: `b` when either is NaN.
        unsafe fn max(self, b: Self) -> Self;
        unsafe fn xor(self, b: Self) -> Self;
        unsafe fn and(self, b: Self) -> Self;
        unsafe fn and_not(self, b: Self) -> Self;
        unsafe fn or(self, b: Self) -> Self;
        /// `2^n` from `t = x log2(e) + 1.5 * 2^23` (see [`super::exp_parts_f32`]): the low
        /// mantissa bits of `t`, plus the exponent bias, shifted into the exponent field.
        unsafe fn pow2_from_rounded(t: Self) -> Self;
        /// Lane by lane, `yes` where `self < limit`, else `no`.
        unsafe fn select_lt(self, limit: Self, yes: Self, no: Self) -> Self;
    }

    /// The methods of [`Lanes`] that are one intrinsic on a width: `binary` and `ternary` take
    /// and return the register type, `bitwise` goes through the integer form (`__m512i`).
    macro_rules! lane_ops {
        (
            $ty:ident,
            binary: $($op2:ident $f2:ident),*;
            ternary: $($op3:ident $f3:ident),*;
            $(bitwise: $($opb:ident $fb:ident),*;)?
        ) => {
            $(
                #[inline(always)]
                unsafe fn $op2(self, b: Self) -> Self {
                    $ty($f2(self.0, b.0))
                }
            )*
            $(
                #[inline(always)]
                unsafe fn $op3(self, b: Self, c: Self) -> Self {
                    $ty($f3(self.0, b.0, c.0))
                }
            )*
            $($(
                #[inline(always)]
                unsafe fn $opb(self, b: Self) -> Self {
                    $ty(_mm512_castsi512_ps($fb(
                        _mm512_castps_si512(self.0),
                        _mm512_castps_si512(b.0),
                    )))
                }
            )*)?
        };
    }

    /// 8 lanes with AVX2 + FMA.
    #[derive(Clone, Copy)]
    pub(super) struct Ymm(__m256);

    /// 16 lanes with AVX-512F.
    #[derive(Clone, Copy)]
    pub(super) struct Zmm(__m512);

    impl Lanes for Ymm {
        const WIDTH: usize = 8;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Ymm(_mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Ymm(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, len: usize) -> Self {
            Ymm(_mm256_maskload_ps(p, ymm_mask(len)))
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, len: usize) {
            _mm256_maskstore_ps(p, ymm_mask(len), self.0)
        }
        lane_ops! {
            Ymm,
            binary: add _mm256_add_ps, sub _mm256_sub_ps, mul _mm256_mul_ps, div _mm256_div_ps,
                min _mm256_min_ps, max _mm256_max_ps, xor _mm256_xor_ps, and _mm256_and_ps,
                and_not _mm256_andnot_ps, or _mm256_or_ps;
            ternary: mul_add _mm256_fmadd_ps, neg_mul_add _mm256_fnmadd_ps;
        }
        #[inline(always)]
        unsafe fn pow2_from_rounded(t: Self) -> Self {
            let biased = _mm256_add_epi32(_mm256_castps_si256(t.0), _mm256_set1_epi32(127));
            Ymm(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased)))
        }
        #[inline(always)]
        unsafe fn select_lt(self, limit: Self, yes: Self, no: Self) -> Self {
            Ymm(_mm256_blendv_ps(
                no.0,
                yes.0,
                _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, limit.0),
            ))
        }
    }

    /// The lane mask of the first `len` of 8 lanes.
    #[inline(always)]
    unsafe fn ymm_mask(len: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), lanes)
    }

    impl Lanes for Zmm {
        const WIDTH: usize = 16;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Zmm(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Zmm(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, len: usize) -> Self {
            Zmm(_mm512_maskz_loadu_ps(zmm_mask(len), p))
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, len: usize) {
            _mm512_mask_storeu_ps(p, zmm_mask(len), self.0)
        }
        lane_ops! {
            Zmm,
            binary: add _mm512_add_ps, sub _mm512_sub_ps, mul _mm512_mul_ps, div _mm512_div_ps,
                min _mm512_min_ps, max _mm512_max_ps;
            ternary: mul_add _mm512_fmadd_ps, neg_mul_add _mm512_fnmadd_ps;
            // The bitwise operations on integers: AVX-512F has them, the `_ps` forms need DQ.
            bitwise: xor _mm512_xor_si512, and _mm512_and_si512, and_not _mm512_andnot_si512,
                or _mm512_or_si512;
        }
        #[inline(always)]
        unsafe fn pow2_from_rounded(t: Self) -> Self {
            let biased = _mm512_add_epi32(_mm512_castps_si512(t.0), _mm512_set1_epi32(127));
            Zmm(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)))
        }
        #[inline(always)]
        unsafe fn select_lt(self, limit: Self, yes: Self, no: Self) -> Self {
            let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, limit.0);
            Zmm(_mm512_mask_blend_ps(lt, no.0, yes.0))
        }
    }

    /// The lane mask of the first `len` of 16 lanes.
    #[inline(always)]
    fn zmm_mask(len: usize) -> __mmask16 {
        (1u32 << len.min(16)).wrapping_sub(1) as __mmask16
    }

    /// `(2^n, e^r - 1)` lane by lane; see [`super::exp_parts_f32`].
    #[inline(always)]
    unsafe fn exp_parts<V: Lanes>(x: V) -> (V, V) {
        let set = V::splat;
        let x = set(88.0).min(set(-87.336_55).max(x));
        let t = x.mul_add(set(std::f32::consts::LOG2_E), set(super::ROUNDING));
        let n = t.sub(set(super::ROUNDING));
        let r = n.neg_mul_add(set(0.693_359_4), x);
        let r = n.neg_mul_add(set(-2.121_944_4e-4), r);
        let r2 = r.mul(r);
        let p01 = set(1.666_666_5e-1).mul_add(r, set(5.000_000_1e-1));
        let p23 = set(8.333_452e-3).mul_add(r, set(4.166_579_6e-2));
        let p45 = set(1.987_569_1e-4).mul_add(r, set(1.398_199_9e-3));
        let p = p45.mul_add(r2.mul(r2), p23.mul_add(r2, p01));
        (V::pow2_from_rounded(t), p.mul_add(r2, r))
    }

    /// `1 + exp(x)` lane by lane; see [`super::one_plus_exp_f32`].
    #[inline(always)]
    unsafe fn one_plus_exp<V: Lanes>(x: V) -> V {
        let (scale, em1) = exp_parts(x);
        scale.mul_add(em1, scale.add(V::splat(1.0)))
    }

    /// An activation, lane by lane.
    pub(super) trait Activation {
        /// Applies it (the CPU has `V`'s instruction set).
        unsafe fn apply<V: Lanes>(x: V) -> V;
    }

    /// `1 / (1 + exp(-x))`.
    pub(super) struct Sigmoid;
    /// `tanh`: the odd polynomial below 0.625 in magnitude, else `1 - 2 / (exp(2|x|) + 1)`
    /// with the sign of `x`.
    pub(super) struct Tanh;

    impl Activation for Sigmoid {
        #[inline(always)]
        unsafe fn apply<V: Lanes>(x: V) -> V {
            let y = V::splat(1.0).div(one_plus_exp(x.xor(V::splat(-0.0))));
            // PyTorch's 0 where exp(-x) overflows (see `SIGMOID_ZERO`); NaN keeps `y`.
            x.select_lt(V::splat(super::SIGMOID_ZERO), V::splat(0.0), y)
        }
    }

    impl Activation for Tanh {
        #[inline(always)]
        unsafe fn apply<V: Lanes>(x: V) -> V {
            let set = V::splat;
            let sign = x.and(set(-0.0));
            let a = set(-0.0).and_not(x);
            let z = x.mul(x);
            let mut p = set(-5.704_988_7e-3).mul_add(z, set(2.063_908_9e-2));
            p = p.mul_add(z, set(-5.373_971_6e-2));
            p = p.mul_add(z, set(1.333_144_2e-1));
            p = p.mul_add(z, set(-3.333_328_2e-1));
            let small = p.mul(z).mul_add(x, x);
            let large = set(1.0).sub(set(2.0).div(one_plus_exp(a.add(a))));
            a.select_lt(set(0.625), small, large.or(sign))
        }
    }

    /// `out[k] = A(inputs[0][k] + inputs[1][k] + ...)` for `k < n` on the widest registers of
    /// `isa`; see [`map_lanes`].
    ///
    /// # Safety
    /// The CPU has `isa` (not [`Isa::Scalar`]); `out` is writable and every input readable for
    /// `n` values.
    #[inline(always)]
    pub(super) unsafe fn map<A: Activation, const INPUTS: usize>(
        isa: Isa,
        out: *mut f32,
        inputs: [*const f32; INPUTS],
        n: usize,
    ) {
        match isa {
            Isa::Avx512 => map_avx512::<A, INPUTS>(out, inputs, n),
            _ => map_avx2::<A, INPUTS>(out, inputs, n),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn map_avx2<A: Activation, const INPUTS: usize>(
        out: *mut f32,
        inputs: [*const f32; INPUTS],
        n: usize,
    ) {
        map_lanes::<A, Ymm, INPUTS>(out, inputs, n)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn map_avx512<A: Activation, const INPUTS: usize>(
        out: *mut f32,
        inputs: [*const f32; INPUTS],
        n: usize,
    ) {
        map_lanes::<A, Zmm, INPUTS>(out, inputs, n)
    }

    /// `out[k] = A(sum of inputs[i][k])` for `k < n`, a register at a time; the tail through
    /// masked loads and stores, so that every value goes through the same arithmetic. `out`
    /// may be one of the inputs: each register is read before it is written.
    #[inline(always)]
    unsafe fn map_lanes<A: Activation, V: Lanes, const INPUTS: usize>(
        out: *mut f32,
        inputs: [*const f32; INPUTS],
        n: usize,
    ) {
        let w = V::WIDTH;
        let mut k = 0;
        // Four independent registers per iteration: one activation is a long dependency
        // chain, and four of them side by side keep the FMA pipes busy (1.4x faster than one).
        while k + 4 * w <= n {
            // (No closures here: they would not inherit the caller's target features, and
            // every intrinsic would become a call.)
            let v0 = A::apply(sum::<V, INPUTS>(inputs, k));
            let v1 = A::apply(sum::<V, INPUTS>(inputs, k + w));
            let v2 = A::apply(sum::<V, INPUTS>(inputs, k + 2 * w));
            let v3 = A::apply(sum::<V, INPUTS>(inputs, k + 3 * w));
            v0.store(out.add(k));
            v1.store(out.add(k + w));
            v2.store(out.add(k + 2 * w));
            v3.store(out.add(k + 3 * w));
            k += 4 * w;
        }
        while k + w <= n {
            A::apply(sum::<V, INPUTS>(inputs, k)).store(out.add(k));
            k += w;
        }
        if k < n {
            let mut v = V::load_part(inputs[0].add(k), n - k);
            for input in &inputs[1..] {
                v = v.add(V::load_part(input.add(k), n - k));
            }
            A::apply(v).store_part(out.add(k), n - k);
        }
    }

    /// The sum of a register of values from each input, from value `k` on (left to right, as
    /// the scalar forms add).
    #[inline(always)]
    unsafe fn sum<V: Lanes, const INPUTS: usize>(inputs: [*const f32; INPUTS], k: usize) -> V {
        let mut v = V::load(inputs[0].add(k));
        for input in &inputs[1..] {
            v = v.add(V::load(input.add(k)));
        }
        v
    }

    /// [`map`] on a given instruction set, for the tests that compare the widths.
    #[cfg(test)]
    pub(super) fn map_slice<A: Activation>(isa: Isa, x: &mut [f32]) {
        let p = x.as_mut_ptr();
        // SAFETY: the test checks that the CPU has `isa`; `x` is read and written in place.
        unsafe { map::<A, 1>(isa, p, [p.cast_const()], x.len()) }
    }
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

    /// The slice forms (AVX-512 or AVX2 when the CPU has it, tails included) agree with the
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

    /// AVX2 and AVX-512 run the same operations in the same order: the same bits, tails
    /// (every length up to 40) included. Runs where the CPU has both.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_widths_give_the_same_bits() {
        if crate::linalg::isa::detected() != Isa::Avx512 {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        let mut x: Vec<f32> = (-50_000..=50_000).map(|k| k as f32 * 1.9e-3).collect();
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
        for len in (0..41).chain([x.len()]) {
            for tanh in [false, true] {
                let (mut narrow, mut wide) = (x[..len].to_vec(), x[..len].to_vec());
                if tanh {
                    simd::map_slice::<simd::Tanh>(Isa::Avx2, &mut narrow);
                    simd::map_slice::<simd::Tanh>(Isa::Avx512, &mut wide);
                } else {
                    simd::map_slice::<simd::Sigmoid>(Isa::Avx2, &mut narrow);
                    simd::map_slice::<simd::Sigmoid>(Isa::Avx512, &mut wide);
                }
                for (k, (a, b)) in narrow.iter().zip(&wide).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "tanh {tanh}, x = {}", x[k]);
                }
            }
        }
    }

    /// PyTorch's float32 values at the edges (`torch.sigmoid`, `torch.tanh`), every form: the
    /// scalar one and the slice forms on each instruction set the CPU has.
    #[test]
    fn pytorch_values_at_the_edges() {
        let zero_from = f32::from_bits(0xC2B1_7218); // -88.72284: torch.sigmoid gives 0
        let cases: [(f32, f32, f32); 12] = [
            // (x, torch.sigmoid(x), torch.tanh(x))
            (f32::INFINITY, 1.0, 1.0),
            (f32::NEG_INFINITY, 0.0, -1.0),
            (1e38, 1.0, 1.0),
            (-1e38, 0.0, -1.0),
            (-100.0, 0.0, -1.0),
            (zero_from, 0.0, -1.0),
            (-89.0, 0.0, -1.0),
            (1e-40, 0.5, 1e-40),
            (-1e-40, 0.5, -1e-40),
            (f32::MIN_POSITIVE, 0.5, f32::MIN_POSITIVE),
            (0.0, 0.5, 0.0),
            (30.0, 1.0, 1.0),
        ];
        type Form = Box<dyn Fn(f32, bool) -> f32>;
        let mut forms: Vec<(&str, Form)> = vec![(
            "scalar",
            Box::new(|x: f32, tanh: bool| if tanh { x.tanh_fast() } else { x.sigmoid() }),
        )];
        forms.push((
            "slice",
            Box::new(|x: f32, tanh: bool| {
                let mut out = [0.0f32; 3];
                let v = [x; 3];
                if tanh {
                    f32::tanh_of_sum(&mut out, [&v]);
                } else {
                    f32::sigmoid_of_sum(&mut out, [&v]);
                }
                out[1]
            }),
        ));
        for (name, f) in &forms {
            for &(x, sig, tanh) in &cases {
                assert_eq!(f(x, false), sig, "{name} sigmoid({x:e})");
                assert_eq!(f(x, true), tanh, "{name} tanh({x:e})");
            }
            assert!(
                f(f32::NAN, false).is_nan() && f(f32::NAN, true).is_nan(),
                "{name}"
            );
            // Just above: PyTorch's 2.9388e-39 (a subnormal), not 0.
            let above = f32::from_bits(0xC2B1_7217);
            assert!(f(above, false) > 0.0, "{name}");
        }
    }

    #[test]
    fn extremes_and_nan() {
        assert_eq!(1000f32.sigmoid(), 1.0);
        assert_eq!((-1000f32).sigmoid(), 0.0);
        assert_eq!(300f32.tanh_fast(), 1.0);
        assert_eq!((-300f32).tanh_fast(), -1.0);
        assert_eq!(0f32.tanh_fast(), 0.0);
        assert!(f32::NAN.sigmoid().is_nan());
        assert!(f32::NAN.tanh_fast().is_nan());
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
