//! The cell variants beyond PyTorch's layers (`"linear_before_reset": false` for GRU,
//! `"peephole": true` for LSTM) as a user meets them: their configuration keys, their
//! parameters, their errors, the one-step cells, and how a fresh peephole LSTM relates to the
//! plain one. Their numbers are checked against ONNX Runtime in `recurrent_parity.rs` and
//! `packed.rs`, and against finite differences in `finite_difference.rs`.

use rnn::{CellKind, GruCell, Lstm, LstmCell, Module, Recurrent, RecurrentConfig, Rng, Tensor};

fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    Tensor::new(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), v).unwrap())
}

#[test]
fn configuration_keys_are_absent_for_pytorchs_cells() {
    let plain = RecurrentConfig::new(CellKind::Gru, 3, 4);
    let json = plain.to_json();
    assert!(
        !json.contains("linear_before_reset") && !json.contains("peephole"),
        "{json}"
    );
    let variant = plain.clone().with_linear_before_reset(false);
    let json = variant.to_json();
    assert!(json.contains("\"linear_before_reset\":false"), "{json}");
    assert_eq!(RecurrentConfig::from_json(&json).unwrap(), variant);
    let lstm = RecurrentConfig::from_json(
        r#"{"cell": "lstm", "input_size": 3, "hidden_size": 4,
        "peephole": true}"#,
    )
    .unwrap();
    assert!(lstm.peephole);
    assert_eq!(
        RecurrentConfig::from_json(r#"{"cell": "gru", "input_size": 3, "hidden_size": 4}"#)
            .unwrap(),
        plain
    );
}

#[test]
fn options_of_another_cell_are_refused_by_name() {
    let err = |c: RecurrentConfig| Recurrent::new(c).unwrap_err().to_string();
    let e = err(RecurrentConfig::new(CellKind::Gru, 3, 4).with_peephole(true));
    assert!(e.contains("peephole is an option of LSTM only"), "{e}");
    let e = err(RecurrentConfig::new(CellKind::Lstm, 3, 4).with_linear_before_reset(false));
    assert!(
        e.contains("linear_before_reset is an option of GRU only"),
        "{e}"
    );
    let e = err(RecurrentConfig::new(CellKind::Rnn, 3, 4).with_peephole(true));
    assert!(e.contains("RNN"), "{e}");
}

#[test]
fn peephole_weights_are_named_shaped_and_zero() {
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_peephole(true)
        .with_bidirectional(true)
        .with_proj_size(2);
    let layer = Lstm::from_config(config).unwrap();
    let names: Vec<String> = layer
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "bias_ih_l0",
            "bias_hh_l0",
            "weight_hr_l0",
            "weight_ph_l0",
            "weight_ih_l0_reverse",
            "weight_hh_l0_reverse",
            "bias_ih_l0_reverse",
            "bias_hh_l0_reverse",
            "weight_hr_l0_reverse",
            "weight_ph_l0_reverse",
        ]
    );
    let ph = &layer.named_parameters()[5].1;
    assert_eq!(ph.shape(), vec![12]);
    assert!(ph.to_array().iter().all(|&v| v == 0.0));
    assert!(layer.to_string().contains("peephole=True"), "{layer}");
}

/// With its peepholes at zero (as initialised), the peephole LSTM adds exact zeros to the
/// plain LSTM's pre-activations: the same outputs, bit for bit, and the same gradients of the
/// shared parameters.
#[test]
fn a_fresh_peephole_lstm_is_the_plain_lstm() {
    let base = RecurrentConfig::new(CellKind::Lstm, 5, 70).with_num_layers(2);
    let plain = Lstm::with_rng(base.clone(), &mut Rng::new(3)).unwrap();
    let peep = Lstm::with_rng(base.with_peephole(true), &mut Rng::new(3)).unwrap();
    let mut rng = Rng::new(4);
    let x = randn(&mut rng, &[6, 3, 5]);
    let (a, (ha, ca)) = plain.forward(&x, None).unwrap();
    let (b, (hb, cb)) = peep.forward(&x, None).unwrap();
    assert_eq!(a.to_array(), b.to_array());
    assert_eq!(ha.to_array(), hb.to_array());
    assert_eq!(ca.to_array(), cb.to_array());
    a.sum().backward().unwrap();
    b.sum().backward().unwrap();
    let pb = peep.named_parameters();
    for (name, p) in plain.named_parameters() {
        let q = &pb.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(p.grad(), q.grad(), "{name}");
    }
    let ph = &pb.iter().find(|(n, _)| n == "weight_ph_l1").unwrap().1;
    assert!(ph.grad().unwrap().iter().any(|&g| g != 0.0));
}

/// The one-step cells take the variants too, and agree with their layers.
#[test]
fn cells_run_the_variants() {
    let gru = RecurrentConfig::new(CellKind::Gru, 3, 4).with_linear_before_reset(false);
    let cell = GruCell::with_rng(gru.clone(), &mut Rng::new(1)).unwrap();
    let layer = rnn::Gru::with_rng(gru, &mut Rng::new(1)).unwrap();
    let mut rng = Rng::new(2);
    let x = randn(&mut rng, &[2, 3]);
    let h = randn(&mut rng, &[2, 4]);
    let step = cell.forward(&x, Some(&h)).unwrap();
    let (_, h_n) = layer
        .forward(
            &x.reshape(&[1, 2, 3]).unwrap(),
            Some(&h.reshape(&[1, 2, 4]).unwrap()),
        )
        .unwrap();
    assert_eq!(step.to_array(), h_n.reshape(&[2, 4]).unwrap().to_array());

    let lstm = RecurrentConfig::new(CellKind::Lstm, 3, 4).with_peephole(true);
    let cell = LstmCell::with_rng(lstm, &mut Rng::new(1)).unwrap();
    let names: Vec<String> = cell
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"weight_ph".to_string()), "{names:?}");
    let (h1, c1) = cell.forward(&x, None).unwrap();
    assert_eq!(h1.shape(), vec![2, 4]);
    assert_eq!(c1.shape(), vec![2, 4]);
}

/// The layer-normalised LSTM (`"layer_norm": true`): its key, its parameters (named, shaped,
/// ones and zeros as `torch.nn.LayerNorm`'s), its refusals, and its one-step cell.
#[test]
fn layer_norm_lstm_is_configured_named_and_initialised() {
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_layer_norm(true)
        .with_bidirectional(true)
        .with_proj_size(2);
    let json = config.to_json();
    assert!(json.contains("\"layer_norm\":true"), "{json}");
    assert_eq!(RecurrentConfig::from_json(&json).unwrap(), config);
    assert!(!RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .to_json()
        .contains("layer_norm"));
    let layer = Lstm::from_config(config.clone()).unwrap();
    let params = layer.named_parameters();
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..9],
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "bias_ih_l0",
            "bias_hh_l0",
            "weight_hr_l0",
            "ln_ih_weight_l0",
            "ln_hh_weight_l0",
            "ln_c_weight_l0",
            "ln_c_bias_l0",
        ]
    );
    assert_eq!(names[9..].len(), 9);
    assert!(
        names[9..].iter().all(|n| n.ends_with("_reverse")),
        "{names:?}"
    );
    let value = |name: &str| {
        let p = &params.iter().find(|(n, _)| n == name).unwrap().1;
        (
            p.shape(),
            p.to_array().iter().copied().collect::<Vec<f32>>(),
        )
    };
    for (name, len, v) in [
        ("ln_ih_weight_l0", 16, 1.0),
        ("ln_hh_weight_l0_reverse", 16, 1.0),
        ("ln_c_weight_l0", 4, 1.0),
        ("ln_c_bias_l0_reverse", 4, 0.0),
    ] {
        let (shape, values) = value(name);
        assert_eq!(shape, vec![len], "{name}");
        assert!(values.iter().all(|&x| x == v), "{name}: {values:?}");
    }
    assert_eq!(
        layer.num_parameters() as u64,
        config.parameter_count().unwrap()
    );
    assert!(layer.to_string().contains("layer_norm=True"), "{layer}");

    let err = |c: RecurrentConfig| Recurrent::new(c).unwrap_err().to_string();
    let e = err(RecurrentConfig::new(CellKind::Gru, 3, 4).with_layer_norm(true));
    assert!(e.contains("layer_norm is an option of LSTM only"), "{e}");
    let e = err(RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_layer_norm(true)
        .with_peephole(true));
    assert!(e.contains("peephole and layer_norm do not combine"), "{e}");
}

/// `LSTMCell` with `layer_norm` is one step of the layer.
#[test]
fn layer_norm_cell_is_a_step_of_the_layer() {
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 5).with_layer_norm(true);
    let cell = LstmCell::with_rng(config.clone(), &mut Rng::new(1)).unwrap();
    let layer = Lstm::with_rng(config, &mut Rng::new(1)).unwrap();
    let names: Vec<String> = cell
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"ln_c_bias".to_string()), "{names:?}");
    let mut rng = Rng::new(2);
    let x = randn(&mut rng, &[2, 3]);
    let h = randn(&mut rng, &[2, 5]);
    let c = randn(&mut rng, &[2, 5]);
    let (h1, c1) = cell.forward(&x, Some((&h, &c))).unwrap();
    let (_, (h_n, c_n)) = layer
        .forward(
            &x.reshape(&[1, 2, 3]).unwrap(),
            Some((
                &h.reshape(&[1, 2, 5]).unwrap(),
                &c.reshape(&[1, 2, 5]).unwrap(),
            )),
        )
        .unwrap();
    assert_eq!(h1.to_array(), h_n.reshape(&[2, 5]).unwrap().to_array());
    assert_eq!(c1.to_array(), c_n.reshape(&[2, 5]).unwrap().to_array());
}

/// A layer-normalised LSTM's model file keeps its configuration and its layer norms' weights;
/// loading is strict about them.
#[test]
fn layer_norm_lstm_model_files_round_trip_strictly() {
    use rnn::model_file::{load_model, save_model};
    let dir = std::env::temp_dir().join(format!("rnn-variants-ln-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_layer_norm(true)
        .with_num_layers(2);
    let model = Recurrent::with_rng(config.clone(), &mut Rng::new(5)).unwrap();
    // Layer norms away from their initial values, so that the file is seen to keep them.
    let mut rng = Rng::new(6);
    for (name, p) in model.named_parameters() {
        if name.starts_with("ln_") {
            *p.data_mut() = randn(&mut rng, &p.shape()).to_array();
        }
    }
    let path = dir.join("ln.safetensors");
    save_model(&path, &model).unwrap();
    let back = load_model(&path).unwrap();
    assert_eq!(back.config(), &config);
    for ((ka, a), (kb, b)) in model
        .named_parameters()
        .iter()
        .zip(&back.named_parameters())
    {
        assert_eq!(ka, kb);
        assert_eq!(a.to_array(), b.to_array(), "{ka}");
    }
    // A plain LSTM's tensors under a config that asks for layer norms: refused by name.
    let plain =
        Recurrent::new(RecurrentConfig::new(CellKind::Lstm, 3, 4).with_num_layers(2)).unwrap();
    let wrong = dir.join("wrong.safetensors");
    let meta = [("config".to_string(), config.to_json())].into();
    rnn::io::save_state_dict(&plain, &wrong, meta).unwrap();
    let e = load_model(&wrong).unwrap_err().to_string();
    assert!(e.contains("ln_ih_weight_l0"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
