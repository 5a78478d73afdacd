//! `rnn train`'s regulariser flags end to end on a tiny model: `--peephole`, `--weight-drop`,
//! `--zoneout`, `--variational-dropout` land in the model file's config; a resumed run ends
//! with the same weights (the masks come from the checkpointed generator); evaluation applies
//! no mask (the same loss twice); bad values are one error line naming the flag.

mod common;

use std::process::Output;

use common::tiny::{text, train};
use common::{rnn, TempDir};
use rnn::io::TensorFile;

const REGULARISED: [&str; 12] = [
    "--layers",
    "2",
    "--dropout",
    "0.2",
    "--variational-dropout",
    "--weight-drop",
    "0.3",
    "--zoneout",
    "0.1",
    "--peephole",
    "--seed",
    "3",
];

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: Output) -> String {
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn regularised_runs_save_their_options_resume_exactly_and_evaluate_without_masks() {
    let dir = TempDir::new("regularisers");
    std::fs::write(dir.path("text.txt"), text()).unwrap();
    let mut straight = REGULARISED.to_vec();
    straight.extend(["--steps", "30"]);
    ok(train(&dir, "straight", &straight));
    let model = TensorFile::read(dir.path("straight/model.safetensors")).unwrap();
    let config = &model.metadata["config"];
    for key in [
        "\"peephole\":true",
        "\"weight_drop\":0.3",
        "\"zoneout\":0.1",
        "\"variational_dropout\":true",
    ] {
        assert!(config.contains(key), "{key} not in {config}");
    }
    assert!(model.tensors.keys().any(|k| k == "rnn.weight_ph_l1"));

    let mut half = REGULARISED.to_vec();
    half.extend(["--steps", "15"]);
    ok(train(&dir, "halves", &half));
    ok(rnn(&[
        "train",
        "--resume",
        "--out",
        &dir.arg("halves"),
        "--steps",
        "30",
        "--threads",
        "1",
        "--sample-len",
        "0",
    ]));
    let resumed = TensorFile::read(dir.path("halves/model.safetensors")).unwrap();
    assert_eq!(
        model.tensors, resumed.tensors,
        "the resumed run's weights differ"
    );

    // Evaluation is deterministic (no mask): the same loss twice.
    let eval = || {
        ok(rnn(&[
            "eval",
            "--model",
            &dir.arg("straight"),
            "--data",
            &dir.arg("text.txt"),
            "--seq-len",
            "16",
        ]))
    };
    assert_eq!(eval(), eval());
    // A changed regulariser on --resume is refused.
    let err = fails(rnn(&[
        "train",
        "--resume",
        "--out",
        &dir.arg("halves"),
        "--zoneout",
        "0.2",
    ]));
    assert!(err.contains("--zoneout 0.2"), "{err}");
}

#[test]
fn bad_regulariser_flags_name_the_flag_and_what_it_takes() {
    let dir = TempDir::new("regularisers_bad");
    std::fs::write(dir.path("text.txt"), text()).unwrap();
    for (args, expected) in [
        (
            vec!["--weight-drop", "1"],
            "--weight-drop 1: expected a probability in [0, 1)",
        ),
        (
            vec!["--zoneout", "-0.5"],
            "--zoneout -0.5: expected a probability in [0, 1)",
        ),
        (
            vec!["--variational-dropout"],
            "--variational-dropout makes the --dropout masks the same at every time step",
        ),
        (
            vec!["--cell", "gru", "--peephole"],
            "--peephole is an option of --cell lstm only",
        ),
    ] {
        let err = fails(train(&dir, "run", &args));
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!dir.path("run").exists(), "{args:?} wrote --out");
    }
}
