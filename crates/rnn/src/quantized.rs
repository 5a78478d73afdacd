//! Quantized model files: a recurrent layer's weights in int8 with their scales, next to the
//! `config`, loaded without quantizing again (`rnn quantize MODEL --out MODEL_INT8`).
//!
//! A quantized file is a model file ([`crate::model_file`]) whose weight matrices
//! (`weight_ih_l{k}`, `weight_hh_l{k}`, `weight_hr_l{k}`, and their `_reverse`) are stored as
//! `I8` in PyTorch's (out, in) layout, each with its per-row scales under `KEY.scale`:
//!
//! ```text
//! weight_ih_l0        I8  (G*H, H_in)   q[j, p] = round(W[j, p] / s_j), in -127..=127
//! weight_ih_l0.scale  F32 (G*H,)        s_j = max_p |W[j, p]| / 127
//! bias_ih_l0          F32 (G*H,)        unchanged (also weight_ph, the peepholes)
//! metadata: config = the layer's JSON, precision = "int8", format = "rnn.quantized"
//! ```
//!
//! so that `W[j, p] ~ s_j q[j, p]` (the dequantized value; PyTorch reads it as
//! `q.float() * scale[:, None]`). The values are those that [`crate::quantize_dynamic`]
//! computes at the first pass, and the loaded layer packs them as stored: its outputs are
//! the bits of the dynamically quantized f32 layer's. The file is about 4x smaller than the
//! f32 file (one byte per weight plus one f32 scale per row). Loading gives an
//! [`Precision::Int8`] layer whose f32 parameters hold the dequantized weights (for
//! inspection, export or `to_precision(Precision::F32)`); int8 layers are for inference
//! only, so training from a quantized file is refused (train the f32 model and quantize it
//! again).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array2, Ix2};

use crate::error::{Error, Result};
use crate::io::{load_state_dict, TensorData, TensorFile};
use crate::linalg::quantize_rows;
use crate::model_file::{config_of, CONFIG_KEY};
use crate::module::Module;
use crate::precision::Precision;
use crate::recurrent::Recurrent;

/// The metadata key naming the precision of a model file's weights: `"int8"` here, `"bf16"`
/// for a bf16 model file ([`crate::bf16_file`]).
pub const PRECISION_KEY: &str = "precision";
/// The suffix of a weight matrix's scales: `weight_ih_l0.scale`.
pub const SCALE_SUFFIX: &str = ".scale";
/// The `format` metadata of a quantized model file.
pub const FORMAT: &str = "rnn.quantized";

/// One weight matrix quantized per output row: `W[j, p] ~ scales[j] * q[j, p]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatrix {
    /// (out, in) s8 values.
    pub q: Array2<i8>,
    /// (out) the scale of each row.
    pub scales: Vec<f32>,
}

impl QuantizedMatrix {
    /// Quantizes `w` (out, in) as the int8 products do ([`quantize_rows`]).
    pub fn quantize(w: &ndarray::ArrayView2<'_, f32>) -> Self {
        let (q, scales) = quantize_rows(w);
        QuantizedMatrix { q, scales }
    }

    /// `scales[j] * q[j, p]` in f32.
    pub fn dequantize(&self) -> Array2<f32> {
        Array2::from_shape_fn(self.q.dim(), |(j, p)| {
            self.scales[j] * f32::from(self.q[[j, p]])
        })
    }
}

/// Whether the parameter `name` is a weight matrix that a quantized file stores in int8.
pub fn is_quantized_name(name: &str) -> bool {
    ["weight_ih_l", "weight_hh_l", "weight_hr_l"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Writes `model` as a quantized model file at `path`, atomically (module docs). A layer
/// loaded from a quantized file writes its stored values back unchanged (bit-exact round
/// trip); any other is quantized now. Errors if a weight is not finite or a width is over
/// [`crate::linalg::INT8_MAX_K`].
pub fn save_quantized(path: impl AsRef<Path>, model: &Recurrent) -> Result<()> {
    let model = model.to_precision(Precision::Int8)?;
    let stored = model.quantized_weights();
    let mut file = TensorFile::new();
    for (name, t) in model.named_parameters() {
        let data = t.data();
        if is_quantized_name(&name) {
            let m = match stored.and_then(|s| s.get(&name)) {
                Some(m) => m.clone(),
                None => {
                    let w = data
                        .view()
                        .into_dimensionality::<Ix2>()
                        .expect("2-D weight");
                    QuantizedMatrix::quantize(&w)
                }
            };
            if m.scales.iter().any(|s| !s.is_finite()) {
                return Err(Error::Invalid(format!(
                    "{name} holds a NaN or an infinity: it cannot be quantized"
                )));
            }
            file.insert(
                format!("{name}{SCALE_SUFFIX}"),
                ndarray::Array1::from(m.scales).into_dyn(),
            );
            file.insert(name, m.q.into_dyn());
        } else {
            file.insert(name, data.clone());
        }
    }
    file.metadata
        .insert(CONFIG_KEY.to_string(), model.config().to_json());
    file.metadata.insert(
        PRECISION_KEY.to_string(),
        Precision::Int8.name().to_string(),
    );
    file.metadata
        .insert("format".to_string(), FORMAT.to_string());
    file.write(path)
}

/// Whether a model file (already read) is a quantized one.
pub fn is_quantized_file(file: &TensorFile) -> bool {
    file.metadata.get(PRECISION_KEY).map(String::as_str) == Some(Precision::Int8.name())
}

/// Reads a quantized model file (already read into `file`) into an int8 layer (module
/// docs). Strict like [`crate::model_file::load_model`]: every tensor the configuration
/// implies, with its shape and dtype (I8 matrices, F32 scales and the rest), and nothing else.
pub fn load_quantized(file: &TensorFile, path: &Path) -> Result<Recurrent> {
    let config = config_of(file, path)?;
    let bad = |m: String| Error::format(path, format!("quantized model file: {m}"));
    let mut values: BTreeMap<String, TensorData> = BTreeMap::new();
    let mut stored = BTreeMap::new();
    let shapes = config.parameter_shapes();
    let mut expected: Vec<String> = Vec::new();
    for (name, shape) in &shapes {
        expected.push(name.clone());
        let t = file
            .tensors
            .get(name)
            .ok_or_else(|| bad(format!("missing tensor \"{name}\"")))?;
        if t.shape() != shape.as_slice() {
            return Err(bad(format!(
                "\"{name}\" has shape {:?}, the config implies {shape:?}",
                t.shape()
            )));
        }
        if !is_quantized_name(name) {
            values.insert(name.clone(), t.clone());
            continue;
        }
        let scale_key = format!("{name}{SCALE_SUFFIX}");
        expected.push(scale_key.clone());
        let TensorData::I8(q) = t else {
            return Err(bad(format!(
                "\"{name}\" has dtype {}, expected I8 (the int8 weights)",
                t.dtype()
            )));
        };
        let scales = match file.tensors.get(&scale_key) {
            Some(TensorData::F32(s)) if s.shape() == [shape[0]] => {
                s.iter().copied().collect::<Vec<f32>>()
            }
            Some(other) => {
                return Err(bad(format!(
                    "\"{scale_key}\" is {} {:?}, expected F32 ({},)",
                    other.dtype(),
                    other.shape(),
                    shape[0]
                )))
            }
            None => return Err(bad(format!("missing tensor \"{scale_key}\""))),
        };
        if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(bad(format!(
                "\"{scale_key}\" holds {s}: scales are finite and >= 0"
            )));
        }
        let m = QuantizedMatrix {
            q: q.clone().into_dimensionality().expect("2-D, checked"),
            scales,
        };
        values.insert(name.clone(), TensorData::F32(m.dequantize().into_dyn()));
        stored.insert(name.clone(), m);
    }
    if let Some(extra) = file.tensors.keys().find(|k| !expected.contains(k)) {
        return Err(bad(format!("unexpected tensor \"{extra}\"")));
    }
    let model = Recurrent::new(config).map_err(|e| bad(e.to_string()))?;
    load_state_dict(&model, &values, true).map_err(|e| bad(e.to_string()))?;
    model.with_quantized_weights(stored)
}

/// The error for a quantized file given where a character model is read (`rnn train
/// --init`, `rnn sample`, `rnn eval`): a quantized file holds one recurrent layer, for
/// inference only.
pub fn not_a_character_model(path: &Path) -> Error {
    Error::format(
        path,
        "this is a quantized (int8) model file of one recurrent layer, for inference only \
         (rnn run --model); it cannot be trained or sampled: train from the f32 model, and \
         run a character model in int8 with --precision int8",
    )
}
