//! ONNX tensors and attributes as plain Rust values: [`Const`] from a `TensorProto` (inline,
//! `raw_data` or external data), and typed attribute getters.
//!
//! Every size read from the file is checked against the bytes actually present before memory is
//! taken, so a corrupt file is an error, never a huge allocation or a panic.

use std::path::Path;

use super::proto::{tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};
use super::OnnxError;

/// The values of a constant tensor: floating-point types are read as f32 (f64 rounded, f16 and
/// bf16 exactly), integer and boolean types as i64.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// `FLOAT`, `DOUBLE`, `FLOAT16`, `BFLOAT16`.
    F32(Vec<f32>),
    /// `INT64`, `INT32`, `INT16`, `INT8`, `UINT8`, `BOOL`, ...
    I64(Vec<i64>),
}

/// A constant tensor: an initializer, a `Constant` node's value or an attribute tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    /// The dimensions; `[]` for a scalar.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Data,
}

impl Const {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The integer values, if it is an integer tensor.
    pub fn ints(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I64(v) => Some(v),
            Data::F32(_) => None,
        }
    }

    /// The float values, if it is a floating-point tensor.
    pub fn floats(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::I64(_) => None,
        }
    }

    /// Whether every value is zero.
    pub fn is_zero(&self) -> bool {
        match &self.data {
            Data::F32(v) => v.iter().all(|&x| x == 0.0),
            Data::I64(v) => v.iter().all(|&x| x == 0),
        }
    }

    /// A 1-D int64 tensor.
    pub fn int_vec(v: Vec<i64>) -> Const {
        Const {
            dims: vec![v.len()],
            data: Data::I64(v),
        }
    }
}

/// Bytes per element of the types read from `raw_data`, and whether they are floats.
fn element(dt: i32) -> Option<(usize, bool)> {
    let t = DataType::try_from(dt).ok()?;
    Some(match t {
        DataType::Float => (4, true),
        DataType::Double => (8, true),
        DataType::Float16 | DataType::Bfloat16 => (2, true),
        DataType::Int64 | DataType::Uint64 => (8, false),
        DataType::Int32 | DataType::Uint32 => (4, false),
        DataType::Int16 | DataType::Uint16 => (2, false),
        DataType::Int8 | DataType::Uint8 | DataType::Bool => (1, false),
        _ => return None,
    })
}

/// The ONNX name of a data type code, for messages.
pub fn type_name(dt: i32) -> String {
    DataType::try_from(dt)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("data type {dt}"))
}

/// Reads a `TensorProto`. `dir` is the model file's directory, against which external data
/// files are resolved; `what` names the tensor in errors.
pub fn read_tensor(t: &TensorProto, dir: &Path, what: &str) -> Result<Const, OnnxError> {
    let bad = |m: String| OnnxError(format!("{what}: {m}"));
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut count: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| bad(format!("dimensions {:?} overflow", t.dims)))?;
        dims.push(d);
    }
    let dt = t.data_type.unwrap_or(0);
    let (size, is_float) = element(dt).ok_or_else(|| {
        bad(format!(
            "{} is not supported (expected FLOAT, DOUBLE, FLOAT16, BFLOAT16 or an integer type)",
            type_name(dt)
        ))
    })?;
    let external;
    let raw: Option<&[u8]> = if t.data_location == Some(1) {
        external = read_external(t, dir, count.saturating_mul(size), what)?;
        Some(&external)
    } else {
        t.raw_data.as_deref()
    };
    let data = if let Some(raw) = raw {
        if Some(raw.len()) != count.checked_mul(size) {
            return Err(bad(format!(
                "holds {} bytes of data, but {} values of {} need {}",
                raw.len(),
                count,
                type_name(dt),
                count.saturating_mul(size)
            )));
        }
        decode_raw(raw, dt, is_float)
    } else {
        let typed = if is_float {
            match DataType::try_from(dt) {
                Ok(DataType::Float) => Data::F32(t.float_data.clone()),
                Ok(DataType::Double) => {
                    Data::F32(t.double_data.iter().map(|&v| v as f32).collect())
                }
                // FLOAT16 and BFLOAT16 are stored as their bits in int32_data.
                Ok(DataType::Float16) => Data::F32(
                    t.int32_data
                        .iter()
                        .map(|&b| half::f16::from_bits(b as u16).to_f32())
                        .collect(),
                ),
                _ => Data::F32(
                    t.int32_data
                        .iter()
                        .map(|&b| half::bf16::from_bits(b as u16).to_f32())
                        .collect(),
                ),
            }
        } else {
            match DataType::try_from(dt) {
                Ok(DataType::Int64) => Data::I64(t.int64_data.clone()),
                Ok(DataType::Uint64) => {
                    Data::I64(t.uint64_data.iter().map(|&v| v as i64).collect())
                }
                _ => Data::I64(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
            }
        };
        let c = Const {
            dims: dims.clone(),
            data: typed,
        };
        if c.len() != count {
            return Err(bad(format!(
                "holds {} values but its dimensions {:?} need {count}",
                c.len(),
                dims
            )));
        }
        c.data
    };
    Ok(Const { dims, data })
}

fn decode_raw(raw: &[u8], dt: i32, is_float: bool) -> Data {
    let t = DataType::try_from(dt).ok();
    if is_float {
        Data::F32(match t {
            Some(DataType::Float) => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Some(DataType::Double) => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            Some(DataType::Float16) => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    } else {
        Data::I64(match t {
            Some(DataType::Int64) | Some(DataType::Uint64) => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            Some(DataType::Int32) => raw
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            Some(DataType::Uint32) => raw
                .chunks_exact(4)
                .map(|b| i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            Some(DataType::Int16) => raw
                .chunks_exact(2)
                .map(|b| i64::from(i16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Some(DataType::Uint16) => raw
                .chunks_exact(2)
                .map(|b| i64::from(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Some(DataType::Int8) => raw.iter().map(|&b| i64::from(b as i8)).collect(),
            _ => raw.iter().map(|&b| i64::from(b)).collect(),
        })
    }
}

/// Reads the bytes of a tensor stored outside the model (`data_location = EXTERNAL`): the file
/// `location` (relative to the model's directory, never leaving it), from `offset`, `length`
/// bytes (default: what the dimensions need).
fn read_external(
    t: &TensorProto,
    dir: &Path,
    need: usize,
    what: &str,
) -> Result<Vec<u8>, OnnxError> {
    let bad = |m: String| OnnxError(format!("{what}: external data: {m}"));
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for e in &t.external_data {
        let value = e.value.as_deref().unwrap_or("");
        match e.key.as_deref().unwrap_or("") {
            "location" => location = Some(value.to_string()),
            "offset" => {
                offset = value
                    .parse()
                    .map_err(|_| bad(format!("offset {value:?} is not a number")))?
            }
            "length" => {
                length = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad(format!("length {value:?} is not a number")))?,
                )
            }
            _ => {}
        }
    }
    let location = location.ok_or_else(|| bad("no \"location\" entry".into()))?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(bad(format!(
            "location {location:?} must be a plain relative path inside the model's directory"
        )));
    }
    let length = length.unwrap_or(need as u64);
    if length != need as u64 {
        return Err(bad(format!(
            "length {length} does not match the {need} bytes the dimensions need"
        )));
    }
    let path = dir.join(rel);
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&path)
        .map_err(|e| bad(format!("cannot open {}: {e}", path.display())))?;
    let size = f
        .metadata()
        .map_err(|e| bad(format!("{}: {e}", path.display())))?
        .len();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(bad(format!(
            "{} has {size} bytes, fewer than offset {offset} + length {length}",
            path.display()
        )));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let mut bytes = vec![0u8; need];
    f.read_exact(&mut bytes)
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    Ok(bytes)
}

/// The node's name for messages: `LSTM node "/rnn/LSTM"` (or its first output when unnamed).
pub fn node_label(node: &NodeProto) -> String {
    let name = match node.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!(
            "producing {:?}",
            node.output.first().map(String::as_str).unwrap_or("")
        ),
    };
    format!("{} node {name:?}", node.op_type())
}

/// Typed access to a node's attributes.
pub struct Attrs<'a>(pub &'a NodeProto);

impl Attrs<'_> {
    /// The attribute `name`, if present.
    pub fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.attribute.iter().find(|a| a.name() == name)
    }

    /// An integer attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, OnnxError> {
        match self.get(name) {
            None => Ok(default),
            Some(a) => a.i.ok_or_else(|| self.wrong(name, "an integer")),
        }
    }

    /// A float attribute, if present.
    pub fn float(&self, name: &str) -> Result<Option<f32>, OnnxError> {
        match self.get(name) {
            None => Ok(None),
            Some(a) => a.f.map(Some).ok_or_else(|| self.wrong(name, "a float")),
        }
    }

    /// A list of integers, if present (an `ints` attribute; a single `i` counts as one).
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| match a.i {
            Some(i) if a.ints.is_empty() => vec![i],
            _ => a.ints.clone(),
        })
    }

    /// A string attribute, or `default`.
    pub fn string(&self, name: &str, default: &str) -> Result<String, OnnxError> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(a) => {
                a.s.as_ref()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .ok_or_else(|| self.wrong(name, "a string"))
            }
        }
    }

    /// A list of strings, if present.
    pub fn strings(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }

    fn wrong(&self, name: &str, expected: &str) -> OnnxError {
        OnnxError(format!(
            "{}: attribute {name} is not {expected}",
            node_label(self.0)
        ))
    }
}
