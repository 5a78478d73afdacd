//! Character-level language models, as karpathy's char-rnn: a text becomes a sequence of
//! character indices; an embedding (or one-hot vectors), recurrent layers and a linear head
//! predict each next character; training is truncated backprop through time over contiguous
//! streams; the model then generates text one character at a time.
//!
//! | module | what |
//! |---|---|
//! | [`vocab`] | characters ↔ indices, `vocab.json` |
//! | [`model`] | [`CharLm`] (embed → RNN/LSTM/GRU → dropout → Linear) and [`CharLmConfig`] |
//! | [`data`] | the training streams (data order a pure function of seed and step) and [`evaluate`] |
//! | [`train`] | [`Trainer`]: one step at a time, and the resumable checkpoint |
//! | [`checkpoint`] | the model directory: `model.safetensors`, `vocab.json`, `checkpoint.safetensors` |
//! | [`sample`](mod@sample) | temperature and top-k sampling |
//!
//! ```
//! use rnn::charlm::{evaluate, CharLmConfig, TrainConfig, Trainer, Vocab};
//! use rnn::CellKind;
//!
//! let text = "to be or not to be, that is the question. ".repeat(20);
//! let vocab = Vocab::from_text(&text).unwrap();
//! let tokens = vocab.encode(&text).unwrap();
//! let model = CharLmConfig {
//!     cell: CellKind::Lstm, vocab_size: vocab.len(), embed: 8, hidden_size: 16,
//!     num_layers: 1, dropout: 0.0, layer_norm: false, peephole: false, weight_drop: 0.0,
//!     zoneout: 0.0, variational_dropout: false,
//! };
//! let train = TrainConfig {
//!     seq_len: 16, batch: 4, lr: 0.01, clip: 5.0, seed: 0, steps: 30,
//!     val_fraction: 0.0, data: "<inline>".into(), data_hash: String::new(),
//!     optimizer: Default::default(), schedule: Default::default(),
//! };
//! let mut trainer = Trainer::new(model, train, tokens.clone()).unwrap();
//! let first = trainer.step().unwrap().loss;
//! for _ in 1..30 {
//!     trainer.step().unwrap();
//! }
//! let after = evaluate(trainer.model_mut(), &tokens, 16).unwrap();
//! assert!(after.loss < f64::from(first) - 0.5, "{} -> {}", first, after.loss);
//! ```

pub mod checkpoint;
pub mod data;
pub mod model;
pub mod sample;
pub mod schedule;
pub mod train;
pub mod vocab;

pub use checkpoint::{best_of, load_dir, load_model, save_best, save_model};
pub use data::{evaluate, Evaluation, Streams};
pub use model::{CharLm, CharLmConfig, State};
pub use sample::{sample, SampleOptions};
pub use schedule::{OptimizerKind, ScheduleKind};
pub use train::{fingerprint, StepStats, TrainConfig, Trainer};
pub use vocab::Vocab;
