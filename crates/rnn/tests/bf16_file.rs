//! bf16 model files (`rnn::bf16_file`): half the f32 file, loaded as a bf16 layer whose
//! weights are the file's bits, written back bit-exactly, PyTorch's `module.to(torch.bfloat16)`
//! files read within the bf16 bound of an f64 run, and strict about dtypes and metadata.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use rnn::io::{TensorData, TensorFile};
use rnn::linalg::{bf16_bits, round_bf16, PackedBf16};
use rnn::model_file::{load_model, save_model};
use rnn::{no_grad, CellKind, Module, Precision, Recurrent, RecurrentConfig, Tensor};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rnn-bf16-file-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|k| (k * 29 % 97) as f32 / 48.0 - 1.0).collect();
    Tensor::new(ArrayD::from_shape_vec(shape.to_vec(), v).unwrap())
}

fn max_abs(a: &ArrayD<f32>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .fold(0.0f64, |m, (x, y)| m.max((f64::from(*x) - y).abs()))
}

fn configs() -> Vec<RecurrentConfig> {
    vec![
        RecurrentConfig::new(CellKind::Lstm, 24, 48)
            .with_num_layers(2)
            .with_bidirectional(true),
        RecurrentConfig::new(CellKind::Lstm, 16, 40).with_proj_size(12),
        RecurrentConfig::new(CellKind::Gru, 20, 64).with_linear_before_reset(false),
        RecurrentConfig::new(CellKind::Rnn, 20, 64).with_num_layers(2),
        RecurrentConfig::new(CellKind::Lstm, 10, 32).with_peephole(true),
        RecurrentConfig::new(CellKind::Lstm, 256, 256),
    ]
}

/// Every parameter's bits in the file equal `bits(name)`.
fn assert_file_bits(file: &TensorFile, layer: &Recurrent, what: &str) {
    assert_eq!(file.tensors.len(), layer.named_parameters().len(), "{what}");
    for (name, p) in layer.named_parameters() {
        let Some(TensorData::BF16(stored)) = file.tensors.get(&name) else {
            panic!("{what}: {name} is not BF16 in the file");
        };
        let want: Vec<u16> = p.data().iter().map(|&v| bf16_bits(v)).collect();
        let got: Vec<u16> = stored.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{what}: {name}");
    }
}

/// The loaded layer holds the file's values exactly, and packing them for the products
/// (rounding to bf16) gives the file's bits back.
fn assert_holds_file_bits(file: &TensorFile, layer: &Recurrent, what: &str) {
    for (name, p) in layer.named_parameters() {
        let TensorData::BF16(stored) = &file.tensors[&name] else {
            panic!("{what}: {name} is not BF16");
        };
        let values = p.data();
        for (v, s) in values.iter().zip(stored.iter()) {
            assert_eq!(v.to_bits(), u32::from(s.to_bits()) << 16, "{what}: {name}");
            assert_eq!(round_bf16(*v).to_bits(), v.to_bits(), "{what}: {name}");
        }
        if name.starts_with("weight_") && values.ndim() == 2 {
            let w = values.view().into_dimensionality().unwrap();
            let packed = PackedBf16::transposed(&w);
            let s2 = stored.view().into_dimensionality::<ndarray::Ix2>().unwrap();
            for ((j, kk), s) in s2.indexed_iter() {
                assert_eq!(packed.get(kk, j).to_bits() >> 16, u32::from(s.to_bits()));
            }
        }
    }
}

#[test]
fn bf16_files_are_half_the_size_exact_and_round_trip() {
    let dir = Dir::new("round-trip");
    for (k, config) in configs().into_iter().enumerate() {
        rnn::manual_seed(40 + k as u64);
        let f32_layer = Recurrent::new(config.clone()).unwrap();
        let bf16_layer = f32_layer.to_precision(Precision::Bf16).unwrap();
        let (f32_path, bf_path, again) = (
            dir.path(&format!("{k}.safetensors")),
            dir.path(&format!("{k}.bf16.safetensors")),
            dir.path(&format!("{k}.again.safetensors")),
        );
        save_model(&f32_path, &f32_layer).unwrap();
        save_model(&bf_path, &bf16_layer).unwrap();
        let (big, small) = (
            std::fs::metadata(&f32_path).unwrap().len() as f64,
            std::fs::metadata(&bf_path).unwrap().len() as f64,
        );
        // 2 bytes a parameter against 4; the header weighs on small layers.
        let least = if big > 100_000.0 { 1.98 } else { 1.7 };
        assert!(big / small > least, "{config:?}: {big} / {small}");
        eprintln!("{}: f32 {big} B, bf16 {small} B", config.repr());

        let file = TensorFile::read(&bf_path).unwrap();
        assert_eq!(file.metadata["precision"], "bf16");
        assert_eq!(file.metadata["config"], config.to_json());
        assert_file_bits(&file, &f32_layer, "saved");

        let loaded = load_model(&bf_path).unwrap();
        assert_eq!(loaded.precision(), Precision::Bf16);
        assert_eq!(loaded.config(), &config);
        assert_holds_file_bits(&file, &loaded, "loaded");
        save_model(&again, &loaded).unwrap();
        assert_eq!(
            std::fs::read(&bf_path).unwrap(),
            std::fs::read(&again).unwrap(),
            "{config:?}: the round trip changed the file"
        );

        // The loaded layer runs the bits of the saved layer with every parameter rounded.
        let rounded = f32_layer.to_precision(Precision::Bf16).unwrap();
        let rounded = Recurrent::clone(&rounded);
        let copy = Recurrent::new(config.clone()).unwrap();
        for ((_, dst), (_, src)) in copy
            .named_parameters()
            .iter()
            .zip(rounded.named_parameters())
        {
            dst.data_mut().assign(&src.data().mapv(round_bf16));
        }
        let copy = copy.to_precision(Precision::Bf16).unwrap();
        let x = input(&[5, 3, config.input_size]);
        let a = no_grad(|| loaded.forward_states(&x, None, None).unwrap());
        let b = no_grad(|| copy.forward_states(&x, None, None).unwrap());
        assert_eq!(a.output.to_array(), b.output.to_array(), "{config:?}");
        assert_eq!(a.h_n.to_array(), b.h_n.to_array(), "{config:?}");
        let y32 = no_grad(|| f32_layer.forward_states(&x, None, None).unwrap());
        let err = (&a.output.to_array() - &y32.output.to_array())
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            err > 0.0 && err < 2e-2,
            "{config:?}: bf16 file vs f32 {err}"
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bf16")
        .join(name)
}

/// `tools/fixtures/bf16_file.py`: PyTorch's `module.to(torch.bfloat16)` state_dict with rnn's
/// `config` (no `precision` entry) loads as bf16 with the file's bits and runs within the
/// documented bf16 bound (`rnn::precision`) of the f64 run of the same bf16 weights.
#[test]
fn pytorch_bf16_files_load_as_bf16_within_the_bound() {
    for case in ["lstm", "gru"] {
        let path = fixture(&format!("{case}.model.safetensors"));
        let file = TensorFile::read(&path).unwrap();
        assert!(!file.metadata.contains_key("precision"), "{case}");
        let layer = load_model(&path).unwrap();
        assert_eq!(layer.precision(), Precision::Bf16, "{case}");
        assert_holds_file_bits(&file, &layer, case);

        let io = TensorFile::read(fixture(&format!("{case}.io.safetensors"))).unwrap();
        let x = Tensor::new(io.f32("x").unwrap());
        let out = no_grad(|| layer.forward_states(&x, None, None).unwrap());
        let mut worst = 0.0f64;
        for (key, t) in [("output", Some(&out.output)), ("h_n", Some(&out.h_n))]
            .into_iter()
            .chain([("c_n", out.c_n.as_ref())])
        {
            if let Some(t) = t {
                worst = worst.max(max_abs(&t.to_array(), &io.f64(key).unwrap()));
            }
        }
        let torch = max_abs(
            &io.f32("torch_bf16_output").unwrap(),
            &io.f64("output").unwrap(),
        );
        eprintln!("{case}: rnn bf16 {worst:.2e}, PyTorch bf16 {torch:.2e} (against f64)");
        // Bound of rnn::precision for LSTM and GRU; bf16 products do round (not f32's 1e-6).
        assert!(worst > 1e-5 && worst < 1e-2, "{case}: {worst}");
        // The same weights in f32 products: the file's values are the reference's exactly.
        let f32_layer = layer.to_precision(Precision::F32).unwrap();
        let y = no_grad(|| f32_layer.forward_states(&x, None, None).unwrap());
        let e32 = max_abs(&y.output.to_array(), &io.f64("output").unwrap());
        assert!(
            e32 < 2e-6,
            "{case}: f32 products on the file's weights {e32}"
        );
    }
}

fn message(r: rnn::Result<Recurrent>) -> String {
    match r {
        Ok(m) => panic!("expected an error, loaded {m}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mixed_dtypes_and_disagreeing_metadata_are_errors_naming_the_key() {
    let dir = Dir::new("errors");
    rnn::manual_seed(3);
    let layer = Recurrent::new(RecurrentConfig::new(CellKind::Gru, 3, 4)).unwrap();
    let bf = dir.path("m.bf16.safetensors");
    save_model(&bf, &layer.to_precision(Precision::Bf16).unwrap()).unwrap();
    let f32_path = dir.path("m.safetensors");
    save_model(&f32_path, &layer).unwrap();
    let good = TensorFile::read(&bf).unwrap();
    let write = |f: &TensorFile| {
        let p = dir.path("bad.safetensors");
        f.write(&p).unwrap();
        p
    };

    // F32 biases next to BF16 weights, with and without the precision entry.
    let mut mixed = good.clone();
    mixed.insert("bias_ih_l0", layer.named_parameters()[2].1.to_array());
    let m = message(load_model(write(&mixed)));
    assert!(
        m.contains("\"bias_ih_l0\"") && m.contains("F32") && m.contains("expected BF16"),
        "{m}"
    );
    assert!(m.contains("precision = \"bf16\""), "{m}");
    mixed.metadata.remove("precision");
    let m = message(load_model(write(&mixed)));
    assert!(
        m.contains("\"bias_ih_l0\"") && m.contains("other tensors are BF16"),
        "{m}"
    );

    // precision = "bf16" over an f32 file; precision = "f32" over a bf16 one.
    let mut f = TensorFile::read(&f32_path).unwrap();
    f.metadata.insert("precision".into(), "bf16".into());
    let m = message(load_model(write(&f)));
    assert!(
        m.contains("\"bias_hh_l0\"") && m.contains("expected BF16"),
        "{m}"
    );
    let mut f = good.clone();
    f.metadata.insert("precision".into(), "f32".into());
    let m = message(load_model(write(&f)));
    assert!(
        m.contains("\"bias_hh_l0\"") && m.contains("BF16") && m.contains("\"f32\""),
        "{m}"
    );
    let mut f = good.clone();
    f.metadata.insert("precision".into(), "fp8".into());
    let m = message(load_model(write(&f)));
    assert!(m.contains("\"precision\"") && m.contains("fp8"), "{m}");
    let mut f = good.clone();
    f.metadata.insert("precision".into(), "int8".into());
    let m = message(load_model(write(&f)));
    assert!(m.contains("BF16") && m.contains("I8"), "{m}");

    // Strict: a missing or extra tensor, a wrong shape, a NaN.
    let mut f = good.clone();
    f.tensors.remove("weight_hh_l0");
    let m = message(load_model(write(&f)));
    assert!(
        m.contains("Missing key") && m.contains("weight_hh_l0"),
        "{m}"
    );
    let mut f = good.clone();
    f.insert(
        "extra",
        ArrayD::from_elem(vec![2], half::bf16::from_f32(1.0)),
    );
    let m = message(load_model(write(&f)));
    assert!(m.contains("Unexpected key") && m.contains("extra"), "{m}");
    let mut f = good.clone();
    f.insert(
        "bias_hh_l0",
        ArrayD::from_elem(vec![5], half::bf16::from_f32(1.0)),
    );
    let m = message(load_model(write(&f)));
    assert!(m.contains("size mismatch for bias_hh_l0"), "{m}");
    let mut f = good.clone();
    f.insert("bias_hh_l0", ArrayD::from_elem(vec![12], half::bf16::NAN));
    let m = message(load_model(write(&f)));
    assert!(m.contains("bias_hh_l0") && m.contains("NaN"), "{m}");

    // Saving a value with no finite bf16 names the parameter.
    let big = layer.to_precision(Precision::Bf16).unwrap();
    big.named_parameters()[1].1.data_mut()[[0, 0]] = f32::MAX;
    let e = save_model(dir.path("big.safetensors"), &big)
        .unwrap_err()
        .to_string();
    assert!(e.contains("weight_hh_l0") && e.contains("bf16"), "{e}");
}
