//! RMSprop, Adagrad, parameter groups and the schedulers against PyTorch:
//! tools/fixtures/surface_optim.py records the parameters after each of 10 steps with given
//! gradients (two groups where a case has `group1`), and each group's learning rate (and
//! momentum, for OneCycleLR) after each scheduler step.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis};
use rnn::io::TensorFile;
use rnn::optim::{
    Adagrad, Adam, AdamW, Anneal, CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR,
    LrScheduler, OneCycleLR, OneCycleOptions, Optimizer, OptimizerState, ParamGroup, PlateauMode,
    RMSprop, ReduceLROnPlateau, SequentialLR, Sgd, StepLR, ThresholdMode,
};
use rnn::Tensor;
use serde_json::Value;

struct Fixture {
    file: TensorFile,
    steps: usize,
    sched_steps: usize,
    cases: BTreeMap<String, Value>,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/surface_optim.safetensors"
    );
    let file = TensorFile::read(path).expect("run tools/fixtures/surface_optim.py");
    let config: Value = serde_json::from_str(&file.metadata["config"]).unwrap();
    let cases = config["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Fixture {
        steps: config["steps"].as_u64().unwrap() as usize,
        sched_steps: config["sched_steps"].as_u64().unwrap() as usize,
        cases,
        file,
    }
}

fn num(v: &Value, key: &str, default: f64) -> f64 {
    v.get(key).map_or(default, |x| x.as_f64().unwrap())
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| x.as_bool().unwrap())
}

/// PyTorch's keyword arguments of a group as a [`ParamGroup`].
fn group(params: Vec<Tensor>, kw: &Value) -> ParamGroup {
    let mut g = ParamGroup::new(params);
    for (k, v) in kw.as_object().unwrap() {
        g = match k.as_str() {
            "lr" => g.lr(v.as_f64().unwrap()),
            "momentum" => g.momentum(v.as_f64().unwrap()),
            "weight_decay" => g.weight_decay(v.as_f64().unwrap()),
            "betas" => g.betas(v[0].as_f64().unwrap(), v[1].as_f64().unwrap()),
            "amsgrad" => g.amsgrad(v.as_bool().unwrap()),
            "centered" => g.centered(v.as_bool().unwrap()),
            "lr_decay" => g.lr_decay(v.as_f64().unwrap()),
            other => panic!("unknown group option {other}"),
        };
    }
    g
}

/// The optimizer a case describes, over `params` (group 0).
fn optimizer(case: &Value, params: Vec<Tensor>) -> Box<dyn Optimizer> {
    let lr = num(case, "lr", f64::NAN);
    let (b1, b2) = case.get("betas").map_or((0.9, 0.999), |b| {
        (b[0].as_f64().unwrap(), b[1].as_f64().unwrap())
    });
    match case["optimizer"].as_str().unwrap() {
        "SGD" => Box::new(
            Sgd::new(params, lr)
                .unwrap()
                .with_momentum(num(case, "momentum", 0.0))
                .unwrap()
                .with_weight_decay(num(case, "weight_decay", 0.0))
                .unwrap(),
        ),
        "Adam" => Box::new(Adam::new(params, lr).unwrap().with_betas(b1, b2).unwrap()),
        "AdamW" => Box::new(AdamW::new(params, lr).unwrap().with_betas(b1, b2).unwrap()),
        "RMSprop" => Box::new(
            RMSprop::new(params, lr)
                .unwrap()
                .with_alpha(num(case, "alpha", 0.99))
                .unwrap()
                .with_eps(num(case, "eps", 1e-8))
                .unwrap()
                .with_weight_decay(num(case, "weight_decay", 0.0))
                .unwrap()
                .with_momentum(num(case, "momentum", 0.0))
                .unwrap()
                .with_centered(flag(case, "centered"))
                .with_maximize(flag(case, "maximize")),
        ),
        "Adagrad" => Box::new(
            Adagrad::new(params, lr)
                .unwrap()
                .with_lr_decay(num(case, "lr_decay", 0.0))
                .unwrap()
                .with_weight_decay(num(case, "weight_decay", 0.0))
                .unwrap()
                .with_initial_accumulator_value(num(case, "initial_accumulator_value", 0.0))
                .unwrap()
                .with_eps(num(case, "eps", 1e-10))
                .unwrap()
                .with_maximize(flag(case, "maximize")),
        ),
        other => panic!("unknown optimizer {other}"),
    }
}

impl Fixture {
    fn params(&self) -> Vec<Tensor> {
        (0..4)
            .map(|k| Tensor::parameter(self.file.f32(&format!("param{k}")).unwrap()))
            .collect()
    }

    /// The case's optimizer over fresh parameters, with its second group if it has one.
    fn build(&self, case: &Value) -> (Vec<Tensor>, Box<dyn Optimizer>) {
        let params = self.params();
        let opt = match case.get("group1") {
            Some(kw) => {
                let mut opt = optimizer(case, params[..2].to_vec());
                opt.add_param_group(group(params[2..].to_vec(), kw))
                    .unwrap();
                assert_eq!(opt.num_groups(), 2);
                opt
            }
            None => optimizer(case, params.clone()),
        };
        (params, opt)
    }

    fn step(&self, params: &[Tensor], opt: &mut dyn Optimizer, s: usize) {
        opt.zero_grad();
        for (k, p) in params.iter().enumerate() {
            let g = self.file.f32(&format!("grad{k}")).unwrap();
            p.set_grad(Some(g.index_axis(Axis(0), s).to_owned()));
        }
        opt.step().unwrap();
    }

    fn expected(&self, case: &str, k: usize, s: usize) -> ArrayD<f32> {
        let all = self.file.f32(&format!("{case}.param{k}")).unwrap();
        all.index_axis(Axis(0), s).to_owned()
    }
}

#[test]
fn rmsprop_adagrad_and_groups_match_pytorch_at_every_step() {
    let fx = fixture();
    let cases: Vec<_> = fx
        .cases
        .iter()
        .filter(|(_, c)| c.get("scheduler").is_none())
        .collect();
    assert_eq!(cases.len(), 12);
    for (name, case) in cases {
        let (params, mut opt) = fx.build(case);
        let mut max_diff = 0f32;
        for s in 0..fx.steps {
            fx.step(&params, opt.as_mut(), s);
            for (k, p) in params.iter().enumerate() {
                let (got, want) = (p.to_array(), fx.expected(name, k, s));
                for (&g, &w) in got.iter().zip(want.iter()) {
                    let d = (g - w).abs();
                    assert!(
                        d <= 1e-6 || d <= 1e-5 * w.abs(),
                        "{name}: param{k} after step {}: got {g}, PyTorch {w}",
                        s + 1
                    );
                    max_diff = max_diff.max(d);
                }
            }
        }
        eprintln!("{name}: max |difference| {max_diff:e}");
    }
}

#[test]
fn group_states_save_and_resume_bit_for_bit() {
    let fx = fixture();
    for (name, case) in fx
        .cases
        .iter()
        .filter(|(_, c)| c.get("scheduler").is_none())
    {
        let (params, mut opt) = fx.build(case);
        (0..fx.steps).for_each(|s| fx.step(&params, opt.as_mut(), s));
        let straight: Vec<_> = params.iter().map(Tensor::to_array).collect();

        let (params, mut opt) = fx.build(case);
        (0..4).for_each(|s| fx.step(&params, opt.as_mut(), s));
        let file = opt.state_dict().to_file();
        let state = OptimizerState::from_file(&file).unwrap();
        let (params2, mut opt2) = fx.build(case);
        for (a, b) in params2.iter().zip(&params) {
            *a.data_mut() = b.to_array();
        }
        // A fresh optimizer with another learning rate in every group: the state restores it.
        opt2.set_lr(123.0);
        opt2.load_state_dict(&state).unwrap();
        for g in 0..opt.num_groups() {
            assert_eq!(opt2.group_lr(g), opt.group_lr(g), "{name}: group {g} lr");
        }
        (4..fx.steps).for_each(|s| fx.step(&params2, opt2.as_mut(), s));
        for (k, (p, want)) in params2.iter().zip(&straight).enumerate() {
            assert!(
                p.to_array()
                    .iter()
                    .zip(want.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: param{k} after resuming differs"
            );
        }
        // A state with two groups does not load into one with one group, and vice versa.
        if case.get("group1").is_some() {
            let mut single = optimizer(case, fx.params());
            let err = single.load_state_dict(&state).unwrap_err().to_string();
            assert!(
                err.contains("parameters") || err.contains("groups"),
                "{err}"
            );
        }
    }
}

#[test]
fn group_options_are_checked() {
    let p = || Tensor::parameter(ndarray::array![1.0f32].into_dyn());
    let a = p();
    let mut adagrad = Adagrad::new(vec![a.clone()], 0.1).unwrap();
    let err = adagrad
        .add_param_group(ParamGroup::new(vec![p()]).momentum(0.9))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Adagrad has no hyperparameter \"momentum\""),
        "{err}"
    );
    let err = adagrad
        .add_param_group(ParamGroup::new(vec![a.clone()]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than one parameter group"), "{err}");
    let mut sgd = Sgd::new(vec![a], 0.1).unwrap();
    let err = sgd
        .add_param_group(ParamGroup::new(vec![p()]).lr(-1.0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Invalid learning rate: -1"), "{err}");
    let err = sgd
        .add_param_group(ParamGroup::new(vec![p()]).nesterov(true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Nesterov momentum requires"), "{err}");
    assert_eq!(sgd.num_groups(), 1, "failed adds add nothing");
    let err = RMSprop::new(vec![p()], 0.1)
        .unwrap()
        .with_alpha(-0.5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Invalid alpha value: -0.5"), "{err}");
    let err = Adagrad::new(vec![p()], 0.1)
        .unwrap()
        .with_lr_decay(-1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Invalid lr_decay value"), "{err}");
}

/// The optimizer of a scheduler case: two groups, `lr` and `group1_lr`.
fn sched_optimizer(case: &Value) -> Box<dyn Optimizer> {
    let mut opt = optimizer(case, vec![Tensor::parameter(ArrayD::zeros(vec![2]))]);
    opt.add_param_group(
        ParamGroup::new(vec![Tensor::parameter(ArrayD::zeros(vec![3]))])
            .lr(case["group1_lr"].as_f64().unwrap()),
    )
    .unwrap();
    opt
}

fn lambda(e: i64) -> f64 {
    // 0.9 ** e / (1 + e % 3), with Python's pow.
    0.9f64.powf(e as f64) / (1 + e % 3) as f64
}

/// A scheduler of the fixture (not ReduceLROnPlateau) from its name and arguments.
fn scheduler(opt: &mut dyn Optimizer, name: &str, args: &Value) -> Box<dyn LrScheduler> {
    let f = |k: &str, d: f64| num(args, k, d);
    match name {
        "ExponentialLR" => Box::new(ExponentialLR::new(opt, f("gamma", f64::NAN)).unwrap()),
        "LinearLR" => Box::new(
            LinearLR::new(
                opt,
                f("start_factor", LinearLR::DEFAULT_START_FACTOR),
                f("end_factor", 1.0),
                f("total_iters", 5.0) as usize,
            )
            .unwrap(),
        ),
        "LambdaLR" => Box::new(LambdaLR::new(opt, lambda)),
        "StepLR" => Box::new(StepLR::new(f("step_size", 0.0) as usize, f("gamma", 0.1)).unwrap()),
        "CosineAnnealingLR" => {
            Box::new(CosineAnnealingLR::new(f("T_max", 0.0) as usize, f("eta_min", 0.0)).unwrap())
        }
        "SequentialLR" => {
            let children = args["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| scheduler(opt, c[0].as_str().unwrap(), &c[1]))
                .collect();
            let milestones = args["milestones"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_i64().unwrap())
                .collect();
            Box::new(SequentialLR::new(opt, children, milestones).unwrap())
        }
        "OneCycleLR" => {
            let mut o = OneCycleOptions::new(0.0, f("total_steps", 0.0) as usize);
            o.max_lr = match &args["max_lr"] {
                Value::Array(v) => v.iter().map(|x| x.as_f64().unwrap()).collect(),
                v => vec![v.as_f64().unwrap()],
            };
            o.pct_start = f("pct_start", 0.3);
            if args.get("anneal_strategy").is_some_and(|s| s == "linear") {
                o.anneal_strategy = Anneal::Linear;
            }
            o.cycle_momentum = args.get("cycle_momentum").is_none_or(|v| v == true);
            o.base_momentum = f("base_momentum", 0.85);
            o.max_momentum = f("max_momentum", 0.95);
            o.div_factor = f("div_factor", 25.0);
            o.final_div_factor = f("final_div_factor", 1e4);
            o.three_phase = flag(args, "three_phase");
            Box::new(OneCycleLR::with_options(opt, o).unwrap())
        }
        other => panic!("unknown scheduler {other}"),
    }
}

fn plateau(opt: &dyn Optimizer, args: &Value) -> ReduceLROnPlateau {
    let mut s = ReduceLROnPlateau::new(opt)
        .with_mode(if args["mode"] == "max" {
            PlateauMode::Max
        } else {
            PlateauMode::Min
        })
        .with_factor(num(args, "factor", 0.1))
        .unwrap()
        .with_patience(num(args, "patience", 10.0) as usize)
        .with_threshold(
            num(args, "threshold", 1e-4),
            if args.get("threshold_mode").is_some_and(|m| m == "abs") {
                ThresholdMode::Abs
            } else {
                ThresholdMode::Rel
            },
        )
        .unwrap()
        .with_cooldown(num(args, "cooldown", 0.0) as usize)
        .with_eps(num(args, "eps", 1e-8));
    if let Some(m) = args.get("min_lr") {
        let m: Vec<f64> = match m {
            Value::Array(v) => v.iter().map(|x| x.as_f64().unwrap()).collect(),
            v => vec![v.as_f64().unwrap()],
        };
        s = s.with_min_lr(&m).unwrap();
    }
    s
}

#[track_caller]
fn assert_same(what: &str, got: &[f64], want: &ArrayD<f64>) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (e, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what} at epoch {e}: {g} vs PyTorch {w}\ngot  {got:?}\nwant {want}"
        );
    }
}

#[test]
fn schedulers_match_pytorch_to_the_bit_on_every_group() {
    let fx = fixture();
    let cases: Vec<_> = fx
        .cases
        .iter()
        .filter(|(_, c)| c.get("scheduler").is_some())
        .collect();
    assert_eq!(cases.len(), 16);
    for (name, case) in cases {
        let mut opt = sched_optimizer(case);
        let sched_name = case["scheduler"].as_str().unwrap();
        let mut lrs = vec![vec![opt.group_lr(0)], vec![opt.group_lr(1)]];
        let mut moms = vec![vec![], vec![]];
        if sched_name == "ReduceLROnPlateau" {
            let metrics = fx.file.f64(&format!("{name}.metrics")).unwrap();
            let mut s = plateau(opt.as_ref(), &case["args"]);
            for &m in metrics.iter() {
                s.step(m, opt.as_mut());
                for (g, lr) in lrs.iter_mut().enumerate() {
                    lr.push(opt.group_lr(g));
                }
            }
            assert_eq!(s.last_lrs(), [opt.group_lr(0), opt.group_lr(1)]);
        } else {
            let mut s = scheduler(opt.as_mut(), sched_name, &case["args"]);
            let record =
                |opt: &dyn Optimizer, lrs: &mut Vec<Vec<f64>>, moms: &mut Vec<Vec<f64>>| {
                    for g in 0..2 {
                        lrs[g].push(opt.group_lr(g));
                        moms[g].push(opt.group_momentum(g).unwrap_or(f64::NAN));
                    }
                };
            lrs = vec![vec![], vec![]];
            record(opt.as_ref(), &mut lrs, &mut moms);
            for _ in 0..fx.sched_steps {
                s.step(opt.as_mut());
                record(opt.as_ref(), &mut lrs, &mut moms);
                assert_eq!(s.last_lrs(), [opt.group_lr(0), opt.group_lr(1)], "{name}");
            }
        }
        for g in 0..2 {
            let want = fx.file.f64(&format!("{name}.lr{g}")).unwrap();
            assert_same(&format!("{name}: lr of group {g}"), &lrs[g], &want);
            let key = format!("{name}.momentum{g}");
            if fx.file.contains(&key) {
                assert_same(
                    &format!("{name}: momentum of group {g}"),
                    &moms[g],
                    &fx.file.f64(&key).unwrap(),
                );
            }
        }
    }
}

#[test]
fn scheduler_states_resume_exactly() {
    let fx = fixture();
    for (name, case) in fx
        .cases
        .iter()
        .filter(|(_, c)| c.get("scheduler").is_some())
    {
        let sched_name = case["scheduler"].as_str().unwrap();
        let run = |split: Option<usize>| -> Vec<f64> {
            let mut opt = sched_optimizer(case);
            let metrics = fx.file.f64(&format!("{name}.metrics")).ok();
            if sched_name == "ReduceLROnPlateau" {
                let metrics = metrics.unwrap();
                let mut s = plateau(opt.as_ref(), &case["args"]);
                for (i, &m) in metrics.iter().enumerate() {
                    if split == Some(i) {
                        let state = s.state_dict();
                        let opt_state = opt.state_dict();
                        opt = sched_optimizer(case);
                        opt.load_state_dict(&opt_state).unwrap();
                        s = ReduceLROnPlateau::new(opt.as_ref());
                        s.load_state_dict(&state).unwrap();
                    }
                    s.step(m, opt.as_mut());
                }
            } else {
                let mut s = scheduler(opt.as_mut(), sched_name, &case["args"]);
                for i in 0..fx.sched_steps {
                    if split == Some(i) {
                        let state = s.state_dict();
                        let opt_state = opt.state_dict();
                        opt = sched_optimizer(case);
                        s = scheduler(opt.as_mut(), sched_name, &case["args"]);
                        opt.load_state_dict(&opt_state).unwrap();
                        s.load_state_dict(&state).unwrap();
                        assert_eq!(s.last_epoch(), i as i64, "{name}");
                    }
                    s.step(opt.as_mut());
                }
            }
            vec![
                opt.group_lr(0),
                opt.group_lr(1),
                opt.group_momentum(0).unwrap_or(0.0),
            ]
        };
        let straight = run(None);
        for split in [1, 7] {
            let resumed = run(Some(split));
            assert!(
                straight
                    .iter()
                    .zip(&resumed)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: resumed at {split}: {resumed:?} vs {straight:?}"
            );
        }
    }
}

#[test]
fn scheduler_errors_are_pytorchs() {
    let mut opt = Sgd::new(vec![Tensor::parameter(ArrayD::zeros(vec![1]))], 0.1).unwrap();
    let err = OneCycleLR::new(&mut opt, 0.1, 0).unwrap_err().to_string();
    assert!(
        err.contains("Expected positive integer total_steps, but got 0"),
        "{err}"
    );
    let mut o = OneCycleOptions::new(0.1, 10);
    o.pct_start = 1.5;
    let err = OneCycleLR::with_options(&mut opt, o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Expected float between 0 and 1 pct_start, but got 1.5"),
        "{err}"
    );
    let mut adagrad = Adagrad::new(vec![Tensor::parameter(ArrayD::zeros(vec![1]))], 0.1).unwrap();
    let err = OneCycleLR::new(&mut adagrad, 0.1, 10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
        ),
        "{err}"
    );
    let mut s = OneCycleLR::new(&mut opt, 0.1, 2).unwrap();
    s.try_step(&mut opt).unwrap();
    s.try_step(&mut opt).unwrap();
    let err = s.try_step(&mut opt).unwrap_err().to_string();
    assert!(
        err.contains("Tried to step 3 times. The specified number of total steps is 2"),
        "{err}"
    );
    let err = LinearLR::new(&mut opt, 0.0, 1.0, 5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Starting multiplicative factor expected to be greater than 0"),
        "{err}"
    );
    let err = ReduceLROnPlateau::new(&opt)
        .with_factor(1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Factor should be < 1.0"), "{err}");
    let child: Box<dyn LrScheduler> = Box::new(ExponentialLR::new(&mut opt, 0.9).unwrap());
    let err = SequentialLR::new(&mut opt, vec![child], vec![3])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("one more than the number of milestone points"),
        "{err}"
    );
}
