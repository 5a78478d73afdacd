//! Reduced precision for inference: the precision of a layer's matrix products
//! ([`Precision`]), the scoped switch [`autocast`] (PyTorch's `torch.autocast("cpu",
//! dtype=torch.bfloat16)`) and [`quantize_dynamic`] (`torch.ao.quantization.quantize_dynamic`).
//!
//! Only the **products** change precision; everything else stays f32:
//!
//! ```text
//! f32:   xw = x W_ih^T,                 hw = h W_hh^T                   (f32 FMAs)
//! bf16:  xw = bf16(x) bf16(W_ih)^T,     hw = bf16(h) bf16(W_hh)^T       (f32 sums)
//! int8:  xw = r_x s_w (q(x) - z_x) q(W_ih)^T, hw = r_h s_w (q(h) - z_h) q(W_hh)^T  (i32 sums)
//! then   gates, c, h in f32 (the cell's row math, unchanged)
//! ```
//!
//! The same holds for the projection `h = m W_hr^T` (`proj_size`) and, under [`autocast`] or
//! [`crate::Linear::to_precision`], for `Linear`'s `x W^T`. The weights are rounded (bf16,
//! round to nearest even) or quantized (int8: symmetric, one f32 scale per output row) once,
//! when the layer packs them; the activations at every product (int8: each row of `x` or `h`
//! its own scale and zero point, at every time step). See [`crate::linalg::bf16`] and
//! [`crate::linalg::int8`] for the kernels and their rounding.
//!
//! # Error bounds (largest absolute difference of the output from an f64 run)
//!
//! Measured (2026-12-07) on the parity fixtures (tests/lowp_parity.rs: 772 cases of
//! PyTorch's initialisation with inputs in (-1, 1), hidden 4 to 6, up to 3 layers, up to 6
//! steps, packed batches included; the same numbers under every kernel, which give the same
//! bits) and on the benchmark presets (one layer, 32 to 100 steps, hidden 128 to 1024,
//! `benches/precision.rs layers`). The tests assert the last column, about 2x the worst:
//!
//! | precision | cell | parity fixtures, worst | presets (small / medium / large) | tested bound |
//! |---|---|---|---|---|
//! | bf16 | LSTM | 3.9e-3 | (PyTorch bf16: 1.5e-3 / 1.4e-3 / 2.0e-3) | 1e-2 |
//! | bf16 | GRU | 4.1e-3 | (PyTorch bf16: 5.0e-3 / 6.0e-3 / 8.2e-3) | 1e-2 |
//! | bf16 | RNN | 1.0e-2 | (PyTorch bf16: 5.9e-3 / 7.1e-3 / 8.1e-3) | 2e-2 |
//! | int8 | LSTM | 1.1e-2 | 2.0e-3 / 2.4e-3 / 4.2e-3 | 2e-2 |
//! | int8 | GRU | 6.0e-3 | 3.6e-3 / 4.2e-3 / 6.5e-3 | 2e-2 |
//! | int8 | RNN | 1.3e-2 | 8.6e-3 / 1.1e-2 / 1.4e-2 | 3e-2 |
//!
//! An error grows with the number of terms of a product (about `sqrt(k)` roundings) and, for
//! the RNN, over the steps (its `tanh` does not damp the recurrent error as the gates'
//! sigmoids do). Trained weights with outliers in a row quantize worse than PyTorch's uniform
//! initialisation: check a quantized model on its own validation data (`rnn eval
//! --precision int8`).
//!
//! ```
//! use rnn::{no_grad, Lstm, Precision, Tensor};
//! use ndarray::Array3;
//!
//! let lstm = Lstm::new(8, 16)?;
//! let x = Tensor::new(Array3::from_shape_fn((5, 2, 8), |(t, n, i)| ((t + n + i) as f32).sin()).into_dyn());
//! let (y32, _) = no_grad(|| lstm.forward(&x, None))?;
//! let int8 = rnn::quantize_dynamic(&lstm)?; // inference only
//! let (y8, _) = no_grad(|| int8.forward(&x, None))?; // int8 refuses to record gradients
//! let (y16, _) = rnn::autocast(Precision::Bf16, || no_grad(|| lstm.forward(&x, None)))?;
//! let err = |y: &Tensor| (&y.to_array() - &y32.to_array()).iter().fold(0.0f32, |m, v| m.max(v.abs()));
//! assert!(err(&y8) < 2e-2 && err(&y16) < 1e-2);
//! # Ok::<(), rnn::Error>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The precision of a layer's matrix products (the rest of its arithmetic stays f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 products (the default; training and inference).
    #[default]
    F32,
    /// bf16 operands (8 bits of mantissa, rounded to nearest even), f32 sums:
    /// AVX512_BF16's `vdpbf16ps`, or f32 FMAs on the rounded values. Inference, and the forward
    /// pass of training (whose backward then runs in f32 on the f32 weights).
    Bf16,
    /// int8 dynamic quantization: weights s8 per output row, activations u8 per row at every
    /// product, exact i32 sums (AVX512_VNNI's `vpdpbusd`, or AVX2 widening). Inference only.
    Int8,
}

impl Precision {
    /// Every precision, in the order of the CLI's help.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    /// `"f32"`, `"bf16"` or `"int8"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The kernel the products of this precision run on this CPU (after `RNN_MAX_ISA`):
    /// `"avx512"`, `"avx512bf16"`, `"avx512vnni"`, `"avx2"` or `"portable"`.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Precision::F32 => crate::linalg::kernel_name::<f32>(),
            Precision::Bf16 => crate::linalg::bf16_kernel_name(),
            Precision::Int8 => crate::linalg::int8_kernel_name(),
        }
    }

    /// Why this precision's products run no faster than f32's on this CPU (after
    /// `RNN_MAX_ISA`), or `None` where they run on their own instruction: f32 always, bf16 on
    /// AVX512_BF16 (`vdpbf16ps`, kernel `"avx512bf16"`), int8 on AVX512_VNNI (`vpdpbusd`,
    /// kernel `"avx512vnni"`). Elsewhere the results are the same bits, but bf16 products are
    /// emulated with f32 FMAs (about f32's speed), int8 ones run on AVX2's `vpmaddwd` (about
    /// f32's speed) or the portable loops (several times slower than f32). The `rnn` tool
    /// prints it as a note when a run asks for such a precision.
    ///
    /// ```
    /// use rnn::Precision;
    /// assert_eq!(Precision::F32.speed_note(), None);
    /// if Precision::Bf16.kernel_name() != "avx512bf16" {
    ///     assert!(Precision::Bf16.speed_note().unwrap().contains("AVX512_BF16"));
    /// }
    /// ```
    pub fn speed_note(self) -> Option<&'static str> {
        match (self, self.kernel_name()) {
            (Precision::F32, _)
            | (Precision::Bf16, "avx512bf16")
            | (Precision::Int8, "avx512vnni") => None,
            (Precision::Bf16, _) => Some(
                "no AVX512_BF16 (`vdpbf16ps`) here (the CPU lacks it, or RNN_MAX_ISA caps the \
                 kernels): bf16 products are emulated (operands rounded to bf16, multiplied and \
                 summed in f32 FMAs), so they give bf16's results at about f32's speed, not \
                 faster",
            ),
            (Precision::Int8, "avx2") => Some(
                "no AVX512_VNNI (`vpdpbusd`) here (the CPU lacks it, or RNN_MAX_ISA=avx2 caps the \
                 kernels): int8 products run on AVX2 (`vpmaddwd`) at about f32's speed, not \
                 faster (the weights still take a quarter of the memory)",
            ),
            (Precision::Int8, _) => Some(
                "neither AVX512_VNNI nor AVX2 here (the CPU lacks them, or RNN_MAX_ISA=scalar \
                 caps the kernels): int8 products run on the portable loops, several times \
                 slower than f32",
            ),
        }
    }

    /// Whether a layer in this precision can record gradients (int8 cannot: its weights are
    /// quantized copies and the rounding has no useful derivative).
    pub fn trainable(self) -> bool {
        self != Precision::Int8
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// `"f32"`, `"bf16"` or `"int8"` (also PyTorch's `"float32"`, `"bfloat16"`, `"qint8"`).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" | "fp32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" | "qint8" | "i8" => Ok(Precision::Int8),
            _ => Err(Error::Invalid(format!(
                "unknown precision {s:?}: expected one of f32, bf16, int8"
            ))),
        }
    }
}

thread_local! {
    static AUTOCAST: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Runs `f` with every recurrent layer (and cell) and every [`crate::Linear`] that is in f32
/// running its products in `precision` on this thread, like PyTorch's
/// `with torch.autocast("cpu", dtype=torch.bfloat16):`. Layers already set to a precision
/// ([`crate::Recurrent::to_precision`]) keep theirs. Nested calls: the innermost wins; the
/// previous precision comes back when `f` returns or panics.
///
/// Under `Precision::Int8` a pass that records gradients is an error
/// ([`Precision::trainable`]); wrap inference in [`crate::no_grad`].
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            AUTOCAST.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(AUTOCAST.with(|p| p.replace(precision)));
    f()
}

/// The precision [`autocast`] sets on this thread (`F32` outside it).
pub fn autocast_precision() -> Precision {
    AUTOCAST.with(|p| p.get())
}

/// The precision a layer set to `own` runs in now: its own, or [`autocast`]'s for an f32 layer.
pub(crate) fn effective(own: Precision) -> Precision {
    if own == Precision::F32 {
        autocast_precision()
    } else {
        own
    }
}

/// The error for a pass that would record gradients through int8 products.
pub(crate) fn int8_training_error(what: &str) -> Error {
    Error::Invalid(format!(
        "{what} runs int8 products, which are for inference only: run it inside \
         rnn::no_grad (or on inputs and weights that require no gradient), or train the f32 \
         layer and quantize it afterwards"
    ))
}

/// Checks that int8 products can hold `k` terms exactly ([`crate::linalg::INT8_MAX_K`]).
pub(crate) fn check_int8_width(what: &str, k: usize) -> Result<()> {
    if k > crate::linalg::INT8_MAX_K {
        return Err(Error::Config(format!(
            "{what}: int8 products take at most {} inputs per output, got {k}",
            crate::linalg::INT8_MAX_K
        )));
    }
    Ok(())
}

/// Dynamic int8 quantization of a module's recurrent and linear layers for inference,
/// PyTorch's `torch.ao.quantization.quantize_dynamic(model, dtype=torch.qint8)`: a copy whose
/// products run in [`Precision::Int8`] (error bounds in the module docs). The copy shares the
/// f32 parameters; its int8 weights are made at the first pass and kept while the parameters
/// are unchanged.
pub fn quantize_dynamic<M: ToPrecision>(module: &M) -> Result<M> {
    module.to_precision(Precision::Int8)
}

/// Modules whose products can run in another [`Precision`].
pub trait ToPrecision: Sized {
    /// A copy of the module (sharing its parameters) whose products run in `precision`.
    /// Errors if the precision cannot hold the module's shapes (int8: more than
    /// [`crate::linalg::INT8_MAX_K`] inputs per output).
    fn to_precision(&self, precision: Precision) -> Result<Self>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!("BFloat16".parse::<Precision>().unwrap(), Precision::Bf16);
        let err = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(
            err.contains("\"fp8\"") && err.contains("f32, bf16, int8"),
            "{err}"
        );
    }

    #[test]
    fn autocast_is_scoped_and_nests() {
        assert_eq!(autocast_precision(), Precision::F32);
        autocast(Precision::Bf16, || {
            assert_eq!(effective(Precision::F32), Precision::Bf16);
            assert_eq!(effective(Precision::Int8), Precision::Int8);
            autocast(Precision::Int8, || {
                assert_eq!(autocast_precision(), Precision::Int8)
            });
            assert_eq!(autocast_precision(), Precision::Bf16);
        });
        assert_eq!(autocast_precision(), Precision::F32);
        let caught = std::panic::catch_unwind(|| autocast(Precision::Bf16, || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(autocast_precision(), Precision::F32);
    }
}
