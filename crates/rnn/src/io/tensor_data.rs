//! [`TensorData`]: one tensor of a safetensors file, as f32, bf16, f64, i64 or i8, with the
//! casts between them and the little-endian bytes it is written as.

use ndarray::ArrayD;

use crate::error::{Error, Result};

/// One tensor of a [`TensorFile`](super::TensorFile), in the element type it is kept in.
///
/// `F16` tensors are widened to [`TensorData::F32`] and `I32` to [`TensorData::I64`] when a
/// file is read; `BF16` tensors keep their bits ([`TensorData::BF16`]) and widen exactly
/// wherever f32 is asked for ([`TensorData::to_f32`]).
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `torch.float32` (also `float16`, widened on reading).
    F32(ArrayD<f32>),
    /// `torch.bfloat16`, bit for bit: the weights of a bf16 model file
    /// ([`crate::bf16_file`]).
    BF16(ArrayD<half::bf16>),
    /// `torch.float64`.
    F64(ArrayD<f64>),
    /// `torch.int64` (also `int32`, widened on reading).
    I64(ArrayD<i64>),
    /// `torch.int8`: the quantized weights of an int8 model file
    /// ([`crate::quantized`]).
    I8(ArrayD<i8>),
}

impl TensorData {
    /// The shape, as PyTorch's `tensor.shape` (empty for a 0-dimensional tensor).
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorData::F32(a) => a.shape(),
            TensorData::BF16(a) => a.shape(),
            TensorData::F64(a) => a.shape(),
            TensorData::I64(a) => a.shape(),
            TensorData::I8(a) => a.shape(),
        }
    }

    /// The safetensors dtype name: `"F32"`, `"BF16"`, `"F64"`, `"I64"` or `"I8"`.
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::BF16(_) => "BF16",
            TensorData::F64(_) => "F64",
            TensorData::I64(_) => "I64",
            TensorData::I8(_) => "I8",
        }
    }

    /// The values as f32, cast like `tensor.float()` (bf16 widens exactly; f64 rounds to
    /// nearest; values beyond the f32 range become infinite).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            TensorData::F32(a) => a.clone(),
            TensorData::BF16(a) => a.mapv(half::bf16::to_f32),
            TensorData::F64(a) => a.mapv(|v| v as f32),
            TensorData::I64(a) => a.mapv(|v| v as f32),
            TensorData::I8(a) => a.mapv(f32::from),
        }
    }

    /// The values as f64, cast like `tensor.double()`.
    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            TensorData::F32(a) => a.mapv(f64::from),
            TensorData::BF16(a) => a.mapv(half::bf16::to_f64),
            TensorData::F64(a) => a.clone(),
            TensorData::I64(a) => a.mapv(|v| v as f64),
            TensorData::I8(a) => a.mapv(f64::from),
        }
    }

    /// The values as i64. A floating-point tensor is an [`Error::Invalid`] naming `key` and
    /// the dtype: integers (lengths, class indices) are never silently truncated from floats.
    pub fn to_i64(&self, key: &str) -> Result<ArrayD<i64>> {
        match self {
            TensorData::I64(a) => Ok(a.clone()),
            TensorData::I8(a) => Ok(a.mapv(i64::from)),
            other => Err(Error::Invalid(format!(
                "tensor \"{key}\" has dtype {}, expected an integer tensor (I64 or I32)",
                other.dtype()
            ))),
        }
    }

    /// The number of elements.
    pub(super) fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// The little-endian bytes in row-major order (any memory layout of the array is fine).
    pub(super) fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * 8);
        match self {
            TensorData::F32(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            TensorData::BF16(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_bits().to_le_bytes())),
            TensorData::F64(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            TensorData::I64(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            TensorData::I8(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        }
        out
    }
}

impl From<ArrayD<f32>> for TensorData {
    fn from(a: ArrayD<f32>) -> Self {
        TensorData::F32(a)
    }
}

impl From<ArrayD<half::bf16>> for TensorData {
    fn from(a: ArrayD<half::bf16>) -> Self {
        TensorData::BF16(a)
    }
}

impl From<ArrayD<f64>> for TensorData {
    fn from(a: ArrayD<f64>) -> Self {
        TensorData::F64(a)
    }
}

impl From<ArrayD<i8>> for TensorData {
    fn from(a: ArrayD<i8>) -> Self {
        TensorData::I8(a)
    }
}

impl From<ArrayD<i64>> for TensorData {
    fn from(a: ArrayD<i64>) -> Self {
        TensorData::I64(a)
    }
}
