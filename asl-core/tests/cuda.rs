//! The CUDA kernels against the CPU kernel, on a GPU (feature `cuda`; every test is ignored by
//! default and needs a CUDA device: `scripts/device-check.sh` runs them with `--ignored`).
//!
//! Each test prints its worst errors. Without a usable device every test fails with the driver's
//! error (e.g. CUDA_ERROR_STUB_LIBRARY against the link-only stub), it does not crash.
#![cfg(feature = "cuda")]

mod cuda_common;

use asl_core::{AslConfig, AslSingleLabel, AsymmetricLoss, Reduction, SingleLabelConfig};
use candle_core::{DType, Device, Result, Tensor, Var};
use cuda_common::{grad_err, loss_err, norm_err, rel, Rng, TargetKind};

/// CUDA device 0, created once per process (so that candle's PTX modules and ours are loaded
/// once), or the error creating it gave.
fn gpu() -> Result<Device> {
    static DEVICE: std::sync::OnceLock<std::result::Result<Device, String>> =
        std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| Device::new_cuda(0).map_err(|e| e.to_string()))
        .clone()
        .map_err(candle_core::Error::msg)
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_device(&Device::Cpu)?
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1()
}

/// Loss and logits gradient of one pass on `dev`, for the upstream gradient `weights` (the
/// loss's shape; `None`: ones). Checks the result dtypes and that the gradient stays on `dev`.
struct Run {
    loss: Vec<f64>,
    grad: Vec<f64>,
}

fn run_multilabel(
    cfg: AslConfig,
    x: &Tensor,
    y: &Tensor,
    weights: Option<&Tensor>,
    dev: &Device,
) -> Result<Run> {
    let xv = Var::from_tensor(&x.to_device(dev)?)?;
    let loss = AsymmetricLoss::new(cfg).forward(xv.as_tensor(), &y.to_device(dev)?)?;
    let want = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    assert_eq!(loss.dtype(), want);
    assert!(loss.device().same_device(dev));
    let total = match weights {
        Some(w) => (&loss * w.to_device(dev)?)?.sum_all()?,
        None => loss.sum_all()?,
    };
    let grads = total.backward()?;
    let g = grads.get(&xv).expect("a gradient for the logits");
    assert_eq!(g.dtype(), x.dtype());
    assert!(g.device().same_device(dev), "the gradient left the device");
    Ok(Run {
        loss: values(&loss)?,
        grad: values(g)?,
    })
}

fn tensor(v: &[f64], rows: usize, cols: usize, dt: DType) -> Result<Tensor> {
    Tensor::from_vec(v.to_vec(), (rows, cols), &Device::Cpu)?.to_dtype(dt)
}

/// f32 logits and targets of `kind`, `[rows, cols]`, on the CPU.
fn random_f32_inputs(
    rows: usize,
    cols: usize,
    kind: TargetKind,
    rng: &mut Rng,
) -> Result<(Tensor, Tensor)> {
    let x = cuda_common::logits(rows * cols, rng);
    let y = cuda_common::targets(kind, rows * cols, rng);
    Ok((
        tensor(&x, rows, cols, DType::F32)?,
        tensor(&y, rows, cols, DType::F32)?,
    ))
}

/// For a gradient rounded to a half type on both sides from f32 values a few f32 ulps apart:
/// the largest `|a_i - b_i|` in units of the half type's spacing at `b_i` (its relative
/// precision, or its smallest subnormal step: a Mean-reduced f16 gradient is mostly subnormal).
/// At most 1 when the two differ only by where the rounding fell.
fn half_ulps(a: &[f64], b: &[f64], dt: DType) -> f64 {
    let (rel_step, min_step) = if dt == DType::F16 {
        (2f64.powi(-10), 2f64.powi(-24))
    } else {
        (2f64.powi(-7), 2f64.powi(-133))
    };
    a.iter().zip(b).fold(0f64, |worst, (&x, &y)| {
        if x == y || (x.is_nan() && y.is_nan()) {
            return worst;
        }
        worst.max((x - y).abs() / (rel_step * y.abs()).max(min_step))
    })
}

#[derive(Default)]
struct Worst {
    loss: f64,
    grad_norm: f64,
    grad_elem: f64,
    cpu_elem: f64,
}

impl Worst {
    /// `grad_elem`: per element against the exact gradient (f32), against the CPU (f64), or in
    /// half-type steps (f16, bf16); `cpu_elem`: the CPU f32 kernel's own, against the exact.
    fn report(&self, what: &str) {
        println!(
            "{what}: worst loss error {:.2e}, gradient error {:.2e} normwise / {:.2e} per element \
             (CPU f32 against exact: {:.2e})",
            self.loss, self.grad_norm, self.grad_elem, self.cpu_elem
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/device-check.sh"]
fn cuda_multilabel_matches_cpu_for_every_config_reduction_and_logits_dtype() -> Result<()> {
    let dev = gpu()?;
    let (rows, cols) = (37, 1003); // 37111 elements: 19 tiles, the last one partial
    let mut rng = Rng::new(1);
    let x = cuda_common::logits(rows * cols, &mut rng);
    let mut worst: Vec<(DType, Worst)> = [DType::F32, DType::F64, DType::F16, DType::BF16]
        .into_iter()
        .map(|d| (d, Worst::default()))
        .collect();
    for kind in [TargetKind::Hard, TargetKind::Soft, TargetKind::Mixed] {
        let y = cuda_common::targets(kind, rows * cols, &mut rng);
        for (name, base) in cuda_common::multilabel_configs() {
            for reduction in cuda_common::REDUCTIONS {
                let cfg = AslConfig { reduction, ..base };
                for (dt, w) in worst.iter_mut() {
                    let dt = *dt;
                    if dt != DType::F32 && kind != TargetKind::Mixed {
                        continue;
                    }
                    // Logits and targets in dt on both sides (same rounded values).
                    let xt = tensor(&x, rows, cols, dt)?;
                    let yt = tensor(&y, rows, cols, dt)?;
                    let g = run_multilabel(cfg, &xt, &yt, None, &dev)?;
                    let c = run_multilabel(cfg, &xt, &yt, None, &Device::Cpu)?;
                    let el = loss_err(&g.loss, &c.loss);
                    let en = norm_err(&g.grad, &c.grad);
                    let what = format!("{name} {reduction:?} {kind:?} {dt:?}");
                    match dt {
                        DType::F32 => {
                            // Against the exact gradient (CPU f64 on the same f32 values), the
                            // GPU must be as accurate as the CPU f32 kernel (ulp differences in
                            // exp/log are amplified alike where p - clip cancels).
                            let exact = run_multilabel(
                                cfg,
                                &xt.to_dtype(DType::F64)?,
                                &yt.to_dtype(DType::F64)?,
                                None,
                                &Device::Cpu,
                            )?;
                            let ge = grad_err(&g.grad, &exact.grad);
                            let ce = grad_err(&c.grad, &exact.grad);
                            // CUDA's expf/logf/powf are within 2 ulp, glibc's within 1.
                            let elem_tol = 3.0 * ce + 1e-5;
                            let loss_tol = if c.loss.len() == 1 { 1e-5 } else { elem_tol };
                            assert!(
                                el <= loss_tol && en <= 1e-5 && ge <= elem_tol,
                                "{what}: loss error {el:e}, gradient error {en:e} normwise, \
                                 {ge:e} per element against f64 (CPU f32: {ce:e})"
                            );
                            w.grad_elem = w.grad_elem.max(ge);
                            w.cpu_elem = w.cpu_elem.max(ce);
                        }
                        DType::F64 => {
                            let ge = grad_err(&g.grad, &c.grad);
                            assert!(
                                el <= 1e-10 && en <= 1e-12 && ge <= 1e-9,
                                "{what}: loss error {el:e}, gradient error {en:e} normwise, \
                                 {ge:e} per element"
                            );
                            w.grad_elem = w.grad_elem.max(ge);
                        }
                        _ => {
                            // Computed in f32 on both sides; the gradient is rounded to the
                            // logits' half type, so it may differ by that type's last bit.
                            let ulps = half_ulps(&g.grad, &c.grad, dt);
                            let loss_tol = if c.loss.len() == 1 { 1e-5 } else { 1e-4 };
                            assert!(
                                el <= loss_tol && ulps <= 1.0,
                                "{what}: loss error {el:e}, gradient error {en:e} normwise, \
                                 {ulps} half-type steps"
                            );
                            w.grad_elem = w.grad_elem.max(ulps);
                        }
                    }
                    w.loss = w.loss.max(el);
                    w.grad_norm = w.grad_norm.max(en);
                }
            }
        }
    }
    for (dt, w) in &worst {
        w.report(&format!("multi-label CUDA vs CPU, logits {dt:?}"));
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/device-check.sh"]
fn cuda_multilabel_accepts_every_target_dtype() -> Result<()> {
    let dev = gpu()?;
    let (rows, cols) = (16, 777);
    let mut rng = Rng::new(2);
    let x = tensor(
        &cuda_common::logits(rows * cols, &mut rng),
        rows,
        cols,
        DType::F32,
    )?;
    let hard = cuda_common::targets(TargetKind::Hard, rows * cols, &mut rng);
    let soft = cuda_common::targets(TargetKind::Mixed, rows * cols, &mut rng);
    let mut worst = Worst::default();
    for &dt in asl_core::cuda_launch::TARGETS.0 {
        let y = if dt.is_float() { &soft } else { &hard };
        let yt = tensor(y, rows, cols, dt)?;
        for (name, base) in cuda_common::multilabel_configs().into_iter().take(4) {
            for reduction in [Reduction::Mean, Reduction::None] {
                let cfg = AslConfig { reduction, ..base };
                let g = run_multilabel(cfg, &x, &yt, None, &dev)?;
                let c = run_multilabel(cfg, &x, &yt, None, &Device::Cpu)?;
                let (el, en) = (loss_err(&g.loss, &c.loss), norm_err(&g.grad, &c.grad));
                let loss_tol = if c.loss.len() == 1 { 1e-5 } else { 1e-4 };
                assert!(
                    el <= loss_tol && en <= 1e-5,
                    "{name} {reduction:?} targets {dt:?}: loss {el:e}, gradient {en:e}"
                );
                worst.loss = worst.loss.max(el);
                worst.grad_norm = worst.grad_norm.max(en);
            }
        }
    }
    worst.report("multi-label CUDA vs CPU, every target dtype");
    Ok(())
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/device-check.sh"]
fn cuda_chains_the_upstream_gradient() -> Result<()> {
    let dev = gpu()?;
    let (rows, cols) = (9, 501);
    let mut rng = Rng::new(3);
    let (x, y) = random_f32_inputs(rows, cols, TargetKind::Mixed, &mut rng)?;
    let per_elem: Vec<f64> = (0..rows * cols)
        .map(|_| rng.uniform() * 4.0 - 2.0)
        .collect();
    for reduction in cuda_common::REDUCTIONS {
        let cfg = AslConfig {
            reduction,
            detach_focal_weight: false,
            ..AslConfig::default()
        };
        let w = if reduction == Reduction::None {
            tensor(&per_elem, rows, cols, DType::F32)?
        } else {
            Tensor::new(-2.5f32, &Device::Cpu)?
        };
        let g = run_multilabel(cfg, &x, &y, Some(&w), &dev)?;
        let c = run_multilabel(cfg, &x, &y, Some(&w), &Device::Cpu)?;
        let en = norm_err(&g.grad, &c.grad);
        assert!(en <= 1e-5, "{reduction:?}: gradient error {en:e}");
        println!("upstream gradient chained on the GPU, {reduction:?}: error {en:.2e}");
    }
    // A second backward over the same graph recomputes the gradient on the device.
    let xv = Var::from_tensor(&x.to_device(&dev)?)?;
    let loss =
        AsymmetricLoss::new(AslConfig::default()).forward(xv.as_tensor(), &y.to_device(&dev)?)?;
    let first = loss.backward()?;
    let second = loss.backward()?;
    let (a, b) = (first.get(&xv).unwrap(), second.get(&xv).unwrap());
    assert!(b.device().same_device(&dev));
    assert_eq!(values(a)?, values(b)?, "the recomputed gradient differs");
    Ok(())
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/device-check.sh"]
fn cuda_is_deterministic_and_matches_cpu_at_full_size() -> Result<()> {
    let dev = gpu()?;
    let (rows, cols) = (1024, 9605);
    let mut rng = Rng::new(4);
    let (x, y) = random_f32_inputs(rows, cols, TargetKind::Hard, &mut rng)?;
    for reduction in [Reduction::Sum, Reduction::Mean] {
        let cfg = AslConfig {
            reduction,
            ..AslConfig::default()
        };
        let bits = |r: &Run| -> (Vec<u64>, Vec<u64>) {
            (
                r.loss.iter().map(|v| v.to_bits()).collect(),
                r.grad.iter().map(|v| v.to_bits()).collect(),
            )
        };
        let a = run_multilabel(cfg, &x, &y, None, &dev)?;
        let b = run_multilabel(cfg, &x, &y, None, &dev)?;
        assert!(bits(&a) == bits(&b), "{reduction:?}: two runs differ");
        let c = run_multilabel(cfg, &x, &y, None, &Device::Cpu)?;
        let (el, en) = (rel(a.loss[0], c.loss[0]), norm_err(&a.grad, &c.grad));
        println!(
            "{rows}x{cols} {reduction:?}: loss {:e} (CPU {:e}, error {el:.2e}), gradient error \
             {en:.2e}; two GPU runs give the same bits",
            a.loss[0], c.loss[0]
        );
        assert!(el <= 1e-5 && en <= 1e-5);
    }
    // Single-label at the same size.
    let classes: Vec<u32> = (0..rows).map(|_| rng.below(cols) as u32).collect();
    let t = Tensor::new(classes.as_slice(), &Device::Cpu)?;
    let cfg = SingleLabelConfig::default();
    let a = run_single(cfg, &x, &t, &dev)?;
    let b = run_single(cfg, &x, &t, &dev)?;
    assert!(a.loss[0].to_bits() == b.loss[0].to_bits() && a.grad == b.grad);
    let c = run_single(cfg, &x, &t, &Device::Cpu)?;
    println!(
        "single-label {rows}x{cols}: loss error {:.2e}, gradient error {:.2e}; deterministic",
        rel(a.loss[0], c.loss[0]),
        norm_err(&a.grad, &c.grad)
    );
    Ok(())
}

fn run_single(cfg: SingleLabelConfig, x: &Tensor, t: &Tensor, dev: &Device) -> Result<Run> {
    let xv = Var::from_tensor(&x.to_device(dev)?)?;
    let loss = AslSingleLabel::new(cfg).forward(xv.as_tensor(), &t.to_device(dev)?)?;
    let grads = loss.sum_all()?.backward()?;
    let g = grads.get(&xv).expect("a gradient for the logits");
    assert_eq!(g.dtype(), x.dtype());
    assert!(g.device().same_device(dev), "the gradient left the device");
    Ok(Run {
        loss: values(&loss)?,
        grad: values(g)?,
    })
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/device-check.sh"]
fn cuda_single_label_matches_cpu() -> Result<()> {
    let dev = gpu()?;
    let mut worst: Vec<(DType, Worst)> = [DType::F32, DType::F64, DType::F16, DType::BF16]
        .into_iter()
        .map(|d| (d, Worst::default()))
        .collect();
    for (rows, k) in [(64, 10), (16, 1000), (8, 9605)] {
        let mut rng = Rng::new(k as u64);
        let x: Vec<f64> = (0..rows * k)
            .map(|i| (rng.uniform() - 0.5) * if i % 7 == 0 { 60.0 } else { 8.0 })
            .collect();
        let classes: Vec<i64> = (0..rows).map(|_| rng.below(k) as i64).collect();
        let mut targets = vec![
            Tensor::new(classes.as_slice(), &Device::Cpu)?,
            Tensor::new(classes.as_slice(), &Device::Cpu)?.to_dtype(DType::U32)?,
        ];
        if k <= 255 {
            targets.push(targets[0].to_dtype(DType::U8)?);
        }
        for (name, base) in cuda_common::single_label_configs() {
            for reduction in cuda_common::REDUCTIONS {
                let cfg = SingleLabelConfig { reduction, ..base };
                for (dt, w) in worst.iter_mut() {
                    let dt = *dt;
                    let xt = tensor(&x, rows, k, dt)?;
                    for t in &targets {
                        let g = run_single(cfg, &xt, t, &dev)?;
                        let c = run_single(cfg, &xt, t, &Device::Cpu)?;
                        let el = loss_err(&g.loss, &c.loss);
                        let en = norm_err(&g.grad, &c.grad);
                        // f32 sums exp(x - max) in f64 on the GPU, in f32 on the CPU: the GPU
                        // is the more accurate; half types round the gradient (compared in
                        // steps of the half type).
                        let (loss_tol, grad_ok) = match dt {
                            DType::F64 => (1e-12, en <= 1e-12),
                            DType::F32 => (1e-5, en <= 1e-5),
                            _ => (1e-5, half_ulps(&g.grad, &c.grad, dt) <= 1.0),
                        };
                        assert!(
                            el <= loss_tol && grad_ok,
                            "{name} {reduction:?} K={k} {dt:?} targets {:?}: loss {el:e}, \
                             gradient {en:e} normwise",
                            t.dtype()
                        );
                        w.loss = w.loss.max(el);
                        w.grad_norm = w.grad_norm.max(en);
                    }
                }
            }
        }
    }
    for (dt, w) in &worst {
        w.report(&format!("single-label CUDA vs CPU, logits {dt:?}"));
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/device-check.sh"]
fn cuda_extreme_and_non_contiguous_logits() -> Result<()> {
    let dev = gpu()?;
    let xs = [
        0.0, -0.0, 100.0, -100.0, 1e4, -1e4, 30.0, -30.0, 17.0, -17.0, 1e-30, 88.7, -88.7,
    ];
    let n = xs.len();
    let x = Tensor::new(&xs, &Device::Cpu)?.to_dtype(DType::F32)?;
    // [n, 2]: every logit with a negative and a positive target, then transposed to [2, n]
    // (non-contiguous).
    let x = Tensor::stack(&[&x, &x], 1)?.t()?;
    let y = Tensor::stack(
        &[
            &Tensor::zeros(n, DType::F32, &Device::Cpu)?,
            &Tensor::ones(n, DType::F32, &Device::Cpu)?,
        ],
        0,
    )?;
    for (name, base) in cuda_common::multilabel_configs() {
        let cfg = AslConfig {
            reduction: Reduction::None,
            ..base
        };
        let g = run_multilabel(cfg, &x, &y, None, &dev)?;
        let c = run_multilabel(cfg, &x, &y, None, &Device::Cpu)?;
        assert!(
            g.loss.iter().chain(&g.grad).all(|v| v.is_finite()),
            "{name}: not finite"
        );
        let (el, en) = (grad_err(&g.loss, &c.loss), norm_err(&g.grad, &c.grad));
        assert!(
            el <= 1e-5 && en <= 1e-5,
            "{name}: loss {el:e}, gradient {en:e}"
        );
    }
    // A NaN logit gives a NaN loss, as on the CPU.
    let xn = Tensor::new(&[[f32::NAN, 1.0]], &Device::Cpu)?;
    let yn = Tensor::new(&[[1f32, 0.0]], &Device::Cpu)?;
    let g = run_multilabel(AslConfig::default(), &xn, &yn, None, &dev)?;
    assert!(g.loss[0].is_nan());
    // Inference (no gradient): the same value.
    let xt = tensor(&[0.5, -2.0, 3.0, 0.1], 2, 2, DType::F32)?;
    let yt = tensor(&[1.0, 0.0, 0.0, 1.0], 2, 2, DType::F32)?;
    let plain = AsymmetricLoss::new(AslConfig::default())
        .forward(&xt.to_device(&dev)?, &yt.to_device(&dev)?)?;
    let with_grad = run_multilabel(AslConfig::default(), &xt, &yt, None, &dev)?;
    assert_eq!(values(&plain)?, with_grad.loss);
    Ok(())
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/device-check.sh"]
fn cuda_bad_targets_give_the_cpu_error() -> Result<()> {
    let dev = gpu()?;
    let x = Tensor::zeros((3, 4), DType::F32, &Device::Cpu)?;
    let mut yv = vec![0f32; 12];
    yv[6] = 1.5;
    yv[9] = -0.5;
    let y = Tensor::from_vec(yv, (3, 4), &Device::Cpu)?;
    let loss = AsymmetricLoss::new(AslConfig::default());
    let cpu = loss.forward(&x, &y).unwrap_err().to_string();
    let gpu_err = loss
        .forward(&x.to_device(&dev)?, &y.to_device(&dev)?)
        .unwrap_err()
        .to_string();
    assert_eq!(gpu_err, cpu);
    println!("bad target on the GPU: {gpu_err}");

    let sl = AslSingleLabel::new(SingleLabelConfig::default());
    let t = Tensor::new(&[0i64, 4, -1], &Device::Cpu)?;
    let cpu = sl.forward(&x, &t).unwrap_err().to_string();
    let gpu_err = sl
        .forward(&x.to_device(&dev)?, &t.to_device(&dev)?)
        .unwrap_err()
        .to_string();
    assert_eq!(gpu_err, cpu);
    println!("bad class on the GPU: {gpu_err}");

    // Without the read-back, a bad target makes the loss NaN instead.
    std::env::set_var("ASL_CUDA_SKIP_TARGET_CHECK", "1");
    let unchecked = loss.forward(&x.to_device(&dev)?, &y.to_device(&dev)?);
    let unchecked_sl = sl.forward(&x.to_device(&dev)?, &t.to_device(&dev)?);
    std::env::remove_var("ASL_CUDA_SKIP_TARGET_CHECK");
    assert!(unchecked?.to_scalar::<f32>()?.is_nan());
    assert!(unchecked_sl?.to_scalar::<f32>()?.is_nan());
    Ok(())
}

/// The benchmark (JSON lines on stdout; run with `--nocapture`), here so that the GPU machine
/// needs one executable. Not named *cuda*: `--ignored cuda` does not run it.
#[test]
#[ignore = "a GPU benchmark: run by scripts/device-check.sh with --exact --nocapture"]
fn fused_asl_gpu_benchmark() -> Result<()> {
    cuda_common::bench::run(&cuda_common::bench::Args::parse(&[]))
}
