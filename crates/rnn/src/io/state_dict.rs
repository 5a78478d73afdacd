//! A [`Module`]'s parameters by their PyTorch keys: [`state_dict`], [`load_state_dict`] and
//! [`save_state_dict`].

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::ArrayD;

use super::tensor_data::TensorData;
use super::tensor_file::TensorFile;
use crate::error::{Error, Result, Shape};
use crate::module::Module;

/// `model.state_dict()`: each parameter's key and a copy of its values, in registration order.
pub fn state_dict(module: &dyn Module) -> Vec<(String, ArrayD<f32>)> {
    module
        .named_parameters()
        .into_iter()
        .map(|(name, t)| (name, t.to_array()))
        .collect()
}

/// `model.load_state_dict(tensors, strict)`: copies each tensor into the parameter with the same
/// key.
///
/// With `strict = true` every parameter must have a tensor and every tensor a parameter
/// (`Missing key(s) in state_dict: "bias_ih_l0". Unexpected key(s) in state_dict: "foo".`);
/// with `strict = false` those keys are skipped. In both modes a tensor whose shape differs
/// from its parameter's is an error (`size mismatch for weight_ih_l0: copying a param with
/// shape (8, 3) from checkpoint, the shape in current model is (8, 4).`), as are an integer
/// tensor and a tensor holding NaN or infinity. F64 tensors are rounded to f32.
///
/// Every check runs before anything is copied: after an error ([`Error::StateDict`], listing
/// all the problems found) the module is unchanged.
pub fn load_state_dict(
    module: &dyn Module,
    tensors: &BTreeMap<String, TensorData>,
    strict: bool,
) -> Result<()> {
    let params = module.named_parameters();
    let mut problems = Vec::new();
    if strict {
        let missing: Vec<String> = params
            .iter()
            .filter(|(name, _)| !tensors.contains_key(name))
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "Missing key(s) in state_dict: {}.",
                missing.join(", ")
            ));
        }
        let unexpected: Vec<String> = tensors
            .keys()
            .filter(|k| !params.iter().any(|(name, _)| name == *k))
            .map(|k| format!("\"{k}\""))
            .collect();
        if !unexpected.is_empty() {
            problems.push(format!(
                "Unexpected key(s) in state_dict: {}.",
                unexpected.join(", ")
            ));
        }
    }

    let mut updates = Vec::new();
    for (name, param) in &params {
        let Some(data) = tensors.get(name) else {
            continue;
        };
        if let TensorData::I64(_) | TensorData::I8(_) = data {
            problems.push(format!(
                "dtype mismatch for {name}: copying a param of dtype {} from checkpoint, \
                 the parameter in current model is floating point (F32).",
                data.dtype()
            ));
            continue;
        }
        let current = param.shape();
        if data.shape() != current.as_slice() {
            problems.push(format!(
                "size mismatch for {name}: copying a param with shape {} from checkpoint, \
                 the shape in current model is {}.",
                Shape::of(data.shape()),
                Shape(current)
            ));
            continue;
        }
        let values = data.to_f32();
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            problems.push(format!(
                "non-finite values for {name}: {bad} of {} values in the checkpoint are NaN or \
                 infinite{}; a checkpoint with non-finite weights is broken.",
                values.len(),
                if data.dtype() == "F64" {
                    " (after rounding to f32)"
                } else {
                    ""
                }
            ));
            continue;
        }
        updates.push((param, values));
    }
    if !problems.is_empty() {
        return Err(Error::StateDict(problems.join(" ")));
    }
    for (param, values) in updates {
        param.data_mut().assign(&values);
    }
    Ok(())
}

/// The checks of a strict [`load_state_dict`] against the keys and shapes a module will have
/// (`expected`, e.g. [`RecurrentConfig::parameter_shapes`]), made before the module exists, so
/// that a file whose tensors do not fit its configuration is refused before any memory is
/// taken for the module. The messages are [`load_state_dict`]'s: missing and unexpected keys,
/// size and dtype mismatches, all found at once ([`Error::StateDict`]).
///
/// [`RecurrentConfig::parameter_shapes`]: crate::RecurrentConfig::parameter_shapes
pub fn check_state_dict(
    expected: &[(String, Vec<usize>)],
    tensors: &BTreeMap<String, TensorData>,
) -> Result<()> {
    let mut problems = Vec::new();
    let missing: Vec<String> = expected
        .iter()
        .filter(|(name, _)| !tensors.contains_key(name))
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "Missing key(s) in state_dict: {}.",
            missing.join(", ")
        ));
    }
    let unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !expected.iter().any(|(name, _)| name == *k))
        .map(|k| format!("\"{k}\""))
        .collect();
    if !unexpected.is_empty() {
        problems.push(format!(
            "Unexpected key(s) in state_dict: {}.",
            unexpected.join(", ")
        ));
    }
    for (name, shape) in expected {
        let Some(data) = tensors.get(name) else {
            continue;
        };
        if let TensorData::I64(_) | TensorData::I8(_) = data {
            problems.push(format!(
                "dtype mismatch for {name}: copying a param of dtype {} from checkpoint, \
                 the parameter in current model is floating point (F32).",
                data.dtype()
            ));
        } else if data.shape() != shape.as_slice() {
            problems.push(format!(
                "size mismatch for {name}: copying a param with shape {} from checkpoint, \
                 the shape in current model is {}.",
                Shape::of(data.shape()),
                Shape::of(shape)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::StateDict(problems.join(" ")))
    }
}

/// `safetensors.torch.save_file(model.state_dict(), path, metadata)`: every parameter as an F32
/// tensor under its `state_dict` key, written atomically (see [`write_atomic`]).
///
/// [`write_atomic`]: super::write_atomic
pub fn save_state_dict(
    module: &dyn Module,
    path: impl AsRef<Path>,
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let mut file = TensorFile {
        metadata,
        ..TensorFile::default()
    };
    for (name, values) in state_dict(module) {
        file.insert(name, values);
    }
    file.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::TempDir;
    use crate::tensor::Tensor;
    use ndarray::{array, Array, IxDyn};

    /// Two parameters, as `nn.Module` with `weight_ih_l0` (8, 4) and `bias_ih_l0` (8,).
    struct Tiny {
        weight: Tensor,
        bias: Tensor,
    }

    impl Tiny {
        fn new() -> Self {
            Tiny {
                weight: Tensor::parameter(
                    Array::from_shape_fn((8, 4), |(i, j)| (i * 4 + j) as f32 * 0.1).into_dyn(),
                ),
                bias: Tensor::parameter(Array::from_elem(8, -0.5f32).into_dyn()),
            }
        }
    }

    impl Module for Tiny {
        fn named_parameters(&self) -> Vec<(String, Tensor)> {
            vec![
                ("weight_ih_l0".to_string(), self.weight.clone()),
                ("bias_ih_l0".to_string(), self.bias.clone()),
            ]
        }
    }

    #[test]
    fn state_dict_save_load_round_trip() {
        let dir = TempDir::new("sd");
        let p = dir.path("tiny.safetensors");
        let a = Tiny::new();
        a.weight.data_mut()[[2, 3]] = 42.0;
        save_state_dict(
            &a,
            &p,
            BTreeMap::from([("epoch".to_string(), "3".to_string())]),
        )
        .unwrap();
        let f = TensorFile::read(&p).unwrap();
        assert_eq!(f.metadata["epoch"], "3");
        assert_eq!(f.get("weight_ih_l0").unwrap().dtype(), "F32");

        let b = Tiny::new();
        b.weight.data_mut().fill(0.0);
        b.bias.data_mut().fill(0.0);
        load_state_dict(&b, &f.tensors, true).unwrap();
        assert_eq!(b.weight.to_array(), a.weight.to_array());
        assert_eq!(b.bias.to_array(), a.bias.to_array());
        assert_eq!(b.weight.data()[[2, 3]], 42.0);
        let sd = state_dict(&b);
        assert_eq!(sd[0].0, "weight_ih_l0");
        assert_eq!(sd[1].0, "bias_ih_l0");
        assert_eq!(sd[1].1, a.bias.to_array());
    }

    fn tiny_tensors(m: &Tiny) -> BTreeMap<String, TensorData> {
        state_dict(m)
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect()
    }

    fn state_dict_error(m: &Tiny, t: &BTreeMap<String, TensorData>, strict: bool) -> String {
        let before = state_dict(m);
        match load_state_dict(m, t, strict) {
            Err(Error::StateDict(msg)) => {
                assert_eq!(state_dict(m), before, "a failed load changed the module");
                msg
            }
            other => panic!("expected a StateDict error, got {other:?}"),
        }
    }

    #[test]
    fn strict_load_reports_missing_and_unexpected_like_pytorch() {
        let m = Tiny::new();
        let mut t = tiny_tensors(&m);
        t.remove("weight_ih_l0");
        t.remove("bias_ih_l0");
        t.insert("foo".into(), array![1.0f32].into_dyn().into());
        // A good key next to the bad ones must not be copied either.
        let msg = state_dict_error(&m, &t, true);
        assert_eq!(
            msg,
            "Missing key(s) in state_dict: \"weight_ih_l0\", \"bias_ih_l0\". \
             Unexpected key(s) in state_dict: \"foo\"."
        );

        let mut t = tiny_tensors(&m);
        t.insert(
            "bias_ih_l0".into(),
            Array::from_elem(8, 9.0f32).into_dyn().into(),
        );
        t.insert("foo".into(), array![1.0f32].into_dyn().into());
        let msg = state_dict_error(&m, &t, true);
        assert_eq!(msg, "Unexpected key(s) in state_dict: \"foo\".");
        assert_eq!(m.bias.data()[[0]], -0.5);

        // Non-strict: the extra key is ignored, the rest is loaded.
        load_state_dict(&m, &t, false).unwrap();
        assert_eq!(m.bias.data()[[0]], 9.0);
        t.remove("weight_ih_l0");
        t.insert(
            "bias_ih_l0".into(),
            Array::from_elem(8, 2.0f32).into_dyn().into(),
        );
        load_state_dict(&m, &t, false).unwrap();
        assert_eq!(m.bias.data()[[7]], 2.0);
        assert_eq!(m.weight.data()[[1, 1]], 0.5);
    }

    #[test]
    fn size_mismatch_is_an_error_even_when_not_strict() {
        let m = Tiny::new();
        let mut t = tiny_tensors(&m);
        t.insert(
            "weight_ih_l0".into(),
            ArrayD::<f32>::zeros(IxDyn(&[8, 3])).into(),
        );
        t.insert(
            "bias_ih_l0".into(),
            ArrayD::<f32>::zeros(IxDyn(&[8, 1])).into(),
        );
        let expected = "size mismatch for weight_ih_l0: copying a param with shape (8, 3) from \
                        checkpoint, the shape in current model is (8, 4). size mismatch for \
                        bias_ih_l0: copying a param with shape (8, 1) from checkpoint, the shape \
                        in current model is (8,).";
        assert_eq!(state_dict_error(&m, &t, true), expected);
        assert_eq!(state_dict_error(&m, &t, false), expected);
    }

    #[test]
    fn non_finite_and_integer_tensors_are_rejected() {
        let m = Tiny::new();
        let mut t = tiny_tensors(&m);
        let mut w = m.weight.to_array();
        w[[0, 0]] = f32::NAN;
        w[[5, 1]] = f32::INFINITY;
        t.insert("weight_ih_l0".into(), w.into());
        let msg = state_dict_error(&m, &t, true);
        assert!(
            msg.contains("weight_ih_l0") && msg.contains("2 of 32"),
            "{msg}"
        );

        // A finite f64 beyond the f32 range becomes infinite: rejected too.
        let mut t = tiny_tensors(&m);
        t.insert(
            "bias_ih_l0".into(),
            Array::from_elem(8, 1e300f64).into_dyn().into(),
        );
        let msg = state_dict_error(&m, &t, true);
        assert!(
            msg.contains("bias_ih_l0") && msg.contains("8 of 8"),
            "{msg}"
        );

        let mut t = tiny_tensors(&m);
        t.insert(
            "bias_ih_l0".into(),
            Array::from_elem(8, 1i64).into_dyn().into(),
        );
        let msg = state_dict_error(&m, &t, false);
        assert!(msg.contains("bias_ih_l0") && msg.contains("I64"), "{msg}");
    }

    #[test]
    fn float64_tensors_load_rounded_to_f32() {
        let m = Tiny::new();
        let mut t = tiny_tensors(&m);
        let w64 = Array::from_shape_fn((8, 4), |(i, j)| 0.1 * (i as f64) - 1.0 / (j as f64 + 3.0));
        t.insert("weight_ih_l0".into(), w64.clone().into_dyn().into());
        load_state_dict(&m, &t, true).unwrap();
        assert_eq!(m.weight.to_array(), w64.mapv(|v| v as f32).into_dyn());
        assert_eq!(m.weight.data()[[3, 1]], (0.3f64 - 0.25) as f32);
    }
}
