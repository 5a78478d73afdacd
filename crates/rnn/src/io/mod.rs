//! Weights on disk: safetensors files and `state_dict` load/save with PyTorch's semantics.
//!
//! A [`TensorFile`] is the contents of one `.safetensors` file: named tensors plus the
//! string-to-string `__metadata__`. [`state_dict()`], [`load_state_dict`] and [`save_state_dict`]
//! connect it to a [`Module`], with the keys PyTorch uses (`weight_ih_l0`, `bias_hh_l0_reverse`,
//! `rnn.weight_ih_l0`, ...), so a file written by PyTorch loads with no renaming.
//!
//! Reading accepts `F32`, `F64`, `F16` (converted to f32), `BF16` (kept bit for bit, widened
//! exactly where f32 is needed), `I64` and `I32` (to i64), and `I8`;
//! any other dtype, and any malformed file, is an [`Error::Format`] naming the file.
//!
//! # Loading weights saved from PyTorch
//!
//! ```python
//! import torch, safetensors.torch
//! model = torch.nn.LSTM(input_size=4, hidden_size=8, num_layers=2)
//! safetensors.torch.save_file(model.state_dict(), "m.safetensors")
//! ```
//!
//! ```no_run
//! use rnn::io::{load_state_dict, save_state_dict, TensorFile};
//! use std::collections::BTreeMap;
//!
//! /// `model.load_state_dict(safetensors.torch.load_file("m.safetensors"))`
//! fn restore(model: &dyn rnn::Module) -> rnn::Result<()> {
//!     let file = TensorFile::read("m.safetensors")?;
//!     // strict = true: every key must match, with the same shape, as in PyTorch.
//!     load_state_dict(model, &file.tensors, true)
//! }
//!
//! /// And back: `safetensors.torch.load_file("out.safetensors")` reads this in PyTorch.
//! fn store(model: &dyn rnn::Module) -> rnn::Result<()> {
//!     let meta = BTreeMap::from([("epoch".to_string(), "3".to_string())]);
//!     save_state_dict(model, "out.safetensors", meta)
//! }
//! ```
//!
//! [`Module`]: crate::Module
//! [`Error::Format`]: crate::Error::Format

mod atomic;
mod parse;
mod state_dict;
mod tensor_data;
mod tensor_file;
#[cfg(test)]
mod test_util;

pub use atomic::write_atomic;
pub use state_dict::{check_state_dict, load_state_dict, save_state_dict, state_dict};
pub use tensor_data::TensorData;
pub use tensor_file::{checksum, TensorFile, CHECKSUM_KEY};
