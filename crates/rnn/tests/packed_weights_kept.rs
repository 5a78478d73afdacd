//! A layer keeps its packed weights from one pass without gradients to the next (see
//! `Recurrent`). Here: such passes give the same bits as a twin layer that packs anew, and a
//! change of the weights (written in place, by an optimizer step, by loading a state dict) is
//! never missed.

use ndarray::{ArrayD, IxDyn};
use rnn::optim::{Optimizer, Sgd};
use rnn::{no_grad, CellKind, LstmCell, Module, Recurrent, RecurrentConfig, Rng, Tensor};

fn random(rng: &mut Rng, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.uniform(-1.0, 1.0))
}

/// Two layers with the same weights: `kept` has run passes before (and kept their packing),
/// `fresh` has not.
fn twins(config: &RecurrentConfig) -> (Recurrent, Recurrent) {
    let kept = Recurrent::with_rng(config.clone(), &mut Rng::new(7)).unwrap();
    let fresh = Recurrent::with_rng(config.clone(), &mut Rng::new(7)).unwrap();
    (kept, fresh)
}

fn infer(layer: &Recurrent, x: &ArrayD<f32>) -> ArrayD<f32> {
    no_grad(|| layer.forward_states(&Tensor::new(x.clone()), None, None))
        .unwrap()
        .output
        .to_array()
}

#[test]
fn kept_packing_gives_the_bits_of_a_fresh_one_and_follows_every_change() {
    let configs = [
        RecurrentConfig::new(CellKind::Lstm, 5, 40)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_proj_size(7),
        RecurrentConfig::new(CellKind::Gru, 5, 300).with_batch_first(true),
        RecurrentConfig::new(CellKind::Rnn, 5, 12),
    ];
    let mut rng = Rng::new(1);
    for config in configs {
        let (kept, fresh) = twins(&config);
        let x = random(&mut rng, &[6, 3, 5]);
        let first = infer(&kept, &x);
        assert_eq!(infer(&kept, &x), first, "{config:?}: the kept packing");
        assert_eq!(infer(&fresh, &x), first, "{config:?}: a fresh packing");

        // A write in place (as a user or `load_state_dict` does).
        for layer in [&kept, &fresh] {
            let w = &layer.named_parameters()[1].1;
            w.data_mut().mapv_inplace(|v| v * 0.5 + 0.01);
        }
        let (fresh_written, _) = twins(&config);
        for ((_, a), (_, b)) in fresh
            .named_parameters()
            .iter()
            .zip(fresh_written.named_parameters())
        {
            *b.data_mut() = a.to_array();
        }
        let written = infer(&kept, &x);
        assert_ne!(written, first, "{config:?}: the write changes the output");
        assert_eq!(
            written,
            infer(&fresh_written, &x),
            "{config:?}: after a write"
        );

        // An optimizer step after a training pass.
        let step = |layer: &Recurrent| {
            let mut sgd = Sgd::new(layer.parameters(), 0.1).unwrap();
            let out = layer
                .forward_states(&Tensor::new(x.clone()), None, None)
                .unwrap()
                .output;
            out.backward_with(ArrayD::ones(out.shape())).unwrap();
            sgd.step().unwrap();
        };
        step(&kept);
        step(&fresh_written);
        let (fresh_stepped, _) = twins(&config);
        for ((_, a), (_, b)) in fresh_written
            .named_parameters()
            .iter()
            .zip(fresh_stepped.named_parameters())
        {
            *b.data_mut() = a.to_array();
        }
        let stepped = infer(&kept, &x);
        assert_ne!(stepped, written, "{config:?}: the step changes the output");
        assert_eq!(
            stepped,
            infer(&fresh_stepped, &x),
            "{config:?}: after a step"
        );
    }
}

/// A cell run step by step (where the kept packing matters most) against the same cell's
/// weights run by a fresh layer, with a weight changed halfway.
#[test]
fn a_cell_step_by_step_follows_a_change_of_its_weights() {
    let mut rng = Rng::new(3);
    let cell = LstmCell::with_rng(RecurrentConfig::new(CellKind::Lstm, 4, 6), &mut rng).unwrap();
    let mut state: Option<(Tensor, Tensor)> = None;
    for t in 0..6 {
        if t == 3 {
            let w = &cell.parameters()[0];
            w.data_mut().mapv_inplace(|v| -v);
        }
        let x = Tensor::new(random(&mut rng, &[2, 4]));
        let (h, c) = no_grad(|| cell.forward(&x, state.as_ref().map(|(h, c)| (h, c)))).unwrap();
        // The same step by a fresh copy of the cell's current weights.
        let twin = LstmCell::with_rng(RecurrentConfig::new(CellKind::Lstm, 4, 6), &mut Rng::new(9))
            .unwrap();
        for (a, b) in cell.parameters().iter().zip(twin.parameters()) {
            *b.data_mut() = a.to_array();
        }
        let (h2, c2) = no_grad(|| twin.forward(&x, state.as_ref().map(|(h, c)| (h, c)))).unwrap();
        assert_eq!(h.to_array(), h2.to_array(), "h at step {t}");
        assert_eq!(c.to_array(), c2.to_array(), "c at step {t}");
        state = Some((h, c));
    }
}
