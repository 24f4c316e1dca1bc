//! The CPU engines against candle's ops: the inference engine's logits against the f64 candle
//! path on the same folded weights, and the training engine's step (logits, loss, every
//! gradient, the running statistics) against candle's autograd.

use std::collections::HashMap;

use asl_tresnet::{TResNet, TResNetConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

/// The engine (f32) against candle's ops on the same folded weights (the f64 inference path,
/// which has no engine), on a batch of 3 at an odd size, for both block types and both heads.
#[test]
fn engine_matches_candle_ops() {
    for (cfg, size) in [
        (
            TResNetConfig::variant([1, 2, 2, 1], 0.125, false, 5),
            (228, 196),
        ),
        (
            TResNetConfig::variant([2, 1, 1, 2], 0.25, true, 3),
            (64, 100),
        ),
        (
            TResNetConfig {
                head: asl_tresnet::HeadKind::Bottleneck { embedding: 16 },
                ..TResNetConfig::variant([1, 1, 1, 1], 0.125, false, 4)
            },
            (36, 44),
        ),
    ] {
        let vars = VarMap::new();
        TResNet::new(
            &cfg,
            VarBuilder::from_varmap(&vars, DType::F64, &Device::Cpu),
        )
        .expect("random model");
        // non-trivial BatchNorm statistics and gammas (some negative)
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in vars.data().lock().expect("vars").iter() {
            let t = var.as_tensor();
            let t = if name.contains(".bn.") {
                let r = Tensor::rand(0.5, 1.5, t.shape(), &Device::Cpu).expect("rand");
                if name.ends_with("running_var") {
                    r
                } else {
                    (r - 1.0).expect("shift")
                }
            } else {
                t.clone()
            };
            tensors.insert(name.clone(), t);
        }
        let f32s: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(DType::F32).expect("f32")))
            .collect();
        let build = |t: HashMap<String, Tensor>, dt| {
            TResNet::new(&cfg, VarBuilder::from_tensors(t, dt, &Device::Cpu))
                .and_then(TResNet::into_inference)
                .expect("inference model")
        };
        let reference = build(tensors, DType::F64);
        let engine = build(f32s, DType::F32);
        assert!(!reference.uses_cpu_engine() && engine.uses_cpu_engine());
        let x = Tensor::rand(0f64, 1., (3, 3, size.0, size.1), &Device::Cpu).expect("x");
        let want = reference.forward_t(&x, false).expect("candle path");
        let got = engine
            .forward_t(&x.to_dtype(DType::F32).expect("f32"), false)
            .expect("engine")
            .to_dtype(DType::F64)
            .expect("f64");
        assert_eq!(got.dims(), want.dims());
        let scale = want
            .abs()
            .and_then(|a| a.max_all())
            .and_then(|m| m.to_scalar::<f64>());
        let diff = (got - &want)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|m| m.to_scalar::<f64>());
        let (scale, diff) = (scale.expect("scale"), diff.expect("diff"));
        assert!(scale > 0.0);
        assert!(
            diff <= 1e-4 * scale,
            "{cfg:?} at {size:?}: max |diff| {diff} against a scale of {scale}"
        );
        let x32 = x.to_dtype(DType::F32).expect("f32");
        let (logits, times) = engine.forward_profiled(&x32).expect("profiled");
        let plain = engine.forward_t(&x32, false).expect("forward");
        let same = (logits - plain)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|m| m.to_scalar::<f32>());
        assert_eq!(same.expect("diff"), 0.0, "profiling changes nothing");
        assert!(times.iter().any(|(k, _)| *k == "conv 3x3: gemm"));
        assert!(
            reference.forward_profiled(&x).is_err(),
            "no engine, no profile"
        );
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .and_then(|a| a.max_all())
        .and_then(|m| m.to_dtype(DType::F64))
        .and_then(|m| m.to_scalar::<f64>())
        .expect("max")
}

/// Uniform values in `[lo, hi)` from a fixed xorshift stream: the comparison below is
/// between two f32 computations, and rare inputs put a LeakyReLU or ReLU input within
/// rounding of 0, where the two may take different sides of the kink (candle's random
/// tensors cannot be seeded on the CPU); a fixed stream keeps the test reproducible.
fn seeded(shape: &[usize], lo: f32, hi: f32, state: &mut u64) -> Tensor {
    let len = shape.iter().product();
    let v: Vec<f32> = (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            lo + (hi - lo) * ((*state >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("seeded")
}

/// Two models with the same pseudo-random weights (BatchNorm affine and running statistics
/// included), built from two VarMaps.
fn twin_models(cfg: &TResNetConfig, state: &mut u64) -> (TResNet, VarMap, TResNet, VarMap) {
    let dev = Device::Cpu;
    let (va, vb) = (VarMap::new(), VarMap::new());
    let a = TResNet::new(cfg, VarBuilder::from_varmap(&va, DType::F32, &dev)).expect("a");
    let b = TResNet::new(cfg, VarBuilder::from_varmap(&vb, DType::F32, &dev)).expect("b");
    let da = va.data().lock().expect("lock");
    let db = vb.data().lock().expect("lock");
    let mut names: Vec<&String> = da.keys().collect();
    names.sort();
    for name in names {
        let var = &da[name];
        let dims = var.as_tensor().dims().to_vec();
        // positive variances and BatchNorm scales, anything else centred
        let v = if name.ends_with("running_var") || name.ends_with("bn.weight") {
            seeded(&dims, 0.5, 1.5, state)
        } else {
            seeded(&dims, -0.5, 0.5, state)
        };
        var.set(&v).expect("set a");
        db[name].set(&v).expect("set b");
    }
    drop((da, db));
    (a, va, b, vb)
}

/// The engine's step against candle's autograd: logits, loss, every parameter's gradient
/// and the updated running statistics, for both block types (with and without SE and
/// shortcut convolutions) at odd sizes (ceil-mode blur and pooling).
#[test]
fn engine_step_matches_autograd() {
    for (cfg, (h, w)) in [
        (
            TResNetConfig::variant([1, 2, 1, 1], 0.125, false, 5),
            (44, 36),
        ),
        (
            TResNetConfig::variant([1, 1, 2, 1], 0.125, true, 3),
            (36, 52),
        ),
    ] {
        let mut state = 0x2545_F491_4F6C_DD1D;
        let (a, va, b, vb) = twin_models(&cfg, &mut state);
        let x = seeded(&[3, 3, h, w], 0.0, 1.0, &mut state);
        let k = cfg.num_classes;
        let r = seeded(&[3, k], -1.0, 1.0, &mut state);
        let loss_of = |l: &Tensor| (l * &r)?.sum_all();
        let (la, lossa, ga) = a.train_step_autograd(&x, &loss_of).expect("autograd");
        let (lb, lossb, gb) = b.train_step(&x, &loss_of).expect("engine");
        let scale = max_abs(&la);
        let dl = max_abs(&(&la - &lb).expect("diff"));
        assert!(
            dl <= 1e-4 * scale.max(1.0),
            "logits differ by {dl} (scale {scale})"
        );
        let dloss = max_abs(&(&lossa - &lossb).expect("diff"));
        assert!(dloss <= 1e-4 * max_abs(&lossa).max(1.0), "loss {dloss}");
        let (da, db) = (va.data().lock().expect("a"), vb.data().lock().expect("b"));
        let mut checked = 0;
        for (name, var_a) in da.iter() {
            let var_b = &db[name];
            if name.contains("running_") {
                let d = max_abs(&(var_a.as_tensor() - var_b.as_tensor()).expect("d"));
                assert!(d < 1e-4, "{name}: running statistics differ by {d}");
                continue;
            }
            let g_a = ga
                .get(var_a.as_tensor())
                .unwrap_or_else(|| panic!("{name}: autograd"));
            let g_b = gb
                .get(var_b.as_tensor())
                .unwrap_or_else(|| panic!("{name}: engine"));
            let s = max_abs(g_a);
            let d = max_abs(&(g_a - g_b).expect("d"));
            assert!(
                d <= 2e-4 * s + 1e-6,
                "{name}: gradient differs by {d} (scale {s})"
            );
            checked += 1;
        }
        assert!(checked > 30, "{checked} gradients");
    }
}
