//! Ten optimizer steps on `LSTM(3, 5, batch_first=True)` + `Linear(5, 2)` on the last step with
//! an MSE loss, against PyTorch (fixture `train_lstm_linear.safetensors`): the loss before every
//! step, the gradients of step 1, and every parameter after every step within 1e-5.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::ArrayD;
use rnn::io::{load_state_dict, TensorData, TensorFile};
use rnn::linear::Linear;
use rnn::loss::MSELoss;
use rnn::module::prefixed;
use rnn::optim::{clip_grad_norm_, Adam, Optimizer, Sgd};
use rnn::{Lstm, Module, RecurrentConfig, Tensor};

struct Model {
    rnn: Lstm,
    fc: Linear,
}

impl Module for Model {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = prefixed("rnn", &self.rnn);
        v.extend(prefixed("fc", &self.fc));
        v
    }
}

impl Model {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (out, _) = self.rnn.forward(x, None).unwrap();
        self.fc.forward(&out.select(1, -1).unwrap()).unwrap()
    }
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn ten_steps_match_pytorch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/train_lstm_linear.safetensors");
    let file = TensorFile::read(path).unwrap();
    let x = Tensor::new(file.f32("x").unwrap());
    let y = Tensor::new(file.f32("y").unwrap());
    for case in ["sgd", "adam", "adam_clip"] {
        let model = Model {
            rnn: Lstm::from_config(
                RecurrentConfig::new(rnn::CellKind::Lstm, 3, 5).with_batch_first(true),
            )
            .unwrap(),
            fc: Linear::new(5, 2).unwrap(),
        };
        let init: BTreeMap<String, TensorData> = model
            .named_parameters()
            .into_iter()
            .map(|(n, _)| {
                let t = TensorData::F32(file.f32(&format!("init.{n}")).unwrap());
                (n, t)
            })
            .collect();
        load_state_dict(&model, &init, true).unwrap();
        let params = model.parameters();
        let mut opt: Box<dyn Optimizer> = match case {
            "sgd" => Box::new(
                Sgd::new(params.clone(), 0.1)
                    .unwrap()
                    .with_momentum(0.9)
                    .unwrap(),
            ),
            _ => Box::new(Adam::new(params.clone(), 0.01).unwrap()),
        };
        let losses = file.f32(&format!("{case}.loss")).unwrap();
        for step in 1..=10 {
            opt.zero_grad();
            let loss = MSELoss::new().forward(&model.forward(&x), &y).unwrap();
            let expected_loss = losses[[step - 1]];
            assert!(
                (loss.item().unwrap() - expected_loss).abs() <= 1e-5,
                "{case} step {step}: loss"
            );
            loss.backward().unwrap();
            if step == 1 {
                for (n, p) in model.named_parameters() {
                    let g = file.f32(&format!("{case}.grad1.{n}")).unwrap();
                    let d = max_abs_diff(&p.grad().unwrap(), &g);
                    assert!(d <= 1e-5, "{case} grad {n}: {d}");
                }
            }
            if case == "adam_clip" {
                clip_grad_norm_(&params, 0.5, 2.0).unwrap();
            }
            opt.step().unwrap();
            for (n, p) in model.named_parameters() {
                let e = file.f32(&format!("{case}.step{step}.{n}")).unwrap();
                let d = max_abs_diff(&p.to_array(), &e);
                assert!(d <= 1e-5, "{case} step {step} {n}: max difference {d}");
            }
        }
    }
}
