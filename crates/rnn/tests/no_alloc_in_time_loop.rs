//! The time loop allocates nothing: a forward or backward pass over 2000 steps makes exactly as
//! many heap allocations as one over 1000 steps (work buffers are allocated once per call).
//!
//! The lengths are long enough that every product over all time steps (the weight and input gradients) is above `linalg::matmul`'s packing threshold at both lengths, so both take the
//! same code path; only the step count differs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ndarray::{Array2, Array3};
use rnn::engine::{self, Batches, DirWeights};
use rnn::{CellKind, RecurrentConfig, Rng};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts (per thread, so parallel tests in this
// binary do not disturb each other).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(|c| c.get())
}

/// Allocations made by one forward and one backward pass of `steps` steps.
fn count(cell: CellKind, proj: usize, steps: usize) -> (usize, usize) {
    let c = RecurrentConfig::new(cell, 5, 6)
        .with_proj_size(proj)
        .with_bidirectional(true)
        .with_num_layers(2);
    let mut rng = Rng::new(3);
    let gh = cell.gates() * 6;
    let mut r =
        |m: usize, k: usize| Array2::from_shape_simple_fn((m, k), || rng.uniform(-0.5, 0.5));
    let params: Vec<[Array2<f32>; 3]> = (0..4)
        .map(|idx| {
            [
                r(gh, c.layer_input_size(idx / 2)),
                r(gh, c.state_size()),
                r(proj.max(1), 6),
            ]
        })
        .collect();
    let biases: Vec<ndarray::Array1<f32>> = (0..8)
        .map(|_| ndarray::Array1::from_elem(gh, 0.1))
        .collect();
    let weights: Vec<DirWeights<f32>> = params
        .iter()
        .enumerate()
        .map(|(i, p)| DirWeights {
            w_ih: p[0].view(),
            w_hh: p[1].view(),
            b_ih: Some(biases[2 * i].view()),
            b_hh: Some(biases[2 * i + 1].view()),
            w_hr: (proj > 0).then(|| p[2].view()),
            per_unit: Vec::new(),
        })
        .collect();
    let n = 3;
    let b = Batches::uniform(steps, n);
    let x = r(steps * n, 5);
    let go = r(steps * n, c.output_size());
    let h0 = Array3::zeros((4, n, c.state_size()));
    let c0 = (cell == CellKind::Lstm).then(|| Array3::zeros((4, n, 6)));

    let input = engine::Input {
        x: x.view(),
        batches: &b,
    };
    let before = allocations();
    let f = engine::forward(
        &c,
        &weights,
        input,
        engine::InitialStates {
            h0: h0.view(),
            c0: c0.as_ref().map(|a| a.view()),
        },
        None,
        true,
    );
    let forward = allocations() - before;
    let before = allocations();
    let g = engine::backward(
        &c,
        &weights,
        f.saved.as_ref().unwrap(),
        input,
        engine::OutputGrads {
            d_output: go.view(),
            dh_n: None,
            dc_n: None,
        },
    );
    let backward = allocations() - before;
    drop(g);
    (forward, backward)
}

#[test]
fn allocations_do_not_grow_with_the_sequence() {
    // Single-threaded, so that work splitting cannot differ between the two lengths.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for (cell, proj) in [
            (CellKind::Rnn, 0),
            (CellKind::Lstm, 0),
            (CellKind::Lstm, 2),
            (CellKind::Gru, 0),
        ] {
            count(cell, proj, 2000); // first use: lazy initialisation of thread-locals
            let short = count(cell, proj, 1000);
            let long = count(cell, proj, 2000);
            assert_eq!(
                short, long,
                "{cell:?} proj {proj}: (forward, backward) allocations for 1000 vs 2000 steps"
            );
        }
    });
}
