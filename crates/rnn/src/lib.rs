//! # rnn: PyTorch's recurrent neural networks in pure Rust
//!
//! `torch.nn.RNN`, `LSTM` and `GRU` (and their `*Cell`s) with PyTorch's constructor arguments,
//! parameter names, initialisation, gate equations and numbers; backprop through time inside a
//! small reverse-mode autograd ([`Tensor`]); `Linear`, `Embedding`, `Dropout`, `LayerNorm`,
//! losses, optimizers with parameter groups and learning-rate schedulers; packed
//! variable-length batches; weights as safetensors with PyTorch's `state_dict` keys.
//! [`pytorch`] maps every PyTorch name to its place here; the common ones are re-exported at
//! the crate root.
//!
//! ## The first lesson
//!
//! One-hot letters h, e, l, o (`input_size = 4`), a hidden state of 2, three words of five
//! letters: the batch size and the sequence length are read from the input, never declared.
//!
//! ```
//! use ndarray::{array, Array3};
//! use rnn::{Rnn, Tensor};
//!
//! let (h, e, l, o) = ([1., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 1., 0.], [0., 0., 0., 1.]);
//! let words = [[h, e, l, l, o], [e, o, l, l, l], [l, l, e, e, l]];
//! let inputs = Array3::from_shape_fn((3, 5, 4), |(w, t, k)| words[w][t][k] as f32);
//!
//! rnn::manual_seed(0);
//! let cell = Rnn::new(4, 2).unwrap(); // torch.nn.RNN(input_size=4, hidden_size=2)
//! let (outputs, status) = cell.forward(&Tensor::from(inputs.into_dyn()), None).unwrap();
//! assert_eq!(outputs.shape(), [3, 5, 2]);
//! // batch_first=False: (3, 5, 4) is read as (sequence 3, batch 5, features 4),
//! // so the final hidden state is (num_layers, batch, hidden) = (1, 5, 2).
//! assert_eq!(status.shape(), [1, 5, 2]);
//! ```
//!
//! This lesson and the six after it, each beside its PyTorch original, are in [`lessons`].

pub mod bf16_file;
pub mod budget;
pub mod cells;
pub mod charlm;
pub mod config;
pub mod dropout;
pub mod embedding;
pub mod engine;
pub mod error;
pub mod io;
pub mod layer_norm;
pub mod lessons;
pub mod linalg;
pub mod linear;
pub mod loss;
pub mod model_file;
pub mod module;
pub mod onnx;
pub mod ops;
pub mod optim;
pub mod packed;
pub mod precision;
pub mod pytorch;
pub mod quantized;
pub mod recurrent;
pub mod regularisers;
pub mod rng;
pub mod tensor;

pub use cells::{GruCell, LstmCell, RnnCell};
pub use config::{CellKind, Nonlinearity, RecurrentConfig};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use error::{Error, Result, Shape};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use loss::{
    BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, NLLLoss, Reduction,
    SmoothL1Loss,
};
pub use module::Module;
pub use optim::{
    Adagrad, Adam, AdamW, CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, LrScheduler,
    OneCycleLR, Optimizer, ParamGroup, RMSprop, ReduceLROnPlateau, SequentialLR, Sgd, StepLR,
};
pub use precision::{autocast, quantize_dynamic, Precision, ToPrecision};
pub use recurrent::{Gru, Lstm, Recurrent, RecurrentOutput, Rnn};
pub use rng::{manual_seed, Rng};
pub use tensor::{is_grad_enabled, no_grad, Tensor};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
