//! Property tests: the fused kernels equal the composed candle-ops reference (value and gradient)
//! on random shapes, logit scales, targets and configurations. The seed is fixed so CI runs are
//! reproducible; set `PROPTEST_CASES` to run more.

use asl_core::{AslConfig, AslSingleLabel, AsymmetricLoss, Reduction, SingleLabelConfig};
use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        rng_seed: RngSeed::Fixed(0x5EED_A5C1),
        failure_persistence: None,
        ..Config::default()
    }
}

fn reduction() -> impl Strategy<Value = Reduction> {
    prop_oneof![
        Just(Reduction::Sum),
        Just(Reduction::Mean),
        Just(Reduction::BatchMean),
        Just(Reduction::None),
    ]
}

fn asl_config() -> impl Strategy<Value = AslConfig> {
    (
        prop_oneof![Just(0.0), Just(1.0), Just(4.0), 0.0..6.0f64],
        prop_oneof![Just(0.0), Just(1.0), 0.0..3.0f64],
        prop_oneof![Just(0.0), Just(0.05), 0.0..0.3f64],
        any::<bool>(),
        reduction(),
    )
        .prop_map(
            |(gamma_neg, gamma_pos, clip, detach, reduction)| AslConfig {
                gamma_neg,
                gamma_pos,
                clip,
                eps: 1e-8,
                detach_focal_weight: detach,
                reduction,
            },
        )
}

/// Logits (row-major), targets and the shape. Targets: hard, soft, or mixed.
fn batch() -> impl Strategy<Value = (usize, usize, Vec<f64>, Vec<f64>)> {
    (1usize..9, 1usize..48, -1.0f64..2.5, 0u8..3).prop_flat_map(|(n, c, log_scale, kind)| {
        let scale = 10f64.powf(log_scale);
        let x = proptest::collection::vec(-1.0f64..1.0, n * c)
            .prop_map(move |v| v.into_iter().map(|u| u * scale).collect::<Vec<_>>());
        let y = proptest::collection::vec(0.0f64..1.0, n * c).prop_map(move |v| {
            v.into_iter()
                .map(|u| match kind {
                    0 => (u < 0.3) as u8 as f64,
                    1 => u,
                    _ => {
                        if u < 0.4 {
                            (u < 0.2) as u8 as f64
                        } else {
                            u
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        (Just(n), Just(c), x, y)
    })
}

fn all_values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `|a - b| <= rtol |b| + atol_frac max|b| + floor`. The floor is for f32 results in the
/// subnormal range (below 1.2e-38), whose relative precision is lower.
fn close(a: &[f64], b: &[f64], rtol: f64, atol_frac: f64, floor: f64) -> Result<(), TestCaseError> {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            (x - y).abs() <= rtol * y.abs() + atol_frac * scale + floor,
            "element {}: {:e} vs {:e}",
            i,
            x,
            y
        );
    }
    Ok(())
}

/// Runs the fused (`false`) and composed (`true`) path of a loss on `logits` as a variable:
/// for each, the output's dtype, its values and the logits' gradient of its sum.
fn both_paths(
    logits: &Tensor,
    forward: impl Fn(bool, &Tensor) -> candle_core::Result<Tensor>,
) -> Vec<(DType, Vec<f64>, Vec<f64>)> {
    [false, true]
        .into_iter()
        .map(|composed| {
            let v = Var::from_tensor(logits).unwrap();
            let out = forward(composed, v.as_tensor()).unwrap();
            let grads = out.sum_all().unwrap().backward().unwrap();
            (
                out.dtype(),
                all_values(&out),
                all_values(grads.get(&v).unwrap()),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn multilabel_fused_equals_composed(
        cfg in asl_config(),
        (n, c, x, y) in batch(),
        f64_logits in any::<bool>(),
    ) {
        let dt = if f64_logits { DType::F64 } else { DType::F32 };
        let logits = Tensor::from_vec(x, (n, c), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
        let targets = Tensor::from_vec(y, (n, c), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
        let loss = AsymmetricLoss::new(cfg);
        let results = both_paths(&logits, |composed, x| {
            if composed { loss.forward_composed(x, &targets) } else { loss.forward(x, &targets) }
        });
        prop_assert_eq!(results[0].0, dt);
        prop_assert_eq!(results[1].0, dt);
        let (rtol, atol, floor) = if f64_logits { (1e-9, 1e-11, 0.0) } else { (2e-5, 1e-6, 1e-36) };
        close(&results[0].1, &results[1].1, rtol, atol, floor)?;
        close(&results[0].2, &results[1].2, rtol * 10.0, atol * 10.0, floor)?;
    }

    #[test]
    fn single_label_fused_equals_composed(
        n in 1usize..9,
        k in 2usize..40,
        log_scale in -1.0f64..1.7,
        seed in any::<u64>(),
        gamma_pos in prop_oneof![Just(0.0), Just(1.0), 0.0..3.0f64],
        gamma_neg in prop_oneof![Just(0.0), Just(4.0), 0.0..5.0f64],
        eps in prop_oneof![Just(0.0), Just(0.1), 0.0..0.5f64],
        reduction in reduction(),
    ) {
        let scale = 10f64.powf(log_scale);
        // A small LCG keeps the case description short.
        let mut s = seed | 1;
        let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 11) as f64 / (1u64 << 53) as f64 };
        let x: Vec<f64> = (0..n * k).map(|_| (next() * 2.0 - 1.0) * scale).collect();
        let t: Vec<u32> = (0..n).map(|_| (next() * k as f64) as u32 % k as u32).collect();
        let logits = Tensor::from_vec(x, (n, k), &Device::Cpu).unwrap();
        let targets = Tensor::new(t.as_slice(), &Device::Cpu).unwrap();
        let cfg = SingleLabelConfig { gamma_pos, gamma_neg, eps, reduction };
        let loss = AslSingleLabel::new(cfg);
        let results = both_paths(&logits, |composed, x| {
            if composed { loss.forward_composed(x, &targets) } else { loss.forward(x, &targets) }
        });
        close(&results[0].1, &results[1].1, 1e-9, 1e-11, 0.0)?;
        close(&results[0].2, &results[1].2, 1e-8, 1e-10, 0.0)?;
    }
}
