//! The lessons (docs: /labs.md, lessons 2-6) as acceptance tests: each runs the example's own
//! code (included from `examples/`) with the lesson's hyperparameters and checks the result the
//! lesson promises.

#[path = "../examples/charseq.rs"]
#[allow(dead_code)]
mod charseq;
#[path = "../examples/hihello.rs"]
#[allow(dead_code)]
mod hihello;
#[path = "../examples/longseq.rs"]
#[allow(dead_code)]
mod longseq;
#[path = "../examples/seq2seq.rs"]
#[allow(dead_code)]
mod seq2seq;
#[path = "../examples/timeseries.rs"]
#[allow(dead_code)]
mod timeseries;

/// The loss falls steadily: each quarter of the run ends lower than the one before, and the
/// last loss is below `final_below` and below half the first.
fn assert_learns(losses: &[f32], final_below: f32) {
    let n = losses.len();
    let (first, last) = (losses[0], losses[n - 1]);
    assert!(
        last.is_finite() && last < final_below,
        "final loss {last} (first {first})"
    );
    assert!(last < first / 2.0, "final loss {last} vs first {first}");
    let quarters = [0, n / 4, n / 2, 3 * n / 4, n - 1].map(|i| losses[i]);
    assert!(
        quarters.windows(2).all(|w| w[1] < w[0]),
        "losses by quarter {quarters:?}"
    );
}

#[test]
fn hihello_predicts_ihello() {
    let out = hihello::lesson(hihello::SEED).unwrap();
    assert_eq!(out.prediction, "ihello");
    assert_eq!(out.losses.len(), 100);
    assert_learns(&out.losses, 0.5);
}

#[test]
fn charseq_predicts_the_sentence() {
    let out = charseq::lesson(charseq::SEED).unwrap();
    assert_eq!(out.prediction, "if you want you");
    assert_eq!(out.losses.len(), 50);
    assert_learns(&out.losses, 0.9);
}

#[test]
fn longseq_rebuilds_the_sentence() {
    let out = longseq::lesson(longseq::SEED).unwrap();
    assert_eq!(
        out.prediction.chars().count(),
        longseq::SENTENCE.chars().count() - 1
    );
    let accuracy = longseq::accuracy(&out.prediction);
    assert!(
        accuracy >= 0.95,
        "{:.3} of the characters match: {:?}",
        accuracy,
        out.prediction
    );
    assert_learns(&out.losses, 0.3);
}

/// A minimal XML well-formedness check: every tag closed in order, attributes quoted,
/// nothing outside the root element.
fn assert_well_formed_svg(svg: &str) {
    assert!(svg.starts_with("<svg "), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(start) = rest.find('<') {
        let text = &rest[..start];
        assert!(!text.contains('>'), "stray '>' in {text:?}");
        if stack.is_empty() {
            assert!(text.trim().is_empty(), "text outside the root: {text:?}");
        }
        let end = rest[start..].find('>').expect("unterminated tag") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "'<' inside tag {tag:?}");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in {tag:?}"
        );
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
        } else {
            let name = tag
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches('/');
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()));
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed tags {stack:?}");
    assert!(rest.trim().is_empty());
    assert_eq!(roots, 1);
}

#[test]
fn timeseries_follows_the_test_curve_and_plots_it() {
    let plot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lessons/timeseries.svg");
    let _ = std::fs::remove_file(&plot);
    let out = timeseries::lesson(timeseries::SEED, &plot).unwrap();
    assert_eq!(out.losses.len(), 500);
    assert_eq!(out.test_y.len(), out.prediction.len());
    // 731 rows: train 511, test 731 - 504 = 227 rows, 220 windows.
    assert_eq!(out.test_y.len(), 220);
    assert!(
        out.losses[499] < 0.002,
        "final training loss {}",
        out.losses[499]
    );
    // Predicting the mean scores ~0.2 (scaled units); the lesson's LSTM follows the curve.
    assert!(out.rmse_of_mean > 0.15, "{}", out.rmse_of_mean);
    assert!(
        out.rmse < 0.06,
        "test RMSE {} (mean: {})",
        out.rmse,
        out.rmse_of_mean
    );
    assert!(out.rmse < out.rmse_of_mean / 3.0);

    let svg = std::fs::read_to_string(&plot).unwrap();
    assert_well_formed_svg(&svg);
    assert_eq!(svg.matches("<polyline").count(), 2);
    for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
        let points = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 220);
        for p in points.split(' ') {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (f32, f32) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (0.0..=800.0).contains(&x) && (0.0..=400.0).contains(&y),
                "{p}"
            );
        }
    }
    assert!(svg.contains(">original</text>") && svg.contains(">prediction</text>"));
    assert!(!plot.with_extension("svg.tmp").exists());
}

#[test]
fn seq2seq_translates_every_pair() {
    let out = seq2seq::lesson(seq2seq::SEED).unwrap();
    assert_eq!(out.translations.len(), 4);
    for (target, translation) in &out.translations {
        assert!(
            seq2seq::exact(target, translation),
            "{target:?} translated as {translation:?}"
        );
    }
    // Mean loss per word over each 1000 iterations; PyTorch's lesson ends near 0.01.
    assert_eq!(out.losses.len(), 5);
    assert!(out.losses[4] < 0.05, "{:?}", out.losses);
    assert!(out.losses[4] < out.losses[0] / 10.0, "{:?}", out.losses);
}
