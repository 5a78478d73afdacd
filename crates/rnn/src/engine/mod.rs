//! The recurrent engine: one implementation of layers, directions, variable lengths, inter-layer
//! dropout and backprop through time, shared by RNN, LSTM and GRU.
//!
//! A cell is a description ([`cells`]: its gates, parameters, fused gate math forward and
//! backward, and the hooks of its weight gradients) that this one engine reads. Everything here works
//! on the *packed* layout: the rows of all sequences at time 0, then at time 1, ... with
//! `batch_sizes[t]` rows at step t (sequences sorted by decreasing length). A padded batch of
//! `N` sequences of length `L` is the special case `batch_sizes = [N; L]`, so padded and packed
//! input share one code path. A padded batch may also keep its rows batch-major (`batch_first`'s
//! layout, see [`Batches`]): a step's rows are then `L` rows apart, which the kernels read
//! through their row stride, so such input and output need no layout copy.
//!
//! Per layer and direction the forward pass is, per step, over the rows still active and by
//! blocks of hidden units (`engine/forward.rs`, `engine/blocks.rs`): `xw = x_t W_ih^T` and `hw = h W_hh^T` for
//! the block's gate columns (weights packed once per call), the fused gate math with the
//! biases, then (LSTM with `proj_size`) `h = m W_hr^T`. The blocks of a step are independent, so
//! all threads work through the whole sequence together and meet once per step
//! (`engine/parallel.rs`); nothing is spent on a separate pass over an all-steps `X W_ih^T` buffer.
//!
//! A cell whose row math needs statistics over all hidden units of a row (the layer-normalised
//! LSTM, `cells/lstm_ln.rs`) declares `whole_rows`: its layer is one block, so that the row math
//! sees every unit and no meeting of blocks within a step is needed. The threads then share its
//! passes by rows of the batch (`schedule.rs`: 16 rows per thread and up to 12 MiB of weights,
//! which covers the medium and smaller workloads at 2 threads); with fewer rows one thread runs
//! each step. The alternative, blocks that meet between the phases of a step (the products and
//! partial sums, then the statistics and the gates, then `c'`'s statistics and `h'`; three
//! meetings forward and three backward, as the reset-before GRU's two phases generalised), was
//! not built: by rows, which the workloads that matter take, it would only add the meetings.
//!
//! Backward is one sweep back through time that produces the gradients of the gate
//! pre-activations (`dXW`, and for GRU `dHW`) and of the states (`engine/backward.rs`); the
//! weight gradients are then a few large GEMMs over all timesteps at once. Work buffers are
//! allocated once per call; the time loop allocates nothing.
//!
//! The files, by concern: `cells/` (one per cell kind), `views.rs` (the raw views the threads
//! share), `schedule.rs` (how the threads share a pass), `packing.rs` (weights packed for the
//! loops), `forward.rs` and `backward.rs` (the time loops), `blocks.rs` (blocks of units),
//! `parallel.rs` (the threads' meetings), `math.rs` (activations).

mod backward;
mod blocks;
pub mod cells;
mod forward;
mod lowp;
mod masks;
pub mod math;
mod packing;
mod parallel;
mod schedule;
mod views;
mod zoneout;

use ndarray::{
    s, Array1, Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayView3, ArrayViewD,
    ArrayViewMut2, Axis, Ix1, Ix2,
};

use crate::config::RecurrentConfig;
use crate::error::{Error, Result};
use crate::linalg::Float;
use crate::rng::Rng;
use backward::{direction_backward, BackwardStates};
pub use cells::{Cell, Param};
use forward::{direction_forward, DirPass, DirSaved, ForwardStates};
pub(crate) use lowp::PackedBlock;
pub use masks::{locked_mask, Masks, Zoneout, ZoneoutMasks};
pub use math::Activations;
pub(crate) use packing::{Matrix, PackedDir};

/// The packed layout of a batch: how many sequences are active at each step, and the order of
/// the pass's rows (one per sequence and step) in the input, the output and every per-row
/// buffer of the engine.
///
/// The rows are time-major by default, `t`'s rows after `t - 1`'s (PyTorch's `(L, N, F)` and
/// packed rows). A padded batch may instead be batch-major ([`Batches::batch_major`]): row
/// `i * L + t`, which is `batch_first`'s `(N, L, F)` as it is, without a copy either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batches {
    batch_sizes: Vec<usize>,
    offsets: Vec<usize>,
    batch_major: bool,
}

impl Batches {
    /// `len` steps of `batch` sequences each: a padded batch.
    pub fn uniform(len: usize, batch: usize) -> Self {
        Batches::from_batch_sizes(vec![batch; len]).expect("uniform batch sizes are valid")
    }

    /// From PyTorch's `batch_sizes`: positive and non-increasing.
    pub fn from_batch_sizes(batch_sizes: Vec<usize>) -> Result<Self> {
        if let Some(t) = batch_sizes.windows(2).position(|w| w[1] > w[0]) {
            return Err(Error::Invalid(format!(
                "batch_sizes must be non-increasing, but batch_sizes[{}] = {} > batch_sizes[{}] = {}",
                t + 1,
                batch_sizes[t + 1],
                t,
                batch_sizes[t]
            )));
        }
        if batch_sizes.contains(&0) {
            return Err(Error::Invalid("batch_sizes must be positive".into()));
        }
        let mut offsets = Vec::with_capacity(batch_sizes.len() + 1);
        let mut total = 0;
        offsets.push(0);
        for &b in &batch_sizes {
            total += b;
            offsets.push(total);
        }
        Ok(Batches {
            batch_sizes,
            offsets,
            batch_major: false,
        })
    }

    /// The same batch with batch-major rows: row `i * L + t` is sequence `i` at step `t`.
    /// Only for a padded batch (every sequence `L` steps long); `None` for a packed one.
    pub fn batch_major(self) -> Option<Self> {
        let padded = self.batch_sizes.iter().all(|&b| b == self.batch());
        padded.then_some(Batches {
            batch_major: true,
            ..self
        })
    }

    /// Whether the rows are batch-major (see [`Batches::batch_major`]).
    pub fn is_batch_major(&self) -> bool {
        self.batch_major
    }

    /// Number of steps (the longest sequence).
    pub fn steps(&self) -> usize {
        self.batch_sizes.len()
    }

    /// Number of sequences (rows active at the first step); 0 for no steps.
    pub fn batch(&self) -> usize {
        self.batch_sizes.first().copied().unwrap_or(0)
    }

    /// Total rows: the sum of all lengths.
    pub fn rows(&self) -> usize {
        *self.offsets.last().expect("offsets has steps + 1 entries")
    }

    /// PyTorch's `batch_sizes`.
    pub fn batch_sizes(&self) -> &[usize] {
        &self.batch_sizes
    }

    /// Rows active at step `t` (the sequences `0..batch_sizes[t]`).
    pub(crate) fn active(&self, t: usize) -> usize {
        self.batch_sizes[t]
    }

    /// The row of sequence `i` at step `t`.
    pub(crate) fn row(&self, t: usize, i: usize) -> usize {
        if self.batch_major {
            i * self.steps() + t
        } else {
            self.offsets[t] + i
        }
    }

    /// How many rows apart the rows of consecutive sequences at one step are: 1 time-major,
    /// `L` batch-major.
    pub(crate) fn row_step(&self) -> usize {
        if self.batch_major {
            self.steps()
        } else {
            1
        }
    }
}

/// The parameters of one layer and direction, in PyTorch's layout.
#[derive(Clone, Debug)]
pub struct DirWeights<'a, F> {
    /// `weight_ih` (G*H, I).
    pub w_ih: ArrayView2<'a, F>,
    /// `weight_hh` (G*H, H_out).
    pub w_hh: ArrayView2<'a, F>,
    /// `bias_ih` (G*H), if the layer has biases.
    pub b_ih: Option<ArrayView1<'a, F>>,
    /// `bias_hh` (G*H), if the layer has biases.
    pub b_hh: Option<ArrayView1<'a, F>>,
    /// `weight_hr` (H_out, H), LSTM with `proj_size` only.
    pub w_hr: Option<ArrayView2<'a, F>>,
    /// The cell's per-unit parameters ([`Param::unit_width`]) by role, in `state_dict` order
    /// (the peephole LSTM's `weight_ph`; the layer-normalised LSTM's gains and shift); empty
    /// for none.
    pub per_unit: Vec<(Param, ArrayView1<'a, F>)>,
}

/// Gradients of one layer and direction, same shapes as [`DirWeights`].
#[derive(Clone, Debug)]
pub struct DirGrads<F> {
    /// d `weight_ih`.
    pub w_ih: Array2<F>,
    /// d `weight_hh`.
    pub w_hh: Array2<F>,
    /// d `bias_ih`.
    pub b_ih: Option<Array1<F>>,
    /// d `bias_hh`.
    pub b_hh: Option<Array1<F>>,
    /// d `weight_hr`.
    pub w_hr: Option<Array2<F>>,
    /// d of the per-unit parameters, by role, in the order of [`DirWeights::per_unit`].
    pub per_unit: Vec<(Param, Array1<F>)>,
}

impl<'a, F> DirWeights<'a, F> {
    /// The weights from views of the parameters by role, as a cell's description lists them
    /// (see [`cells::params`]).
    ///
    /// # Panics
    /// If a parameter's rank is not its role's, or a weight (`weight_ih`, `weight_hh`) is
    /// missing: the layers build these lists from the description.
    pub fn from_params(params: impl IntoIterator<Item = (Param, ArrayViewD<'a, F>)>) -> Self {
        let (mut w_ih, mut w_hh, mut b_ih, mut b_hh) = (None, None, None, None);
        let (mut w_hr, mut per_unit) = (None, Vec::new());
        let two = |v: ArrayViewD<'a, F>| v.into_dimensionality::<Ix2>().expect("a 2-D weight");
        let one = |v: ArrayViewD<'a, F>| v.into_dimensionality::<Ix1>().expect("a 1-D bias");
        for (param, view) in params {
            match param {
                Param::WeightIh => w_ih = Some(two(view)),
                Param::WeightHh => w_hh = Some(two(view)),
                Param::BiasIh => b_ih = Some(one(view)),
                Param::BiasHh => b_hh = Some(one(view)),
                Param::WeightHr => w_hr = Some(two(view)),
                _ => per_unit.push((param, one(view))),
            }
        }
        DirWeights {
            w_ih: w_ih.expect("weight_ih"),
            w_hh: w_hh.expect("weight_hh"),
            b_ih,
            b_hh,
            w_hr,
            per_unit,
        }
    }
}

impl<F: Float> DirGrads<F> {
    /// The gradient of the parameter `param`, taken out: `None` if the layer has no such
    /// parameter or it was taken (the weights `weight_ih` and `weight_hh`, which every layer
    /// has, leave an empty array instead).
    pub fn take(&mut self, param: Param) -> Option<ArrayD<F>> {
        match param {
            Param::WeightIh => {
                Some(std::mem::replace(&mut self.w_ih, Array2::zeros((0, 0))).into_dyn())
            }
            Param::WeightHh => {
                Some(std::mem::replace(&mut self.w_hh, Array2::zeros((0, 0))).into_dyn())
            }
            Param::BiasIh => self.b_ih.take().map(|a| a.into_dyn()),
            Param::BiasHh => self.b_hh.take().map(|a| a.into_dyn()),
            Param::WeightHr => self.w_hr.take().map(|a| a.into_dyn()),
            _ => {
                let k = self.per_unit.iter().position(|(p, _)| *p == param)?;
                Some(self.per_unit.remove(k).1.into_dyn())
            }
        }
    }
}

/// Everything a forward pass in training mode keeps for backward.
#[derive(Clone, Debug)]
pub struct Saved<F> {
    /// Inputs of layers 1.. (after dropout), (R, D*H_out).
    layer_inputs: Vec<Array2<F>>,
    /// Dropout masks (already scaled by 1/(1-p)) applied to the inputs of layers 1..
    masks: Vec<Option<Array2<F>>>,
    /// Index layer*D + direction.
    dirs: Vec<DirSaved<F>>,
    /// The zoneout masks the pass applied.
    zoneout: Zoneout<F>,
}

/// What a pass runs on: the input rows and their layout, the same for [`forward()`] and for the
/// [`backward()`] of that pass.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a, F> {
    /// (R, I): the input rows, in the packed layout of `batches` (time-major, or batch-major
    /// for a padded batch, see [`Batches::batch_major`]).
    pub x: ArrayView2<'a, F>,
    /// The layout of the rows: how many sequences are active at each step, and in which order.
    pub batches: &'a Batches,
}

/// The states a [`forward()`] pass starts from, every layer and direction's.
#[derive(Clone, Copy, Debug)]
pub struct InitialStates<'a, F> {
    /// (num_layers*D, N, H_out): `h_0` by layer and direction (index layer*D + direction),
    /// then by sequence in the order of the rows' [`Batches`].
    pub h0: ArrayView3<'a, F>,
    /// (num_layers*D, N, H): `c_0` for a cell with a cell state (LSTM), `None` for zeros;
    /// ignored for a cell without one.
    pub c0: Option<ArrayView3<'a, F>>,
}

/// The gradients flowing into [`backward()`]: those of the loss with respect to what
/// [`forward()`] returned ([`Forward`]'s `output`, `h_n` and `c_n`).
#[derive(Clone, Copy, Debug)]
pub struct OutputGrads<'a, F> {
    /// (R, D*H_out): dL/d output, rows in the packed layout of the pass's [`Batches`].
    pub d_output: ArrayView2<'a, F>,
    /// (num_layers*D, N, H_out): dL/d h_n; `None` for zeros (`h_n` unused).
    pub dh_n: Option<ArrayView3<'a, F>>,
    /// (num_layers*D, N, H): dL/d c_n, for a cell with a cell state; `None` for zeros.
    pub dc_n: Option<ArrayView3<'a, F>>,
}

/// Result of [`forward()`].
#[derive(Clone, Debug)]
pub struct Forward<F> {
    /// (R, D*H_out) in the packed layout.
    pub output: Array2<F>,
    /// (num_layers*D, N, H_out).
    pub h_n: Array3<F>,
    /// (num_layers*D, N, H), LSTM only.
    pub c_n: Option<Array3<F>>,
    /// For [`backward()`], when requested.
    pub saved: Option<Saved<F>>,
}

/// Result of [`backward()`].
#[derive(Clone, Debug)]
pub struct Backward<F> {
    /// dL/d input, (R, I).
    pub input: Array2<F>,
    /// dL/d h0, (num_layers*D, N, H_out).
    pub h0: Array3<F>,
    /// dL/d c0, LSTM only.
    pub c0: Option<Array3<F>>,
    /// Index layer*D + direction.
    pub weights: Vec<DirGrads<F>>,
}

/// Runs all layers and directions over a packed batch.
///
/// * `weights`: one entry per layer and direction, index layer*D + direction.
/// * `input`: the rows `x` (R, I) and their layout ([`Input`]).
/// * `initial`: `h0` (num_layers*D, N, H_out) and, for LSTM, `c0` (num_layers*D, N, H)
///   ([`InitialStates`]).
/// * `dropout_rng`: training mode: draw the masks of inter-layer dropout and zoneout from it
///   ([`Masks::draw`]); `None`: evaluation (zoneout's expectation).
/// * `save`: keep what [`backward()`] needs.
///
/// Shapes must already have been checked by the caller (the layer modules check user input).
pub fn forward<F: Activations>(
    config: &RecurrentConfig,
    weights: &[DirWeights<'_, F>],
    input: Input<'_, F>,
    initial: InitialStates<'_, F>,
    dropout_rng: Option<&mut Rng>,
    save: bool,
) -> Forward<F> {
    let masks = Masks::draw(config, input.batches, dropout_rng);
    forward_packed(config, weights, None, input, initial, masks, save)
}

/// [`forward()`] with the regularisers' masks given (drawn by [`Masks::draw`], or fixed).
pub fn forward_masked<F: Activations>(
    config: &RecurrentConfig,
    weights: &[DirWeights<'_, F>],
    input: Input<'_, F>,
    initial: InitialStates<'_, F>,
    masks: Masks<F>,
    save: bool,
) -> Forward<F> {
    forward_packed(config, weights, None, input, initial, masks, save)
}

/// Every layer and direction's weights packed for [`forward_packed`], index layer*D + direction.
/// The products run in `precision` ([`lowp::PackedBlock`]).
pub(crate) fn pack_weights<F: Activations>(
    config: &RecurrentConfig,
    weights: &[DirWeights<'_, F>],
    precision: crate::precision::Precision,
) -> Vec<PackedDir<F>> {
    weights
        .iter()
        .map(|w| PackedDir::new(Cell::of(config), w, precision))
        .collect()
}

/// [`forward()`] with the weights already packed by [`pack_weights`] (from the same `weights`),
/// or packed here when `packed` is `None`.
pub(crate) fn forward_packed<F: Activations>(
    config: &RecurrentConfig,
    weights: &[DirWeights<'_, F>],
    packed: Option<&[PackedDir<F>]>,
    input: Input<'_, F>,
    initial: InitialStates<'_, F>,
    masks: Masks<F>,
    save: bool,
) -> Forward<F> {
    let Input { x, batches } = input;
    let InitialStates { h0, c0 } = initial;
    let Masks {
        dropout: mut dropout_masks,
        zoneout,
    } = masks;
    if let Some(p) = packed {
        assert_eq!(
            p.len(),
            weights.len(),
            "one packing per layer and direction"
        );
    }
    let dirs = config.num_directions();
    let h_out = config.state_size();
    let n = batches.batch();
    let has_c = config.cell.description().cell_state;
    let mut h_n = Array3::zeros((config.num_layers * dirs, n, h_out));
    let mut c_n = has_c.then(|| Array3::zeros((config.num_layers * dirs, n, config.hidden_size)));
    let mut saved = save.then(|| Saved {
        layer_inputs: Vec::new(),
        masks: Vec::new(),
        dirs: Vec::new(),
        zoneout: Zoneout::Off,
    });
    let expectation = zoneout_expectation(&zoneout, config);
    let mut layer_input: Option<Array2<F>> = None;
    let mut output = Array2::zeros((0, 0));
    for layer in 0..config.num_layers {
        let input = layer_input.as_ref().map_or(x.view(), |a| a.view());
        // Written in full by the passes, so not zero-filled: each direction writes its columns
        // of every row (every row is active at one step).
        let mut out = Array2::<F>::uninit((batches.rows(), dirs * h_out));
        // SAFETY: `out` outlives the passes, which only write through this view (and read
        // back rows they wrote, for the final states) before `assume_init` below.
        let out_all =
            unsafe { ArrayViewMut2::from_shape_ptr(out.raw_dim(), out.as_mut_ptr().cast::<F>()) };
        let layer_states = layer * dirs..(layer + 1) * dirs;
        h_n.slice_mut(s![layer_states.clone(), .., ..])
            .assign(&h0.slice(s![layer_states.clone(), .., ..]));
        let mut c_views: Vec<Option<ArrayViewMut2<'_, F>>> = match c_n.as_mut() {
            Some(c) => {
                let mut c = c.slice_mut(s![layer_states.clone(), .., ..]);
                if let Some(c0) = c0.as_ref() {
                    c.assign(&c0.slice(s![layer_states.clone(), .., ..]));
                }
                split_dirs(c, Axis(0), dirs)
                    .into_iter()
                    .map(|v| Some(v.index_axis_move(Axis(0), 0)))
                    .collect()
            }
            None => (0..dirs).map(|_| None).collect(),
        };
        let mut h_views: Vec<ArrayViewMut2<'_, F>> =
            split_dirs(h_n.slice_mut(s![layer_states, .., ..]), Axis(0), dirs)
                .into_iter()
                .map(|v| v.index_axis_move(Axis(0), 0))
                .collect();
        let mut out_views = split_dirs(out_all, Axis(1), dirs);
        let run = |d: usize, h, c, o| {
            direction_forward(
                &DirPass {
                    cell: Cell::of(config),
                    w: &weights[layer * dirs + d],
                    x: input,
                    batches,
                    reverse: d == 1,
                    zoneout: dir_zoneout(&zoneout, &expectation, layer * dirs + d),
                },
                ForwardStates { h, c, out: o },
                save,
                packed.map(|p| &p[layer * dirs + d]),
            )
        };
        // The two directions are independent: run them on both cores.
        let results = if dirs == 2 {
            let (h1, c1, o1) = (h_views.pop(), c_views.pop(), out_views.pop());
            let (h0v, c0v, o0) = (h_views.pop(), c_views.pop(), out_views.pop());
            let (a, b) = rayon::join(
                || {
                    run(
                        0,
                        h0v.expect("forward h"),
                        c0v.flatten(),
                        o0.expect("forward out"),
                    )
                },
                || {
                    run(
                        1,
                        h1.expect("reverse h"),
                        c1.flatten(),
                        o1.expect("reverse out"),
                    )
                },
            );
            vec![a, b]
        } else {
            vec![run(
                0,
                h_views.pop().expect("h"),
                c_views.pop().flatten(),
                out_views.pop().expect("out"),
            )]
        };
        if let Some(saved) = saved.as_mut() {
            saved.dirs.extend(
                results
                    .into_iter()
                    .map(|r| r.expect("saved when requested")),
            );
        }
        // SAFETY: the passes wrote every value (above).
        let mut out = unsafe { out.assume_init() };
        if layer + 1 < config.num_layers {
            let mask = dropout_masks.get_mut(layer).and_then(Option::take);
            if let Some(mask) = &mask {
                out *= mask;
            }
            if let Some(saved) = saved.as_mut() {
                saved.masks.push(mask);
                saved.layer_inputs.push(out.clone());
            }
            layer_input = Some(out);
        } else {
            output = out;
        }
    }
    if let Some(saved) = saved.as_mut() {
        saved.zoneout = zoneout;
    }
    Forward {
        output,
        h_n,
        c_n,
        saved,
    }
}

/// The expectation masks `p` of zoneout at evaluation, as wide as the widest state.
fn zoneout_expectation<F: Float>(zoneout: &Zoneout<F>, config: &RecurrentConfig) -> Vec<F> {
    match zoneout {
        Zoneout::Expectation(p) => vec![*p; config.hidden_size.max(config.state_size())],
        _ => Vec::new(),
    }
}

/// How the pass of layer and direction `index` reads its zoneout masks.
fn dir_zoneout<'a, F: Float>(
    zoneout: &'a Zoneout<F>,
    expectation: &'a [F],
    index: usize,
) -> Option<zoneout::DirZoneout<'a, F>> {
    match zoneout {
        Zoneout::Off => None,
        Zoneout::Expectation(_) => Some(zoneout::DirZoneout {
            h: zoneout::Mask::Expectation(expectation),
            c: zoneout::Mask::Expectation(expectation),
        }),
        Zoneout::Masks(masks) => {
            let m = &masks[index];
            let rows = |a: &'a Array2<F>| zoneout::Mask::Rows(views::Shared::read_only(&a.view()));
            Some(zoneout::DirZoneout {
                h: rows(&m.h),
                c: m.c.as_ref().map_or(zoneout::Mask::Expectation(&[]), rows),
            })
        }
    }
}

/// A dropout mask: 0 with probability p, else 1/(1-p).
pub(crate) fn dropout_mask<F: Float>(rng: &mut Rng, dim: (usize, usize), p: f64) -> Array2<F> {
    let keep = F::from_f64(if p >= 1.0 { 0.0 } else { 1.0 / (1.0 - p) });
    Array2::from_shape_simple_fn(dim, || if rng.next_f64() < p { F::zero() } else { keep })
}

/// Backprop through time over all layers and directions.
///
/// * `saved`: from [`forward()`] with `save = true`; `weights` and `input` as given to it.
/// * `output_grads`: dL/d output (R, D*H_out) and dL/d final states, if any ([`OutputGrads`]).
pub fn backward<F: Activations>(
    config: &RecurrentConfig,
    weights: &[DirWeights<'_, F>],
    saved: &Saved<F>,
    input: Input<'_, F>,
    output_grads: OutputGrads<'_, F>,
) -> Backward<F> {
    let Input { x, batches } = input;
    let OutputGrads {
        d_output,
        dh_n,
        dc_n,
    } = output_grads;
    let dirs = config.num_directions();
    let h_out = config.state_size();
    let n = batches.batch();
    let has_c = config.cell.description().cell_state;
    let mut dh0 = match dh_n {
        Some(g) => g.to_owned(),
        None => Array3::zeros((config.num_layers * dirs, n, h_out)),
    };
    let mut dc0 = has_c.then(|| match dc_n {
        Some(g) => g.to_owned(),
        None => Array3::zeros((config.num_layers * dirs, n, config.hidden_size)),
    });
    let mut grads: Vec<Option<DirGrads<F>>> = vec![None; config.num_layers * dirs];
    // dL/d(this layer's output): the caller's d_output for the top layer (not copied), then
    // each layer's input gradient.
    let mut d_top = ndarray::CowArray::from(d_output);
    let expectation = zoneout_expectation(&saved.zoneout, config);
    for layer in (0..config.num_layers).rev() {
        let input = if layer == 0 {
            x.view()
        } else {
            saved.layer_inputs[layer - 1].view()
        };
        let layer_states = layer * dirs..(layer + 1) * dirs;
        let mut dh_views: Vec<ArrayViewMut2<'_, F>> = split_dirs(
            dh0.slice_mut(s![layer_states.clone(), .., ..]),
            Axis(0),
            dirs,
        )
        .into_iter()
        .map(|v| v.index_axis_move(Axis(0), 0))
        .collect();
        let mut dc_views: Vec<Option<ArrayViewMut2<'_, F>>> = match dc0.as_mut() {
            Some(c) => split_dirs(c.slice_mut(s![layer_states, .., ..]), Axis(0), dirs)
                .into_iter()
                .map(|v| Some(v.index_axis_move(Axis(0), 0)))
                .collect(),
            None => (0..dirs).map(|_| None).collect(),
        };
        let run = |d: usize, dh, dc, d_input: &mut Array2<F>| {
            direction_backward(
                &DirPass {
                    cell: Cell::of(config),
                    w: &weights[layer * dirs + d],
                    x: input,
                    batches,
                    reverse: d == 1,
                    zoneout: dir_zoneout(&saved.zoneout, &expectation, layer * dirs + d),
                },
                &saved.dirs[layer * dirs + d],
                BackwardStates {
                    d_out: d_top.slice(s![.., d * h_out..(d + 1) * h_out]),
                    dh,
                    dc,
                    d_input,
                },
            )
        };
        let mut d_input = Array2::zeros(input.dim());
        if dirs == 2 {
            // The directions are independent until their input gradients are summed.
            let mut d_input_rev = Array2::zeros(input.dim());
            let (dh1, dc1) = (
                dh_views.pop().expect("reverse dh"),
                dc_views.pop().flatten(),
            );
            let (dh0v, dc0v) = (
                dh_views.pop().expect("forward dh"),
                dc_views.pop().flatten(),
            );
            let (g0, g1) = rayon::join(
                || run(0, dh0v, dc0v, &mut d_input),
                || run(1, dh1, dc1, &mut d_input_rev),
            );
            d_input += &d_input_rev;
            grads[layer * dirs] = Some(g0);
            grads[layer * dirs + 1] = Some(g1);
        } else {
            let g = run(
                0,
                dh_views.pop().expect("dh"),
                dc_views.pop().flatten(),
                &mut d_input,
            );
            grads[layer * dirs] = Some(g);
        }
        if layer > 0 {
            if let Some(mask) = &saved.masks[layer - 1] {
                d_input *= mask;
            }
        }
        d_top = d_input.into();
    }
    Backward {
        input: d_top.into_owned(),
        h0: dh0,
        c0: dc0,
        weights: grads
            .into_iter()
            .map(|g| g.expect("every direction ran"))
            .collect(),
    }
}

/// Splits a view into `dirs` (1 or 2) equal blocks along `axis`, one per direction.
fn split_dirs<'a, F, D: ndarray::Dimension>(
    v: ndarray::ArrayViewMut<'a, F, D>,
    axis: Axis,
    dirs: usize,
) -> Vec<ndarray::ArrayViewMut<'a, F, D>> {
    if dirs == 1 {
        return vec![v];
    }
    let half = v.len_of(axis) / 2;
    let (a, b) = v.split_at(axis, half);
    vec![a, b]
}
