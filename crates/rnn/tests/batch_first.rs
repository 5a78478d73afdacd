//! `batch_first` input, which the engine reads as it is (its rows batch-major, see
//! `engine::Batches`), against the same sequences given
//! sequence-first: the same outputs, states and input gradients to the last bit (every value is
//! computed by the same arithmetic in either order), and the same weight gradients up to the
//! order of their sums over all rows; on one thread and on two (where the threads take rows
//! each or share every step by blocks).

use ndarray::{ArrayD, Axis, IxDyn, ShapeBuilder};
use rnn::{no_grad, CellKind, Module, Recurrent, RecurrentConfig, Rng, Tensor};

/// (N, L, F) ↔ (L, N, F).
fn swap(a: &ArrayD<f32>) -> ArrayD<f32> {
    let mut v = a.view();
    v.swap_axes(0, 1);
    v.as_standard_layout().into_owned()
}

struct Pass {
    output: ArrayD<f32>,
    h_n: ArrayD<f32>,
    d_input: ArrayD<f32>,
    d_weights: Vec<ArrayD<f32>>,
}

/// Forward and backward of `config` (batch_first or not) on `x` given batch-first, with
/// dL/d output `d_out` (batch-first); everything returned batch-first.
fn pass(config: &RecurrentConfig, x: &ArrayD<f32>, d_out: &ArrayD<f32>) -> Pass {
    let layer = Recurrent::with_rng(config.clone(), &mut Rng::new(5)).unwrap();
    let bf = config.batch_first;
    let to_layer = |a: &ArrayD<f32>| if bf { a.clone() } else { swap(a) };
    let input = Tensor::parameter(to_layer(x));
    let out = layer.forward_states(&input, None, None).unwrap();
    out.output.backward_with(to_layer(d_out)).unwrap();
    let from_layer = |a: ArrayD<f32>| if bf { a } else { swap(&a) };
    // Inference (no gradient bookkeeping) gives the same output.
    let inferred = no_grad(|| layer.forward_states(&input, None, None).unwrap());
    assert_eq!(inferred.output.to_array(), out.output.to_array());
    Pass {
        output: from_layer(out.output.to_array()),
        h_n: out.h_n.to_array(),
        d_input: from_layer(input.grad().unwrap()),
        d_weights: layer
            .parameters()
            .iter()
            .map(|p| p.grad().unwrap())
            .collect(),
    }
}

fn assert_close(a: &ArrayD<f32>, b: &ArrayD<f32>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-5 * scale,
            "{what}: {x} vs {y} (scale {scale})"
        );
    }
}

#[test]
fn batch_first_gives_the_sequence_first_results_on_any_thread_count() {
    let cases = [
        // Enough rows for two threads to take rows each.
        RecurrentConfig::new(CellKind::Rnn, 24, 64),
        RecurrentConfig::new(CellKind::Gru, 16, 48).with_num_layers(2),
        RecurrentConfig::new(CellKind::Lstm, 8, 40)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_proj_size(24),
        // Weights too large for every thread to read at every step: the threads share each
        // step by blocks of units (as with the 3 sequences below, too few to share out).
        RecurrentConfig::new(CellKind::Rnn, 1600, 1600),
    ];
    for base in cases {
        // When the threads share the steps by blocks, the input is projected 16 steps at a
        // time: lengths past one chunk and a partial one.
        for (batch, len) in [(40, 19), (3, 37)] {
            let mut rng = Rng::new(batch as u64);
            let mut random = |shape: &[usize]| {
                ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.uniform(-1.0, 1.0))
            };
            let x = random(&[batch, len, base.input_size]);
            let d_out = random(&[batch, len, base.output_size()]);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (bf, sf) = pool.install(|| {
                    (
                        pass(&base.clone().with_batch_first(true), &x, &d_out),
                        pass(&base.clone().with_batch_first(false), &x, &d_out),
                    )
                });
                let what = format!("{base:?}, batch {batch}, {threads} threads");
                assert_eq!(bf.output, sf.output, "output: {what}");
                assert_eq!(bf.h_n, sf.h_n, "h_n: {what}");
                assert_eq!(bf.d_input, sf.d_input, "d input: {what}");
                assert_eq!(bf.d_weights.len(), sf.d_weights.len());
                for (a, b) in bf.d_weights.iter().zip(&sf.d_weights) {
                    assert_close(a, b, &format!("d weights: {what}"));
                }
                // The output is each sequence's own: sequence 0 alone gives its row.
                if threads == 1 && batch == 3 {
                    let one = x.index_axis(Axis(0), 0).insert_axis(Axis(0)).to_owned();
                    let d_one = d_out.index_axis(Axis(0), 0).insert_axis(Axis(0)).to_owned();
                    let alone = pass(&base.clone().with_batch_first(true), &one, &d_one);
                    assert_close(
                        &alone.output,
                        &bf.output
                            .index_axis(Axis(0), 0)
                            .insert_axis(Axis(0))
                            .to_owned(),
                        &format!("sequence 0 alone: {what}"),
                    );
                }
            }
        }
    }
}

#[test]
fn batch_major_rows_are_batch_first_tensors_as_they_are() {
    use rnn::engine::Batches;
    // Only a padded batch can be batch-major.
    assert!(Batches::from_batch_sizes(vec![3, 2, 2])
        .unwrap()
        .batch_major()
        .is_none());
    let batches = Batches::uniform(4, 3).batch_major().unwrap();
    assert!(batches.is_batch_major() && !Batches::uniform(4, 3).is_batch_major());
    // The same pass through `forward_rows` with batch-major rows (R, F) = (N * L, F) as
    // through the layer with batch_first=True on (N, L, F).
    let config = RecurrentConfig::new(CellKind::Gru, 5, 6).with_batch_first(true);
    let layer = Recurrent::with_rng(config, &mut Rng::new(2)).unwrap();
    let mut rng = Rng::new(3);
    let x = ArrayD::from_shape_simple_fn(IxDyn(&[3, 4, 5]), || rng.uniform(-1.0, 1.0));
    let padded = layer
        .forward_states(&Tensor::new(x.clone()), None, None)
        .unwrap();
    let rows = x.into_shape_with_order(IxDyn(&[12, 5])).unwrap();
    let by_rows = layer
        .forward_rows(&Tensor::new(rows), &batches, None, None)
        .unwrap();
    assert_eq!(
        by_rows
            .output
            .to_array()
            .into_shape_with_order(IxDyn(&[3, 4, 6]))
            .unwrap(),
        padded.output.to_array()
    );
    assert_eq!(by_rows.h_n.to_array(), padded.h_n.to_array());
    // Input in another memory order (column-major), same values: the same output.
    let mut rng = Rng::new(3);
    let x = ArrayD::from_shape_simple_fn(IxDyn(&[3, 4, 5]), || rng.uniform(-1.0, 1.0));
    let mut fortran = ArrayD::zeros(IxDyn(&[3, 4, 5]).f());
    fortran.assign(&x);
    assert!(!fortran.is_standard_layout());
    let from_fortran = layer
        .forward_states(&Tensor::new(fortran), None, None)
        .unwrap();
    assert_eq!(from_fortran.output.to_array(), padded.output.to_array());
}
