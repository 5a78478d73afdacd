//! Reading the safetensors format: [`check_layout`] validates a buffer's framing with messages
//! that say what is wrong, and [`decode`] turns one tensor's bytes into [`TensorData`].

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::Dtype;

use super::tensor_data::TensorData;
use crate::error::Shape;

/// Checks the framing of a safetensors buffer before the `safetensors` crate parses it, so that
/// the common ways a file is broken get a message saying which, and so that absurd offsets
/// never reach arithmetic that could overflow.
pub(super) fn check_layout(bytes: &[u8]) -> std::result::Result<(), String> {
    const NOT_ST: &str = "not a safetensors file";
    if bytes.is_empty() {
        return Err(format!("empty file; {NOT_ST}"));
    }
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(format!(
            "{} bytes, too short for the 8-byte header length; {NOT_ST} (truncated?)",
            bytes.len()
        ));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    let available = (bytes.len() - 8) as u64;
    if n > available {
        return Err(format!(
            "the header length says {n} bytes but only {available} follow; \
             the file is truncated or {NOT_ST}"
        ));
    }
    let header = &bytes[8..8 + n as usize];
    let text = std::str::from_utf8(header)
        .map_err(|_| format!("the header is not UTF-8 text; {NOT_ST}"))?;
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON header: {e}"))?;
    let serde_json::Value::Object(entries) = json else {
        return Err("invalid header: the JSON is not an object".to_string());
    };
    let data_len = available - n;
    for (name, info) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)));
        let Some((begin, end)) = offsets else {
            return Err(format!(
                "invalid header: tensor \"{name}\" has no valid \"data_offsets\" [begin, end]"
            ));
        };
        if begin > end || end > data_len {
            return Err(format!(
                "tensor \"{name}\": data offsets [{begin}, {end}] are out of range, \
                 the data section has {data_len} bytes (truncated file?)"
            ));
        }
        // Name the tensor whose shape and offsets disagree (the crate's message does not).
        let dtype = info
            .get("dtype")
            .cloned()
            .map(serde_json::from_value::<Dtype>);
        let shape = info
            .get("shape")
            .cloned()
            .map(serde_json::from_value::<Vec<usize>>);
        if let (Some(Ok(dtype)), Some(Ok(shape))) = (dtype, shape) {
            let bits = shape
                .iter()
                .try_fold(dtype.bitsize(), |acc, &d| acc.checked_mul(d));
            match bits {
                None => {
                    return Err(format!(
                    "tensor \"{name}\": shape {} of {dtype} overflows (size computation overflow)",
                    Shape::of(&shape)
                ))
                }
                Some(bits) if bits % 8 == 0 && (bits / 8) as u64 != end - begin => {
                    return Err(format!(
                        "tensor \"{name}\": shape {} of {dtype} needs {} bytes but its data \
                         offsets [{begin}, {end}] span {}; invalid header",
                        Shape::of(&shape),
                        bits / 8,
                        end - begin
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Converts one tensor's little-endian bytes (length already checked by `safetensors`).
pub(super) fn decode(
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
) -> std::result::Result<TensorData, String> {
    fn array<T, const N: usize>(
        name: &str,
        shape: &[usize],
        data: &[u8],
        convert: impl Fn([u8; N]) -> T,
    ) -> std::result::Result<ArrayD<T>, String> {
        let values: Vec<T> = data
            .chunks_exact(N)
            .map(|c| convert(c.try_into().expect("chunk of N bytes")))
            .collect();
        ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| {
            format!(
                "tensor \"{name}\": {} bytes do not fit shape {}: {e}",
                data.len(),
                Shape::of(shape)
            )
        })
    }
    Ok(match dtype {
        Dtype::F32 => TensorData::F32(array(name, shape, data, f32::from_le_bytes)?),
        Dtype::F64 => TensorData::F64(array(name, shape, data, f64::from_le_bytes)?),
        Dtype::F16 => TensorData::F32(array(name, shape, data, |b| {
            half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
        })?),
        Dtype::BF16 => TensorData::BF16(array(name, shape, data, |b| {
            half::bf16::from_bits(u16::from_le_bytes(b))
        })?),
        Dtype::I64 => TensorData::I64(array(name, shape, data, i64::from_le_bytes)?),
        Dtype::I32 => TensorData::I64(array(name, shape, data, |b| {
            i64::from(i32::from_le_bytes(b))
        })?),
        Dtype::I8 => TensorData::I8(array(name, shape, data, i8::from_le_bytes)?),
        other => {
            return Err(format!(
                "tensor \"{name}\" has dtype {other}, which is not supported \
                 (supported: F32, F64, F16, BF16, I64, I32, I8)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::error::{Error, Result};
    use crate::io::test_util::sample_file;
    use crate::io::TensorFile;
    use ndarray::array;
    use safetensors::tensor::Dtype;

    /// A tensor to serialize with the `safetensors` crate (tests write files with it to check
    /// that ours read theirs).
    struct OwnedView {
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    }

    impl safetensors::tensor::View for OwnedView {
        fn dtype(&self) -> Dtype {
            self.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.bytes)
        }
        fn data_len(&self) -> usize {
            self.bytes.len()
        }
    }

    fn header_bytes(json: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn format_message(r: Result<TensorFile>) -> (String, String) {
        match r {
            Err(Error::Format { path, message }) => (path, message),
            Err(e) => panic!("expected a Format error, got {e:?}"),
            Ok(f) => panic!(
                "expected a Format error, got a file with {:?}",
                f.tensors.keys()
            ),
        }
    }

    #[test]
    fn half_precision_and_int32_are_widened() {
        let f16: Vec<u8> = [1.5f32, -0.333_251_95, 65504.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let bf16: Vec<u8> = [3.0f32, -1.0e30]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let i32s: Vec<u8> = [-7i32, i32::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let views = vec![
            (
                "h",
                OwnedView {
                    dtype: Dtype::F16,
                    shape: vec![3],
                    bytes: f16,
                },
            ),
            (
                "b",
                OwnedView {
                    dtype: Dtype::BF16,
                    shape: vec![1, 2],
                    bytes: bf16,
                },
            ),
            (
                "i",
                OwnedView {
                    dtype: Dtype::I32,
                    shape: vec![2],
                    bytes: i32s,
                },
            ),
        ];
        let bytes = safetensors::tensor::serialize(views, None).unwrap();
        let f = TensorFile::from_bytes(&bytes, "x").unwrap();
        assert_eq!(f.get("h").unwrap().dtype(), "F32");
        assert_eq!(
            f.f32("h").unwrap(),
            array![1.5f32, -0.333_251_95, 65504.0].into_dyn()
        );
        assert_eq!(f.get("b").unwrap().dtype(), "BF16");
        let b = f.f32("b").unwrap();
        assert_eq!(b[[0, 0]], 3.0);
        // bf16 keeps 8 bits of mantissa: -1e30 rounds to -1.0000001e30 or so, not exactly.
        assert!((b[[0, 1]] / -1.0e30 - 1.0).abs() < 4e-3 && b[[0, 1]] != -1.0e30);
        assert_eq!(
            f.i64("i").unwrap(),
            array![-7i64, i32::MAX as i64].into_dyn()
        );
    }

    #[test]
    fn bf16_keeps_every_bit_pattern() {
        // Zeros, the smallest subnormal, one, the largest finite, infinities, NaN payloads.
        let bits: Vec<u16> = vec![
            0x0000, 0x8000, 0x0001, 0x3f80, 0x7f7f, 0x7f80, 0xff80, 0x7fc1, 0xffff,
        ];
        let a = ndarray::Array1::from_iter(bits.iter().map(|&b| half::bf16::from_bits(b)));
        let mut f = TensorFile::new();
        f.insert("w", a.into_dyn());
        let bytes = f.to_bytes().unwrap();
        let back = TensorFile::from_bytes(&bytes, "x").unwrap();
        assert_eq!(back.dtype_in_file("w"), Some("BF16"));
        let crate::io::TensorData::BF16(got) = back.get("w").unwrap() else {
            panic!("not BF16");
        };
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), bits);
        // Widening is exact: the bits move to the high half of the f32.
        let wide = back.f32("w").unwrap();
        for (v, b) in wide.iter().zip(&bits) {
            assert_eq!(v.to_bits(), u32::from(*b) << 16);
        }
    }

    #[test]
    fn unsupported_dtype_names_key_and_dtype() {
        let views = vec![(
            "mask",
            OwnedView {
                dtype: Dtype::U8,
                shape: vec![2],
                bytes: vec![1, 0],
            },
        )];
        let bytes = safetensors::tensor::serialize(views, None).unwrap();
        let (path, msg) = format_message(TensorFile::from_bytes(&bytes, "m.safetensors"));
        assert_eq!(path, "m.safetensors");
        assert!(msg.contains("\"mask\"") && msg.contains("U8"), "{msg}");
    }

    #[test]
    fn broken_files_are_format_errors_naming_the_path() {
        let good = sample_file().to_bytes().unwrap();
        let data = [0u8; 16];
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "empty file"),
            ("short", vec![1, 2, 3], "too short"),
            ("truncated", good[..good.len() - 3].to_vec(), "out of range"),
            ("truncated header", good[..40].to_vec(), "truncated"),
            (
                "garbage",
                b"this is not a safetensors file at all".to_vec(),
                "header length",
            ),
            (
                "huge header length",
                u64::MAX.to_le_bytes().to_vec(),
                "header length",
            ),
            (
                "not utf8",
                [&2u64.to_le_bytes()[..], &[0xC0, 0xFF]].concat(),
                "not UTF-8",
            ),
            (
                "invalid json",
                header_bytes("{\"a\": {\"dtype\": ", &[]),
                "invalid JSON",
            ),
            ("json array", header_bytes("[1, 2]", &[]), "not an object"),
            (
                "offsets beyond data",
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                    &data[..8],
                ),
                "out of range",
            ),
            (
                "huge offsets",
                header_bytes(
                    r#"{"a":{"dtype":"U8","shape":[18446744073709551610],"data_offsets":[0,18446744073709551610]}}"#,
                    &data,
                ),
                "out of range",
            ),
            (
                "shape overflow",
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
                    &data,
                ),
                "overflow",
            ),
            (
                "shape disagrees with offsets",
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
                    &data,
                ),
                "invalid",
            ),
            (
                "data not fully covered",
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &data,
                ),
                "not fully covered",
            ),
            (
                "missing offsets",
                header_bytes(r#"{"a":{"dtype":"F32","shape":[4]}}"#, &data),
                "data_offsets",
            ),
            (
                "unknown dtype",
                header_bytes(
                    r#"{"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,16]}}"#,
                    &data,
                ),
                "invalid",
            ),
        ];
        for (what, bytes, needle) in cases {
            let (path, msg) = format_message(TensorFile::from_bytes(&bytes, "bad.safetensors"));
            assert_eq!(path, "bad.safetensors", "{what}");
            assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn every_truncation_of_a_good_file_is_an_error() {
        let good = sample_file().to_bytes().unwrap();
        for cut in 0..good.len() {
            assert!(
                matches!(
                    TensorFile::from_bytes(&good[..cut], "t"),
                    Err(Error::Format { .. })
                ),
                "cut at {cut}"
            );
        }
    }
}
