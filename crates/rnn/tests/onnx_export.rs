//! `rnn::onnx::export_*`: a recurrent model exported and imported back has bit-identical
//! weights and the same configuration, for every configuration ONNX can express (LSTM
//! peepholes and the reset-before GRU included); `proj_size`
//! is a clear error; an exported character model is a graph rnn recognises as more than a
//! stack (its embedding and head are listed).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::ArrayD;
use rnn::io::TensorData;
use std::sync::atomic::{AtomicU64, Ordering};

use rnn::charlm::{CharLm, CharLmConfig, Vocab};
use rnn::{CellKind, Module, Nonlinearity, Recurrent, RecurrentConfig, Rng};

fn temp(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rnn-onnx-export-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn configs() -> Vec<RecurrentConfig> {
    let mut out = Vec::new();
    let mut i = 0;
    for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
        for layers in [1, 2] {
            for bi in [false, true] {
                for bf in [false, true] {
                    i += 1;
                    let mut c = RecurrentConfig::new(cell, 3, 5)
                        .with_num_layers(layers)
                        .with_bidirectional(bi)
                        .with_batch_first(bf)
                        .with_bias(i % 3 != 0);
                    if cell == CellKind::Rnn && i % 2 == 0 {
                        c = c.with_nonlinearity(Nonlinearity::Relu);
                    }
                    if layers == 2 && i % 4 == 1 {
                        c = c.with_dropout(0.25);
                    }
                    // The variants: LSTM peepholes (ONNX's P), GRU reset before the product
                    // (linear_before_reset = 0), on half the configurations each.
                    if cell == CellKind::Lstm && i % 2 == 0 {
                        c = c.with_peephole(true);
                    }
                    if cell == CellKind::Gru && i % 2 == 1 {
                        c = c.with_linear_before_reset(false);
                    }
                    out.push(c);
                }
            }
        }
    }
    out
}

/// Peepholes start at zero, which would hide a misplaced block: give each a distinct value.
fn set_peepholes(model: &Recurrent, seed: usize) {
    let tensors: BTreeMap<String, TensorData> = model
        .named_parameters()
        .into_iter()
        .filter(|(k, _)| k.starts_with("weight_ph"))
        .map(|(k, t)| {
            let a = t.to_array();
            let v = (0..a.len())
                .map(|j| (j + seed) as f32 * 0.37 - 1.1)
                .collect();
            (
                k,
                TensorData::F32(ArrayD::from_shape_vec(a.shape(), v).unwrap()),
            )
        })
        .collect();
    assert_eq!(tensors.is_empty(), !model.config().peephole);
    rnn::io::load_state_dict(model, &tensors, false).unwrap();
}

#[test]
fn export_then_import_is_bit_identical_with_the_same_config() {
    for (i, config) in configs().into_iter().enumerate() {
        let model = Recurrent::with_rng(config.clone(), &mut Rng::new(i as u64)).unwrap();
        set_peepholes(&model, i);
        let path = temp("m.onnx");
        rnn::onnx::export_recurrent(&model, &path).unwrap();
        let stacks = rnn::onnx::import(&path).unwrap();
        assert_eq!(stacks.len(), 1);
        let back = &stacks[0].model;
        assert_eq!(back.config(), &config, "{}", config.to_json());
        let (a, b) = (model.named_parameters(), back.named_parameters());
        assert_eq!(a.len(), b.len());
        for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            let (xa, xb) = (ta.to_array(), tb.to_array());
            assert!(
                xa.iter()
                    .zip(xb.iter())
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{}: {ka} differs",
                config.to_json()
            );
        }
        // The states are graph inputs: the import sees h0 (and c0) as given.
        let want = if config.cell == CellKind::Lstm { 2 } else { 1 };
        assert_eq!(stacks[0].initial_states.len(), want);
        assert_eq!(stacks[0].input, "input");
    }
}

#[test]
fn proj_size_is_a_clear_error() {
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 5).with_proj_size(2);
    let model = Recurrent::with_rng(config, &mut Rng::new(0)).unwrap();
    let path = temp("p.onnx");
    let e = rnn::onnx::export_recurrent(&model, &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("proj_size = 2") && e.contains("no ONNX form"),
        "{e}"
    );
    assert!(!path.exists());
}

#[test]
fn layer_norm_is_a_clear_error() {
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 5).with_layer_norm(true);
    let model = Recurrent::with_rng(config, &mut Rng::new(0)).unwrap();
    let path = temp("ln.onnx");
    let e = rnn::onnx::export_recurrent(&model, &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer_norm has no ONNX form") && e.contains("LSTM"),
        "{e}"
    );
    assert!(!path.exists());
}

#[test]
fn a_character_model_exports_and_is_not_mistaken_for_a_stack() {
    for (cell, embed) in [(CellKind::Lstm, 4), (CellKind::Gru, 0)] {
        rnn::manual_seed(3);
        let model = CharLm::new(CharLmConfig {
            cell,
            vocab_size: 6,
            embed,
            hidden_size: 5,
            num_layers: 2,
            dropout: 0.0,
            layer_norm: false,
            peephole: false,
            weight_drop: 0.0,
            zoneout: 0.0,
            variational_dropout: false,
        })
        .unwrap();
        let vocab = Vocab::from_text("abcde\n").unwrap();
        let path = temp("c.onnx");
        rnn::onnx::export_charlm(&model, &vocab, &path).unwrap();
        let e = rnn::onnx::import(&path).unwrap_err().to_string();
        assert!(
            e.contains("Gather node") && e.contains("MatMul node") && e.contains("Add node"),
            "{e}"
        );
    }
}
