//! The vectorised f32 path (full blocks of hard targets, integer exponents) against the scalar f64
//! kernel on large inputs: every exponent the fast path takes, both gradient modes, clip on and
//! off, logits from -120 to 120 (underflow and the eps clamps included), and NaN / inf logits.

use asl_core::{AslConfig, AsymmetricLoss, Reduction};
use candle_core::{DType, Device, Tensor, Var};

fn lcg(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed | 1;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn run(cfg: AslConfig, x: &Tensor, y: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let v = Var::from_tensor(x).unwrap();
    let loss = AsymmetricLoss::new(cfg)
        .forward(v.as_tensor(), &y.to_dtype(x.dtype()).unwrap())
        .unwrap();
    let grads = loss.sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    (flat(&loss), flat(grads.get(&v).unwrap()))
}

#[test]
fn fast_f32_path_matches_the_f64_kernel() {
    let (n, c) = (37, 211); // several full blocks and a ragged tail
    let mut rand = lcg(7);
    let x: Vec<f64> = (0..n * c)
        .map(|i| match i % 5 {
            0 => (rand() - 0.5) * 240.0,
            1 => (rand() - 0.5) * 40.0,
            _ => (rand() - 0.5) * 12.0,
        })
        .collect();
    let y: Vec<f64> = (0..n * c).map(|_| (rand() < 0.2) as u8 as f64).collect();
    let x32 = Tensor::from_vec(x, (n, c), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let x64 = x32.to_dtype(DType::F64).unwrap(); // the same values
    let y = Tensor::from_vec(y, (n, c), &Device::Cpu).unwrap();
    for gamma_neg in [0.0, 1.0, 2.0, 4.0, 7.0] {
        for gamma_pos in [0.0, 1.0, 3.0] {
            for clip in [0.0, 0.05, 0.2] {
                for detach in [true, false] {
                    let cfg = AslConfig {
                        gamma_neg,
                        gamma_pos,
                        clip,
                        eps: 1e-8,
                        detach_focal_weight: detach,
                        reduction: Reduction::None,
                    };
                    let (l32, g32) = run(cfg, &x32, &y);
                    let (l64, g64) = run(cfg, &x64, &y);
                    let (s32, s64) = (l32.iter().sum::<f64>(), l64.iter().sum::<f64>());
                    assert!(
                        (s32 - s64).abs() <= 1e-6 * s64.abs(),
                        "{cfg:?}: sum {s32} vs {s64}"
                    );
                    let gmax = g64.iter().fold(0f64, |m, v| m.max(v.abs()));
                    // Near the margin (p just above clip) an element's loss is about
                    // p - clip, known in f32 only to ~1e-8 absolute (neither p nor 0.05 is
                    // exact in f32): hence the absolute term.
                    for i in 0..l32.len() {
                        let tol = 2e-6 * l64[i].abs() + 1e-8;
                        assert!(
                            (l32[i] - l64[i]).abs() <= tol,
                            "{cfg:?} element {i}: loss {} vs {}",
                            l32[i],
                            l64[i]
                        );
                        let tol = 1e-5 * g64[i].abs() + 1e-7 * gmax + 1e-30;
                        assert!(
                            (g32[i] - g64[i]).abs() <= tol,
                            "{cfg:?} element {i}: grad {} vs {}",
                            g32[i],
                            g64[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn nan_logits_give_nan_and_infinite_logits_are_finite() {
    let mut x = vec![0.5f32; 128];
    x[3] = f32::NAN;
    x[70] = f32::NAN;
    x[10] = f32::INFINITY;
    x[11] = f32::NEG_INFINITY;
    x[12] = f32::INFINITY;
    x[13] = f32::NEG_INFINITY;
    let mut y = vec![0f32; 128];
    y[10] = 1.0;
    y[11] = 1.0;
    let x = Tensor::from_vec(x, (2, 64), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(y, (2, 64), &Device::Cpu).unwrap();
    for cfg in [
        AslConfig::default(),
        AslConfig::bce(),
        AslConfig::focal(2.0),
    ] {
        for x in [x.clone(), x.to_dtype(DType::F64).unwrap()] {
            let cfg = AslConfig {
                reduction: Reduction::None,
                ..cfg
            };
            let (l, g) = run(cfg, &x, &y);
            for i in 0..128 {
                let nan = i == 3 || i == 70;
                assert_eq!(l[i].is_nan(), nan, "{cfg:?} loss {i}: {}", l[i]);
                assert_eq!(g[i].is_nan(), nan, "{cfg:?} grad {i}: {}", g[i]);
                if !nan {
                    assert!(l[i].is_finite() && g[i].is_finite(), "{cfg:?} element {i}");
                }
            }
            let total = AsymmetricLoss::new(AslConfig::default())
                .forward(&x, &y.to_dtype(x.dtype()).unwrap())
                .unwrap();
            assert!(total
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                .is_nan());
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rand = lcg(11);
    let (n, c) = (64, 9605);
    let x: Vec<f32> = (0..n * c).map(|_| ((rand() - 0.5) * 16.0) as f32).collect();
    let y: Vec<f32> = (0..n * c).map(|_| (rand() < 0.05) as u8 as f32).collect();
    let x = Tensor::from_vec(x, (n, c), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(y, (n, c), &Device::Cpu).unwrap();
    let loss = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run(AslConfig::default(), &x, &y))
    };
    let one = loss(1);
    assert_eq!(one, loss(2), "1 vs 2 threads");
    assert_eq!(one, loss(3), "1 vs 3 threads");
}

#[test]
fn half_precision_logits_take_the_fast_path_too() {
    let mut rand = lcg(3);
    let (n, c) = (4, 160);
    let x: Vec<f64> = (0..n * c).map(|_| (rand() - 0.5) * 20.0).collect();
    let y: Vec<f64> = (0..n * c).map(|_| (rand() < 0.2) as u8 as f64).collect();
    let y = Tensor::from_vec(y, (n, c), &Device::Cpu).unwrap();
    let cfg = AslConfig {
        reduction: Reduction::None,
        detach_focal_weight: false,
        ..AslConfig::default()
    };
    for dt in [DType::F16, DType::BF16] {
        let xh = Tensor::from_vec(x.clone(), (n, c), &Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let (lh, gh) = run(cfg, &xh, &y.to_dtype(DType::F32).unwrap());
        let (l64, g64) = run(cfg, &xh.to_dtype(DType::F64).unwrap(), &y);
        for i in 0..lh.len() {
            assert!(
                (lh[i] - l64[i]).abs() <= 2e-6 * l64[i].abs() + 1e-8,
                "{dt:?} loss {i}"
            );
            // The gradient comes back in the logits' dtype.
            assert!(
                (gh[i] - g64[i]).abs() <= 8e-3 * g64[i].abs() + 1e-6,
                "{dt:?} grad {i}"
            );
        }
    }
}
