//! Finite-difference checks (f64) of the fused kernels' gradients on each branch of the formulas.

use asl_core::{AslConfig, AslSingleLabel, AsymmetricLoss, Reduction, SingleLabelConfig};
use candle_core::{Device, Result, Tensor, Var};

/// Loss (sum reduction) and fused gradient for a single element.
fn loss_and_grad(cfg: AslConfig, x: f64, y: f64) -> Result<(f64, f64)> {
    let logits = Var::new(&[[x]], &Device::Cpu)?;
    let targets = Tensor::new(&[[y]], &Device::Cpu)?;
    let loss = AsymmetricLoss::new(cfg).forward(logits.as_tensor(), &targets)?;
    let grad = loss.backward()?;
    let g = grad
        .get(&logits)
        .expect("gradient")
        .flatten_all()?
        .to_vec1::<f64>()?[0];
    Ok((loss.to_scalar::<f64>()?, g))
}

fn value(cfg: AslConfig, x: f64, y: f64) -> Result<f64> {
    let logits = Tensor::new(&[[x]], &Device::Cpu)?;
    let targets = Tensor::new(&[[y]], &Device::Cpu)?;
    AsymmetricLoss::new(cfg)
        .forward(&logits, &targets)?
        .to_scalar::<f64>()
}

/// Central difference of the loss at `x`. In detached mode the focal weight is held at its value
/// at `x`: `w(x) * d(-A)/dx`, with `A` the unweighted log-likelihood (the loss with gammas 0).
fn finite_difference(cfg: AslConfig, x: f64, y: f64) -> Result<f64> {
    let h = 1e-6;
    if cfg.detach_focal_weight && (cfg.gamma_pos > 0.0 || cfg.gamma_neg > 0.0) {
        let plain = AslConfig {
            gamma_pos: 0.0,
            gamma_neg: 0.0,
            ..cfg
        };
        let a = value(plain, x, y)?;
        let w = if a == 0.0 { 0.0 } else { value(cfg, x, y)? / a };
        let da = (value(plain, x + h, y)? - value(plain, x - h, y)?) / (2.0 * h);
        Ok(w * da)
    } else {
        Ok((value(cfg, x + h, y)? - value(cfg, x - h, y)?) / (2.0 * h))
    }
}

fn check(name: &str, cfg: AslConfig, x: f64, y: f64) {
    for detach in [true, false] {
        let cfg = AslConfig {
            detach_focal_weight: detach,
            ..cfg
        };
        let (_, g) = loss_and_grad(cfg, x, y).expect("fused");
        let fd = finite_difference(cfg, x, y).expect("finite difference");
        assert!(
            (g - fd).abs() <= 1e-7 * fd.abs().max(1.0),
            "{name} (detach {detach}): x={x} y={y}: fused {g:e} vs finite difference {fd:e}"
        );
    }
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

#[test]
fn positive_branches() {
    for gp in [0.0, 1.0, 2.0, 2.5, 0.5] {
        let cfg = AslConfig {
            gamma_pos: gp,
            ..AslConfig::default()
        };
        for x in [-6.0, -1.3, 0.0, 0.7, 4.0, 12.0] {
            check("positive", cfg, x, 1.0);
        }
    }
}

#[test]
fn positive_eps_clamp_has_zero_gradient() {
    // p < eps = 1e-8 below x = -18.42: the clamp is active, d/dx log(max(p, eps)) = 0.
    let cfg = AslConfig::default();
    for x in [-19.0, -25.0, -60.0] {
        check("positive, clamped", cfg, x, 1.0);
        let (loss, g) = loss_and_grad(AslConfig::paper(), x, 1.0).unwrap();
        assert_eq!(
            g, 0.0,
            "paper config, x={x}: the clamped branch must have zero gradient"
        );
        assert!((loss + 1e-8f64.ln()).abs() < 1e-12);
    }
}

#[test]
fn negative_below_margin_is_exactly_zero() {
    for x in [logit(0.01), logit(0.049), -10.0] {
        for detach in [true, false] {
            let cfg = AslConfig {
                detach_focal_weight: detach,
                ..AslConfig::default()
            };
            assert_eq!(loss_and_grad(cfg, x, 0.0).unwrap(), (0.0, 0.0), "x={x}");
        }
    }
}

#[test]
fn negative_above_margin() {
    for gn in [4.0, 1.0, 2.5, 0.5, 0.0] {
        let cfg = AslConfig {
            gamma_neg: gn,
            ..AslConfig::default()
        };
        for x in [logit(0.06), logit(0.3), 0.0, 2.0, 9.0] {
            check("negative, clip", cfg, x, 0.0);
        }
    }
}

#[test]
fn negative_without_clip_and_its_eps_clamp() {
    for cfg in [
        AslConfig::bce(),
        AslConfig::focal(2.0),
        AslConfig::focal(1.5),
    ] {
        for x in [-8.0, -1.0, 0.5, 6.0, 15.0] {
            check("negative, no clip", cfg, x, 0.0);
        }
        // 1 - p < eps above x = 18.42: clamped, zero derivative of the log term.
        for x in [19.0, 30.0] {
            check("negative, clamped", cfg, x, 0.0);
        }
    }
}

#[test]
fn soft_targets() {
    for cfg in [
        AslConfig::default(),
        AslConfig::paper(),
        AslConfig::bce(),
        AslConfig::focal(2.0),
        AslConfig {
            gamma_neg: 2.5,
            gamma_pos: 0.5,
            clip: 0.1,
            ..AslConfig::default()
        },
    ] {
        for y in [0.3, 0.5, 0.9] {
            for x in [-5.0, logit(0.03), -0.5, 0.7, 3.0] {
                check("soft", cfg, x, y);
            }
        }
    }
}

#[test]
fn reductions_scale_the_gradient() {
    let x = Tensor::new(&[[0.3f64, -1.0, 2.0], [1.5, 0.2, -3.0]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[[1.0f64, 0.0, 1.0], [0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
    let grad_for = |reduction| {
        let v = Var::from_tensor(&x).unwrap();
        let cfg = AslConfig {
            reduction,
            ..AslConfig::default()
        };
        let loss = AsymmetricLoss::new(cfg).forward(v.as_tensor(), &y).unwrap();
        let g = loss.sum_all().unwrap().backward().unwrap();
        let g = g.get(&v).unwrap().flatten_all().unwrap();
        (
            loss.sum_all().unwrap().to_scalar::<f64>().unwrap(),
            g.to_vec1::<f64>().unwrap(),
        )
    };
    let (sum, g_sum) = grad_for(Reduction::Sum);
    for (reduction, scale) in [
        (Reduction::Mean, 1.0 / 6.0),
        (Reduction::BatchMean, 0.5),
        (Reduction::None, 1.0),
    ] {
        let (l, g) = grad_for(reduction);
        assert!((l - sum * scale).abs() < 1e-12, "{reduction:?} value");
        for (a, b) in g.iter().zip(&g_sum) {
            assert!((a - b * scale).abs() < 1e-12, "{reduction:?} gradient");
        }
    }
}

#[test]
fn single_label_gradient_matches_finite_differences() {
    let row = [1.2f64, -0.7, 3.1, 0.0, -2.5];
    let configs = [
        SingleLabelConfig::default(),
        SingleLabelConfig {
            gamma_pos: 1.0,
            ..SingleLabelConfig::default()
        },
        SingleLabelConfig {
            gamma_pos: 2.5,
            gamma_neg: 0.5,
            eps: 0.3,
            reduction: Reduction::Sum,
        },
        SingleLabelConfig {
            gamma_pos: 0.0,
            gamma_neg: 0.0,
            eps: 0.0,
            reduction: Reduction::Mean,
        },
    ];
    let loss_of = |cfg: SingleLabelConfig, xs: &[f64], t: u32| -> f64 {
        let logits = Tensor::new(xs, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let t = Tensor::new(&[t], &Device::Cpu).unwrap();
        AslSingleLabel::new(cfg)
            .forward(&logits, &t)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for cfg in configs {
        for target in [0u32, 2, 4] {
            let v = Var::new(&row, &Device::Cpu).unwrap();
            let logits = v.as_tensor().unsqueeze(0).unwrap();
            let t = Tensor::new(&[target], &Device::Cpu).unwrap();
            let loss = AslSingleLabel::new(cfg).forward(&logits, &t).unwrap();
            let g = loss.backward().unwrap();
            let g = g.get(&v).unwrap().to_vec1::<f64>().unwrap();
            for j in 0..row.len() {
                let h = 1e-6;
                let (mut up, mut down) = (row, row);
                up[j] += h;
                down[j] -= h;
                let fd = (loss_of(cfg, &up, target) - loss_of(cfg, &down, target)) / (2.0 * h);
                assert!(
                    (g[j] - fd).abs() <= 1e-7 * fd.abs().max(1.0),
                    "{cfg:?} target {target} logit {j}: fused {} vs fd {fd}",
                    g[j]
                );
            }
        }
    }
}
