//! The vector instruction set the f32 kernels and activations run on, detected once.

use std::sync::OnceLock;

/// The instruction sets of the f32 kernels (matrix products, activations, optimizer steps).
///
/// The widest one the CPU has is used, unless the environment variable `RNN_MAX_ISA` caps it
/// (read once, at the first product): `avx2` or `scalar` (also `portable`). A cap reproduces
/// on one machine what a CPU without AVX-512 computes, or compares the kernels in benchmarks;
/// other values are ignored. AVX2 and AVX-512 give the same bits: the kernels run the same
/// fused multiply-adds in the same order, only more lanes at a time. The portable loops round
/// products and sums apart, so their last bits may differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable loops, one value at a time (or as the compiler vectorises them for the
    /// target's baseline).
    Scalar,
    /// AVX2 + FMA: 8 lanes of f32.
    Avx2,
    /// AVX-512F (with AVX2 + FMA, which every AVX-512 CPU has): 16 lanes of f32.
    Avx512,
}

impl Isa {
    /// `"scalar"`, `"avx2"` or `"avx512"`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// The instruction set in use: the widest this CPU has, capped by `RNN_MAX_ISA` (see [`Isa`]).
#[inline]
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = match std::env::var("RNN_MAX_ISA").as_deref() {
            Ok("avx2") => Isa::Avx2,
            Ok("scalar" | "portable") => Isa::Scalar,
            _ => Isa::Avx512,
        };
        detected().min(cap)
    })
}

/// The widest instruction set this CPU has.
pub(crate) fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            Isa::Scalar
        } else if is_x86_feature_detected!("avx512f") {
            Isa::Avx512
        } else {
            Isa::Avx2
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    Isa::Scalar
}
