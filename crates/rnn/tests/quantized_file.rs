//! Quantized model files (`rnn::quantized`): about 4x smaller than the f32 file, loaded as
//! an int8 layer that gives the bits of `quantize_dynamic` on the f32 layer, written back
//! bit-exactly, and strict about what they hold.

use ndarray::ArrayD;
use rnn::io::{TensorData, TensorFile};
use rnn::model_file::{load_model, save_model};
use rnn::quantized::save_quantized;
use rnn::{no_grad, quantize_dynamic, CellKind, Precision, Recurrent, RecurrentConfig, Tensor};

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rnn-quantized-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
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

fn configs() -> Vec<RecurrentConfig> {
    vec![
        RecurrentConfig::new(CellKind::Lstm, 24, 48)
            .with_num_layers(2)
            .with_bidirectional(true),
        RecurrentConfig::new(CellKind::Lstm, 16, 40).with_proj_size(12),
        RecurrentConfig::new(CellKind::Gru, 20, 64).with_linear_before_reset(false),
        RecurrentConfig::new(CellKind::Rnn, 20, 64).with_num_layers(2),
        RecurrentConfig::new(CellKind::Lstm, 10, 32).with_peephole(true),
    ]
}

#[test]
fn quantized_files_are_small_exact_and_round_trip() {
    let dir = Dir::new("round-trip");
    for (k, config) in configs().into_iter().enumerate() {
        rnn::manual_seed(k as u64);
        let f32_layer = Recurrent::new(config.clone()).unwrap();
        let (f32_path, q_path, again) = (
            dir.path(&format!("{k}.safetensors")),
            dir.path(&format!("{k}.int8.safetensors")),
            dir.path(&format!("{k}.again.safetensors")),
        );
        save_model(&f32_path, &f32_layer).unwrap();
        save_quantized(&q_path, &f32_layer).unwrap();
        let (big, small) = (
            std::fs::metadata(&f32_path).unwrap().len() as f64,
            std::fs::metadata(&q_path).unwrap().len() as f64,
        );
        // 4x on the weights; the f32 biases, the scales and the header weigh on small layers.
        let least = if big > 100_000.0 { 3.3 } else { 2.0 };
        assert!(big / small > least, "{config:?}: {big} / {small}");

        let file = TensorFile::read(&q_path).unwrap();
        assert_eq!(file.metadata["precision"], "int8");
        assert_eq!(file.dtype_in_file("weight_ih_l0"), Some("I8"));
        assert_eq!(file.dtype_in_file("weight_ih_l0.scale"), Some("F32"));

        let loaded = load_model(&q_path).unwrap();
        assert_eq!(loaded.precision(), Precision::Int8);
        assert_eq!(loaded.config(), &config);
        let dynamic = quantize_dynamic(&f32_layer).unwrap();
        let x = input(&[5, 3, config.input_size]);
        let a = no_grad(|| loaded.forward_states(&x, None, None).unwrap());
        let b = no_grad(|| dynamic.forward_states(&x, None, None).unwrap());
        assert_eq!(a.output.to_array(), b.output.to_array(), "{config:?}");
        assert_eq!(a.h_n.to_array(), b.h_n.to_array(), "{config:?}");

        save_quantized(&again, &loaded).unwrap();
        assert_eq!(
            std::fs::read(&q_path).unwrap(),
            std::fs::read(&again).unwrap(),
            "{config:?}: the round trip changed the file"
        );
        // Quantizing the dequantized f32 weights again gives the same int8 values (scales
        // within an f32 rounding).
        let dequantized = loaded.to_precision(Precision::F32).unwrap();
        let f32_again = dir.path(&format!("{k}.deq.safetensors"));
        save_model(&f32_again, &dequantized).unwrap();
        let reloaded = quantize_dynamic(&load_model(&f32_again).unwrap()).unwrap();
        let y = no_grad(|| reloaded.forward_states(&x, None, None).unwrap());
        let err = (&y.output.to_array() - &b.output.to_array())
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(err < 1e-5, "{config:?}: requantized layer {err}");
    }
}

#[test]
fn a_quantized_file_is_strict_about_its_tensors() {
    let dir = Dir::new("strict");
    rnn::manual_seed(1);
    let layer = Recurrent::new(RecurrentConfig::new(CellKind::Gru, 4, 8)).unwrap();
    let path = dir.path("q.safetensors");
    save_quantized(&path, &layer).unwrap();
    let file = TensorFile::read(&path).unwrap();
    let broken = |edit: &dyn Fn(&mut TensorFile)| {
        let mut f = file.clone();
        edit(&mut f);
        let p = dir.path("broken.safetensors");
        f.write(&p).unwrap();
        load_model(&p).unwrap_err().to_string()
    };
    let err = broken(&|f| {
        let w = f.tensors["weight_hh_l0"].to_f32();
        f.insert("weight_hh_l0", w);
    });
    assert!(err.contains("weight_hh_l0") && err.contains("I8"), "{err}");
    let err = broken(&|f| {
        f.tensors.remove("weight_ih_l0.scale");
    });
    assert!(
        err.contains("missing") && err.contains("weight_ih_l0.scale"),
        "{err}"
    );
    let err = broken(&|f| {
        let mut s = f.tensors["weight_ih_l0.scale"].to_f32();
        s[[0]] = f32::NAN;
        f.insert("weight_ih_l0.scale", s);
    });
    assert!(err.contains("finite"), "{err}");
    let err = broken(&|f| {
        f.insert("extra", TensorData::F32(ArrayD::zeros(vec![1])));
    });
    assert!(err.contains("unexpected") && err.contains("extra"), "{err}");
}
