//! `std::ops` operators on tensors, as PyTorch's `a + b`, `a - b`, `a * b`, `a / b`, `-a`, with
//! tensors (broadcasting) and `f32` scalars on either side. Each records exactly the operation
//! of the method it stands for ([`Tensor::add`], [`Tensor::sub`], [`Tensor::mul`],
//! [`Tensor::div`], [`Tensor::neg`], [`Tensor::add_scalar`], [`Tensor::mul_scalar`],
//! [`Tensor::div_scalar`]), so gradients are the same either way.
//!
//! **Panics.** An operator cannot return a `Result`: two tensor shapes that do not broadcast
//! panic, with a message naming both shapes (`add: expected shape a shape broadcastable with
//! (3, 4), got (5,); The size of tensor a (4) must match ...`). This is ndarray's choice too;
//! where shapes come from outside the program, use the methods, which return the error
//! instead. Operators on scalars never panic.
//!
//! The operators take tensors by reference or by value (`&a + &b`, `a + b`, `&a + b`); a
//! tensor is a cheap handle, so by value only moves the handle.
//!
//! ```
//! use rnn::Tensor;
//! let a = Tensor::parameter(ndarray::array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn());
//! let b = Tensor::from_vec(&[2], vec![10.0, 20.0]).unwrap();
//! let y = (&a + &b) * &a - &b / 2.5 + -&a * 3.0 - 1.0; // as in PyTorch
//! y.sum().backward().unwrap();
//! // d/da = 2a + b - 3
//! assert_eq!(a.grad().unwrap(), ndarray::array![[9.0f32, 21.0], [13.0, 25.0]].into_dyn());
//! ```

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::tensor::Tensor;

/// The method's result, or a panic with its error (which names both shapes).
fn or_panic(result: crate::Result<Tensor>, op: &str) -> Tensor {
    result.unwrap_or_else(|e| panic!("tensor {op}: {e} (use the method for a Result)"))
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $tensor_method:ident, $symbol:literal) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[doc = concat!("`a ", $symbol, " b`: [`Tensor::", stringify!($tensor_method), "`], panicking on shapes that do not broadcast.")]
            fn $method(self, rhs: &Tensor) -> Tensor {
                or_panic(Tensor::$tensor_method(self, rhs), $symbol)
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Tensor;
            #[doc = concat!("`a ", $symbol, " b` (see `&a ", $symbol, " &b`).")]
            fn $method(self, rhs: Tensor) -> Tensor {
                $trait::$method(&self, &rhs)
            }
        }
        impl $trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[doc = concat!("`a ", $symbol, " b` (see `&a ", $symbol, " &b`).")]
            fn $method(self, rhs: &Tensor) -> Tensor {
                $trait::$method(&self, rhs)
            }
        }
        impl $trait<Tensor> for &Tensor {
            type Output = Tensor;
            #[doc = concat!("`a ", $symbol, " b` (see `&a ", $symbol, " &b`).")]
            fn $method(self, rhs: Tensor) -> Tensor {
                $trait::$method(self, &rhs)
            }
        }
    };
}

binary_operator!(Add, add, add, "+");
binary_operator!(Sub, sub, sub, "-");
binary_operator!(Mul, mul, mul, "*");
binary_operator!(Div, div, div, "/");

macro_rules! scalar_operator {
    ($trait:ident, $method:ident, $symbol:literal, |$t:ident, $s:ident| $tensor_scalar:expr, |$s2:ident, $t2:ident| $scalar_tensor:expr) => {
        impl $trait<f32> for &Tensor {
            type Output = Tensor;
            #[doc = concat!("`tensor ", $symbol, " scalar`.")]
            fn $method(self, $s: f32) -> Tensor {
                let $t = self;
                $tensor_scalar
            }
        }
        impl $trait<f32> for Tensor {
            type Output = Tensor;
            #[doc = concat!("`tensor ", $symbol, " scalar`.")]
            fn $method(self, s: f32) -> Tensor {
                $trait::$method(&self, s)
            }
        }
        impl $trait<&Tensor> for f32 {
            type Output = Tensor;
            #[doc = concat!("`scalar ", $symbol, " tensor`.")]
            fn $method(self, $t2: &Tensor) -> Tensor {
                let $s2 = self;
                $scalar_tensor
            }
        }
        impl $trait<Tensor> for f32 {
            type Output = Tensor;
            #[doc = concat!("`scalar ", $symbol, " tensor`.")]
            fn $method(self, t: Tensor) -> Tensor {
                $trait::$method(self, &t)
            }
        }
    };
}

scalar_operator!(Add, add, "+", |t, s| t.add_scalar(s), |s, t| t
    .add_scalar(s));
scalar_operator!(Sub, sub, "-", |t, s| t.add_scalar(-s), |s, t| t
    .neg()
    .add_scalar(s));
scalar_operator!(Mul, mul, "*", |t, s| t.mul_scalar(s), |s, t| t
    .mul_scalar(s));
scalar_operator!(Div, div, "/", |t, s| t.div_scalar(s), |s, t| or_panic(
    Tensor::div(&Tensor::scalar(s), t),
    "/"
));

impl Neg for &Tensor {
    type Output = Tensor;
    /// `-tensor`: [`Tensor::neg`].
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    /// `-tensor`: [`Tensor::neg`].
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}
