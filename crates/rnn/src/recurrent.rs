//! The layers `Rnn`, `Lstm` and `Gru` (PyTorch's `nn.RNN`, `nn.LSTM`, `nn.GRU`).
//!
//! All three are a [`Recurrent`] with a different [`CellKind`]: same parameters (PyTorch's
//! names, shapes, order and initialisation), same shape rules, same engine. A whole pass
//! (every timestep, layer and direction) is one node of the autograd graph, whose backward is
//! the engine's backprop through time.
//!
//! Shapes, as in PyTorch (`D` = 2 if bidirectional, `H_out` = `proj_size` or `hidden_size`):
//!
//! | tensor | `batch_first=False` | `batch_first=True` | unbatched |
//! |---|---|---|---|
//! | input | (L, N, H_in) | (N, L, H_in) | (L, H_in) |
//! | output | (L, N, D*H_out) | (N, L, D*H_out) | (L, D*H_out) |
//! | h0, h_n | (D*num_layers, N, H_out) | same | (D*num_layers, H_out) |
//! | c0, c_n (LSTM) | (D*num_layers, N, H_cell) | same | (D*num_layers, H_cell) |
//!
//! `batch_first` changes only how the input and output are read; the states keep their layout.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use ndarray::{Array2, Array3, ArrayD, Axis, CowArray, Ix2, IxDyn};

use crate::config::{CellKind, Nonlinearity, RecurrentConfig};
use crate::engine::cells::params::{layer_params, layer_roles, Init};
use crate::engine::{self, Batches, DirWeights, Param, Saved};
use crate::error::{Error, Result, Shape};
use crate::module::Module;
use crate::precision::{check_int8_width, Precision, ToPrecision};
use crate::quantized::QuantizedMatrix;
use crate::regularisers::{drop_weights, weight_drop_grad, Masks};
use crate::rng::{with_global_rng, Rng};
use crate::tensor::{is_grad_enabled, Backward, Tensor};

/// The parameters of one layer and direction, in `state_dict` order, by role: the cell's
/// description lists them ([`engine::cells::params`]), with their names, shapes and
/// initialisation.
#[derive(Clone, Debug)]
pub(crate) struct DirParams(Vec<(Param, Tensor)>);

impl DirParams {
    /// Every parameter of layer `layer` as its role says (PyTorch's `reset_parameters`: uniform
    /// in (-1/sqrt(hidden_size), 1/sqrt(hidden_size))), drawn in `state_dict` order.
    fn init(config: &RecurrentConfig, layer: usize, rng: &mut Rng) -> Self {
        let k = 1.0 / (config.hidden_size as f32).sqrt();
        let params = layer_params(config, layer)
            .into_iter()
            .map(|(param, shape)| {
                let values = match param.init() {
                    Init::Uniform => {
                        ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.uniform(-k, k))
                    }
                    Init::Zeros => ArrayD::zeros(IxDyn(&shape)),
                    Init::Ones => ArrayD::ones(IxDyn(&shape)),
                };
                (param, Tensor::parameter(values))
            })
            .collect();
        DirParams(params)
    }

    /// `(suffix-less name, tensor)` in `state_dict` order (`weight_ih`, `weight_hh`, ...).
    fn named(&self) -> Vec<(&'static str, Tensor)> {
        self.0.iter().map(|(p, t)| (p.name(), t.clone())).collect()
    }
}

/// A multi-layer, optionally bidirectional recurrent layer of any cell: the shared body of
/// [`Rnn`], [`Lstm`] and [`Gru`].
///
/// A pass that records no gradient keeps its weights packed for the products (about the
/// weights' own size) and reuses them in the next such pass while the parameters are
/// unchanged: packing reads and writes every weight, as much memory traffic as a whole step of
/// a small batch, so step-by-step inference (a cell, sampling) would otherwise pay it at
/// every call. Any write through [`Tensor::data_mut`] (an optimizer step, loading weights)
/// makes the next pass pack again.
#[derive(Clone, Debug)]
pub struct Recurrent {
    config: RecurrentConfig,
    params: Vec<DirParams>,
    training: bool,
    packed: PackCache,
    /// The precision of the products ([`Recurrent::to_precision`]).
    precision: Precision,
    /// Int8 weights as a quantized model file stored them, packed as they are while the
    /// parameters keep the versions they were loaded at ([`crate::quantized`]).
    quantized: Option<Arc<StoredQuantized>>,
}

/// The int8 weight matrices of a quantized model file, by parameter name, with the
/// parameters' `(id, version)` when they were loaded.
#[derive(Debug)]
struct StoredQuantized {
    key: Vec<(u64, u64)>,
    matrices: BTreeMap<String, QuantizedMatrix>,
}

/// The packed weights of the last pass without gradients, with the parameters' identities
/// and versions they were packed from. Clones of a layer share it, as they share parameters.
#[derive(Clone, Default)]
struct PackCache(Arc<Mutex<Option<PackedParams>>>);

struct PackedParams {
    /// `(id, version)` of every parameter, in [`Module::parameters`] order.
    key: Vec<(u64, u64)>,
    /// The precision the weights were packed in.
    precision: Precision,
    dirs: Arc<Vec<engine::PackedDir<f32>>>,
}

impl PackCache {
    /// The packing of `params` (whose values the caller holds read-locked, so that their
    /// versions cannot change): the kept one if it was made from the same parameters at the
    /// same versions, else `pack()`'s, which is kept instead. The lock is not held while
    /// packing, which may run on rayon's threads: a thread waiting for the lock must not be
    /// one that the packing waits for.
    fn get(
        &self,
        params: &[Tensor],
        precision: Precision,
        pack: impl FnOnce() -> Vec<engine::PackedDir<f32>>,
    ) -> Arc<Vec<engine::PackedDir<f32>>> {
        let key: Vec<(u64, u64)> = params.iter().map(|p| (p.id(), p.version())).collect();
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kept) = lock()
            .as_ref()
            .filter(|k| k.key == key && k.precision == precision)
        {
            return kept.dirs.clone();
        }
        let dirs = Arc::new(pack());
        *lock() = Some(PackedParams {
            key,
            precision,
            dirs: dirs.clone(),
        });
        dirs
    }

    /// Drops the kept packing (a training pass: the weights are about to change).
    fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl fmt::Debug for PackCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.0.lock().map(|k| k.is_some()).unwrap_or(false);
        write!(f, "PackCache {{ kept: {kept} }}")
    }
}

/// What a pass runs on, after the entry points' shape checks: the input tensor, how its rows
/// are laid out, their batches, and the shape the user gave (for the states' error messages).
struct PassInput<'a> {
    tensor: &'a Tensor,
    layout: Layout,
    batches: Batches,
    shape: &'a [usize],
}

/// How the user's input is laid out, to convert to and from the engine's packed rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// (L, N, F)
    SeqFirst,
    /// (N, L, F)
    BatchFirst,
    /// (L, F)
    Unbatched,
    /// Already packed rows (R, F).
    Rows,
}

impl Layout {
    /// (L, N, F) or similar → the engine's rows in the order of `batches`: time-major (row
    /// `t * N + b`), or for `batch_first` batch-major, which is (N, L, F) as it is. Borrowed,
    /// not copied, when `a` is contiguous.
    fn to_rows<'a>(self, a: &'a ArrayD<f32>, batches: &Batches) -> CowArray<'a, f32, Ix2> {
        debug_assert_eq!(self == Layout::BatchFirst, batches.is_batch_major());
        let width = *a.shape().last().expect("checked ndim");
        let rows = a.len() / width.max(1);
        match a.view().into_shape_with_order((rows, width)) {
            Ok(view) if a.is_standard_layout() => view.into(),
            _ => Array2::from_shape_vec((rows, width), a.iter().copied().collect())
                .expect("sizes agree")
                .into(),
        }
    }

    /// The engine's rows (in the order [`Layout::to_rows`] gave) back to the user's layout,
    /// with `len` steps of `batch` rows: a reshape, never a copy.
    fn to_layout(self, rows: Array2<f32>, len: usize, batch: usize) -> ArrayD<f32> {
        let width = rows.ncols();
        match self {
            Layout::SeqFirst => rows.into_shape_with_order(IxDyn(&[len, batch, width])),
            Layout::Unbatched => rows.into_shape_with_order(IxDyn(&[len, width])),
            Layout::Rows => Ok(rows.into_dyn()),
            Layout::BatchFirst => rows.into_shape_with_order(IxDyn(&[batch, len, width])),
        }
        .expect("sizes agree")
    }
}

/// The outputs of a [`Recurrent`] pass.
#[derive(Clone, Debug)]
pub struct RecurrentOutput {
    /// All timesteps of the last layer, in the input's layout.
    pub output: Tensor,
    /// Final hidden state of every layer and direction.
    pub h_n: Tensor,
    /// Final cell state (LSTM only).
    pub c_n: Option<Tensor>,
}

impl Recurrent {
    /// A layer initialised from the global generator (see [`crate::manual_seed`]).
    pub fn new(config: RecurrentConfig) -> Result<Self> {
        config.validate()?;
        with_global_rng(|rng| Recurrent::with_rng(config, rng))
    }

    /// A layer initialised from `rng`.
    pub fn with_rng(config: RecurrentConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let mut params = Vec::new();
        for layer in 0..config.num_layers {
            for _ in 0..config.num_directions() {
                params.push(DirParams::init(&config, layer, rng));
            }
        }
        Ok(Recurrent {
            config,
            params,
            training: true,
            packed: PackCache::default(),
            precision: Precision::F32,
            quantized: None,
        })
    }

    /// The constructor arguments.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// Whether the module is in training mode (inter-layer dropout active).
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The precision of the layer's products ([`Recurrent::to_precision`]); under
    /// [`crate::autocast`] an f32 layer runs in autocast's.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The stored int8 weights of a layer loaded from a quantized file, while its parameters
    /// are unchanged since.
    pub(crate) fn quantized_weights(&self) -> Option<&BTreeMap<String, QuantizedMatrix>> {
        let stored = self.quantized.as_ref()?;
        let key: Vec<(u64, u64)> = self
            .parameters()
            .iter()
            .map(|p| (p.id(), p.version()))
            .collect();
        (stored.key == key).then_some(&stored.matrices)
    }

    /// The int8 layer that runs `matrices` (a quantized file's, whose dequantized values the
    /// parameters hold) as they are.
    pub(crate) fn with_quantized_weights(
        self,
        matrices: BTreeMap<String, QuantizedMatrix>,
    ) -> Result<Self> {
        let mut layer = self.to_precision(Precision::Int8)?;
        let key = layer
            .parameters()
            .iter()
            .map(|p| (p.id(), p.version()))
            .collect();
        layer.quantized = Some(Arc::new(StoredQuantized { key, matrices }));
        Ok(layer)
    }

    /// The packing of the stored int8 weights, one per layer and direction.
    fn pack_stored(
        &self,
        matrices: &BTreeMap<String, QuantizedMatrix>,
        weights: &[DirWeights<'_, f32>],
    ) -> Vec<engine::PackedDir<f32>> {
        let c = &self.config;
        let dirs = c.num_directions();
        weights
            .iter()
            .enumerate()
            .map(|(idx, w)| {
                let (layer, d) = (idx / dirs, idx % dirs);
                let suffix = if d == 1 { "_reverse" } else { "" };
                let pack = |m: engine::Matrix, rows: &[usize]| {
                    let prefix = match m {
                        engine::Matrix::Ih => "weight_ih",
                        engine::Matrix::Hh => "weight_hh",
                        engine::Matrix::Hr => "weight_hr",
                    };
                    let stored = &matrices[&format!("{prefix}_l{layer}{suffix}")];
                    let q =
                        ndarray::Array2::from_shape_fn((rows.len(), stored.q.ncols()), |(r, p)| {
                            stored.q[[rows[r], p]]
                        });
                    let scales: Vec<f32> = rows.iter().map(|&r| stored.scales[r]).collect();
                    engine::PackedBlock::Int8(crate::linalg::PackedInt8::from_quantized(
                        &q.t(),
                        &scales,
                    ))
                };
                engine::PackedDir::with_packer(engine::Cell::of(c), w, &pack)
            })
            .collect()
    }

    /// A copy of the layer whose matrix products run in `precision` (PyTorch's
    /// `module.to(torch.bfloat16)` for inference, or `quantize_dynamic` for int8); gate math
    /// and states stay f32. The copy shares the f32 parameters; the weights are rounded or
    /// quantized when a pass first packs them, and again after they change. Error bounds:
    /// [`crate::precision`].
    ///
    /// Int8 is for inference only: a pass that would record gradients is an error. Bf16
    /// trains with bf16 forward products and an f32 backward. Errors if int8 cannot hold
    /// the layer's widths exactly (over [`crate::linalg::INT8_MAX_K`] inputs per output).
    ///
    /// [`crate::model_file::save_model`] writes a bf16 layer as a bf16 model file (half the
    /// size, [`crate::bf16_file`]), which loads back as a bf16 layer.
    pub fn to_precision(&self, precision: Precision) -> Result<Self> {
        if precision == Precision::Int8 {
            let c = &self.config;
            let widest = c.input_size.max(c.hidden_size).max(c.output_size());
            check_int8_width(self.name(), widest)?;
        }
        Ok(Recurrent {
            packed: PackCache::default(),
            precision,
            ..self.clone()
        })
    }

    fn name(&self) -> &'static str {
        self.config.cell.torch_name()
    }

    /// Runs the layer on `input` laid out as the configuration says (see the module docs),
    /// with optional initial states (zeros when absent).
    pub fn forward_states(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<RecurrentOutput> {
        self.forward_inner(input, h0, c0, None)
    }

    fn forward_inner(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        masks: Option<Masks<f32>>,
    ) -> Result<RecurrentOutput> {
        let c = &self.config;
        let name = self.name();
        let shape = input.shape();
        let layout = match (shape.len(), c.batch_first) {
            (3, false) => Layout::SeqFirst,
            (3, true) => Layout::BatchFirst,
            (2, _) => Layout::Unbatched,
            _ => {
                return Err(Error::shape_hint(
                    format!("{name} input"),
                    if c.batch_first {
                        format!(
                            "(N, L, {}) batched or (L, {}) unbatched",
                            c.input_size, c.input_size
                        )
                    } else {
                        format!(
                            "(L, N, {}) batched or (L, {}) unbatched",
                            c.input_size, c.input_size
                        )
                    },
                    &shape,
                    format!(
                        "{name}: Expected input to be 2D or 3D, got {}D tensor instead",
                        shape.len()
                    ),
                ))
            }
        };
        let (len, batch) = match layout {
            Layout::SeqFirst => (shape[0], shape[1]),
            Layout::BatchFirst => (shape[1], shape[0]),
            _ => (shape[0], 1),
        };
        let features = *shape.last().expect("2D or 3D");
        if features != c.input_size {
            return Err(Error::shape_hint(
                format!("{name} input"),
                expected_input(c, layout),
                &shape,
                format!(
                    "input.size(-1) must be equal to input_size. Expected {}, got {features}",
                    c.input_size
                ),
            ));
        }
        if len == 0 || batch == 0 {
            return Err(Error::shape_hint(
                format!("{name} input"),
                expected_input(c, layout),
                &shape,
                "the sequence length and the batch size must be at least 1",
            ));
        }
        let input = PassInput {
            tensor: input,
            layout,
            batches: Batches::uniform(len, batch),
            shape: &shape,
        };
        self.run(input, h0, c0, masks)
    }

    /// [`Recurrent::forward_states`] with the regularisers' masks given rather than drawn
    /// (their layout: [`Masks`]; rows in the input's order, batch-major with `batch_first`),
    /// whatever the mode: for tests and for reproducing a pass. Masks of the wrong count or
    /// shape are an error.
    pub fn forward_masked(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        masks: Masks<f32>,
    ) -> Result<RecurrentOutput> {
        self.forward_inner(input, h0, c0, Some(masks))
    }

    /// Runs the layer on packed rows (R, H_in) laid out by `batches`: time-major, sorted by
    /// decreasing length, or, for a padded batch, batch-major ([`Batches::batch_major`]).
    /// States are in the packed (sorted) batch order. Output (R, D*H_out), in the rows' order.
    pub fn forward_rows(
        &self,
        rows: &Tensor,
        batches: &Batches,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<RecurrentOutput> {
        let c = &self.config;
        let shape = rows.shape();
        if shape.len() != 2 || shape[0] != batches.rows() || shape[1] != c.input_size {
            return Err(Error::shape(
                format!("{} packed input data", self.name()),
                Shape(vec![batches.rows(), c.input_size]).to_string(),
                &shape,
            ));
        }
        let input = PassInput {
            tensor: rows,
            layout: Layout::Rows,
            batches: batches.clone(),
            shape: &shape,
        };
        self.run(input, h0, c0, None)
    }

    fn check_state(
        &self,
        what: &str,
        t: Option<&Tensor>,
        layout: Layout,
        batch: usize,
        width: usize,
        input_shape: &[usize],
    ) -> Result<Option<Array3<f32>>> {
        let Some(t) = t else { return Ok(None) };
        let c = &self.config;
        let ld = c.num_layers * c.num_directions();
        let shape = t.shape();
        let expected: Vec<usize> = if layout == Layout::Unbatched {
            vec![ld, width]
        } else {
            vec![ld, batch, width]
        };
        if shape != expected {
            let hint = match layout {
                Layout::Unbatched => "for unbatched input the states are (D*num_layers, H_out)".to_string(),
                _ => format!(
                    "states are (D*num_layers, batch, size) whatever batch_first says; the input {} with \
                     batch_first={} has batch {batch}",
                    Shape::of(input_shape),
                    if c.batch_first { "True" } else { "False" }
                ),
            };
            return Err(Error::shape_hint(
                format!("{} {what}", self.name()),
                Shape(expected).to_string(),
                &shape,
                hint,
            ));
        }
        let a = t.to_array();
        let a = a
            .into_shape_with_order((ld, batch, width))
            .expect("size checked");
        Ok(Some(a))
    }

    fn run(
        &self,
        input: PassInput<'_>,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        masks: Option<Masks<f32>>,
    ) -> Result<RecurrentOutput> {
        let PassInput {
            tensor: input,
            layout,
            batches,
            shape: input_shape,
        } = input;
        let c = &self.config;
        let has_c = c.cell.description().cell_state;
        if c0.is_some() && !has_c {
            return Err(Error::Invalid(format!(
                "{} has no cell state c0",
                self.name()
            )));
        }
        if has_c && (h0.is_some() != c0.is_some()) {
            return Err(Error::Invalid(
                "LSTM: give both h0 and c0, or neither (PyTorch takes them as one tuple (h0, c0))"
                    .into(),
            ));
        }
        let n = batches.batch();
        let ld = c.num_layers * c.num_directions();
        let h0a = self.check_state("h0", h0, layout, n, c.state_size(), input_shape)?;
        let c0a = self.check_state("c0", c0, layout, n, c.hidden_size, input_shape)?;
        let h0a = h0a.unwrap_or_else(|| Array3::zeros((ld, n, c.state_size())));
        let c0a = has_c.then(|| c0a.unwrap_or_else(|| Array3::zeros((ld, n, c.hidden_size))));

        let mut inputs = vec![input.clone()];
        inputs.extend(h0.cloned());
        inputs.extend(c0.cloned());
        let params = self.parameters();
        inputs.extend(params.iter().cloned());
        let record = is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        let precision = crate::precision::effective(self.precision);
        if record && !precision.trainable() {
            return Err(crate::precision::int8_training_error(self.name()));
        }

        // batch_first input as it is: the engine reads its rows batch-major.
        let batches = match layout {
            Layout::BatchFirst => batches.batch_major().expect("a padded batch"),
            _ => batches,
        };
        // The regularisers' masks: given, drawn in training mode, or evaluation's.
        let masks = match masks {
            Some(m) => {
                m.check(c, &batches)?;
                m
            }
            None if self.training && c.has_noise() => {
                with_global_rng(|rng| Masks::draw(c, &batches, Some(rng)))
            }
            None => Masks::draw(c, &batches, None),
        };
        let Masks {
            weight_drop,
            pass: pass_masks,
        } = masks;
        let guards: Vec<_> = params.iter().map(|p| p.data()).collect();
        let mut weights = dir_weights(c, &guards);
        // DropConnect: the pass runs W_hh * mask.
        let dropped = dropped_weights(&weights, &weight_drop);
        for (w, d) in weights.iter_mut().zip(&dropped) {
            w.w_hh = d.view();
        }
        // Packed once for as many passes without gradients as run the same weights.
        let packed = if record || !dropped.is_empty() {
            self.packed.clear();
            // bf16 forward products in training; backward runs in f32.
            (precision != Precision::F32)
                .then(|| Arc::new(engine::pack_weights(c, &weights, precision)))
        } else {
            let stored = (precision == Precision::Int8)
                .then(|| self.quantized_weights())
                .flatten();
            Some(self.packed.get(&params, precision, || match stored {
                Some(matrices) => self.pack_stored(matrices, &weights),
                None => engine::pack_weights(c, &weights, precision),
            }))
        };
        let packed = packed.as_deref().map(Vec::as_slice);
        let input_data = input.data();
        let x_rows = layout.to_rows(&input_data, &batches);
        let fwd = engine::forward_packed(
            c,
            &weights,
            packed,
            engine::Input {
                x: x_rows.view(),
                batches: &batches,
            },
            engine::InitialStates {
                h0: h0a.view(),
                c0: c0a.as_ref().map(|a| a.view()),
            },
            pass_masks,
            record,
        );
        drop((guards, x_rows));
        drop(input_data);

        let len = batches.steps();
        let unbatched = layout == Layout::Unbatched;
        let state_out = |a: Array3<f32>| -> ArrayD<f32> {
            if unbatched {
                a.index_axis_move(Axis(1), 0).into_dyn()
            } else {
                a.into_dyn()
            }
        };
        let mut outputs = vec![layout.to_layout(fwd.output, len, n), state_out(fwd.h_n)];
        if let Some(c_n) = fwd.c_n {
            outputs.push(state_out(c_n));
        }
        let op = RecurrentBackward {
            config: c.clone(),
            layout,
            batches,
            saved: fwd.saved,
            weight_drop: if record { weight_drop } else { Vec::new() },
            has_h0: h0.is_some(),
            has_c0: c0.is_some(),
            input_shape: input_shape.to_vec(),
        };
        let mut out = Tensor::from_op(outputs, inputs, op).into_iter();
        Ok(RecurrentOutput {
            output: out.next().expect("output"),
            h_n: out.next().expect("h_n"),
            c_n: out.next(),
        })
    }
}

fn expected_input(c: &RecurrentConfig, layout: Layout) -> String {
    match layout {
        Layout::BatchFirst => format!("(N, L, {}) with batch_first=True", c.input_size),
        Layout::SeqFirst => format!("(L, N, {}) with batch_first=False", c.input_size),
        Layout::Unbatched => format!("(L, {}) unbatched", c.input_size),
        Layout::Rows => format!("(rows, {})", c.input_size),
    }
}

/// Views of the parameters as the engine wants them, from read guards in `parameters()` order.
fn dir_weights<'a>(
    c: &RecurrentConfig,
    guards: &'a [std::sync::RwLockReadGuard<'_, ArrayD<f32>>],
) -> Vec<DirWeights<'a, f32>> {
    let mut it = guards.iter();
    (0..c.num_layers * c.num_directions())
        .map(|_| {
            let views = layer_roles(c).map(|param| {
                let guard = it.next().expect("one guard per parameter");
                (param, guard.view())
            });
            DirWeights::from_params(views)
        })
        .collect()
}

/// `weight_hh * mask` of every layer and direction with a DropConnect mask (none without).
fn dropped_weights(weights: &[DirWeights<'_, f32>], masks: &[Array2<f32>]) -> Vec<Array2<f32>> {
    masks
        .iter()
        .zip(weights)
        .map(|(m, w)| drop_weights(w.w_hh, m))
        .collect()
}

/// The autograd node of a whole recurrent pass.
struct RecurrentBackward {
    config: RecurrentConfig,
    layout: Layout,
    batches: Batches,
    saved: Option<Saved<f32>>,
    /// The DropConnect masks of `weight_hh` the pass ran with (empty: none).
    weight_drop: Vec<Array2<f32>>,
    has_h0: bool,
    has_c0: bool,
    input_shape: Vec<usize>,
}

impl Backward for RecurrentBackward {
    fn name(&self) -> &'static str {
        "RecurrentBackward"
    }

    fn backward(
        &self,
        grads: &[Option<ArrayD<f32>>],
        inputs: &[Tensor],
    ) -> Vec<Option<ArrayD<f32>>> {
        let c = &self.config;
        let saved = self.saved.as_ref().expect("saved when recorded");
        let n = self.batches.batch();
        let ld = c.num_layers * c.num_directions();
        let rows = self.batches.rows();
        let d_output = match &grads[0] {
            Some(g) => self.layout.to_rows(g, &self.batches),
            None => Array2::zeros((rows, c.output_size())).into(),
        };
        let state = |g: &Option<ArrayD<f32>>, width: usize| {
            g.as_ref().map(|g| {
                g.clone()
                    .into_shape_with_order((ld, n, width))
                    .expect("state gradient shape")
            })
        };
        let dh_n = state(&grads[1], c.state_size());
        let dc_n = grads.get(2).and_then(|g| state(g, c.hidden_size));
        let param_start = 1 + self.has_h0 as usize + self.has_c0 as usize;
        let guards: Vec<_> = inputs[param_start..].iter().map(|p| p.data()).collect();
        let mut weights = dir_weights(c, &guards);
        let dropped = dropped_weights(&weights, &self.weight_drop);
        for (w, d) in weights.iter_mut().zip(&dropped) {
            w.w_hh = d.view();
        }
        // The input rows are rebuilt from the input tensor rather than kept twice.
        let input_data = inputs[0].data();
        let x_rows = self.layout.to_rows(&input_data, &self.batches);
        let b = engine::backward(
            c,
            &weights,
            saved,
            engine::Input {
                x: x_rows.view(),
                batches: &self.batches,
            },
            engine::OutputGrads {
                d_output: d_output.view(),
                dh_n: dh_n.as_ref().map(|a| a.view()),
                dc_n: dc_n.as_ref().map(|a| a.view()),
            },
        );
        drop((guards, x_rows));
        drop(input_data);
        let unbatched = self.layout == Layout::Unbatched;
        let state_grad = |a: Array3<f32>| -> ArrayD<f32> {
            if unbatched {
                a.index_axis_move(Axis(1), 0).into_dyn()
            } else {
                a.into_dyn()
            }
        };
        let mut out = Vec::with_capacity(inputs.len());
        let d_input = self.layout.to_layout(b.input, self.batches.steps(), n);
        debug_assert_eq!(d_input.shape(), self.input_shape.as_slice());
        out.push(Some(d_input));
        if self.has_h0 {
            out.push(Some(state_grad(b.h0)));
        }
        if self.has_c0 {
            out.push(b.c0.map(state_grad));
        }
        for (k, mut g) in b.weights.into_iter().enumerate() {
            if let Some(mask) = self.weight_drop.get(k) {
                weight_drop_grad(&mut g.w_hh, mask);
            }
            for param in layer_roles(c) {
                out.push(Some(g.take(param).expect("a gradient per parameter")));
            }
        }
        out
    }
}

impl Module for Recurrent {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let dirs = self.config.num_directions();
        let mut v = Vec::new();
        for (idx, p) in self.params.iter().enumerate() {
            let (layer, d) = (idx / dirs, idx % dirs);
            let suffix = if d == 1 { "_reverse" } else { "" };
            for (name, t) in p.named() {
                v.push((format!("{name}_l{layer}{suffix}"), t));
            }
        }
        v
    }

    /// The parameters in `named_parameters` order, without formatting their names (every
    /// forward pass asks for them).
    fn parameters(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .flat_map(|p| p.named().into_iter().map(|(_, t)| t))
            .collect()
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

impl ToPrecision for Recurrent {
    fn to_precision(&self, precision: Precision) -> Result<Self> {
        Recurrent::to_precision(self, precision)
    }
}

impl fmt::Display for Recurrent {
    /// PyTorch's repr, then the parameter count: `LSTM(4, 8, num_layers=2)  # 1000 parameters`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(
            f,
            "{}({}, {}",
            c.cell.torch_name(),
            c.input_size,
            c.hidden_size
        )?;
        if c.proj_size != 0 {
            write!(f, ", proj_size={}", c.proj_size)?;
        }
        if c.num_layers != 1 {
            write!(f, ", num_layers={}", c.num_layers)?;
        }
        if c.nonlinearity != Nonlinearity::Tanh {
            write!(f, ", nonlinearity='relu'")?;
        }
        if !c.bias {
            write!(f, ", bias=False")?;
        }
        if c.batch_first {
            write!(f, ", batch_first=True")?;
        }
        if c.dropout != 0.0 {
            write!(f, ", dropout={}", c.dropout)?;
        }
        if c.bidirectional {
            write!(f, ", bidirectional=True")?;
        }
        if !c.linear_before_reset {
            write!(f, ", linear_before_reset=False")?;
        }
        if c.peephole {
            write!(f, ", peephole=True")?;
        }
        if c.layer_norm {
            write!(f, ", layer_norm=True")?;
        }
        if c.weight_drop != 0.0 {
            write!(f, ", weight_drop={}", c.weight_drop)?;
        }
        if c.zoneout != 0.0 {
            write!(f, ", zoneout={}", c.zoneout)?;
        }
        if c.variational_dropout {
            write!(f, ", variational_dropout=True")?;
        }
        write!(f, ")  # {} parameters", self.num_parameters())
    }
}

/// Defines a named layer type over [`Recurrent`] with PyTorch's constructors.
macro_rules! layer_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(Recurrent);

        impl $name {
            /// A layer with PyTorch's defaults for everything but the two sizes.
            pub fn new(input_size: usize, hidden_size: usize) -> Result<Self> {
                Self::from_config(RecurrentConfig::new($kind, input_size, hidden_size))
            }

            /// A layer from a full configuration, initialised from the global generator.
            /// The configuration's `cell` must be this layer's.
            pub fn from_config(config: RecurrentConfig) -> Result<Self> {
                Self::check_kind(&config)?;
                Recurrent::new(config).map($name)
            }

            /// A layer from a full configuration, initialised from `rng`.
            pub fn with_rng(config: RecurrentConfig, rng: &mut Rng) -> Result<Self> {
                Self::check_kind(&config)?;
                Recurrent::with_rng(config, rng).map($name)
            }

            fn check_kind(config: &RecurrentConfig) -> Result<()> {
                if config.cell != $kind {
                    return Err(Error::Config(format!(
                        "{} built from a {} configuration",
                        $kind.torch_name(),
                        config.cell.torch_name()
                    )));
                }
                Ok(())
            }

            /// The shared implementation (configuration, packed input, states).
            pub fn inner(&self) -> &Recurrent {
                &self.0
            }

            /// A copy of the layer whose products run in `precision`
            /// ([`Recurrent::to_precision`]).
            pub fn to_precision(&self, precision: Precision) -> Result<Self> {
                self.0.to_precision(precision).map($name)
            }
        }

        impl ToPrecision for $name {
            fn to_precision(&self, precision: Precision) -> Result<Self> {
                $name::to_precision(self, precision)
            }
        }

        impl std::ops::Deref for $name {
            type Target = Recurrent;
            fn deref(&self) -> &Recurrent {
                &self.0
            }
        }

        impl Module for $name {
            fn named_parameters(&self) -> Vec<(String, Tensor)> {
                self.0.named_parameters()
            }
            fn parameters(&self) -> Vec<Tensor> {
                self.0.parameters()
            }
            fn set_training(&mut self, training: bool) {
                self.0.set_training(training)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

layer_type!(
    /// `torch.nn.RNN`: `h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`, act = tanh or relu.
    ///
    /// `forward` returns `(output, h_n)`.
    Rnn,
    CellKind::Rnn
);
layer_type!(
    /// `torch.nn.LSTM`, gates i, f, g, o:
    /// `c_t = f * c_{t-1} + i * g`, `h_t = o * tanh(c_t)` (then `W_hr h_t` with `proj_size`).
    ///
    /// `forward` returns `(output, (h_n, c_n))`.
    Lstm,
    CellKind::Lstm
);
layer_type!(
    /// `torch.nn.GRU`, gates r, z, n:
    /// `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, `h_t = (1 - z) * n + z * h_{t-1}`.
    ///
    /// `forward` returns `(output, h_n)`.
    Gru,
    CellKind::Gru
);

impl Rnn {
    /// `output, h_n = rnn(input, h0)`; shapes in the [module docs](self).
    pub fn forward(&self, input: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let out = self.0.forward_states(input, h0, None)?;
        Ok((out.output, out.h_n))
    }
}

impl Gru {
    /// `output, h_n = gru(input, h0)`; shapes in the [module docs](self).
    pub fn forward(&self, input: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let out = self.0.forward_states(input, h0, None)?;
        Ok((out.output, out.h_n))
    }
}

impl Lstm {
    /// `output, (h_n, c_n) = lstm(input, (h0, c0))`; shapes in the [module docs](self).
    pub fn forward(
        &self,
        input: &Tensor,
        state: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (h0, c0) = state.unzip();
        let out = self.0.forward_states(input, h0, c0)?;
        Ok((out.output, (out.h_n, out.c_n.expect("LSTM has c_n"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_the_named_parameters_in_order() {
        let configs = [
            RecurrentConfig::new(CellKind::Lstm, 3, 4)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_proj_size(2),
            RecurrentConfig::new(CellKind::Gru, 3, 4).with_bias(false),
        ];
        for config in configs {
            let layer = Recurrent::new(config).unwrap();
            let named = layer.named_parameters();
            let plain = layer.parameters();
            assert_eq!(plain.len(), named.len());
            assert!(named.iter().zip(&plain).all(|((_, a), b)| a.same(b)));
        }
    }
}
