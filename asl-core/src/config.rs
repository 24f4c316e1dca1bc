//! The losses' configurations: [`AslConfig`] and [`SingleLabelConfig`], with the [`Reduction`]
//! they share. Plain data and its validation, at the bottom of the crate, so that the kernels'
//! math and the CUDA launch plans can read a configuration without depending on the losses.

use crate::error::AslError;

/// How per-element losses are combined into the value `forward` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Sum over all `N * C` elements (the ASL reference and the paper's training recipe).
    #[default]
    Sum,
    /// Mean over all `N * C` elements.
    Mean,
    /// Sum divided by the batch size `N` (timm's `batchmean` default).
    BatchMean,
    /// No reduction: the per-element loss, shape `[N, C]` (or `[N]` for the single-label loss).
    None,
}

impl Reduction {
    /// The factor applied to the summed loss, for `total` elements in `rows` rows.
    pub(crate) fn scale(self, rows: usize, total: usize) -> f64 {
        match self {
            Reduction::Sum | Reduction::None => 1.0,
            Reduction::Mean => 1.0 / total as f64,
            Reduction::BatchMean => 1.0 / rows as f64,
        }
    }
}

/// Parameters of the multi-label asymmetric loss.
///
/// ```
/// use asl_core::{AslConfig, Reduction};
/// let cfg = AslConfig { reduction: Reduction::BatchMean, ..AslConfig::paper() };
/// assert_eq!((cfg.gamma_neg, cfg.gamma_pos, cfg.clip), (4.0, 0.0, 0.05));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AslConfig {
    /// Focusing exponent for negatives (the paper's gamma-).
    pub gamma_neg: f64,
    /// Focusing exponent for positives (the paper's gamma+).
    pub gamma_pos: f64,
    /// Probability margin `m` for negatives: `p_m = max(p - clip, 0)`. 0 disables it.
    pub clip: f64,
    /// Lower clamp on the argument of each `log` (not label smoothing).
    pub eps: f64,
    /// `true`: the focal weight is a constant for the gradient (the reference `AsymmetricLoss`
    /// default, and the paper's recipe); `false`: the gradient flows through it
    /// (`AsymmetricLossOptimized`, timm). Forward values are identical either way.
    pub detach_focal_weight: bool,
    /// How element losses are combined.
    pub reduction: Reduction,
}

impl Default for AslConfig {
    /// The reference `AsymmetricLoss` defaults: gamma_neg 4, gamma_pos 1, clip 0.05, eps 1e-8,
    /// detached focal weight, sum reduction.
    fn default() -> Self {
        AslConfig {
            gamma_neg: 4.0,
            gamma_pos: 1.0,
            clip: 0.05,
            eps: 1e-8,
            detach_focal_weight: true,
            reduction: Reduction::Sum,
        }
    }
}

impl AslConfig {
    /// The paper's MS-COCO training setting: gamma_neg 4, gamma_pos 0, clip 0.05, detached, sum.
    pub fn paper() -> Self {
        AslConfig {
            gamma_pos: 0.0,
            ..Self::default()
        }
    }

    /// Plain binary cross-entropy with logits (sum reduction): no focusing, no clip.
    pub fn bce() -> Self {
        AslConfig {
            gamma_neg: 0.0,
            gamma_pos: 0.0,
            clip: 0.0,
            ..Self::default()
        }
    }

    /// Symmetric focal loss (alpha = 1) with exponent `gamma`, no clip.
    pub fn focal(gamma: f64) -> Self {
        AslConfig {
            gamma_neg: gamma,
            gamma_pos: gamma,
            clip: 0.0,
            ..Self::default()
        }
    }

    /// Checks that every value is in the range the loss is defined for.
    pub fn validate(&self) -> std::result::Result<(), AslError> {
        let bad = |m: String| Err(AslError::InvalidConfig(m));
        if !(self.gamma_neg >= 0.0 && self.gamma_neg.is_finite()) {
            return bad(format!(
                "gamma_neg must be finite and >= 0, got {}",
                self.gamma_neg
            ));
        }
        if !(self.gamma_pos >= 0.0 && self.gamma_pos.is_finite()) {
            return bad(format!(
                "gamma_pos must be finite and >= 0, got {}",
                self.gamma_pos
            ));
        }
        if !(0.0..1.0).contains(&self.clip) {
            return bad(format!("clip must be in [0, 1), got {}", self.clip));
        }
        if !(0.0..1.0).contains(&self.eps) {
            return bad(format!("eps must be in [0, 1), got {}", self.eps));
        }
        Ok(())
    }
}

/// Parameters of the single-label asymmetric loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SingleLabelConfig {
    /// Focusing exponent on the target class: weight `(1 - p_target)^gamma_pos`.
    pub gamma_pos: f64,
    /// Focusing exponent on the other classes: weight `p_k^gamma_neg`.
    pub gamma_neg: f64,
    /// Label-smoothing factor (called `eps` in the reference): the target distribution is
    /// `one_hot * (1 - eps) + eps / K`.
    pub eps: f64,
    /// `Mean` (the reference's `'mean'`) or `BatchMean`: mean over samples; `Sum`: sum over
    /// samples; `None`: the per-sample losses, shape `[N]`.
    pub reduction: Reduction,
}

impl Default for SingleLabelConfig {
    /// The reference `ASLSingleLabel` defaults: gamma_pos 0, gamma_neg 4, eps 0.1, mean.
    fn default() -> Self {
        SingleLabelConfig {
            gamma_pos: 0.0,
            gamma_neg: 4.0,
            eps: 0.1,
            reduction: Reduction::Mean,
        }
    }
}

impl SingleLabelConfig {
    /// Checks that every value is in the range the loss is defined for.
    pub fn validate(&self) -> std::result::Result<(), AslError> {
        for (name, g) in [("gamma_pos", self.gamma_pos), ("gamma_neg", self.gamma_neg)] {
            if !(g >= 0.0 && g.is_finite()) {
                return Err(AslError::InvalidConfig(format!(
                    "{name} must be finite and >= 0, got {g}"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.eps) {
            return Err(AslError::InvalidConfig(format!(
                "eps (label smoothing) must be in [0, 1], got {}",
                self.eps
            )));
        }
        Ok(())
    }

    pub(crate) fn scale(&self, rows: usize) -> f64 {
        match self.reduction {
            Reduction::Mean | Reduction::BatchMean => 1.0 / rows as f64,
            Reduction::Sum | Reduction::None => 1.0,
        }
    }
}
