//! Optimizers, clipping and schedulers against PyTorch: tools/fixtures/optim.py records the
//! parameters after each of 10 steps with given gradients, the clipped gradients and total
//! norms, and the learning rates of the schedulers.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis};
use rnn::io::TensorFile;
use rnn::optim::{
    clip_grad_norm_, clip_grad_value_, Adam, AdamW, CosineAnnealingLR, LrScheduler, Optimizer,
    OptimizerState, Sgd, StepLR,
};
use rnn::Tensor;
use serde_json::Value;

struct Fixture {
    file: TensorFile,
    steps: usize,
    num_params: usize,
    cases: BTreeMap<String, Value>,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/optim.safetensors"
    );
    let file = TensorFile::read(path).expect("run tools/fixtures/optim.py to make the fixture");
    let config: Value = serde_json::from_str(&file.metadata["config"]).unwrap();
    let cases = config["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Fixture {
        steps: config["steps"].as_u64().unwrap() as usize,
        num_params: config["num_params"].as_u64().unwrap() as usize,
        cases,
        file,
    }
}

impl Fixture {
    fn f32(&self, key: &str) -> ArrayD<f32> {
        self.file.f32(key).unwrap()
    }

    /// Fresh parameters with the initial values, plus one parameter that never gets a gradient,
    /// inserted at index 2 (it must never change, and it shifts the state's indices).
    fn params(&self) -> (Vec<Tensor>, Vec<Tensor>) {
        let fixed: Vec<Tensor> = (0..self.num_params)
            .map(|k| Tensor::parameter(self.f32(&format!("param{k}"))))
            .collect();
        let mut all = fixed.clone();
        all.insert(
            2,
            Tensor::parameter(ArrayD::from_elem(ndarray::IxDyn(&[2, 2]), 0.5)),
        );
        (fixed, all)
    }

    /// The gradient of parameter `k` at step `s`.
    fn grad(&self, k: usize, s: usize) -> ArrayD<f32> {
        self.f32(&format!("grad{k}"))
            .index_axis(Axis(0), s)
            .to_owned()
    }

    fn set_grads(&self, params: &[Tensor], s: usize) {
        for (k, p) in params.iter().enumerate() {
            p.set_grad(Some(self.grad(k, s)));
        }
    }

    /// PyTorch's value of `{case}.{name}{k}` at step `s`.
    fn expected(&self, case: &str, name: &str, k: usize, s: usize) -> ArrayD<f32> {
        self.f32(&format!("{case}.{name}{k}"))
            .index_axis(Axis(0), s)
            .to_owned()
    }
}

fn num(v: &Value, key: &str, default: f64) -> f64 {
    v.get(key).map_or(default, |x| x.as_f64().unwrap())
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| x.as_bool().unwrap())
}

/// The optimizer a fixture case describes (PyTorch's keyword arguments).
fn optimizer(case: &Value, params: Vec<Tensor>) -> Box<dyn Optimizer> {
    let lr = num(case, "lr", f64::NAN);
    let betas = case
        .get("betas")
        .map(|b| (b[0].as_f64().unwrap(), b[1].as_f64().unwrap()));
    let (beta1, beta2) = betas.unwrap_or((0.9, 0.999));
    match case["optimizer"].as_str().unwrap() {
        "SGD" => Box::new(
            Sgd::new(params, lr)
                .unwrap()
                .with_momentum(num(case, "momentum", 0.0))
                .unwrap()
                .with_dampening(num(case, "dampening", 0.0))
                .unwrap()
                .with_weight_decay(num(case, "weight_decay", 0.0))
                .unwrap()
                .with_nesterov(flag(case, "nesterov"))
                .unwrap()
                .with_maximize(flag(case, "maximize")),
        ),
        "Adam" => Box::new(
            Adam::new(params, lr)
                .unwrap()
                .with_betas(beta1, beta2)
                .unwrap()
                .with_eps(num(case, "eps", 1e-8))
                .unwrap()
                .with_weight_decay(num(case, "weight_decay", 0.0))
                .unwrap()
                .with_amsgrad(flag(case, "amsgrad"))
                .with_maximize(flag(case, "maximize")),
        ),
        "AdamW" => Box::new(
            AdamW::new(params, lr)
                .unwrap()
                .with_betas(beta1, beta2)
                .unwrap()
                .with_eps(num(case, "eps", 1e-8))
                .unwrap()
                .with_weight_decay(num(case, "weight_decay", 0.01))
                .unwrap()
                .with_amsgrad(flag(case, "amsgrad"))
                .with_maximize(flag(case, "maximize")),
        ),
        other => panic!("unknown optimizer {other}"),
    }
}

fn scheduler(case: &Value) -> Option<Box<dyn LrScheduler>> {
    match case.get("scheduler")?.as_str().unwrap() {
        "StepLR" => Some(Box::new(
            StepLR::new(
                case["step_size"].as_u64().unwrap() as usize,
                num(case, "gamma", 0.1),
            )
            .unwrap(),
        )),
        "CosineAnnealingLR" => Some(Box::new(
            CosineAnnealingLR::new(
                case["T_max"].as_u64().unwrap() as usize,
                num(case, "eta_min", 0.0),
            )
            .unwrap(),
        )),
        other => panic!("unknown scheduler {other}"),
    }
}

/// Agreement within 1e-6 absolute or 1e-5 relative; returns (max abs difference, whether
/// every value is bit-identical).
#[track_caller]
fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) -> (f32, bool) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let mut max_diff = 0.0f32;
    let mut exact = true;
    for (&g, &w) in got.iter().zip(want.iter()) {
        let d = (g - w).abs();
        assert!(
            d <= 1e-6 || d <= 1e-5 * w.abs(),
            "{what}: got {g}, PyTorch {w} (difference {d})\ngot  {got}\nwant {want}"
        );
        max_diff = max_diff.max(d);
        exact &= g.to_bits() == w.to_bits();
    }
    (max_diff, exact)
}

fn optimizer_cases(fx: &Fixture) -> Vec<(String, Value)> {
    fx.cases
        .iter()
        .filter(|(_, c)| c.get("optimizer").is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn optimizers_match_pytorch_at_every_step() {
    let fx = fixture();
    let cases = optimizer_cases(&fx);
    assert_eq!(cases.len(), 17, "the fixture's optimizer cases");
    for (name, case) in cases {
        let (params, all) = fx.params();
        let frozen = all[2].to_array();
        let mut opt = optimizer(&case, all.clone());
        let mut sched = scheduler(&case);
        let mut lrs = vec![opt.lr()];
        let (mut max_diff, mut exact) = (0.0f32, true);
        for s in 0..fx.steps {
            opt.zero_grad();
            assert!(
                params.iter().all(|p| p.grad().is_none()),
                "zero_grad sets grads to None"
            );
            fx.set_grads(&params, s);
            opt.step().unwrap();
            for (k, p) in params.iter().enumerate() {
                let want = fx.expected(&name, "param", k, s);
                let (d, e) = assert_close(
                    &format!("{name}: param{k} after step {}", s + 1),
                    &p.to_array(),
                    &want,
                );
                max_diff = max_diff.max(d);
                exact &= e;
            }
            assert_eq!(
                all[2].to_array(),
                frozen,
                "{name}: a parameter without grad is skipped"
            );
            if let Some(sched) = sched.as_mut() {
                sched.step(opt.as_mut());
                assert_eq!(sched.last_lr(), Some(opt.lr()));
                lrs.push(opt.lr());
            }
        }
        let state = opt.state_dict();
        assert!(
            !state
                .tensors
                .keys()
                .chain(state.scalars.keys())
                .any(|k| k.ends_with(".2")),
            "{name}: no state for the parameter that never had a gradient: {:?}",
            state.tensors.keys().collect::<Vec<_>>()
        );
        if sched.is_some() {
            let want = fx.file.f64(&format!("{name}.lr")).unwrap();
            assert_eq!(lrs.len(), want.len());
            for (e, (&got, &want)) in lrs.iter().zip(want.iter()).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-12,
                    "{name}: lr at epoch {e}: {got} vs PyTorch {want}"
                );
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{name}: lr at epoch {e} is PyTorch's to the bit"
                );
            }
        }
        // SGD is a chain of exactly-specified f32 operations (fma included): bit for bit.
        if case["optimizer"] == "SGD" {
            assert!(
                exact,
                "{name}: SGD should match PyTorch bit for bit (max difference {max_diff})"
            );
        }
        eprintln!("{name}: max |difference| {max_diff:e}, bit-identical: {exact}");
    }
}

#[test]
fn clipping_matches_pytorch() {
    let fx = fixture();
    let cases: Vec<_> = fx
        .cases
        .iter()
        .filter(|(_, c)| c.get("fn").is_some())
        .collect();
    assert_eq!(cases.len(), 5);
    for (name, case) in cases {
        let (params, _) = fx.params();
        for s in 0..fx.steps {
            fx.set_grads(&params, s);
            if case["fn"] == "value" {
                clip_grad_value_(&params, num(case, "clip_value", f64::NAN)).unwrap();
            } else {
                let norm_type = match &case["norm_type"] {
                    Value::String(s) if s == "inf" => f64::INFINITY,
                    v => v.as_f64().unwrap(),
                };
                let total =
                    clip_grad_norm_(&params, num(case, "max_norm", f64::NAN), norm_type).unwrap();
                let want = fx.f32(&format!("{name}.total_norm"))[s];
                let d = (total - want).abs();
                assert!(
                    d <= 1e-5 * want.abs(),
                    "{name}: total norm at step {s}: {total} vs PyTorch {want}"
                );
            }
            for (k, p) in params.iter().enumerate() {
                let want = fx.expected(name, "grad", k, s);
                assert_close(
                    &format!("{name}: grad{k} at step {s}"),
                    &p.grad().unwrap(),
                    &want,
                );
            }
        }
    }
}

/// Runs `steps` steps of a case from step `from`, with its scheduler.
fn run(
    fx: &Fixture,
    params: &[Tensor],
    opt: &mut dyn Optimizer,
    sched: &mut Option<Box<dyn LrScheduler>>,
    from: usize,
    to: usize,
) {
    for s in from..to {
        opt.zero_grad();
        fx.set_grads(params, s);
        opt.step().unwrap();
        if let Some(sched) = sched.as_mut() {
            sched.step(opt);
        }
    }
}

#[test]
fn saving_and_loading_mid_run_continues_bit_for_bit() {
    let fx = fixture();
    let dir = std::env::temp_dir().join(format!("rnn-optim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, case) in optimizer_cases(&fx) {
        // Uninterrupted.
        let (params, all) = fx.params();
        let mut opt = optimizer(&case, all);
        let mut sched = scheduler(&case);
        run(&fx, &params, opt.as_mut(), &mut sched, 0, fx.steps);
        let straight: Vec<_> = params.iter().map(Tensor::to_array).collect();

        // Five steps, save optimizer and parameters to disk, resume in new objects.
        let (params, all) = fx.params();
        let mut opt = optimizer(&case, all.clone());
        let mut sched = scheduler(&case);
        run(&fx, &params, opt.as_mut(), &mut sched, 0, 5);
        let path = dir.join(format!("{name}.safetensors"));
        opt.state_dict().to_file().write(&path).unwrap();
        let sched_state = sched.as_ref().map(|s| s.state_dict());

        let (params2, all2) = fx.params();
        for (new, old) in all2.iter().zip(&all) {
            *new.data_mut() = old.to_array();
        }
        // Built with other hyperparameters: the loaded state replaces them, as in PyTorch.
        let mut other = case.clone();
        other["lr"] = Value::from(123.0);
        let mut opt2 = optimizer(&other, all2);
        let state = OptimizerState::from_file(&TensorFile::read(&path).unwrap()).unwrap();
        assert_eq!(
            state,
            opt.state_dict(),
            "{name}: the file holds the state exactly"
        );
        opt2.load_state_dict(&state).unwrap();
        assert_eq!(opt2.lr().to_bits(), opt.lr().to_bits());
        let mut sched2 = scheduler(&case);
        if let (Some(s2), Some(saved)) = (sched2.as_mut(), &sched_state) {
            s2.load_state_dict(saved).unwrap();
            assert_eq!(s2.last_epoch(), 5);
        }
        run(&fx, &params2, opt2.as_mut(), &mut sched2, 5, fx.steps);
        for (k, (p, want)) in params2.iter().zip(&straight).enumerate() {
            let got = p.to_array();
            let same = got
                .iter()
                .zip(want.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{name}: param{k} after resuming differs:\n{got}\nvs\n{want}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_a_mismatched_state_fails_and_says_why() {
    let fx = fixture();
    let (params, all) = fx.params();
    let mut sgd = Sgd::new(all.clone(), 0.1)
        .unwrap()
        .with_momentum(0.9)
        .unwrap();
    fx.set_grads(&params, 0);
    sgd.step().unwrap();
    let state = sgd.state_dict();

    let mut adam = Adam::new(all.clone(), 0.1).unwrap();
    let err = adam.load_state_dict(&state).unwrap_err().to_string();
    assert!(err.contains("\"sgd\"") && err.contains("\"adam\""), "{err}");

    // Same count, one shape different (parameter 3 is (2, 3, 4)).
    let mut shapes = all.clone();
    shapes[3] = Tensor::parameter(ArrayD::zeros(ndarray::IxDyn(&[4, 3, 2])));
    let mut sgd2 = Sgd::new(shapes, 0.5).unwrap();
    let err = sgd2.load_state_dict(&state).unwrap_err().to_string();
    assert!(
        err.contains("momentum_buffer.3") && err.contains("(2, 3, 4)") && err.contains("(4, 3, 2)"),
        "{err}"
    );
    assert_eq!(sgd2.lr(), 0.5, "a failed load changes nothing");

    let mut fewer = Sgd::new(all[..3].to_vec(), 0.1).unwrap();
    let err = fewer.load_state_dict(&state).unwrap_err().to_string();
    assert!(
        err.contains("5 parameters") && err.contains("has 3"),
        "{err}"
    );
}
