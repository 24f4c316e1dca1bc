//! Per-class threshold calibration against a brute-force search over every threshold.

use asl_core::MetricAccumulator;

/// F1 (fraction) of one class at `score >= t`, brute force.
fn f1_at(scores: &[f32], labels: &[i8], t: f64) -> f64 {
    let (mut tp, mut fp, mut fneg) = (0, 0, 0);
    for (&s, &l) in scores.iter().zip(labels) {
        let pred = s as f64 >= t;
        match (l, pred) {
            (1, true) => tp += 1,
            (1, false) => fneg += 1,
            (0, true) => fp += 1,
            _ => {}
        }
    }
    if tp == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (2 * tp + fp + fneg) as f64
    }
}

#[test]
fn calibrated_thresholds_reach_the_best_f1() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..40 {
        let (n, c) = (1 + (next() % 60) as usize, 1 + (next() % 5) as usize);
        // coarse scores (many ties) in some rounds, fine ones in others
        let levels = if round % 2 == 0 { 7 } else { 1_000_000 };
        let scores: Vec<f32> = (0..n * c)
            .map(|_| (next() % levels) as f32 / levels as f32)
            .collect();
        let labels: Vec<i8> = (0..n * c)
            .map(|i| match next() % 10 {
                0 => -1,
                r if (r as f32) < 10.0 * scores[i] => 1,
                _ => 0,
            })
            .collect();
        let mut acc = MetricAccumulator::new(c);
        let as_f32: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        acc.push_slices(&scores, &as_f32).expect("batch");
        let thresholds = acc.calibrate();
        assert_eq!(thresholds.len(), c);
        for k in 0..c {
            let col_s: Vec<f32> = scores.iter().skip(k).step_by(c).copied().collect();
            let col_l: Vec<i8> = labels.iter().skip(k).step_by(c).copied().collect();
            let best = col_s
                .iter()
                .map(|&s| f1_at(&col_s, &col_l, s as f64))
                .fold(0.0, f64::max);
            match thresholds[k] {
                None => assert!(
                    !col_l.contains(&1),
                    "round {round} class {k}: has positives"
                ),
                Some(t) => {
                    let got = f1_at(&col_s, &col_l, t);
                    assert!(
                        (got - best).abs() < 1e-12,
                        "round {round} class {k}: F1 {got} at {t}, best {best}"
                    );
                    // the report at these thresholds says the same
                    let per: Vec<f64> = thresholds.iter().map(|t| t.unwrap_or(0.5)).collect();
                    let report = acc.compute_per_class(&per);
                    assert!((report.per_class[k].f1 - 100.0 * best).abs() < 1e-9);
                    assert_eq!(report.per_class[k].threshold, t);
                    assert!(report.threshold.is_nan());
                }
            }
        }
    }
}

#[test]
fn calibration_splits_between_scores_and_keeps_ties_together() {
    // class 0: positives at 0.9 and 0.6, negatives at 0.7 and 0.2: best F1 = 0.8 at >= 0.6
    // (tp 2, fp 1), halfway to 0.2 -> 0.4. Class 1: a tie between a positive and a negative at
    // the top, a negative below: best is the tie (F1 2/3), threshold halfway to 0.1.
    let scores = [0.9, 0.5, 0.7, 0.5, 0.6, 0.1, 0.2, 0.1];
    let labels = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let mut acc = MetricAccumulator::new(2);
    acc.push_slices(&scores, &labels).expect("batch");
    let t = acc.calibrate();
    assert!((t[0].expect("class 0") - 0.4).abs() < 1e-6, "{t:?}");
    assert!((t[1].expect("class 1") - 0.3).abs() < 1e-6, "{t:?}");
    let mut none = MetricAccumulator::new(1);
    none.push_slices(&[0.3, 0.9], &[0.0, -1.0]).expect("batch");
    assert_eq!(none.calibrate(), vec![None]);
}
