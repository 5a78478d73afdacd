//! Matrix products and the scalar types the kernels run on.
//!
//! [`matmul`] computes `C = A B` or `C += A B` on strided `ndarray` views through the `gemm`
//! crate (AVX2/AVX-512/NEON micro-kernels chosen at run time, threads from rayon's pool for
//! large products). [`matmul_reference`] is the plain triple loop it is tested against.

mod kernel;
mod packed;
#[cfg(test)]
mod tests;

use std::fmt::Debug;

use ndarray::{ArrayView2, ArrayViewMut2, LinalgScalar};

pub use packed::{matmul_packed, PackedWeights};

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
}

impl Float for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// Products with fewer multiply-adds than this run on the calling thread: below it, waking the
/// thread pool costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// `C = A B` (or `C += A B` when `accumulate`), for views of any strides, e.g. `w.t()`.
///
/// Shapes: `a` (m, k), `b` (k, n), `c` (m, n). Panics if they disagree: callers check user
/// shapes before reaching the kernels.
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
    let parallelism = if m * n * k >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
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
