//! The learning-rate and momentum schedule (OneCycle) and the EMA decay's warm-up.

use super::config::TrainConfig;

/// The OneCycle schedule (PyTorch `OneCycleLR`, cosine annealing, `three_phase=False`):
/// learning rate and beta1 at optimiser step `step` of `total`.
pub fn one_cycle(cfg: &TrainConfig, step: usize, total: usize) -> (f64, f64) {
    let initial = cfg.lr / cfg.div_factor;
    let min = initial / cfg.final_div_factor;
    let (b_lo, b_hi) = cfg.beta1_range;
    let warm_end = (cfg.pct_start * total as f64) - 1.0;
    let end = total as f64 - 1.0;
    let cos = |start: f64, stop: f64, pct: f64| {
        stop + (start - stop) / 2.0 * ((std::f64::consts::PI * pct.clamp(0.0, 1.0)).cos() + 1.0)
    };
    let t = step as f64;
    if t <= warm_end {
        let pct = if warm_end > 0.0 { t / warm_end } else { 1.0 };
        (cos(initial, cfg.lr, pct), cos(b_hi, b_lo, pct))
    } else {
        let span = end - warm_end;
        let pct = if span > 0.0 {
            (t - warm_end) / span
        } else {
            1.0
        };
        (cos(cfg.lr, min, pct), cos(b_lo, b_hi, pct))
    }
}

/// The EMA decay after `step` optimiser steps (counting the one just taken): `decay`, or with
/// `warmup` `min(decay, (1 + t) / (10 + t))`.
pub fn ema_decay(decay: f64, warmup: bool, step: usize) -> f64 {
    let t = step as f64;
    if warmup {
        decay.min((1.0 + t) / (10.0 + t))
    } else {
        decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cycle_matches_pytorch_shape() {
        let cfg = TrainConfig {
            lr: 1e-3,
            ..TrainConfig::recipe("tresnet_m")
        };
        let total = 100;
        let (lr0, b0) = one_cycle(&cfg, 0, total);
        assert!((lr0 - 1e-3 / 25.0).abs() < 1e-12 && (b0 - 0.95).abs() < 1e-12);
        // peak at step pct_start * total - 1 = 19
        let (peak, bp) = one_cycle(&cfg, 19, total);
        assert!((peak - 1e-3).abs() < 1e-12 && (bp - 0.85).abs() < 1e-12);
        let (last, bl) = one_cycle(&cfg, 99, total);
        assert!((last - 1e-3 / 25.0 / 1e4).abs() < 1e-15 && (bl - 0.95).abs() < 1e-12);
        // monotone up, then down
        let lrs: Vec<f64> = (0..total).map(|s| one_cycle(&cfg, s, total).0).collect();
        assert!(lrs[..20].windows(2).all(|w| w[1] >= w[0]));
        assert!(lrs[19..].windows(2).all(|w| w[1] <= w[0]));
    }
}
