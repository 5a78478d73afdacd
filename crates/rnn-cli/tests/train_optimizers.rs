//! `rnn train --optimizer` and `--schedule`: each trains a tiny model, the choice is kept by
//! `--resume` (a different one is refused), and bad values are one-line errors.

mod common;

use std::process::Output;

use common::{rnn, TempDir};

fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "exit {:?}\nstderr: {err}", o.status);
    err
}

fn fails(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected a failure; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err}");
    err
}

fn train(dir: &TempDir, out: &str, extra: &[&str]) -> Output {
    let (data, out) = (dir.arg("text.txt"), dir.arg(out));
    let mut args = vec![
        "train",
        "--data",
        &data,
        "--out",
        &out,
        "--hidden",
        "16",
        "--embed",
        "8",
        "--seq-len",
        "8",
        "--batch",
        "4",
        "--steps",
        "12",
        "--threads",
        "1",
        "--sample-len",
        "0",
        "--eval-every",
        "3",
        "--val-fraction",
        "0.1",
    ];
    args.extend(extra);
    rnn(&args)
}

#[test]
fn optimizers_and_schedules_train_and_are_kept_on_resume() {
    let dir = TempDir::new("optimizers");
    std::fs::write(dir.path("text.txt"), "the cat sat on the mat. ".repeat(40)).unwrap();
    for (opt, schedule) in [
        ("rmsprop", "plateau"),
        ("sgd", "cosine"),
        ("adamw", "onecycle"),
    ] {
        let out = format!("{opt}-{schedule}");
        let err = ok(train(
            &dir,
            &out,
            &["--optimizer", opt, "--schedule", schedule, "--lr", "0.01"],
        ));
        assert!(
            err.contains(&format!("{opt} lr 0.01 ({schedule} schedule)")),
            "{err}"
        );
        let err = fails(rnn(&[
            "train",
            "--resume",
            "--out",
            &dir.arg(&out),
            "--optimizer",
            "adam",
        ]));
        assert!(
            err.contains("--optimizer adam differs from the run's"),
            "{err}"
        );
    }
    // Clap's usage errors: the first line says what is wrong.
    for (flag, value, want) in [
        (
            "--optimizer",
            "lbfgs",
            "expected adam, adamw, sgd or rmsprop",
        ),
        (
            "--schedule",
            "step",
            "expected none, cosine, onecycle or plateau",
        ),
    ] {
        let o = train(&dir, "bad", &[flag, value]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(want),
            "{err}"
        );
    }
}
