//! bf16 model files: a recurrent layer's parameters in bf16, next to the `config`, loaded as a
//! [`Precision::Bf16`] layer running the stored values as they are.
//!
//! A bf16 model file is what PyTorch writes for a module moved to bf16:
//!
//! ```python
//! lstm = torch.nn.LSTM(4, 8).to(torch.bfloat16)
//! save_file(lstm.state_dict(), "lstm.bf16.safetensors",
//!           metadata={"config": json.dumps({"cell": "lstm", "input_size": 4, "hidden_size": 8}),
//!                     "precision": "bf16"})  # "precision" is optional when written by PyTorch
//! ```
//!
//! that is, a model file ([`crate::model_file`]) whose tensors are **all** `BF16`, under
//! PyTorch's `state_dict` keys and in its layouts:
//!
//! ```text
//! weight_ih_l0   BF16 (G*H, H_in)   the products' operands, packed as stored
//! weight_hh_l0   BF16 (G*H, H)      (also weight_hr, the projection)
//! bias_ih_l0     BF16 (G*H,)        as module.to(torch.bfloat16) makes them (also weight_ph)
//! metadata: config = the layer's JSON, precision = "bf16"
//! ```
//!
//! It is half the size of the f32 file (two bytes per parameter; the header aside).
//!
//! # Loading: the file's bits are the products' operands
//!
//! [`crate::model_file::load_model`] reads a file as bf16 when its metadata says
//! `precision = "bf16"` or, without that entry (PyTorch's `save_file`), when its tensors are
//! BF16. The layer keeps an f32 master copy of its parameters, as every [`Precision::Bf16`]
//! layer does (gate math, biases and states are f32; training updates the master copy): the
//! file's values widened to f32, which is exact (a bf16 value is an f32 whose low 16 bits are
//! zero). The weights are then packed for the products by rounding the master copy to bf16 to
//! nearest even ([`crate::linalg::round_bf16`]), which is the identity on those values: the
//! packed weights are the file's bits, and no value changes on the way (tests check the bits).
//! Biases and peepholes are added in f32 from the same exact values.
//!
//! Loading is strict, as for f32 files: every tensor the configuration implies, with its shape,
//! and nothing else; all of them BF16. A file mixing dtypes (say F32 biases next to BF16
//! weights), or whose `precision` metadata disagrees with its tensors (`"bf16"` over F32
//! tensors, `"f32"` over BF16 ones), is an error naming the first tensor that disagrees.
//!
//! # Saving: every parameter rounded once
//!
//! [`crate::model_file::save_model`] writes a bf16 file for a layer in
//! [`Precision::Bf16`] (`layer.to_precision(Precision::Bf16)`): every parameter rounded to
//! bf16 to nearest even, as PyTorch's `module.to(torch.bfloat16)` rounds them. The weight
//! matrices are then the operands the layer's products ran with; the biases and peepholes,
//! which a bf16 layer adds in f32, are rounded too (PyTorch's choice, and a file of one dtype),
//! so a layer whose f32 biases are not bf16 values runs slightly differently after a save and a
//! load (a bias rounding, relative 2^-9). A layer loaded from a bf16 file saves back bit for
//! bit. A value that is NaN, infinite, or beyond bf16's largest finite value (about 3.39e38)
//! is an error naming its key.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{TensorData, TensorFile};
use crate::linalg::bf16_bits;
use crate::model_file::CONFIG_KEY;
use crate::module::Module;
use crate::precision::Precision;
use crate::quantized::PRECISION_KEY;
use crate::recurrent::Recurrent;

/// Writes `model`'s parameters rounded to bf16 as a bf16 model file at `path`, atomically
/// (module docs). [`crate::model_file::save_model`] calls it for a layer in
/// [`Precision::Bf16`]; call it directly to write any layer in bf16.
pub fn save_bf16(path: impl AsRef<Path>, model: &Recurrent) -> Result<()> {
    let mut file = TensorFile::new();
    for (name, t) in model.named_parameters() {
        let values = t.data().mapv(|v| half::bf16::from_bits(bf16_bits(v)));
        if let Some(v) = t.data().iter().find(|v| !round_is_finite(**v)) {
            return Err(Error::Invalid(format!(
                "{name} holds {v}, which has no finite bf16 value (bf16's largest is about \
                 3.39e38): the layer cannot be saved in bf16"
            )));
        }
        file.insert(name, values);
    }
    file.metadata
        .insert(CONFIG_KEY.to_string(), model.config().to_json());
    file.metadata.insert(
        PRECISION_KEY.to_string(),
        Precision::Bf16.name().to_string(),
    );
    file.write(path)
}

/// Whether `v` rounds to a finite bf16.
fn round_is_finite(v: f32) -> bool {
    f32::from_bits(u32::from(bf16_bits(v)) << 16).is_finite()
}

/// The precision a model file's weights are stored in: its `precision` metadata if present
/// (an unknown name is an error), else bf16 when any tensor is BF16, else f32. Says nothing
/// of whether the tensors agree: the loaders check that.
pub fn file_precision(file: &TensorFile, path: &Path) -> Result<Precision> {
    match file.metadata.get(PRECISION_KEY) {
        Some(name) => name
            .parse()
            .map_err(|e: Error| Error::format(path, format!("metadata \"{PRECISION_KEY}\": {e}"))),
        None if file
            .tensors
            .values()
            .any(|t| matches!(t, TensorData::BF16(_))) =>
        {
            Ok(Precision::Bf16)
        }
        None => Ok(Precision::F32),
    }
}

/// Checks that every tensor of a model file read as `precision` (f32 or bf16) has a dtype of
/// that precision: BF16 for bf16, not BF16 for f32 (F32, or F64 and F16, which widen as
/// before). The error names the first tensor that disagrees and why the file was read so.
pub fn check_dtypes(file: &TensorFile, path: &Path, precision: Precision) -> Result<()> {
    let is_bf16 = |t: &TensorData| matches!(t, TensorData::BF16(_));
    let wants_bf16 = precision == Precision::Bf16;
    let Some((key, t)) = file.tensors.iter().find(|(_, t)| is_bf16(t) != wants_bf16) else {
        return Ok(());
    };
    let dtype = file.dtype_in_file(key).unwrap_or(t.dtype());
    let why = match file.metadata.get(PRECISION_KEY) {
        Some(p) => format!("the metadata says {PRECISION_KEY} = {p:?}"),
        None => {
            let other = file
                .tensors
                .iter()
                .find(|(_, t)| is_bf16(t))
                .map_or(String::new(), |(k, _)| k.clone());
            format!("other tensors are BF16 (\"{other}\")")
        }
    };
    let expected = if wants_bf16 { "BF16" } else { "not BF16" };
    Err(Error::format(
        path,
        format!(
            "tensor \"{key}\" has dtype {dtype}, expected {expected}: {why}. A model file holds \
             its parameters in one precision: all BF16 (PyTorch's module.to(torch.bfloat16), \
             or rnn's bf16 save), or all F32"
        ),
    ))
}

/// Reads a bf16 model file (already read into `file`) into a [`Precision::Bf16`] layer
/// (module docs); strict like [`crate::model_file::load_model`], every tensor BF16.
pub fn load_bf16(file: &TensorFile, path: &Path) -> Result<Recurrent> {
    check_dtypes(file, path, Precision::Bf16)?;
    let model = crate::model_file::load_weights(file, path)?;
    model.to_precision(Precision::Bf16)
}
