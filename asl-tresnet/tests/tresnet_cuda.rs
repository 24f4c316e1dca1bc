//! TResNet on a GPU (feature `cuda`; every test is ignored by default and needs a CUDA device:
//! `scripts/device-check.sh` runs them with `--ignored cuda`).
//!
//! - the timm fixtures' logits on CUDA (both paths), as `tresnet_parity.rs` checks them on the CPU;
//! - a full-size tresnet_m on CUDA against the same weights on the CPU: eval logits, a training
//!   step's loss, gradients and running statistics (the CPU side runs the CPU training engine,
//!   the GPU side candle's autograd: two independent implementations);
//! - a bf16-autocast training step on CUDA against the f32 step.
#![cfg(feature = "cuda")]

use asl_core::{AslConfig, AsymmetricLoss};
mod common;

use asl_test_support::fixtures::{max_rel_diff, pixels_to_input, values};
use asl_tresnet::{TResNet, TResNetConfig};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{config_from_metadata, fixture};

fn gpu() -> Device {
    Device::new_cuda(0).expect("CUDA device 0")
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The largest |a - b| over the largest |b|.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

fn on_cpu(t: &Tensor) -> Vec<f64> {
    values(&t.to_device(&Device::Cpu).expect("to the CPU"))
}

/// `vars`' values as new variables on `dev` (same names).
fn copy_vars(vars: &VarMap, dev: &Device) -> VarMap {
    let out = VarMap::new();
    {
        let src = vars.data().lock().expect("lock");
        let mut dst = out.data().lock().expect("lock");
        for (name, var) in src.iter() {
            let t = var.as_tensor().to_device(dev).expect("copy");
            dst.insert(name.clone(), Var::from_tensor(&t).expect("var"));
        }
    }
    out
}

fn named(vars: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = vars
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
#[ignore = "needs a CUDA device"]
fn timm_fixture_logits_on_cuda() {
    let dev = gpu();
    for name in ["small_basic", "small_v2"] {
        let weights = fixture(&format!("tresnet/{name}.weights.safetensors"));
        let cfg = config_from_metadata(&weights);
        let tensors = candle_core::safetensors::load(&weights, &dev).expect("weights");
        let model = TResNet::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &dev))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let folded = model.clone().into_inference().expect("folded");
        let io = candle_core::safetensors::load(
            fixture(&format!("tresnet/{name}.io.safetensors")),
            &Device::Cpu,
        )
        .expect("io");
        for size in ["224", "228x196"] {
            let x = pixels_to_input(&io[&format!("pixels_{size}")])
                .to_device(&dev)
                .expect("input to the GPU");
            let want = io[&format!("logits_{size}")].clone();
            for (path, m) in [("training path (eval)", &model), ("folded", &folded)] {
                let got = m
                    .forward_t(&x, false)
                    .and_then(|t| t.to_device(&Device::Cpu))
                    .expect("forward");
                let rel = max_rel_diff(&got, &want);
                println!("{name} {size} {path}: max |diff| {rel:.2e} of the logits' scale");
                assert!(rel <= 1e-4, "{name} {size} {path} on CUDA: {rel}");
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn tresnet_m_cuda_matches_cpu_eval_and_train_step() {
    let gpu = gpu();
    let cfg = TResNetConfig::from_arch("tresnet_m", 80).expect("tresnet_m");
    let cpu_vars = VarMap::new();
    let cpu_model = TResNet::new(
        &cfg,
        VarBuilder::from_varmap(&cpu_vars, DType::F32, &Device::Cpu),
    )
    .expect("model");
    let gpu_vars = copy_vars(&cpu_vars, &gpu);
    let gpu_model =
        TResNet::new(&cfg, VarBuilder::from_varmap(&gpu_vars, DType::F32, &gpu)).expect("model");
    let x = Tensor::rand(0f32, 1., (4, 3, 224, 224), &Device::Cpu).expect("x");
    let y = Tensor::rand(0f32, 1., (4, 80), &Device::Cpu)
        .and_then(|t| t.ge(0.8))
        .and_then(|t| t.to_dtype(DType::F32))
        .expect("y");
    let (xg, yg) = (x.to_device(&gpu).expect("x"), y.to_device(&gpu).expect("y"));

    // eval, both paths
    let want = values(&cpu_model.forward_t(&x, false).expect("cpu"));
    let got = on_cpu(&gpu_model.forward_t(&xg, false).expect("gpu"));
    let e = rel_err(&got, &want);
    println!("tresnet_m eval logits, CUDA vs CPU: {e:.2e}");
    assert!(e <= 1e-4, "eval logits: {e}");
    let want = values(
        &cpu_model
            .clone()
            .into_inference()
            .and_then(|m| m.forward_t(&x, false))
            .expect("cpu folded"),
    );
    let got = on_cpu(
        &gpu_model
            .clone()
            .into_inference()
            .and_then(|m| m.forward_t(&xg, false))
            .expect("gpu folded"),
    );
    let e = rel_err(&got, &want);
    println!("tresnet_m folded logits, CUDA vs CPU: {e:.2e}");
    assert!(e <= 1e-4, "folded logits: {e}");

    // one training step: loss, every gradient, the running statistics
    let loss = AsymmetricLoss::new(AslConfig::paper());
    let (_, l_cpu, g_cpu) = cpu_model
        .train_step(&x, &|z| loss.forward(z, &y))
        .expect("cpu step");
    let (_, l_gpu, g_gpu) = gpu_model
        .train_step(&xg, &|z| loss.forward(z, &yg))
        .expect("gpu step");
    let (l_cpu, l_gpu) = (values(&l_cpu)[0], on_cpu(&l_gpu)[0]);
    println!("train-step loss: CPU {l_cpu}, CUDA {l_gpu}");
    assert!(
        ((l_cpu - l_gpu) / l_cpu).abs() < 1e-4,
        "loss {l_cpu} vs {l_gpu}"
    );
    let mut worst = (0f64, String::new());
    for ((name, vc), (_, vg)) in named(&cpu_vars).iter().zip(&named(&gpu_vars)) {
        if name.contains("running_") {
            let e = rel_err(&on_cpu(vg.as_tensor()), &values(vc.as_tensor()));
            assert!(e <= 1e-4, "{name} after the step: {e}");
            continue;
        }
        let gc = values(
            g_cpu
                .get(vc)
                .unwrap_or_else(|| panic!("no CPU gradient: {name}")),
        );
        let gg = on_cpu(
            g_gpu
                .get(vg)
                .unwrap_or_else(|| panic!("no CUDA gradient: {name}")),
        );
        // A random input can put a LeakyReLU input within rounding of 0, where the two f32
        // computations may take different sides of the kink and a few gradient elements differ
        // (seen on the CPU alone: 2% of the scale in one element): the cosine is the criterion,
        // the largest element error is reported and only bounded loosely.
        let e = rel_err(&gg, &gc);
        let c = cosine(&gg, &gc);
        assert!(
            c > 0.999,
            "{name}: gradient cosine {c} (max rel err {e:.2e})"
        );
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    println!(
        "gradients, CUDA vs CPU engine: worst max rel err {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 < 0.05, "gradient {}: {}", worst.1, worst.0);
}

#[test]
#[ignore = "needs a CUDA device"]
fn bf16_autocast_train_step_on_cuda() {
    let gpu = gpu();
    let cfg = TResNetConfig::from_arch("tresnet_m", 80).expect("tresnet_m");
    let vars = VarMap::new();
    let model = TResNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &gpu)).expect("m");
    let mixed = model
        .clone()
        .with_autocast(Some(DType::BF16))
        .expect("bf16 on CUDA");
    let x = Tensor::rand(0f32, 1., (8, 3, 224, 224), &gpu).expect("x");
    let y = Tensor::rand(0f32, 1., (8, 80), &gpu)
        .and_then(|t| t.ge(0.8))
        .and_then(|t| t.to_dtype(DType::F32))
        .expect("y");
    let loss = AsymmetricLoss::new(AslConfig::paper());
    // training mode updates the running statistics: snapshot and restore around the f32 step
    let stats: Vec<(Var, Tensor)> = named(&vars)
        .into_iter()
        .filter(|(n, _)| n.contains("running_"))
        .map(|(_, v)| {
            let t = v.as_tensor().copy().expect("copy");
            (v, t)
        })
        .collect();
    let (z32, l32, g32) = model
        .train_step(&x, &|z| loss.forward(z, &y))
        .expect("f32 step");
    for (v, t) in &stats {
        v.set(t).expect("restore");
    }
    let (z16, l16, g16) = mixed
        .train_step(&x, &|z| loss.forward(z, &y))
        .expect("bf16 step");
    assert_eq!(z16.dtype(), DType::F32, "logits stay f32");
    assert_eq!(l16.dtype(), DType::F32, "the loss stays f32");
    let (l32, l16) = (on_cpu(&l32)[0], on_cpu(&l16)[0]);
    println!(
        "loss f32 {l32}, bf16 autocast {l16}; logits rel diff {:.2e}",
        rel_err(&on_cpu(&z16), &on_cpu(&z32))
    );
    assert!(
        l16.is_finite() && ((l16 - l32) / l32).abs() < 0.02,
        "{l16} vs {l32}"
    );
    let mut worst = (1f64, String::new());
    for (name, v) in named(&vars) {
        if name.contains("running_") {
            continue;
        }
        let g = g16
            .get(&v)
            .unwrap_or_else(|| panic!("no bf16-step gradient: {name}"));
        assert_eq!(
            g.dtype(),
            DType::F32,
            "{name}: f32 gradient for the f32 weight"
        );
        let c = cosine(&on_cpu(g), &on_cpu(g32.get(&v).expect("f32 gradient")));
        assert!(c.is_finite(), "{name}: non-finite gradient");
        // the weights (rank 2 and 4) must point the same way; small bias and BatchNorm
        // gradients may differ more in bf16 and are only reported
        if v.as_tensor().rank() >= 2 {
            if c < worst.0 {
                worst = (c, name);
            }
        } else if c < 0.9 {
            println!("{name}: cosine {c:.4} (not a weight: reported only)");
        }
    }
    println!(
        "weight gradients, bf16 vs f32: lowest cosine {:.4} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 > 0.9, "{}: cosine {}", worst.1, worst.0);
}
