//! PyTorch's float32 results at the edges, from `tests/fixtures/edges.safetensors`
//! (`tools/fixtures/edges.py`): the activations (`sigmoid`, `tanh`, `relu`) and every layer
//! (RNN tanh and relu, LSTM, LSTM with projection, GRU) and cell at +-inf, +-1e38, the
//! sigmoid's underflow point, subnormals and NaN. NaN and infinities must sit where PyTorch
//! puts them, zeros must be zeros (not 6e-39), finite values agree to float32 rounding.

use std::collections::BTreeMap;

use ndarray::ArrayD;
use rnn::io::{load_state_dict, TensorData, TensorFile};
use rnn::{no_grad, CellKind, GruCell, LstmCell, Recurrent, RecurrentConfig, Rng, RnnCell, Tensor};

fn fixture() -> TensorFile {
    TensorFile::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/edges.safetensors"
    ))
    .expect("tests/fixtures/edges.safetensors (tools/fixtures/edges.py writes it)")
}

/// `got` equals `want` where PyTorch's value is NaN, infinite or zero, and within float32
/// rounding (a few ulp, relative, or 1e-6 absolute) elsewhere.
fn assert_edge_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() || w == 0.0 {
            g == w
        } else {
            (g - w).abs() <= 1e-6_f32.max(4e-6 * w.abs())
        };
        assert!(ok, "{what}[{i}]: got {g:e}, PyTorch {w:e}");
    }
}

#[test]
fn activations_match_pytorch_at_the_edges() {
    let f = fixture();
    let x = Tensor::new(f.f32("act.x").unwrap());
    assert_edge_close(
        "sigmoid",
        &x.sigmoid().to_array(),
        &f.f32("act.sigmoid").unwrap(),
    );
    assert_edge_close("tanh", &x.tanh().to_array(), &f.f32("act.tanh").unwrap());
    assert_edge_close("relu", &x.relu().to_array(), &f.f32("act.relu").unwrap());
}

/// The fixture's cases: name, configuration, and its tensors with the `<name>.` prefix removed.
fn cases(f: &TensorFile) -> Vec<(String, RecurrentConfig, BTreeMap<String, TensorData>)> {
    let mut out = Vec::new();
    for (name, json) in &f.metadata {
        let config = RecurrentConfig::from_json(json).unwrap();
        let tensors = f
            .tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&format!("{name}."))
                    .map(|rest| (rest.to_string(), v.clone()))
            })
            .collect();
        out.push((name.clone(), config, tensors));
    }
    assert_eq!(out.len(), 5, "{:?}", f.metadata.keys());
    out
}

#[test]
fn every_layer_matches_pytorch_at_the_edges() {
    let f = fixture();
    for (name, config, t) in cases(&f) {
        let layer = Recurrent::with_rng(config.clone(), &mut Rng::new(0)).unwrap();
        let weights: BTreeMap<String, TensorData> = t
            .iter()
            .filter(|(k, _)| k.contains("_l0"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        load_state_dict(&layer, &weights, true).unwrap();
        let x = Tensor::new(t["x"].to_f32());
        // With and without gradient bookkeeping (the two paths save different things).
        for grad in [false, true] {
            let out = if grad {
                layer.forward_states(&x, None, None).unwrap()
            } else {
                no_grad(|| layer.forward_states(&x, None, None)).unwrap()
            };
            let what = |k: &str| format!("{name} {k} (grad {grad})");
            assert_edge_close(
                &what("output"),
                &out.output.to_array(),
                &t["output"].to_f32(),
            );
            assert_edge_close(&what("h_n"), &out.h_n.to_array(), &t["h_n"].to_f32());
            if let Some(c) = &out.c_n {
                assert_edge_close(&what("c_n"), &c.to_array(), &t["c_n"].to_f32());
            }
        }
    }
}

#[test]
fn every_cell_matches_pytorch_at_the_edges() {
    let f = fixture();
    for (name, config, t) in cases(&f) {
        if config.proj_size > 0 {
            continue; // PyTorch's cells have no projection.
        }
        // The cell's keys are the layer's without `_l0`; its first step is the layer's.
        let weights: BTreeMap<String, TensorData> = t
            .iter()
            .filter_map(|(k, v)| k.strip_suffix("_l0").map(|b| (b.to_string(), v.clone())))
            .collect();
        let x = t["x"].to_f32();
        let x0 = Tensor::new(x.index_axis(ndarray::Axis(0), 0).to_owned());
        let want = t["output"]
            .to_f32()
            .index_axis(ndarray::Axis(0), 0)
            .to_owned();
        let mut rng = Rng::new(0);
        let h = match config.cell {
            CellKind::Rnn => {
                let c = RnnCell::with_rng(config.clone(), &mut rng).unwrap();
                load_state_dict(&c, &weights, true).unwrap();
                c.forward(&x0, None).unwrap()
            }
            CellKind::Gru => {
                let c = GruCell::with_rng(config.clone(), &mut rng).unwrap();
                load_state_dict(&c, &weights, true).unwrap();
                c.forward(&x0, None).unwrap()
            }
            CellKind::Lstm => {
                let c = LstmCell::with_rng(config.clone(), &mut rng).unwrap();
                load_state_dict(&c, &weights, true).unwrap();
                c.forward(&x0, None).unwrap().0
            }
        };
        assert_edge_close(&format!("{name} cell"), &h.to_array(), &want);
    }
}
