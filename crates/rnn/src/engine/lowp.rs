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

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::views::Shared;
use crate::linalg::lowp::{matmul_prepared, matmul_serial, prepare_rows, prepared_len};
use crate::linalg::{matmul_packed_serial, Float, PackedBf16, PackedInt8, PackedWeights, RowQuant};
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

    /// How many times f32's rate its products run at, for the thread policy
    /// ([`super::schedule`]): 4 for int8 (`vpdpbusd` multiply-adds four pairs per 32-bit lane
    /// where an FMA does one), 1 for the others (bf16 is emulated with f32 FMAs on most CPUs).
    pub fn speedup(&self) -> usize {
        match self {
            PackedBlock::Int8(_) => 4,
            _ => 1,
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
                matmul_serial(&mut c, &a, b, accumulate);
            }
            PackedBlock::Int8(b) => {
                let (mut c, a) = F::as_f32_operands(c, a).expect("int8 blocks are f32's");
                matmul_serial(&mut c, &a, b, accumulate);
            }
        }
    }
}

/// Rows of an operand `A` rounded (bf16) or quantized (int8) once for the products of every
/// block that reads them, rather than once per block: `x` for the input projection (all its
/// rows, before the time loop), `h` at each step (its rows split between the blocks). Empty
/// for f32 weights, whose kernels read `A` as it is.
pub(crate) struct Prepared {
    bf16: Array2<u32>,
    int8: Array2<u8>,
    info: Array2<RowQuant>,
}

impl Prepared {
    /// Room for `rows` rows of `A` for the products with `block` (and the other blocks of
    /// its matrix, which share its `k`); nothing for f32 blocks or none.
    pub fn new<F>(block: Option<&PackedBlock<F>>, rows: usize) -> Self {
        let (mut bf16, mut int8, mut info) = (
            Array2::zeros((0, 0)),
            Array2::zeros((0, 0)),
            Array2::from_elem((0, 1), RowQuant::default()),
        );
        match block {
            Some(PackedBlock::Bf16(b)) => bf16 = Array2::zeros((rows, prepared_len(b))),
            Some(PackedBlock::Int8(b)) => {
                int8 = Array2::zeros((rows, prepared_len(b)));
                info = Array2::from_elem((rows, 1), RowQuant::default());
            }
            _ => {}
        }
        Prepared { bf16, int8, info }
    }

    /// Whether the rows are prepared at all (reduced precision).
    pub fn is_used(&self) -> bool {
        !self.bf16.is_empty() || !self.int8.is_empty()
    }

    /// The buffers, to be written and read by the threads of a pass.
    pub fn share(&mut self) -> SharedPrepared {
        SharedPrepared {
            bf16: Shared::new(&mut self.bf16.view_mut()),
            int8: Shared::new(&mut self.int8.view_mut()),
            info: Shared::new(&mut self.info.view_mut()),
        }
    }
}

/// [`Prepared`]'s buffers shared between the threads of a pass.
#[derive(Clone, Copy)]
pub(crate) struct SharedPrepared {
    bf16: Shared<u32>,
    int8: Shared<u8>,
    info: Shared<RowQuant>,
}

impl SharedPrepared {
    /// Prepares `a`'s rows as rows `r0..` for the products with `block`'s matrix; nothing
    /// for an f32 block.
    ///
    /// # Safety
    /// No other thread reads or writes these rows meanwhile; they exist.
    pub unsafe fn prepare<F: Float>(
        &self,
        block: &PackedBlock<F>,
        r0: usize,
        a: &ArrayView2<'_, F>,
    ) {
        let n = a.nrows();
        match block {
            PackedBlock::Full(_) => {}
            PackedBlock::Bf16(b) => {
                let a = F::as_f32(a).expect("bf16 blocks are f32's");
                // SAFETY: these rows are this caller's (above).
                let mut buf = unsafe { self.bf16.view_mut(r0, n, 0..prepared_len(b)) };
                let buf = buf.as_slice_mut().expect("whole contiguous rows");
                prepare_rows(b, &a, buf, &mut vec![(); n]);
            }
            PackedBlock::Int8(b) => {
                let a = F::as_f32(a).expect("int8 blocks are f32's");
                // SAFETY: as above.
                let (mut buf, mut info) = unsafe {
                    (
                        self.int8.view_mut(r0, n, 0..prepared_len(b)),
                        self.info.view_mut(r0, n, 0..1),
                    )
                };
                let buf = buf.as_slice_mut().expect("whole contiguous rows");
                let info = info.as_slice_mut().expect("contiguous");
                prepare_rows(b, &a, buf, info);
            }
        }
    }

    /// `C (+)= A B` for `block`: from the prepared rows `r0..r0 + c.nrows()` in reduced
    /// precision, or from `a` itself for an f32 block.
    ///
    /// # Safety
    /// The rows were prepared (for `block`'s matrix) and no thread writes them meanwhile.
    pub unsafe fn matmul<F: Float>(
        &self,
        block: &PackedBlock<F>,
        r0: usize,
        c: &mut ArrayViewMut2<'_, F>,
        a: &ArrayView2<'_, F>,
        accumulate: bool,
    ) {
        let n = c.nrows();
        match block {
            PackedBlock::Full(b) => matmul_packed_serial(c, a, b, accumulate),
            PackedBlock::Bf16(b) => {
                let (mut c, _) = F::as_f32_operands(c, a).expect("bf16 blocks are f32's");
                // SAFETY: prepared and only read (above).
                let buf = unsafe { self.bf16.view(r0, n, 0..prepared_len(b)) };
                let buf = buf.as_slice().expect("whole contiguous rows");
                matmul_prepared(&mut c, buf, &vec![(); n], b, accumulate);
            }
            PackedBlock::Int8(b) => {
                let (mut c, _) = F::as_f32_operands(c, a).expect("int8 blocks are f32's");
                // SAFETY: as above.
                let (buf, info) = unsafe {
                    (
                        self.int8.view(r0, n, 0..prepared_len(b)),
                        self.info.view(r0, n, 0..1),
                    )
                };
                let (buf, info) = (
                    buf.as_slice().expect("whole contiguous rows"),
                    info.as_slice().expect("contiguous"),
                );
                matmul_prepared(&mut c, buf, info, b, accumulate);
            }
        }
    }
}
