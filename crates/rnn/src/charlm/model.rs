//! The character-level language model: embedding (or one-hot), recurrent layers, linear head.
//!
//! For a chunk of character indices `x` of shape `(L, N)` (sequence first) and carried states:
//!
//! ```text
//! e      = embed(x)                 (L, N, E)       or one_hot(x, V): (L, N, V) when embed = 0
//! o, h_n = rnn(e, h0)               (L, N, H)       LSTM/GRU/RNN, num_layers, inter-layer dropout
//! o      = dropout(o)               (L, N, H)       training only
//! logits = fc(o).reshape(L*N, V)    (L*N, V)
//! ```
//!
//! The PyTorch twin (`tools/train_charlm.py`) is the same three modules registered as `embed`,
//! `rnn` and `fc`, so the `state_dict` keys are `embed.weight`, `rnn.weight_ih_l0`, ...,
//! `fc.weight`, `fc.bias`.

use std::fmt;

use ndarray::{Array2, ArrayD};
use serde::{Deserialize, Serialize};

use crate::config::{CellKind, RecurrentConfig};
use crate::dropout::dropout;
use crate::embedding::Embedding;
use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::loss::{CrossEntropyLoss, Reduction};
use crate::module::{prefixed, Module};
use crate::ops::one_hot;
use crate::recurrent::Recurrent;
use crate::rng::with_global_rng;
use crate::tensor::Tensor;

/// The architecture of a [`CharLm`]: saved as JSON in the `config` metadata of its model file,
/// `{"cell": "lstm", "vocab_size": 65, "embed": 64, "hidden_size": 256, "num_layers": 2,
/// "dropout": 0.0}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharLmConfig {
    /// `rnn`, `lstm` or `gru`.
    pub cell: CellKind,
    /// `V`: characters in the vocabulary (input classes and output classes).
    pub vocab_size: usize,
    /// `E`: embedding width; 0 feeds one-hot vectors of width `V` instead.
    pub embed: usize,
    /// `H`: hidden state size of every layer.
    pub hidden_size: usize,
    /// Stacked recurrent layers.
    pub num_layers: usize,
    /// Dropout probability between recurrent layers and before the linear head (training only).
    pub dropout: f64,
    /// LSTM only: layer-normalised recurrent layers (see [`RecurrentConfig::layer_norm`]);
    /// absent from the JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layer_norm: bool,
    /// LSTM only: peephole connections (see [`RecurrentConfig::peephole`]). Absent: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub peephole: bool,
    /// DropConnect on the recurrent weights (see [`RecurrentConfig::weight_drop`]). Absent: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_drop: f64,
    /// Zoneout of the states (see [`RecurrentConfig::zoneout`]). Absent: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zoneout: f64,
    /// Variational (locked) dropout: the masks of `dropout`, between the recurrent layers and
    /// before the linear head, are drawn once per stream and feature for a whole chunk (see
    /// [`RecurrentConfig::variational_dropout`]). Absent: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub variational_dropout: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl CharLmConfig {
    /// Checks the sizes and the dropout probability.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab_size == 0 {
            return bad("vocab_size must be at least 1".into());
        }
        if self.hidden_size == 0 {
            return bad("hidden_size must be at least 1".into());
        }
        if self.num_layers == 0 {
            return bad("num_layers must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        crate::engine::Cell::of_options(&self.recurrent()).map_err(Error::Config)?;
        self.recurrent().validate()?;
        let bytes = self.parameter_count().and_then(|n| n.checked_mul(4));
        crate::budget::check(bytes, || {
            format!(
                "a character model with vocab_size {}, embed {}, hidden_size {}, num_layers {}: \
                 the weights",
                self.vocab_size, self.embed, self.hidden_size, self.num_layers
            )
        })
    }

    /// An estimate of the bytes a training step takes, with overflow-safe arithmetic (`None`
    /// on overflow): the weights, their gradients and Adam's two moments (`4 * 4` bytes per
    /// parameter), and what one chunk of `seq_len x batch` characters keeps for the backward
    /// pass: per character, the embedding, each layer's gates and states (`2 G H + 4 H`) and
    /// the logits with their softmax and gradient (`3 V`), in f32.
    pub fn training_bytes(&self, seq_len: usize, batch: usize) -> Option<u64> {
        let u = |v: usize| u64::try_from(v).ok();
        let weights = self.parameter_count()?.checked_mul(16)?;
        let g = u(self.cell.gates())?;
        let h = u(self.hidden_size)?;
        let per_layer = g.checked_mul(2)?.checked_add(4)?.checked_mul(h)?;
        let per_char = u(self.recurrent().input_size)?
            .checked_add(per_layer.checked_mul(u(self.num_layers)?)?)?
            .checked_add(u(self.vocab_size)?.checked_mul(3)?)?;
        let chars = u(seq_len)?.checked_mul(u(batch)?)?;
        weights.checked_add(chars.checked_mul(per_char)?.checked_mul(4)?)
    }

    /// [`CharLmConfig::training_bytes`] against the memory budget ([`crate::budget`]).
    pub fn check_training_memory(&self, seq_len: usize, batch: usize) -> Result<()> {
        crate::budget::check(self.training_bytes(seq_len, batch), || {
            format!(
                "training a character model with vocab_size {}, embed {}, hidden_size {}, \
                 num_layers {} on chunks of seq_len {seq_len} x batch {batch}",
                self.vocab_size, self.embed, self.hidden_size, self.num_layers
            )
        })
    }

    /// Every parameter's key and shape, in `state_dict` order: `embed.weight` `(V, E)` (unless
    /// one-hot), `rnn.*` (see [`RecurrentConfig::parameter_shapes`]), `fc.weight` `(V, H)`,
    /// `fc.bias` `(V,)`. Call it on a validated configuration.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        if self.embed > 0 {
            v.push((
                "embed.weight".to_string(),
                vec![self.vocab_size, self.embed],
            ));
        }
        for (k, shape) in self.recurrent().parameter_shapes() {
            v.push((format!("rnn.{k}"), shape));
        }
        v.push(("fc.weight".into(), vec![self.vocab_size, self.hidden_size]));
        v.push(("fc.bias".into(), vec![self.vocab_size]));
        v
    }

    /// The number of parameters (embedding, recurrent layers, linear head), with
    /// overflow-safe arithmetic: `None` when it does not fit 64 bits.
    pub fn parameter_count(&self) -> Option<u64> {
        let u = |v: usize| u64::try_from(v).ok();
        let (v, e, h) = (u(self.vocab_size)?, u(self.embed)?, u(self.hidden_size)?);
        let embed = v.checked_mul(e)?;
        let fc = v.checked_mul(h)?.checked_add(v)?;
        embed
            .checked_add(self.recurrent().parameter_count()?)?
            .checked_add(fc)
    }

    /// The recurrent layer's configuration (sequence first).
    pub fn recurrent(&self) -> RecurrentConfig {
        let input = if self.embed == 0 {
            self.vocab_size
        } else {
            self.embed
        };
        RecurrentConfig::new(self.cell, input, self.hidden_size)
            .with_num_layers(self.num_layers)
            .with_dropout(self.dropout)
            .with_layer_norm(self.layer_norm)
            .with_peephole(self.peephole)
            .with_weight_drop(self.weight_drop)
            .with_zoneout(self.zoneout)
            .with_variational_dropout(self.variational_dropout)
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a config serializes")
    }

    /// Parses [`CharLmConfig::to_json`]'s text and validates it.
    pub fn from_json(json: &str) -> Result<CharLmConfig> {
        let c: CharLmConfig = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("not a character-model config: {e}")))?;
        c.validate()?;
        Ok(c)
    }
}

/// The recurrent state carried from one chunk to the next: `h` (and `c` for an LSTM), each
/// `(num_layers, N, H)`.
#[derive(Clone, Debug)]
pub struct State {
    /// Hidden state.
    pub h: Tensor,
    /// Cell state (LSTM only).
    pub c: Option<Tensor>,
}

impl State {
    /// The same values cut from the graph: truncated backprop through time stops here.
    pub fn detach(&self) -> State {
        State {
            h: self.h.detach(),
            c: self.c.as_ref().map(Tensor::detach),
        }
    }
}

/// Embedding (or one-hot) → RNN/LSTM/GRU → dropout → Linear, over characters.
#[derive(Clone, Debug)]
pub struct CharLm {
    config: CharLmConfig,
    embed: Option<Embedding>,
    rnn: Recurrent,
    fc: Linear,
    training: bool,
}

impl CharLm {
    /// A model initialised from the global generator (see [`crate::manual_seed`]), in the order
    /// embed, rnn, fc, each with PyTorch's initialisation.
    pub fn new(config: CharLmConfig) -> Result<CharLm> {
        config.validate()?;
        let embed = match config.embed {
            0 => None,
            e => Some(Embedding::new(config.vocab_size, e)?),
        };
        let rnn = Recurrent::new(config.recurrent())?;
        let fc = Linear::new(config.hidden_size, config.vocab_size)?;
        Ok(CharLm {
            config,
            embed,
            rnn,
            fc,
            training: true,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &CharLmConfig {
        &self.config
    }

    /// Whether dropout is active.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Logits `(L*N, V)` (row `t*N + b` is step `t` of stream `b`) for `tokens` `(L, N)`, and
    /// the final state. `state` (from the previous chunk) defaults to zeros.
    pub fn forward(
        &self,
        tokens: &Array2<usize>,
        state: Option<&State>,
    ) -> Result<(Tensor, State)> {
        let (len, batch) = tokens.dim();
        let v = self.config.vocab_size;
        let indices = tokens.clone().into_dyn();
        let x = match &self.embed {
            Some(e) => e.forward(&indices)?,
            None => one_hot(&indices, v)?,
        };
        let (h0, c0) = match state {
            Some(s) => (Some(&s.h), s.c.as_ref()),
            None => (None, None),
        };
        let out = self.rnn.forward_states(&x, h0, c0)?;
        let mut o = out.output;
        let p = self.config.dropout as f32;
        if self.training && p > 0.0 {
            o = if self.config.variational_dropout {
                with_global_rng(|rng| locked_dropout(&o, p, rng))?
            } else {
                with_global_rng(|rng| dropout(&o, p, true, rng))?
            };
        }
        let logits = self
            .fc
            .forward(&o)?
            .reshape(&[(len * batch) as isize, v as isize])?;
        Ok((
            logits,
            State {
                h: out.h_n,
                c: out.c_n,
            },
        ))
    }

    /// Summed cross-entropy (nats) of predicting `targets` `(L, N)` from `tokens` `(L, N)`, and
    /// the final state. Divide by `L*N` for the mean.
    pub fn loss_sum(
        &self,
        tokens: &Array2<usize>,
        targets: &Array2<usize>,
        state: Option<&State>,
    ) -> Result<(Tensor, State)> {
        self.loss_with(tokens, targets, state, Reduction::Sum)
    }

    /// Mean cross-entropy (nats per character), as `CrossEntropyLoss()` on the flattened
    /// logits, and the final state.
    pub fn loss(
        &self,
        tokens: &Array2<usize>,
        targets: &Array2<usize>,
        state: Option<&State>,
    ) -> Result<(Tensor, State)> {
        self.loss_with(tokens, targets, state, Reduction::Mean)
    }

    fn loss_with(
        &self,
        tokens: &Array2<usize>,
        targets: &Array2<usize>,
        state: Option<&State>,
        reduction: Reduction,
    ) -> Result<(Tensor, State)> {
        if tokens.dim() != targets.dim() {
            return Err(Error::shape(
                "targets",
                crate::Shape::of(tokens.shape()).to_string(),
                targets.shape(),
            ));
        }
        let (logits, state) = self.forward(tokens, state)?;
        let t: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
        let t = ArrayD::from_shape_vec(ndarray::IxDyn(&[t.len()]), t).expect("one per token");
        let loss = CrossEntropyLoss::new()
            .with_reduction(reduction)
            .forward(&logits, &t)?;
        Ok((loss, state))
    }
}

/// Variational (locked) dropout of `o` (L, N, H): one mask per stream and feature (N, H),
/// drawn as [`crate::engine::locked_mask`] draws, the same at every step.
fn locked_dropout(o: &Tensor, p: f32, rng: &mut crate::Rng) -> Result<Tensor> {
    let shape = o.shape();
    let (len, batch, width) = (shape[0], shape[1], shape[2]);
    let batches = crate::engine::Batches::uniform(len, batch);
    let mask = crate::engine::locked_mask::<f32>(rng, &batches, width, f64::from(p))
        .into_shape_with_order(ndarray::IxDyn(&[len, batch, width]))
        .expect("one row per step and stream");
    o.mul(&Tensor::new(mask))
}

impl Module for CharLm {
    /// `embed.weight` (unless one-hot), `rnn.*`, `fc.weight`, `fc.bias`.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        if let Some(e) = &self.embed {
            v.push(("embed.weight".to_string(), e.weight().clone()));
        }
        v.extend(prefixed("rnn", &self.rnn));
        v.extend(prefixed("fc", &self.fc));
        v
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
        self.rnn.set_training(training);
    }
}

impl fmt::Display for CharLm {
    /// `CharLM(embed=Embedding(65, 64), rnn=LSTM(64, 256), fc=Linear(...), dropout=0)  # N parameters`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let embed = match &self.embed {
            Some(e) => e.to_string(),
            None => format!("one_hot({})", self.config.vocab_size),
        };
        let rnn = self.rnn.to_string();
        let rnn = rnn.split("  #").next().unwrap_or(&rnn);
        write!(
            f,
            "CharLM(embed={embed}, rnn={rnn}, fc={}, dropout={})  # {} parameters",
            self.fc,
            self.config.dropout,
            self.num_parameters()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn config(cell: CellKind, embed: usize) -> CharLmConfig {
        CharLmConfig {
            cell,
            vocab_size: 5,
            embed,
            hidden_size: 6,
            num_layers: 2,
            dropout: 0.0,
            layer_norm: false,
            peephole: false,
            weight_drop: 0.0,
            zoneout: 0.0,
            variational_dropout: false,
        }
    }

    #[test]
    fn keys_shapes_and_state() {
        crate::manual_seed(0);
        let m = CharLm::new(config(CellKind::Lstm, 3)).unwrap();
        let keys: Vec<String> = m.named_parameters().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys[0], "embed.weight");
        assert_eq!(keys[1], "rnn.weight_ih_l0");
        assert_eq!(keys[keys.len() - 2..], ["fc.weight", "fc.bias"]);
        let x = array![[0usize, 1], [2, 3], [4, 0]];
        let (logits, s) = m.forward(&x, None).unwrap();
        assert_eq!(logits.shape(), [6, 5]);
        assert_eq!(s.h.shape(), [2, 2, 6]);
        assert_eq!(s.c.as_ref().unwrap().shape(), [2, 2, 6]);
        // Carrying the state equals running the concatenation.
        let (l1, s1) = m
            .forward(&x.slice(ndarray::s![..1, ..]).to_owned(), None)
            .unwrap();
        let (l2, _) = m
            .forward(
                &x.slice(ndarray::s![1.., ..]).to_owned(),
                Some(&s1.detach()),
            )
            .unwrap();
        let whole = logits.to_array();
        let parts: Vec<f32> = l1
            .to_array()
            .iter()
            .chain(l2.to_array().iter())
            .copied()
            .collect();
        for (a, b) in whole.iter().zip(&parts) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn parameter_shapes_agree_with_the_model() {
        for embed in [0, 3] {
            crate::manual_seed(0);
            let c = config(CellKind::Gru, embed);
            let m = CharLm::new(c.clone()).unwrap();
            let named: Vec<(String, Vec<usize>)> = m
                .named_parameters()
                .into_iter()
                .map(|(k, t)| (k, t.shape()))
                .collect();
            assert_eq!(c.parameter_shapes(), named);
            assert_eq!(c.parameter_count(), Some(m.num_parameters() as u64));
        }
        let mut huge = config(CellKind::Lstm, 64);
        huge.vocab_size = usize::MAX / 2;
        let e = huge.validate().unwrap_err().to_string();
        assert!(
            e.contains("vocab_size 9223372036854775807") && e.contains("overflows"),
            "{e}"
        );
    }

    #[test]
    fn one_hot_model_has_no_embedding() {
        crate::manual_seed(0);
        let m = CharLm::new(config(CellKind::Gru, 0)).unwrap();
        assert!(m
            .named_parameters()
            .iter()
            .all(|(k, _)| k != "embed.weight"));
        assert_eq!(m.config().recurrent().input_size, 5);
        let (logits, s) = m.forward(&array![[4usize]], None).unwrap();
        assert_eq!(logits.shape(), [1, 5]);
        assert!(s.c.is_none());
        assert!(m
            .to_string()
            .starts_with("CharLM(embed=one_hot(5), rnn=GRU(5, 6, num_layers=2)"));
    }

    #[test]
    fn config_json_round_trip() {
        let c = config(CellKind::Rnn, 4);
        assert_eq!(CharLmConfig::from_json(&c.to_json()).unwrap(), c);
        let err = CharLmConfig::from_json(r#"{"cell": "lstm"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vocab_size"), "{err}");
        let mut bad = c.clone();
        bad.dropout = 1.0;
        assert!(bad.validate().is_err());
    }
}
