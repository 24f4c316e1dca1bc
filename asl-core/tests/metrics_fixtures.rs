//! The multi-label metrics against golden values computed with numpy (the ASL reference's AP)
//! and scikit-learn (grouped AP, precision / recall / F1), `fixtures/gen_metric_fixtures.py`.

use asl_core::metrics::{average_precision, average_precision_grouped};
use asl_core::{MetricAccumulator, MetricsReport};
use asl_test_support::fixtures::{assert_close, fixture_path, load_fixture, FixtureFile};
use candle_core::{Device, Tensor};
use serde::Deserialize;

/// Relative and absolute tolerance of every comparison.
const TOL: f64 = 1e-9;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    num_classes: usize,
    threshold: f64,
    /// Numbers, or the strings "inf" / "-inf".
    scores: Vec<Vec<serde_json::Value>>,
    labels: Vec<Vec<i8>>,
    per_class_ap_paper: Vec<f64>,
    per_class_ap_grouped: Vec<f64>,
    map: f64,
    map_macro: f64,
    classes_with_positives: usize,
    cp: f64,
    cr: f64,
    cf1: f64,
    cf1_mean_of_f1: f64,
    op: f64,
    or: f64,
    of1: f64,
    precision: Vec<f64>,
    recall: Vec<f64>,
    f1: Vec<f64>,
    tp: Vec<usize>,
    fp: Vec<usize>,
    #[serde(rename = "fn")]
    fn_: Vec<usize>,
    positives: Vec<usize>,
    negatives: Vec<usize>,
}

impl Case {
    fn rows(&self) -> usize {
        self.scores.len()
    }

    /// Row-major f32 scores (exactly the fixture's values).
    fn flat_scores(&self) -> Vec<f32> {
        self.scores
            .iter()
            .flatten()
            .map(|v| match v {
                serde_json::Value::Number(n) => {
                    let x = n.as_f64().expect("score");
                    // serde_json's default float parser may be one f64 ulp off; the
                    // nearest f32 is still the fixture's value.
                    let s = x as f32;
                    assert!(
                        (s as f64 - x).abs() <= 4.0 * f64::EPSILON * x.abs(),
                        "{}: score {x} is not an f32 value",
                        self.name
                    );
                    s
                }
                serde_json::Value::String(s) if s == "inf" => f32::INFINITY,
                serde_json::Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
                other => panic!("{}: bad score {other}", self.name),
            })
            .collect()
    }

    fn flat_labels(&self) -> Vec<f32> {
        self.labels.iter().flatten().map(|&l| l as f32).collect()
    }

    fn column<T: Copy>(&self, flat: &[T], k: usize) -> Vec<T> {
        flat.iter()
            .skip(k)
            .step_by(self.num_classes)
            .copied()
            .collect()
    }
}

fn cases() -> Vec<Case> {
    let file: FixtureFile<Case> =
        load_fixture(&fixture_path(env!("CARGO_MANIFEST_DIR"), "metrics.json"));
    assert!(!file.cases.is_empty());
    for c in &file.cases {
        assert_eq!(c.scores.len(), c.labels.len(), "{}", c.name);
        assert!(
            c.scores.iter().all(|r| r.len() == c.num_classes),
            "{}",
            c.name
        );
        assert!(
            c.labels.iter().all(|r| r.len() == c.num_classes),
            "{}",
            c.name
        );
    }
    file.cases
}

/// Uneven batch sizes in rows (an empty batch included), cycled until the rows run out.
const BATCH_ROWS: [usize; 6] = [1, 3, 0, 2, 7, 4];

fn accumulate_slices(case: &Case) -> MetricAccumulator {
    let c = case.num_classes;
    let (scores, labels) = (case.flat_scores(), case.flat_labels());
    let mut acc = MetricAccumulator::new(c);
    let (mut row, mut i) = (0, 0);
    while row < case.rows() {
        let take = BATCH_ROWS[i % BATCH_ROWS.len()].min(case.rows() - row);
        let range = row * c..(row + take) * c;
        acc.push_slices(&scores[range.clone()], &labels[range])
            .unwrap_or_else(|e| panic!("{}: push_slices: {e}", case.name));
        row += take;
        i += 1;
        assert_eq!(acc.num_samples(), row, "{}", case.name);
    }
    acc
}

fn accumulate_tensor(case: &Case) -> MetricAccumulator {
    let shape = (case.rows(), case.num_classes);
    let scores = Tensor::from_vec(case.flat_scores(), shape, &Device::Cpu).expect("scores");
    let labels = Tensor::from_vec(case.flat_labels(), shape, &Device::Cpu).expect("labels");
    let mut acc = MetricAccumulator::new(case.num_classes);
    acc.push(&scores, &labels)
        .unwrap_or_else(|e| panic!("{}: push: {e}", case.name));
    acc
}

fn close(case: &Case, what: &str, got: &[f64], want: &[f64]) {
    assert_close(&format!("{}: {what}", case.name), got, want, TOL, TOL);
}

fn check_report(case: &Case, r: &MetricsReport) {
    let name = &case.name;
    assert_eq!(r.num_samples, case.rows(), "{name}: num_samples");
    assert_eq!(r.num_classes, case.num_classes, "{name}: num_classes");
    assert_eq!(r.threshold, case.threshold, "{name}: threshold");
    assert_eq!(r.per_class.len(), case.num_classes, "{name}: per_class");
    assert_eq!(
        r.classes_with_positives, case.classes_with_positives,
        "{name}: classes_with_positives"
    );
    let scalars = [
        ("map", r.map, case.map),
        ("map_macro", r.map_macro, case.map_macro),
        ("cp", r.cp, case.cp),
        ("cr", r.cr, case.cr),
        ("cf1", r.cf1, case.cf1),
        ("cf1_mean_of_f1", r.cf1_mean_of_f1, case.cf1_mean_of_f1),
        ("op", r.op, case.op),
        ("or", r.or, case.or),
        ("of1", r.of1, case.of1),
    ];
    for (what, got, want) in scalars {
        close(case, what, &[got], &[want]);
    }
    let per = |f: fn(&asl_core::metrics::ClassMetrics) -> f64| -> Vec<f64> {
        r.per_class.iter().map(f).collect()
    };
    let ap_pct: Vec<f64> = case.per_class_ap_paper.iter().map(|a| 100.0 * a).collect();
    close(case, "per-class ap (percent)", &per(|m| m.ap), &ap_pct);
    close(
        case,
        "per-class precision",
        &per(|m| m.precision),
        &case.precision,
    );
    close(case, "per-class recall", &per(|m| m.recall), &case.recall);
    close(case, "per-class f1", &per(|m| m.f1), &case.f1);
    let counts = |f: fn(&asl_core::metrics::ClassMetrics) -> usize| -> Vec<usize> {
        r.per_class.iter().map(f).collect()
    };
    assert_eq!(counts(|m| m.true_positives), case.tp, "{name}: tp");
    assert_eq!(counts(|m| m.false_positives), case.fp, "{name}: fp");
    assert_eq!(counts(|m| m.false_negatives), case.fn_, "{name}: fn");
    assert_eq!(counts(|m| m.positives), case.positives, "{name}: positives");
    assert_eq!(counts(|m| m.negatives), case.negatives, "{name}: negatives");
}

#[test]
fn fixture_covers_the_required_cases() {
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    for want in [
        "random_continuous",
        "heavy_ties",
        "degenerate_classes",
        "ignored_labels",
        "tie_rule_hand_made",
        "infinite_scores",
        "signed_zero_ties",
    ] {
        assert!(names.iter().any(|n| n == want), "missing case {want}");
    }
}

#[test]
fn report_matches_fixture_slices_in_uneven_batches() {
    for case in cases() {
        let acc = accumulate_slices(&case);
        check_report(&case, &acc.compute(case.threshold));
    }
}

#[test]
fn report_matches_fixture_tensor_push_and_is_identical_to_slices() {
    for case in cases() {
        let by_tensor = accumulate_tensor(&case).compute(case.threshold);
        check_report(&case, &by_tensor);
        let by_slices = accumulate_slices(&case).compute(case.threshold);
        assert_eq!(by_tensor, by_slices, "{}: push vs push_slices", case.name);
    }
}

#[test]
fn per_class_ap_functions_match_fixture() {
    for case in cases() {
        let scores = case.flat_scores();
        let labels: Vec<i8> = case.labels.iter().flatten().copied().collect();
        for k in 0..case.num_classes {
            let (s, l) = (case.column(&scores, k), case.column(&labels, k));
            let what = format!("class {k}");
            close(
                &case,
                &format!("average_precision {what}"),
                &[average_precision(&s, &l)],
                &[case.per_class_ap_paper[k]],
            );
            close(
                &case,
                &format!("average_precision_grouped {what}"),
                &[average_precision_grouped(&s, &l)],
                &[case.per_class_ap_grouped[k]],
            );
        }
    }
}

#[test]
fn paper_and_grouped_ap_differ_on_ties() {
    // The fixture's tied cases must actually exercise the tie rule.
    for name in ["heavy_ties", "tie_rule_hand_made"] {
        let case = cases().into_iter().find(|c| c.name == name).expect(name);
        let max_diff = case
            .per_class_ap_paper
            .iter()
            .zip(&case.per_class_ap_grouped)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        assert!(max_diff > 1e-3, "{name}: paper and grouped AP agree");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: the message names the offending entry, and nothing is added.
// ---------------------------------------------------------------------------------------------

/// An accumulator of 3 classes holding 2 samples, and its report.
fn seeded() -> (MetricAccumulator, MetricsReport) {
    let mut acc = MetricAccumulator::new(3);
    acc.push_slices(
        &[0.9, 0.1, 0.4, 0.3, 0.8, 0.6],
        &[1.0, 0.0, -1.0, 0.0, 1.0, 1.0],
    )
    .expect("valid batch");
    let report = acc.compute(0.5);
    (acc, report)
}

fn assert_unchanged(acc: &MetricAccumulator, before: &MetricsReport) {
    assert_eq!(acc.num_samples(), 2, "a failed push added samples");
    assert_eq!(
        &acc.compute(0.5),
        before,
        "a failed push changed the accumulator"
    );
}

/// Pushes a 2 x 3 batch through `push_slices` and through `push` (tensors): both must fail with
/// a message containing every `part`, and leave the accumulator unchanged.
fn assert_both_pushes_fail(
    acc: &mut MetricAccumulator,
    before: &MetricsReport,
    scores: &[f32; 6],
    labels: &[f32; 6],
    parts: &[&str],
) {
    let t = |v: &[f32]| Tensor::from_slice(v, (2, 3), &Device::Cpu).expect("tensor");
    let messages = [
        acc.push_slices(scores, labels)
            .expect_err("push_slices must fail")
            .to_string(),
        acc.push(&t(scores), &t(labels))
            .expect_err("push must fail")
            .to_string(),
    ];
    for msg in messages {
        for part in parts {
            assert!(
                msg.contains(part),
                "message {msg:?} should contain {part:?}"
            );
        }
        assert_unchanged(acc, before);
    }
}

#[test]
fn nan_score_is_an_error_naming_row_and_column() {
    let (mut acc, before) = seeded();
    // Batch rows 0..2 are global rows 2..4; the NaN is at batch row 1, column 2 => [3, 2].
    let scores = [0.5, 0.5, 0.5, 0.2, 0.7, f32::NAN];
    let labels = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
    assert_both_pushes_fail(&mut acc, &before, &scores, &labels, &["[3, 2]", "NaN"]);
}

#[test]
fn fractional_label_is_an_error_naming_row_and_column() {
    let (mut acc, before) = seeded();
    // 0.5 at batch row 1, column 0 => global [3, 0]; the valid entries before it must not stay.
    let scores = [0.5, 0.5, 0.5, 0.2, 0.7, 0.1];
    let labels = [1.0, 0.0, -1.0, 0.5, 0.0, 1.0];
    assert_both_pushes_fail(&mut acc, &before, &scores, &labels, &["[3, 0]", "0.5"]);

    // Other labels outside {1, 0, -1}.
    for bad in [2.0f32, -0.5, f32::NAN, f32::INFINITY] {
        let labels = [1.0, 0.0, bad];
        let err = acc
            .push_slices(&[0.1, 0.2, 0.3], &labels)
            .expect_err("bad label must fail");
        assert!(err.to_string().contains("[2, 2]"), "label {bad}: {err}");
        assert_unchanged(&acc, &before);
    }
}

#[test]
fn wrong_slice_length_is_an_error_naming_the_lengths() {
    let (mut acc, before) = seeded();
    // Not a multiple of the 3 classes.
    let err = acc
        .push_slices(&[0.1, 0.2, 0.3, 0.4], &[1.0, 0.0, 1.0, 0.0])
        .expect_err("length 4 with 3 classes must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("scores: 4") && msg.contains("labels: 4"),
        "message: {msg}"
    );
    assert!(
        msg.contains('3'),
        "message should name the class count: {msg}"
    );
    assert_unchanged(&acc, &before);

    // Scores and labels of different lengths.
    let err = acc
        .push_slices(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &[1.0, 0.0, 1.0])
        .expect_err("mismatched lengths must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("scores: 6") && msg.contains("labels: 3"),
        "message: {msg}"
    );
    assert_unchanged(&acc, &before);

    // Tensors of the wrong shape.
    let scores = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu).expect("tensor");
    let err = acc
        .push(&scores, &scores)
        .expect_err("4 columns with 3 classes must fail");
    assert!(err.to_string().contains("[N, 3]"), "message: {err}");
    let labels = Tensor::zeros((3, 3), candle_core::DType::F32, &Device::Cpu).expect("tensor");
    let scores = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).expect("tensor");
    let err = acc
        .push(&scores, &labels)
        .expect_err("mismatched shapes must fail");
    assert!(err.to_string().contains("[3, 3]"), "message: {err}");
    assert_unchanged(&acc, &before);
}
