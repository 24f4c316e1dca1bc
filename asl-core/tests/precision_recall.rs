//! `metrics::precision_recall_curve`: the (recall, precision) points against hand-computed
//! values, ties and ignored samples as `average_precision` ranks them, and the area under the
//! curve against `average_precision` itself.

use asl_core::metrics::{average_precision, precision_recall_curve};

/// A deterministic pseudo-random sequence in [0, 1).
fn lcg(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn assert_points(got: &[(f64, f64)], want: &[(f64, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.0 - w.0).abs() < 1e-12 && (g.1 - w.1).abs() < 1e-12,
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn pr_curve_hand_computed() {
    // Ranking 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg).
    let pts = precision_recall_curve(&[0.7, 0.9, 0.1, 0.8], &[1, 1, 0, 0]);
    assert_points(
        &pts,
        &[(0.5, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0), (1.0, 0.5)],
    );
}

#[test]
fn pr_curve_breaks_ties_by_descending_index() {
    // 0.9 (index 3, pos) first, then the tied 0.5s from the last index down: 2 (neg), 1 (neg),
    // 0 (pos).
    let pts = precision_recall_curve(&[0.5, 0.5, 0.5, 0.9], &[1, 0, 0, 1]);
    assert_points(
        &pts,
        &[(0.5, 1.0), (0.5, 0.5), (0.5, 1.0 / 3.0), (1.0, 0.5)],
    );
    // -0.0 ties with 0.0 (so index 1 comes first), as in metrics.rs.
    let pts = precision_recall_curve(&[0.0, -0.0], &[1, 0]);
    assert_points(&pts, &[(0.0, 0.0), (1.0, 0.5)]);
}

#[test]
fn pr_curve_skips_ignored_samples() {
    // Indices 0 and 2 are ignored: ranking 0.8 (pos), 0.6 (neg).
    let pts = precision_recall_curve(&[0.9, 0.8, 0.7, 0.6], &[-1, 1, -1, 0]);
    assert_points(&pts, &[(1.0, 1.0), (1.0, 0.5)]);
}

#[test]
fn pr_curve_is_empty_without_positives() {
    assert!(precision_recall_curve(&[0.9, 0.1], &[0, 0]).is_empty());
    assert!(precision_recall_curve(&[0.9, 0.1], &[-1, -1]).is_empty());
    assert!(precision_recall_curve(&[0.9, 0.1], &[0, -1]).is_empty());
    assert!(precision_recall_curve(&[], &[]).is_empty());
    // A positive among ignored ones is enough.
    assert_eq!(precision_recall_curve(&[0.9, 0.1], &[-1, 1]).len(), 1);
}

#[test]
fn pr_curve_matches_average_precision() {
    // AP (paper) = (sum over the ranks holding a positive of precision) / (npos + 1e-8), which is
    // the area under the step curve, sum (r_i - r_{i-1}) p_i: recall rises by 1/npos exactly at
    // those ranks.
    let mut rnd = lcg(7);
    for trial in 0..40 {
        let n = 1 + trial * 7;
        // Quantised scores make many ties; some labels ignored.
        let scores: Vec<f32> = (0..n).map(|_| (rnd() * 8.0).floor() as f32 / 8.0).collect();
        let labels: Vec<i8> = (0..n)
            .map(|_| match rnd() {
                r if r < 0.3 => 1,
                r if r < 0.9 => 0,
                _ => -1,
            })
            .collect();
        let pts = precision_recall_curve(&scores, &labels);
        let ap = average_precision(&scores, &labels);
        let npos = labels.iter().filter(|&&l| l == 1).count();
        if npos == 0 {
            assert!(pts.is_empty());
            continue;
        }
        assert_eq!(pts.len(), labels.iter().filter(|&&l| l >= 0).count());
        let mut area = 0.0;
        let mut prev_r = 0.0;
        for &(r, p) in &pts {
            assert!(r >= prev_r, "recall must not decrease");
            area += (r - prev_r) * p;
            prev_r = r;
        }
        assert!(
            (prev_r - 1.0).abs() < 1e-12,
            "the curve must end at recall 1"
        );
        let expected = ap * (npos as f64 + 1e-8) / npos as f64;
        assert!(
            (area - expected).abs() < 1e-9,
            "trial {trial}: area {area} vs AP {ap}"
        );
    }
}
