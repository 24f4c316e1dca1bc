//! Multi-label evaluation metrics: mAP exactly as the ASL paper computes it, and the
//! threshold-based CP/CR/CF1/OP/OR/OF1 of the multi-label literature.
//!
//! # Labels
//! A label is `1` (positive), `0` (negative) or `-1` (ignored: the sample does not count for that
//! class, e.g. a VOC object marked difficult). Anything else is an error.
//!
//! # mAP (paper definition)
//! For each class, sort the samples by score, descending; `AP = (sum over the ranks i that hold a
//! positive of precision@i) / (positives + 1e-8)` (non-interpolated, the reference's `1e-8`
//! included). A class without positives gets AP 0 **and still counts** in the mean; `mAP = 100 *
//! mean`. [`MetricsReport::map_macro`] is the mean over the classes that have positives only.
//!
//! # Tie rule
//! Samples with equal scores are ranked by **descending sample index** (the later sample first).
//! This is what the reference computes, `np.argsort(scores)[::-1]`, whenever numpy's sort keeps
//! equal keys in index order (always for a stable sort, and for numpy's default sort on short
//! arrays). It is deterministic, and on ties it can differ from scikit-learn's
//! `average_precision_score`, which treats tied scores as one threshold; that rule is available
//! as [`average_precision_grouped`]. Without ties the two agree exactly (up to the `1e-8`).
//!
//! # Thresholded metrics
//! A sample is predicted positive for a class when its score is `>= threshold`. Per class,
//! precision `tp / (tp + fp)` and recall `tp / (tp + fn)` are 0 when their denominator is 0.
//! `CP`, `CR`: means of the per-class values. `CF1 = 2 CP CR / (CP + CR)` (the literature's
//! definition); the ASL reference's mean of per-class F1 is reported as `cf1_mean_of_f1`.
//! `OP`, `OR`, `OF1`: from tp, fp, fn summed over all classes. All reported values are percent.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::AslError;

/// Added to the number of positives in the AP denominator, as the reference does.
const AP_EPSILON: f64 = 1e-8;

/// One non-ignored sample of a class: its score, its index in the batch order, and whether it is
/// a positive.
type Ranked = (f32, usize, bool);

/// Ranks samples: descending score, ties by descending index (the reference's order).
/// `-0.0` and `+0.0` are equal scores (they tie, as in numpy), which `total_cmp` alone would
/// order; they are compared as `+0.0`.
fn rank_desc(items: &mut [Ranked]) {
    let key = |s: f32| if s == 0.0 { 0.0 } else { s };
    items.sort_unstable_by(|a, b| key(b.0).total_cmp(&key(a.0)).then(b.1.cmp(&a.1)));
}

/// The non-ignored samples of one class, and the number of positives.
fn class_column<'a>(
    scores: impl Iterator<Item = &'a f32>,
    labels: impl Iterator<Item = &'a i8>,
) -> (Vec<Ranked>, usize) {
    let items: Vec<Ranked> = scores
        .zip(labels)
        .enumerate()
        .filter(|(_, (_, &l))| l >= 0)
        .map(|(i, (&s, &l))| (s, i, l == 1))
        .collect();
    let npos = items.iter().filter(|r| r.2).count();
    (items, npos)
}

/// Average precision of one class as the ASL paper computes it (a fraction in [0, 1]).
/// `labels`: 1 positive, 0 negative, -1 ignored. A class without positives gives 0.
///
/// ```
/// use asl_core::metrics::average_precision;
/// // Ranking: 0.9 (pos), 0.8 (neg), 0.7 (pos): AP = (1/1 + 2/3) / 2.
/// let ap = average_precision(&[0.9, 0.8, 0.7], &[1, 0, 1]);
/// assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-7);
/// ```
pub fn average_precision(scores: &[f32], labels: &[i8]) -> f64 {
    let (items, npos) = class_column(scores.iter(), labels.iter());
    ap_paper(items, npos)
}

fn ap_paper(mut items: Vec<Ranked>, npos: usize) -> f64 {
    if npos == 0 {
        return 0.0;
    }
    rank_desc(&mut items);
    let mut hits = 0usize;
    let mut sum = 0f64;
    for (rank, &(_, _, positive)) in items.iter().enumerate() {
        if positive {
            hits += 1;
            sum += hits as f64 / (rank + 1) as f64;
        }
    }
    sum / (npos as f64 + AP_EPSILON)
}

/// Average precision with tied scores treated as one threshold, as scikit-learn's
/// `average_precision_score` computes it: `sum_n (R_n - R_{n-1}) P_n` over distinct scores.
/// `labels`: 1 positive, 0 negative, -1 ignored. A class without positives gives 0.
pub fn average_precision_grouped(scores: &[f32], labels: &[i8]) -> f64 {
    let (mut items, npos) = class_column(scores.iter(), labels.iter());
    if npos == 0 {
        return 0.0;
    }
    rank_desc(&mut items);
    let (mut tp, mut fp, mut ap) = (0usize, 0usize, 0f64);
    for group in items.chunk_by(|a, b| a.0 == b.0) {
        let hits = group.iter().filter(|r| r.2).count();
        tp += hits;
        fp += group.len() - hits;
        ap += hits as f64 / npos as f64 * (tp as f64 / (tp + fp) as f64);
    }
    ap
}

/// The precision-recall curve of one class: one `(recall, precision)` point after each rank of
/// the non-ignored samples, ranked as [`average_precision`] ranks them (descending score, ties by
/// descending sample index). Empty when the class has no positives. The mean of the precisions
/// at the ranks that hold a positive is the class's AP (up to the reference's `1e-8`).
///
/// ```
/// use asl_core::metrics::precision_recall_curve;
/// // Ranking: 0.9 (pos), 0.8 (neg), 0.7 (pos).
/// let pts = precision_recall_curve(&[0.9, 0.8, 0.7], &[1, 0, 1]);
/// assert_eq!(pts, vec![(0.5, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0)]);
/// ```
pub fn precision_recall_curve(scores: &[f32], labels: &[i8]) -> Vec<(f64, f64)> {
    let (mut items, npos) = class_column(scores.iter(), labels.iter());
    if npos == 0 {
        return Vec::new();
    }
    rank_desc(&mut items);
    let mut hits = 0usize;
    items
        .iter()
        .enumerate()
        .map(|(rank, &(_, _, positive))| {
            hits += usize::from(positive);
            (hits as f64 / npos as f64, hits as f64 / (rank + 1) as f64)
        })
        .collect()
}

/// Metrics of one class. Percentages in [0, 100].
#[derive(Clone, Debug, PartialEq)]
pub struct ClassMetrics {
    /// Average precision, paper definition, percent.
    pub ap: f64,
    /// Number of positive / negative samples (ignored ones excluded).
    pub positives: usize,
    pub negatives: usize,
    /// Counts at the threshold.
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    /// The threshold of the counts below.
    pub threshold: f64,
    /// Precision, recall and F1 at the threshold, percent (0 when undefined).
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Everything the paper and the literature report for a multi-label evaluation. Percentages in
/// [0, 100]. See the [module documentation](self) for the definitions.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsReport {
    pub num_samples: usize,
    pub num_classes: usize,
    /// The threshold of the thresholded metrics (NaN when each class had its own, see
    /// [`ClassMetrics::threshold`]).
    pub threshold: f64,
    /// mAP as the paper computes it: every class counts, those without positives as AP 0.
    pub map: f64,
    /// Mean AP over the classes that have at least one positive (0 when none has).
    pub map_macro: f64,
    /// How many classes have at least one positive.
    pub classes_with_positives: usize,
    /// Per-class precision / recall means, and the literature's CF1 = 2 CP CR / (CP + CR).
    pub cp: f64,
    pub cr: f64,
    pub cf1: f64,
    /// The ASL reference's "CF1": the mean of per-class F1.
    pub cf1_mean_of_f1: f64,
    /// Overall precision / recall / F1 from counts summed over classes.
    pub op: f64,
    pub or: f64,
    pub of1: f64,
    pub per_class: Vec<ClassMetrics>,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Collects (scores, labels) batch by batch and computes a [`MetricsReport`].
///
/// ```
/// use asl_core::MetricAccumulator;
/// let mut acc = MetricAccumulator::new(2);
/// acc.push_slices(&[0.9, 0.2, 0.4, 0.8], &[1.0, 0.0, 0.0, 1.0]).unwrap();
/// let report = acc.compute(0.5);
/// assert!((report.map - 100.0).abs() < 1e-4);
/// assert_eq!(report.num_samples, 2);
/// ```
#[derive(Clone, Debug)]
pub struct MetricAccumulator {
    num_classes: usize,
    scores: Vec<f32>,
    labels: Vec<i8>,
}

impl MetricAccumulator {
    /// An empty accumulator for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        MetricAccumulator {
            num_classes,
            scores: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Samples pushed so far.
    pub fn num_samples(&self) -> usize {
        self.scores.len().checked_div(self.num_classes).unwrap_or(0)
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.scores.clear();
        self.labels.clear();
    }

    /// Adds a batch given row-major: `scores` and `labels` of `rows * num_classes` values.
    /// Scores are usually probabilities (the threshold applies to them as given); labels are
    /// 1, 0 or -1 (ignored). On error nothing is added.
    pub fn push_slices(&mut self, scores: &[f32], labels: &[f32]) -> Result<(), AslError> {
        let c = self.num_classes;
        if c == 0 || !scores.len().is_multiple_of(c) || labels.len() != scores.len() {
            return Err(AslError::Shape {
                what: "metric batch",
                expected: format!(
                    "scores and labels of equal length, a multiple of {c} classes (scores: {}, labels: {})",
                    scores.len(),
                    labels.len()
                ),
                got: candle_core::Shape::from(scores.len()),
            });
        }
        let row0 = self.num_samples();
        let mut new_labels = Vec::with_capacity(labels.len());
        for (i, (&s, &l)) in scores.iter().zip(labels).enumerate() {
            if s.is_nan() {
                return Err(AslError::NanScore {
                    row: row0 + i / c,
                    col: i % c,
                });
            }
            new_labels.push(match l {
                1.0 => 1,
                0.0 => 0,
                -1.0 => -1,
                _ => {
                    return Err(AslError::BadMetricLabel {
                        row: row0 + i / c,
                        col: i % c,
                        value: l as f64,
                    })
                }
            });
        }
        self.scores.extend_from_slice(scores);
        self.labels.extend(new_labels);
        Ok(())
    }

    /// Adds a batch of `[N, C]` tensors (any float or integer dtype, any device).
    pub fn push(&mut self, scores: &Tensor, labels: &Tensor) -> candle_core::Result<()> {
        let expected = (scores.dim(0).unwrap_or(0), self.num_classes);
        if scores.dims() != [expected.0, expected.1] || labels.dims() != scores.dims() {
            return Err(AslError::Shape {
                what: "metric batch",
                expected: format!(
                    "scores and labels of shape [N, {}] (labels: {:?})",
                    self.num_classes,
                    labels.dims()
                ),
                got: scores.shape().clone(),
            }
            .into());
        }
        let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>();
        Ok(self.push_slices(&flat(scores)?, &flat(labels)?)?)
    }

    /// The non-ignored samples of class `k` and its number of positives.
    fn column(&self, k: usize) -> (Vec<Ranked>, usize) {
        let c = self.num_classes;
        class_column(
            self.scores.iter().skip(k).step_by(c),
            self.labels.iter().skip(k).step_by(c),
        )
    }

    /// Computes every metric over the samples pushed so far.
    pub fn compute(&self, threshold: f64) -> MetricsReport {
        self.compute_with(&vec![threshold; self.num_classes], threshold)
    }

    /// Computes every metric with a threshold per class (e.g. from [`Self::calibrate`]);
    /// [`MetricsReport::threshold`] is then NaN. Panics unless there is one threshold per class.
    pub fn compute_per_class(&self, thresholds: &[f64]) -> MetricsReport {
        assert_eq!(
            thresholds.len(),
            self.num_classes,
            "one threshold per class"
        );
        self.compute_with(thresholds, f64::NAN)
    }

    /// Per class, the threshold that maximises F1 on the samples pushed so far (`None` for a
    /// class without positives, where every threshold gives F1 = 0). Sweeping the distinct scores
    /// from the highest down, the best cut keeps the highest threshold among equal F1s and is put
    /// halfway between the last score kept and the next lower one (so that it does not sit on a
    /// training score), or at the last score when nothing is lower. With `score >= threshold`, the
    /// returned threshold reproduces the best F1 on these samples exactly.
    pub fn calibrate(&self) -> Vec<Option<f64>> {
        (0..self.num_classes)
            .into_par_iter()
            .map(|k| {
                let (mut items, npos) = self.column(k);
                if npos == 0 {
                    return None;
                }
                let key = |s: f32| if s == 0.0 { 0.0 } else { s as f64 };
                items.sort_unstable_by(|a, b| key(b.0).total_cmp(&key(a.0)));
                let groups: Vec<&[Ranked]> = items.chunk_by(|a, b| key(a.0) == key(b.0)).collect();
                let (mut tp, mut fp) = (0usize, 0usize);
                let mut best: Option<(f64, usize)> = None; // (F1, group index)
                for (g, group) in groups.iter().enumerate() {
                    let hits = group.iter().filter(|r| r.2).count();
                    tp += hits;
                    fp += group.len() - hits;
                    let f = 2.0 * tp as f64 / (2 * tp + fp + (npos - tp)) as f64;
                    if best.is_none_or(|(b, _)| f > b) {
                        best = Some((f, g));
                    }
                }
                let (_, g) = best?;
                let kept = key(groups[g][0].0);
                Some(match groups.get(g + 1) {
                    Some(next) => {
                        let mid = 0.5 * (kept + key(next[0].0));
                        // halfway can round onto the lower score for adjacent floats
                        if mid > key(next[0].0) {
                            mid
                        } else {
                            kept
                        }
                    }
                    None => kept,
                })
            })
            .collect()
    }

    fn compute_with(&self, thresholds: &[f64], threshold: f64) -> MetricsReport {
        let (n, c) = (self.num_samples(), self.num_classes);
        let per_class: Vec<ClassMetrics> = (0..c)
            .into_par_iter()
            .map(|k| {
                let threshold = thresholds[k];
                let (items, npos) = self.column(k);
                let (mut tp, mut fp) = (0usize, 0usize);
                for &(s, _, p) in &items {
                    if s as f64 >= threshold {
                        if p {
                            tp += 1;
                        } else {
                            fp += 1;
                        }
                    }
                }
                let negatives = items.len() - npos;
                let precision = ratio(tp, tp + fp);
                let recall = ratio(tp, npos);
                ClassMetrics {
                    ap: 100.0 * ap_paper(items, npos),
                    positives: npos,
                    negatives,
                    true_positives: tp,
                    false_positives: fp,
                    false_negatives: npos - tp,
                    threshold,
                    precision: 100.0 * precision,
                    recall: 100.0 * recall,
                    f1: 100.0 * f1(precision, recall),
                }
            })
            .collect();

        let mean = |f: &dyn Fn(&ClassMetrics) -> f64| {
            if c == 0 {
                0.0
            } else {
                per_class.iter().map(f).sum::<f64>() / c as f64
            }
        };
        let with_pos: Vec<&ClassMetrics> = per_class.iter().filter(|m| m.positives > 0).collect();
        let map_macro = if with_pos.is_empty() {
            0.0
        } else {
            with_pos.iter().map(|m| m.ap).sum::<f64>() / with_pos.len() as f64
        };
        let (cp, cr) = (mean(&|m| m.precision), mean(&|m| m.recall));
        let tp: usize = per_class.iter().map(|m| m.true_positives).sum();
        let fp: usize = per_class.iter().map(|m| m.false_positives).sum();
        let fneg: usize = per_class.iter().map(|m| m.false_negatives).sum();
        let (op, or) = (100.0 * ratio(tp, tp + fp), 100.0 * ratio(tp, tp + fneg));
        MetricsReport {
            num_samples: n,
            num_classes: c,
            threshold,
            map: mean(&|m| m.ap),
            map_macro,
            classes_with_positives: with_pos.len(),
            cp,
            cr,
            cf1: f1(cp, cr),
            cf1_mean_of_f1: mean(&|m| m.f1),
            op,
            or,
            of1: f1(op, or),
            per_class,
        }
    }
}
