//! A character model trained with every `--optimizer` and `--schedule` of `rnn train`: the
//! loss falls, and a run resumed from a checkpoint (optimizer and scheduler state included)
//! ends with bit-identical weights.

use rnn::charlm::{CharLmConfig, OptimizerKind, ScheduleKind, TrainConfig, Trainer, Vocab};
use rnn::io::TensorFile;
use rnn::{CellKind, Module};

fn setup(
    optimizer: OptimizerKind,
    schedule: ScheduleKind,
) -> (CharLmConfig, TrainConfig, Vec<usize>) {
    let text = "the cat sat on the mat. a dog ran to the park! ".repeat(20);
    let vocab = Vocab::from_text(&text).unwrap();
    let tokens = vocab.encode(&text).unwrap();
    let model = CharLmConfig {
        cell: CellKind::Lstm,
        vocab_size: vocab.len(),
        embed: 8,
        hidden_size: 16,
        num_layers: 1,
        dropout: 0.0,
        layer_norm: false,
        peephole: false,
        weight_drop: 0.0,
        zoneout: 0.0,
        variational_dropout: false,
    };
    let lr = match optimizer {
        OptimizerKind::Sgd => 0.5,
        _ => 0.01,
    };
    let train = TrainConfig {
        seq_len: 8,
        batch: 4,
        lr,
        clip: 5.0,
        seed: 3,
        steps: 24,
        val_fraction: 0.0,
        data: "<inline>".into(),
        data_hash: rnn::charlm::fingerprint(b"<inline>"),
        optimizer,
        schedule,
    };
    (model, train, tokens)
}

/// Runs steps `from..to`, with an "evaluation" (a made-up validation loss that stops
/// improving) every 3 steps.
fn run(t: &mut Trainer, from: u64, to: u64) -> Vec<f32> {
    let mut losses = Vec::new();
    for s in from..to {
        losses.push(t.step().unwrap().loss);
        if (s + 1) % 3 == 0 {
            t.after_evaluation(1.0 + 0.001 * s as f64);
        }
    }
    losses
}

#[test]
fn every_optimizer_and_schedule_trains_and_resumes_bit_for_bit() {
    for optimizer in [
        OptimizerKind::Adam,
        OptimizerKind::AdamW,
        OptimizerKind::Sgd,
        OptimizerKind::Rmsprop,
    ] {
        for schedule in [
            ScheduleKind::None,
            ScheduleKind::Cosine,
            ScheduleKind::OneCycle,
            ScheduleKind::Plateau,
        ] {
            let what = format!("{optimizer} {schedule}");
            let (model, config, tokens) = setup(optimizer, schedule);
            let mut straight = Trainer::new(model.clone(), config.clone(), tokens.clone()).unwrap();
            let losses = run(&mut straight, 0, 24);
            assert!(
                losses[20..].iter().sum::<f32>() < losses[..4].iter().sum::<f32>(),
                "{what}: {losses:?}"
            );
            let mut first = Trainer::new(model, config, tokens.clone()).unwrap();
            run(&mut first, 0, 10);
            let bytes = first.checkpoint().to_bytes().unwrap();
            let file = TensorFile::from_bytes(&bytes, "<memory>").unwrap();
            if schedule != ScheduleKind::None {
                assert!(
                    file.tensors.keys().any(|k| k.starts_with("scheduler.")),
                    "{what}: the schedule's state is in the checkpoint"
                );
            }
            let mut resumed =
                Trainer::resume(&file, std::path::Path::new("<memory>"), tokens).unwrap();
            assert_eq!(resumed.lr().to_bits(), first.lr().to_bits(), "{what}");
            run(&mut resumed, 10, 24);
            assert_eq!(resumed.lr().to_bits(), straight.lr().to_bits(), "{what}");
            for ((name, a), (_, b)) in straight
                .model()
                .named_parameters()
                .iter()
                .zip(resumed.model().named_parameters())
            {
                assert_eq!(
                    a.to_array(),
                    b.to_array(),
                    "{what}: {name} differs after resuming"
                );
            }
        }
    }
}
