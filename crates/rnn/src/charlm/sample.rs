//! Generating text from a character model, one character at a time.
//!
//! The prime is run through the model first; then each step draws the next character from
//! `softmax(logits / temperature)` restricted to the `top_k` most likely characters (all of
//! them when `top_k` is 0; the most likely one when `temperature` is 0), and feeds it back.
//! With the same model, prime, options and generator seed the text is the same.

use ndarray::Array2;

use super::model::{CharLm, State};
use super::vocab::Vocab;
use crate::error::{Error, Result};
use crate::module::Module;
use crate::rng::Rng;
use crate::tensor::no_grad;

/// How the next character is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    /// Divides the logits: below 1 sharper, above 1 flatter; 0 picks the most likely character.
    pub temperature: f64,
    /// Keeps only the `top_k` most likely characters; 0 keeps all.
    pub top_k: usize,
}

impl Default for SampleOptions {
    /// Temperature 0.8, all characters.
    fn default() -> Self {
        SampleOptions {
            temperature: 0.8,
            top_k: 0,
        }
    }
}

impl SampleOptions {
    /// Checks that the temperature is finite and not negative.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Invalid(format!(
                "the temperature must be a number >= 0, got {}",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// Draws a class from `logits` (see the module docs). `logits` must not be empty.
pub fn pick(logits: &[f32], options: SampleOptions, rng: &mut Rng) -> usize {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Most likely first; ties keep the lower index first. NaN sorts last.
    order.sort_by(|&a, &b| {
        logits[b]
            .partial_cmp(&logits[a])
            .unwrap_or_else(|| logits[a].is_nan().cmp(&logits[b].is_nan()))
            .then(a.cmp(&b))
    });
    if options.temperature == 0.0 {
        return order[0];
    }
    let k = if options.top_k == 0 {
        order.len()
    } else {
        options.top_k.min(order.len())
    };
    let kept = &order[..k];
    let max = f64::from(logits[kept[0]]);
    let weights: Vec<f64> = kept
        .iter()
        .map(|&i| ((f64::from(logits[i]) - max) / options.temperature).exp())
        .map(|w| if w.is_finite() { w } else { 0.0 })
        .collect();
    let total: f64 = weights.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return kept[0];
    }
    let mut u = rng.next_f64() * total;
    for (&i, &w) in kept.iter().zip(&weights) {
        if u < w {
            return i;
        }
        u -= w;
    }
    kept[k - 1]
}

/// A model fed one character at a time, keeping its state.
pub struct Sampler<'m> {
    model: &'m CharLm,
    state: Option<State>,
    logits: Vec<f32>,
}

impl<'m> Sampler<'m> {
    /// Runs `prime` (at least one index) through `model` and keeps the prediction for the next
    /// character. Put the model in evaluation mode first (`set_training(false)`).
    pub fn new(model: &'m CharLm, prime: &[usize]) -> Result<Sampler<'m>> {
        if prime.is_empty() {
            return Err(Error::Invalid(
                "the prime must have at least one character".into(),
            ));
        }
        let mut s = Sampler {
            model,
            state: None,
            logits: Vec::new(),
        };
        s.feed(prime)?;
        Ok(s)
    }

    fn feed(&mut self, indices: &[usize]) -> Result<()> {
        let tokens =
            Array2::from_shape_vec((indices.len(), 1), indices.to_vec()).expect("one column");
        let (logits, state) = no_grad(|| self.model.forward(&tokens, self.state.as_ref()))?;
        let v = self.model.config().vocab_size;
        let all = logits.to_array();
        let flat = all.as_slice().expect("standard layout");
        self.logits = flat[flat.len() - v..].to_vec();
        if let Some(bad) = self.logits.iter().find(|l| !l.is_finite()) {
            return Err(Error::Invalid(format!(
                "the model's logits are not finite ({bad}): its weights overflow float32 \
                 arithmetic, so no character can be drawn; the model file is damaged or was \
                 trained into divergence"
            )));
        }
        self.state = Some(state);
        Ok(())
    }

    /// Draws the next character's index and feeds it back.
    pub fn next(&mut self, options: SampleOptions, rng: &mut Rng) -> Result<usize> {
        let i = pick(&self.logits, options, rng);
        self.feed(&[i])?;
        Ok(i)
    }
}

/// Generates `len` characters after `prime`, calling `emit` with each as it is drawn, and
/// returns them (without the prime). An empty prime starts from a newline (or the first
/// character of the vocabulary if it has no newline). A prime character outside the vocabulary
/// is an [`Error::Invalid`] listing it. The model is in evaluation mode meanwhile.
pub fn sample(
    model: &mut CharLm,
    vocab: &Vocab,
    prime: &str,
    len: usize,
    options: SampleOptions,
    rng: &mut Rng,
    mut emit: impl FnMut(char) -> Result<()>,
) -> Result<String> {
    options.validate()?;
    let start = if prime.is_empty() {
        vec![vocab.index('\n').unwrap_or(0)]
    } else {
        vocab
            .encode(prime)
            .map_err(|e| Error::Invalid(format!("the prime {prime:?}: {}", strip(&e))))?
    };
    let was_training = model.is_training();
    model.set_training(false);
    let result = (|| {
        let mut out = String::new();
        if len == 0 {
            return Ok(out);
        }
        let mut sampler = Sampler::new(model, &start)?;
        for _ in 0..len {
            let i = sampler.next(options, rng)?;
            let c = vocab.chars()[i];
            emit(c)?;
            out.push(c);
        }
        Ok(out)
    })();
    model.set_training(was_training);
    result
}

/// The message of an `Invalid` error without its "invalid argument: " prefix.
fn strip(e: &Error) -> String {
    match e {
        Error::Invalid(m) => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_respects_temperature_and_top_k() {
        let logits = [0.0f32, 3.0, 1.0, 3.0];
        let mut rng = Rng::new(1);
        let greedy = SampleOptions {
            temperature: 0.0,
            top_k: 0,
        };
        assert_eq!(pick(&logits, greedy, &mut rng), 1); // the first of the tied maxima
        let top2 = SampleOptions {
            temperature: 1.0,
            top_k: 2,
        };
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            counts[pick(&logits, top2, &mut rng)] += 1;
        }
        assert_eq!(counts[0] + counts[2], 0, "{counts:?}");
        assert!(counts[1] > 800 && counts[3] > 800, "{counts:?}");
        // Frequencies follow the softmax at temperature 1.
        let all = SampleOptions {
            temperature: 1.0,
            top_k: 0,
        };
        let mut counts = [0usize; 4];
        let n = 20000;
        for _ in 0..n {
            counts[pick(&logits, all, &mut rng)] += 1;
        }
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (c, &l) in counts.iter().zip(&logits) {
            let expected = f64::from(l).exp() / z;
            assert!((*c as f64 / n as f64 - expected).abs() < 0.02, "{counts:?}");
        }
    }

    #[test]
    fn sampling_is_deterministic_and_checks_the_prime() {
        crate::manual_seed(3);
        let vocab = Vocab::from_text("abc\n").unwrap();
        let mut model = CharLm::new(super::super::CharLmConfig {
            cell: crate::CellKind::Lstm,
            vocab_size: vocab.len(),
            embed: 4,
            hidden_size: 8,
            num_layers: 1,
            dropout: 0.0,
            layer_norm: false,
            peephole: false,
            weight_drop: 0.0,
            zoneout: 0.0,
            variational_dropout: false,
        })
        .unwrap();
        let opts = SampleOptions::default();
        let mut seen = String::new();
        let a = sample(&mut model, &vocab, "ab", 50, opts, &mut Rng::new(9), |c| {
            seen.push(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(a.chars().count(), 50);
        assert_eq!(a, seen);
        let b = sample(&mut model, &vocab, "ab", 50, opts, &mut Rng::new(9), |_| {
            Ok(())
        })
        .unwrap();
        assert_eq!(a, b);
        assert!(model.is_training());
        let err = sample(&mut model, &vocab, "abz", 5, opts, &mut Rng::new(9), |_| {
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("'z' (U+007A)"), "{err}");
    }
}
