//! Adaptive asymmetry (paper section 2.7; described there, never implemented by the reference):
//! during training, move `gamma_neg` toward the value at which the network's mean confidence on
//! positives and on negatives differ by a chosen target.
//!
//! # Definitions (stated here because the sign convention decides the direction)
//! With `p = sigmoid(logit)` and `p_t` the probability the network gives to the *ground truth*
//! (`p` for a positive, `1 - p` for a negative), the probability gap of a batch is
//!
//! ```text
//! Δp = p_t⁺ - p_t⁻ = mean over positives of p  -  mean over negatives of (1 - p)
//! ```
//!
//! (soft targets weight each element by `y` as a positive and by `1 - y` as a negative). Plain
//! cross-entropy on imbalanced multi-label data gives a negative gap: the many easy negatives
//! make the network far more sure of them than of the few positives. Raising `gamma_neg`
//! down-weights easy negatives, which lowers `p_t⁻` and raises `p_t⁺`, so `Δp` grows with
//! `gamma_neg`. The stable update is therefore
//!
//! ```text
//! gamma_neg ← clamp(gamma_neg + λ (Δp_target - Δp), 0, gamma_max)
//! ```
//!
//! raising `gamma_neg` while the gap is below the target and lowering it above. (The paper
//! writes the update with its own sign convention for `Δp`; this module fixes the convention
//! above and the direction that follows from it.) Probabilities are the raw network outputs,
//! before the loss's probability shift.
//!
//! ```
//! use asl_core::adaptive::{AdaptiveAsymmetry, GapAccumulator};
//! use candle_core::{Device, Tensor};
//! # fn main() -> candle_core::Result<()> {
//! let logits = Tensor::new(&[[2.0f32, -3.0, -4.0]], &Device::Cpu)?;
//! let targets = Tensor::new(&[[1.0f32, 0.0, 0.0]], &Device::Cpu)?;
//! let mut gap = GapAccumulator::default();
//! gap.push(&logits, &targets)?;
//! let ctl = AdaptiveAsymmetry { target_gap: 0.0, step: 0.5, gamma_max: 8.0 };
//! // the positive (p = 0.88) is less sure than the negatives (1 - p ≈ 0.97): raise gamma_neg
//! assert!(ctl.update(4.0, gap.gap().unwrap()) > 4.0);
//! # Ok(()) }
//! ```

use candle_core::{DType, Result, Tensor};

use crate::error::AslError;

/// The controller's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveAsymmetry {
    /// `Δp_target`: the gap `p_t⁺ - p_t⁻` to steer toward (0: equal confidence on positives
    /// and negatives).
    pub target_gap: f64,
    /// `λ`: the change of `gamma_neg` per unit of gap error, per update.
    pub step: f64,
    /// Upper bound of `gamma_neg` (the lower bound is 0).
    pub gamma_max: f64,
}

impl AdaptiveAsymmetry {
    /// `gamma_neg` after one update with the measured gap `gap`.
    pub fn update(&self, gamma_neg: f64, gap: f64) -> f64 {
        if !gap.is_finite() {
            return gamma_neg;
        }
        (gamma_neg + self.step * (self.target_gap - gap)).clamp(0.0, self.gamma_max)
    }

    /// Checks the settings.
    pub fn validate(&self) -> std::result::Result<(), AslError> {
        let bad = |m: String| Err(AslError::InvalidConfig(m));
        if !(-1.0..=1.0).contains(&self.target_gap) {
            return bad(format!(
                "the target probability gap must be in [-1, 1], got {}",
                self.target_gap
            ));
        }
        if !(self.step >= 0.0 && self.step.is_finite()) {
            return bad(format!(
                "the adaptive step must be finite and >= 0, got {}",
                self.step
            ));
        }
        if !(self.gamma_max >= 0.0 && self.gamma_max.is_finite()) {
            return bad(format!(
                "gamma_max must be finite and >= 0, got {}",
                self.gamma_max
            ));
        }
        Ok(())
    }
}

/// Sums of the ground-truth probabilities of positives and negatives over any number of
/// batches (an optimiser step's micro-batches, or an epoch). Sums are kept in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GapAccumulator {
    /// Σ y·p and Σ y.
    pub positive: (f64, f64),
    /// Σ (1-y)·(1-p) and Σ (1-y).
    pub negative: (f64, f64),
}

impl GapAccumulator {
    /// Adds a batch: `logits` and `targets` of the same shape, on any device (copied to the
    /// host; the batch is `N x C` values).
    pub fn push(&mut self, logits: &Tensor, targets: &Tensor) -> Result<()> {
        if logits.dims() != targets.dims() {
            candle_core::bail!(
                "probability gap: logits {:?} and targets {:?} differ in shape",
                logits.dims(),
                targets.dims()
            );
        }
        let x = logits
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let y = targets
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        for (&x, &y) in x.iter().zip(&y) {
            let p = 1.0 / (1.0 + (-x).exp());
            self.positive.0 += y * p;
            self.positive.1 += y;
            self.negative.0 += (1.0 - y) * (1.0 - p);
            self.negative.1 += 1.0 - y;
        }
        Ok(())
    }

    /// Adds the sums of `other` (e.g. a micro-batch into its optimiser step).
    pub fn merge(&mut self, other: &GapAccumulator) {
        self.positive.0 += other.positive.0;
        self.positive.1 += other.positive.1;
        self.negative.0 += other.negative.0;
        self.negative.1 += other.negative.1;
    }

    /// Mean ground-truth probability of the positives (`None` without positives).
    pub fn positive_mean(&self) -> Option<f64> {
        (self.positive.1 > 0.0).then(|| self.positive.0 / self.positive.1)
    }

    /// Mean ground-truth probability (`1 - p`) of the negatives (`None` without negatives).
    pub fn negative_mean(&self) -> Option<f64> {
        (self.negative.1 > 0.0).then(|| self.negative.0 / self.negative.1)
    }

    /// `Δp = p_t⁺ - p_t⁻`, when the batches had both positives and negatives.
    pub fn gap(&self) -> Option<f64> {
        Some(self.positive_mean()? - self.negative_mean()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_gap_is_computed_as_documented() {
        let logits = Tensor::new(&[[0.0f32, 1.0], [-2.0, 3.0]], &Device::Cpu).expect("x");
        let targets = Tensor::new(&[[1.0f32, 0.0], [0.25, 1.0]], &Device::Cpu).expect("y");
        let mut acc = GapAccumulator::default();
        acc.push(&logits, &targets).expect("push");
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let pos = (s(0.0) + 0.25 * s(-2.0) + s(3.0)) / 2.25;
        let neg = ((1.0 - s(1.0)) + 0.75 * (1.0 - s(-2.0))) / 1.75;
        assert!((acc.positive_mean().expect("pos") - pos).abs() < 1e-12);
        assert!((acc.negative_mean().expect("neg") - neg).abs() < 1e-12);
        assert!((acc.gap().expect("gap") - (pos - neg)).abs() < 1e-12);
        // two pushes of the same batch, or a merge of two: same means
        let once = acc;
        acc.push(&logits, &targets).expect("push");
        assert!((acc.gap().expect("gap") - once.gap().expect("gap")).abs() < 1e-12);
        let mut merged = once;
        merged.merge(&once);
        assert_eq!(merged, acc);
        // no positives: no gap
        let mut none = GapAccumulator::default();
        none.push(&logits, &logits.zeros_like().expect("z"))
            .expect("push");
        assert_eq!(none.gap(), None);
        let wrong = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).expect("w");
        assert!(GapAccumulator::default().push(&logits, &wrong).is_err());
    }

    #[test]
    fn the_update_moves_toward_the_target_and_stays_in_range() {
        let ctl = AdaptiveAsymmetry {
            target_gap: 0.1,
            step: 2.0,
            gamma_max: 6.0,
        };
        assert!(ctl.validate().is_ok());
        // gap below target: raise; above: lower; at target: keep
        assert!((ctl.update(4.0, -0.2) - 4.6).abs() < 1e-12);
        assert!((ctl.update(4.0, 0.3) - 3.6).abs() < 1e-12);
        assert_eq!(ctl.update(4.0, 0.1), 4.0);
        assert_eq!(ctl.update(5.9, -1.0), 6.0);
        assert_eq!(ctl.update(0.1, 1.0), 0.0);
        assert_eq!(ctl.update(3.0, f64::NAN), 3.0);
        for bad in [
            AdaptiveAsymmetry {
                target_gap: 1.5,
                ..ctl
            },
            AdaptiveAsymmetry { step: -1.0, ..ctl },
            AdaptiveAsymmetry {
                gamma_max: f64::INFINITY,
                ..ctl
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
