//! One packed weight block of the time loop in its [`Precision`]: the f32 (or f64) panels of
//! [`PackedWeights`], bf16 panels ([`PackedBf16`]) or int8 panels with their scales
//! ([`PackedInt8`]).
//!
//! A block is the operand `B = W[rows]^T` (k, n) of one of the loop's products
//! `C (+)= A B`: `A` (rows, k) is `x_t`, `h` or `m` and `C` (rows, n) the block's columns of the
//! pre-activations (or of the projected state). The precision is chosen once, when the weights
//! are packed; [`PackedBlock::matmul_serial`] dispatches once per product, so the f32 path
//! runs the same kernel as before, and the row loops of the cells never see the precision.
//! Reduced precision is for f32 layers: an f64 pass (tests, finite differences) packs f64
//! panels whatever the precision asked.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::linalg::{
    matmul_bf16_serial, matmul_int8_serial, matmul_packed_serial, Float, PackedBf16, PackedInt8,
    PackedWeights,
};
use crate::precision::Precision;

/// `B = W[rows]^T` packed in one precision (module docs).
#[derive(Debug)]
pub(crate) enum PackedBlock<F> {
    /// The layer's own float type.
    Full(PackedWeights<F>),
    /// bf16 values, f32 sums.
    Bf16(PackedBf16),
    /// s8 values per output row with f32 scales, i32 sums.
    Int8(PackedInt8),
}

impl<F: Float> PackedBlock<F> {
    /// Packs `w.t()` for `w` (n, k) in PyTorch's (out, in) layout, in `precision` (in `F`
    /// itself for `F = f64`).
    pub fn transposed(w: &ArrayView2<'_, F>, precision: Precision) -> Self {
        match (precision, F::as_f32(w)) {
            (Precision::Bf16, Some(w)) => PackedBlock::Bf16(PackedBf16::transposed(&w)),
            (Precision::Int8, Some(w)) => PackedBlock::Int8(PackedInt8::quantize_transposed(&w)),
            _ => PackedBlock::Full(PackedWeights::transposed(w)),
        }
    }

    /// `C = A B` (or `C += A B` when `accumulate`) on the calling thread: `a` (m, k), `c`
    /// (m, n).
    pub fn matmul_serial(
        &self,
        c: &mut ArrayViewMut2<'_, F>,
        a: &ArrayView2<'_, F>,
        accumulate: bool,
    ) {
        match self {
            PackedBlock::Full(b) => matmul_packed_serial(c, a, b, accumulate),
            PackedBlock::Bf16(b) => {
                let (mut c, a) = F::as_f32_operands(c, a).expect("bf16 blocks are f32's");
                matmul_bf16_serial(&mut c, &a, b, accumulate);
            }
            PackedBlock::Int8(b) => {
                let (mut c, a) = F::as_f32_operands(c, a).expect("int8 blocks are f32's");
                matmul_int8_serial(&mut c, &a, b, accumulate);
            }
        }
    }
}
