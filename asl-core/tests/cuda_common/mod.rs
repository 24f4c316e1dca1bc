//! Inputs and configurations shared by the CUDA tests (`tests/cuda.rs`, GPU only) and the CPU
//! mirror of the CUDA kernels (`tests/cuda_mirror.rs`, always run).

#![allow(dead_code)] // each test binary uses part of it

use asl_core::{AslConfig, Reduction, SingleLabelConfig};

#[cfg(feature = "cuda")]
pub mod bench;

/// A small deterministic generator (PCG-style LCG), so that inputs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, k: usize) -> usize {
        ((self.uniform() * k as f64) as usize).min(k - 1)
    }
}

pub const REDUCTIONS: [Reduction; 4] = [
    Reduction::Sum,
    Reduction::Mean,
    Reduction::BatchMean,
    Reduction::None,
];

/// Every branch of the multi-label element formula: both gradient modes, clip on and off,
/// gammas 0, integer, non-integer and below 1, eps 0.
pub fn multilabel_configs() -> Vec<(&'static str, AslConfig)> {
    let d = AslConfig::default();
    vec![
        ("asl-default", d),
        (
            "asl-optimized",
            AslConfig {
                detach_focal_weight: false,
                ..d
            },
        ),
        ("paper", AslConfig::paper()),
        ("bce", AslConfig::bce()),
        ("focal2", AslConfig::focal(2.0)),
        (
            "focal2-grad",
            AslConfig {
                detach_focal_weight: false,
                ..AslConfig::focal(2.0)
            },
        ),
        (
            "nonint-grad",
            AslConfig {
                gamma_neg: 2.5,
                gamma_pos: 0.5,
                clip: 0.1,
                detach_focal_weight: false,
                ..d
            },
        ),
        (
            "nonint-noclip",
            AslConfig {
                gamma_neg: 3.3,
                gamma_pos: 1.7,
                clip: 0.0,
                ..d
            },
        ),
        (
            "small-gamma-grad",
            AslConfig {
                gamma_neg: 0.5,
                gamma_pos: 0.25,
                clip: 0.02,
                detach_focal_weight: false,
                ..d
            },
        ),
        (
            "wide-clip",
            AslConfig {
                gamma_neg: 1.0,
                gamma_pos: 0.0,
                clip: 0.3,
                detach_focal_weight: false,
                ..d
            },
        ),
        ("eps0", AslConfig { eps: 0.0, ..d }),
        (
            "big-eps",
            AslConfig {
                eps: 1e-3,
                detach_focal_weight: false,
                ..d
            },
        ),
    ]
}

/// Logits of mixed scales (most moderate, some saturated, a few extreme, zeros).
pub fn logits(n: usize, rng: &mut Rng) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let u = rng.uniform() - 0.5;
            match i % 16 {
                0 => u * 400.0,
                1 => u * 120.0,
                2 => u * 2e4,
                3 if rng.uniform() < 0.1 => 0.0,
                4..=7 => u * 24.0,
                _ => u * 6.0,
            }
        })
        .collect()
}

/// Targets: `Hard` 0/1 (30% positives), `Soft` in [0, 1], `Mixed` mostly hard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Hard,
    Soft,
    Mixed,
}

pub fn targets(kind: TargetKind, n: usize, rng: &mut Rng) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u = rng.uniform();
            let hard = (rng.uniform() < 0.3) as u8 as f64;
            match kind {
                TargetKind::Hard => hard,
                TargetKind::Soft => u,
                TargetKind::Mixed if u < 0.8 => hard,
                TargetKind::Mixed => rng.uniform(),
            }
        })
        .collect()
}

pub fn single_label_configs() -> Vec<(&'static str, SingleLabelConfig)> {
    let d = SingleLabelConfig::default();
    vec![
        ("asl-single", d),
        (
            "cross-entropy",
            SingleLabelConfig {
                gamma_pos: 0.0,
                gamma_neg: 0.0,
                eps: 0.0,
                ..d
            },
        ),
        (
            "timm",
            SingleLabelConfig {
                gamma_pos: 1.0,
                ..d
            },
        ),
        (
            "nonint",
            SingleLabelConfig {
                gamma_pos: 0.5,
                gamma_neg: 2.5,
                eps: 0.2,
                ..d
            },
        ),
        (
            "full-smoothing",
            SingleLabelConfig {
                gamma_pos: 2.0,
                gamma_neg: 0.0,
                eps: 1.0,
                ..d
            },
        ),
    ]
}

/// `|a - b| / |b|` (0 when both are 0; infinite when only `b` is).
pub fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs()
    }
}

/// The error of `a` against the reference `b`: the largest `|a_i - b_i| / max(|b_i|, floor)`
/// with `floor = 1e-3 * max|b|` (elements far below the tensor's scale are compared against the
/// scale, where a relative error means nothing), and whether every pair has the same NaN-ness.
pub fn grad_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()));
    let floor = (1e-3 * scale).max(1e-300);
    a.iter().zip(b).fold(0f64, |worst, (&x, &y)| {
        if x.is_nan() || y.is_nan() {
            return if x.is_nan() && y.is_nan() {
                worst
            } else {
                f64::INFINITY
            };
        }
        if x == y {
            return worst;
        }
        worst.max((x - y).abs() / y.abs().max(floor))
    })
}

/// The normwise error `max_i |a_i - b_i| / max_i |b_i|` (NaN-ness must match).
pub fn norm_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(1e-300);
    a.iter().zip(b).fold(0f64, |worst, (&x, &y)| {
        if x.is_nan() || y.is_nan() {
            return if x.is_nan() && y.is_nan() {
                worst
            } else {
                f64::INFINITY
            };
        }
        if x == y {
            return worst;
        }
        worst.max((x - y).abs() / scale)
    })
}

/// The largest error of the losses: relative for a scalar loss; per element (`Reduction::None`,
/// where many element losses are exactly or nearly 0) as [`grad_err`], relative to the largest.
pub fn loss_err(a: &[f64], b: &[f64]) -> f64 {
    if a.len() == 1 {
        rel(a[0], b[0])
    } else {
        grad_err(a, b)
    }
}
