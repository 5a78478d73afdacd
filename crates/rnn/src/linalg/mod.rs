//! Matrix products and the scalar types the kernels run on.
//!
//! * [`matmul_packed`]: `C (+)= A B` with `B` packed once by [`PackedWeights`] and reused.
//!   The recurrence multiplies by the same `W_hh` at every time step, so the engine packs it
//!   once per call and runs ~100 products on it. A blocked GEMM (GotoBLAS loop order) around a
//!   register-tiled micro-kernel: 6 x 16 tiles with AVX-512 or AVX2 + FMA for f32 on x86-64
//!   (chosen at run time, [`isa()`]), portable loops otherwise (f64, other CPUs). Large products are split over rayon's
//!   threads ([`set_parallel_min_work`]).
//! * [`matmul`]: the same for any `B` view, packing it on each call.
//! * [`matmul_reference`]: the plain triple loop in f64, the test oracle.
//! * [`matmul_bf16`]: reduced precision, bf16 products with f32 sums, `B` rounded and packed
//!   once by [`PackedBf16`] (AVX512_BF16's `vdpbf16ps`, or its emulation with f32 FMAs).
//! * [`matmul_int8`]: dynamic quantization, `B` quantized once per output column by
//!   [`PackedInt8`], `A` per row at every product, exact i32 sums (AVX512_VNNI's
//!   `vpdpbusd`, or AVX2 widening), dequantized to f32.
//!
//! The reduced-precision products round or quantize their operands in documented ways; each
//! kernel of one precision gives the same bits on every instruction set (see the `bf16` and
//! `int8` module docs for the rounding, the error bounds and the kernels).
//!
//! Measurements and the choice against the `gemm` and `matrixmultiply` crates: BENCHMARKS.md,
//! "GEMM choice".
//!
//! # Calling it from the engine
//!
//! ```
//! use ndarray::{s, Array2};
//! use rnn::linalg::{matmul_packed, PackedWeights};
//!
//! let (batch, hidden, gh) = (4, 3, 12); // G*H = 4 * 3 for an LSTM
//! let w_hh = Array2::<f32>::from_elem((gh, hidden), 0.1); // PyTorch layout (G*H, H)
//!
//! // Forward, once per call: B = W_hh^T (H, G*H); then per step HW = H W_hh^T.
//! let w_hh_t = PackedWeights::transposed(&w_hh.view());
//! let h = Array2::<f32>::ones((batch, hidden));
//! let mut hw = Array2::<f32>::zeros((batch, gh));
//! let bs = 3; // active rows of this step (packed sequences)
//! matmul_packed(&mut hw.slice_mut(s![..bs, ..]), &h.slice(s![..bs, ..]), &w_hh_t, false);
//!
//! // Backward, once per call: B = W_hh (G*H, H); then per step dH (+)= dHW W_hh.
//! let w_hh_b = PackedWeights::new(&w_hh.view());
//! let dhw = Array2::<f32>::ones((batch, gh));
//! let mut dh = Array2::<f32>::zeros((batch, hidden));
//! matmul_packed(&mut dh.slice_mut(s![..bs, ..]), &dhw.slice(s![..bs, ..]), &w_hh_b, true);
//! assert!((dh[[0, 0]] - 1.2).abs() < 1e-6);
//! ```

pub mod bf16;
pub mod int8;
pub(crate) mod isa;
mod kernel;
pub(crate) mod lowp;
pub use isa::{isa, Isa};
mod packed;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lowp;

use std::fmt::Debug;

use ndarray::{ArrayView2, ArrayViewMut2, LinalgScalar};

pub use bf16::{bf16_bits, bf16_kernel_name, matmul_bf16, round_bf16, PackedBf16};
pub use int8::{
    int8_kernel_name, matmul_int8, quantize_row, quantize_rows, PackedInt8, RowQuant, INT8_MAX_K,
};
pub use lowp::NRL as PANEL_WIDTH_LOWP;
pub(crate) use packed::PACK_PARALLEL_MIN_BYTES;
pub use packed::{matmul_packed, parallel_min_work, set_parallel_min_work, PackedWeights};

/// Columns of one panel of a [`PackedWeights`]: products whose width is a multiple of it waste
/// no lanes of the micro-kernel.
pub const PANEL_WIDTH: usize = kernel::NR;

/// [`matmul_packed`] on the calling thread only, whatever the size: for callers that already
/// split the work between threads (the recurrent engine's unit blocks).
pub(crate) fn matmul_packed_serial<F: Float>(
    c: &mut ArrayViewMut2<'_, F>,
    a: &ArrayView2<'_, F>,
    b: &PackedWeights<F>,
    accumulate: bool,
) {
    packed::matmul_packed_with(&kernel::kernels(), 1, usize::MAX, c, a, b, accumulate);
}

/// The micro-kernel [`matmul_packed`] uses for `F` on this CPU: `"avx512"`, `"avx2"` or
/// `"portable"`.
pub fn kernel_name<F: Float>() -> &'static str {
    kernel::kernels::<F>().name
}

/// The floating-point types the recurrent kernels run on: `f32` (models) and `f64` (tests and
/// finite-difference checks).
pub trait Float:
    num_traits::Float
    + LinalgScalar
    + Debug
    + Default
    + Send
    + Sync
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + 'static
{
    /// Converts from f64 (rounding for f32).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64.
    fn to_f64(self) -> f64;
    /// `w` as an f32 view when `Self` is f32 (the weights of the reduced-precision
    /// products), else `None`.
    fn as_f32<'a>(w: &ArrayView2<'a, Self>) -> Option<ArrayView2<'a, f32>>;
    /// `c` and `a` as f32 views when `Self` is f32 (the operands of the reduced-precision
    /// products), else `None`.
    #[allow(clippy::type_complexity)]
    fn as_f32_operands<'c, 'a>(
        c: &'c mut ArrayViewMut2<'_, Self>,
        a: &ArrayView2<'a, Self>,
    ) -> Option<(ArrayViewMut2<'c, f32>, ArrayView2<'a, f32>)>;
}

impl Float for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn as_f32<'a>(w: &ArrayView2<'a, Self>) -> Option<ArrayView2<'a, f32>> {
        Some(*w)
    }
    fn as_f32_operands<'c, 'a>(
        c: &'c mut ArrayViewMut2<'_, Self>,
        a: &ArrayView2<'a, Self>,
    ) -> Option<(ArrayViewMut2<'c, f32>, ArrayView2<'a, f32>)> {
        Some((c.view_mut(), *a))
    }
}

impl Float for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn as_f32<'a>(_: &ArrayView2<'a, Self>) -> Option<ArrayView2<'a, f32>> {
        None
    }
    fn as_f32_operands<'c, 'a>(
        _: &'c mut ArrayViewMut2<'_, Self>,
        _: &ArrayView2<'a, Self>,
    ) -> Option<(ArrayViewMut2<'c, f32>, ArrayView2<'a, f32>)> {
        None
    }
}

/// Below this many multiply-adds [`matmul`] calls the `gemm` crate directly: packing `B` (and
/// allocating its buffer) would cost more than the product.
const PACK_MIN_WORK: usize = 1 << 15;

/// `C = A B` (or `C += A B` when `accumulate`), for views of any strides, e.g. `w.t()`.
///
/// Shapes: `a` (m, k), `b` (k, n), `c` (m, n). Panics if they disagree: callers check user
/// shapes before reaching the kernels.
///
/// For f32 on a CPU with AVX2 + FMA or AVX-512, products of at least 32768 multiply-adds pack
/// `B` into a fresh [`PackedWeights`] and run [`matmul_packed`] (threads included); smaller
/// ones, f64 and other CPUs go to the `gemm` crate (its f64 and NEON kernels beat the portable
/// loops), with rayon's threads from [`parallel_min_work`] multiply-adds. To reuse `B` across calls, pack it
/// once and call [`matmul_packed`].
pub fn matmul<F: Float>(
    c: &mut ArrayViewMut2<'_, F>,
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "matmul: inner dimensions differ");
    assert_eq!(c.dim(), (m, n), "matmul: output shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(F::zero());
        }
        return;
    }
    let work = m * n * k;
    if work >= PACK_MIN_WORK && kernel_name::<F>() != "portable" {
        matmul_packed(c, a, &PackedWeights::new(b), accumulate);
        return;
    }
    let parallelism = if work >= parallel_min_work() && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let (cs, ca, cb) = (c.strides(), a.strides(), b.strides());
    let (c_rs, c_cs) = (cs[0], cs[1]);
    let (a_rs, a_cs) = (ca[0], ca[1]);
    let (b_rs, b_cs) = (cb[0], cb[1]);
    // SAFETY: the pointers and strides come from live ndarray views whose shapes were checked
    // above; `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            F::one(),
            F::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The obviously-correct triple loop, in f64 accumulation: the test oracle for [`matmul`].
pub fn matmul_reference<F: Float>(
    c: &mut ArrayViewMut2<'_, F>,
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += a[[i, p]].to_f64() * b[[p, j]].to_f64();
            }
            let base = if accumulate { c[[i, j]].to_f64() } else { 0.0 };
            c[[i, j]] = F::from_f64(base + s);
        }
    }
}
