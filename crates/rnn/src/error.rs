//! The crate's one error type.
//!
//! Every variant says what was wrong in PyTorch's terms: shapes are printed as PyTorch prints
//! them, `(3, 5, 4)`, and a message names the argument or the `state_dict` key at fault.

use std::fmt;

/// A tensor shape, printed as PyTorch prints `tuple(tensor.shape)`: `(3, 5, 4)`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// The shape of anything that has `.shape()` as a slice.
    pub fn of(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [d] => write!(f, "({d},)"),
            dims => {
                let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
                write!(f, "({})", parts.join(", "))
            }
        }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

/// Everything that can go wrong in `rnn`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor given to a function or module has the wrong shape.
    #[error("{what}: expected shape {expected}, got {actual}{hint}")]
    Shape {
        /// Which argument, e.g. `"RNN input"` or `"h0"`.
        what: String,
        /// The expected shape (unknown dimensions are printed as in PyTorch's messages).
        expected: String,
        /// The shape that was given.
        actual: Shape,
        /// An explanation, possibly empty, starting with `"; "`.
        hint: String,
    },

    /// A constructor argument breaks one of PyTorch's rules.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A value given at run time is not allowed (a negative index, a NaN learning rate...).
    #[error("invalid argument: {0}")]
    Invalid(String),

    /// A `state_dict` does not match the module (`load_state_dict(strict=True)` semantics).
    #[error("state_dict: {0}")]
    StateDict(String),

    /// A file is not a valid safetensors file, or its contents are not what was expected.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// The operating system refused a read or a write.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A shape error with no hint.
    pub fn shape(what: impl Into<String>, expected: impl Into<String>, actual: &[usize]) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.into(),
            actual: Shape::of(actual),
            hint: String::new(),
        }
    }

    /// A shape error with an explanation appended.
    pub fn shape_hint(
        what: impl Into<String>,
        expected: impl Into<String>,
        actual: &[usize],
        hint: impl Into<String>,
    ) -> Self {
        let hint = hint.into();
        Error::Shape {
            what: what.into(),
            expected: expected.into(),
            actual: Shape::of(actual),
            hint: if hint.is_empty() {
                hint
            } else {
                format!("; {hint}")
            },
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// A format error in the file at `path`.
    pub fn format(path: impl AsRef<std::path::Path>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().display().to_string(),
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_print_like_pytorch() {
        assert_eq!(Shape(vec![3, 5, 4]).to_string(), "(3, 5, 4)");
        assert_eq!(Shape(vec![7]).to_string(), "(7,)");
        assert_eq!(Shape(vec![]).to_string(), "()");
        let e = Error::shape("h0", "(1, 5, 2)", &[1, 3, 2]);
        assert_eq!(e.to_string(), "h0: expected shape (1, 5, 2), got (1, 3, 2)");
    }
}
