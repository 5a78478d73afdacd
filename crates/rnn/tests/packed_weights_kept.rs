//! A layer keeps its packed weights from one pass without gradients to the next (see
//! `Recurrent`). Here: such passes give the same bits as a layer that packs anew, and a change
//! of the weights (written in place, as loading a state dict does, or by an optimizer step) is
//! never missed.

use ndarray::{ArrayD, IxDyn};
use rnn::optim::{Optimizer, Sgd};
use rnn::{no_grad, CellKind, LstmCell, Module, Recurrent, RecurrentConfig, Rng, Tensor};

fn random(rng: &mut Rng, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.uniform(-1.0, 1.0))
}

/// A layer that has never run a pass, with `layer`'s current weights.
fn fresh_copy(layer: &Recurrent) -> Recurrent {
    let copy = Recurrent::with_rng(layer.config().clone(), &mut Rng::new(99)).unwrap();
    for (from, to) in layer.parameters().iter().zip(copy.parameters()) {
        *to.data_mut() = from.to_array();
    }
    copy
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
        let layer = Recurrent::with_rng(config.clone(), &mut Rng::new(7)).unwrap();
        let x = random(&mut rng, &[6, 3, 5]);
        let first = infer(&layer, &x);
        assert_eq!(infer(&layer, &x), first, "{config:?}: the kept packing");
        assert_eq!(
            infer(&fresh_copy(&layer), &x),
            first,
            "{config:?}: a fresh one"
        );

        // A write in place (as a user or `load_state_dict` does).
        let w_hh = &layer.named_parameters()[1].1;
        w_hh.data_mut().mapv_inplace(|v| v * 0.5 + 0.01);
        let written = infer(&layer, &x);
        assert_ne!(written, first, "{config:?}: the write changes the output");
        let want = infer(&fresh_copy(&layer), &x);
        assert_eq!(written, want, "{config:?}: after a write");

        // An optimizer step after a training pass.
        let mut sgd = Sgd::new(layer.parameters(), 0.1).unwrap();
        let out = layer
            .forward_states(&Tensor::new(x.clone()), None, None)
            .unwrap()
            .output;
        out.backward_with(ArrayD::ones(out.shape())).unwrap();
        sgd.step().unwrap();
        let stepped = infer(&layer, &x);
        assert_ne!(stepped, written, "{config:?}: the step changes the output");
        let want = infer(&fresh_copy(&layer), &x);
        assert_eq!(stepped, want, "{config:?}: after a step");
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

/// A layer (with its kept packing) can be shared by threads that run inference at once, and
/// every thread gets the bits of a fresh packing.
#[test]
fn threads_share_a_layer_and_its_kept_packing() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let config = RecurrentConfig::new(CellKind::Lstm, 5, 64).with_num_layers(2);
    let layer = Recurrent::with_rng(config, &mut Rng::new(5)).unwrap();
    shareable(&layer);
    let x = random(&mut Rng::new(6), &[4, 2, 5]);
    let want = infer(&fresh_copy(&layer), &x);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4).map(|_| s.spawn(|| infer(&layer, &x))).collect();
        for run in runs {
            assert_eq!(run.join().unwrap(), want);
        }
    });
}
