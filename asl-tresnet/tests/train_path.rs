//! The training path: differentiable end to end (finite-difference checks of the blur,
//! space-to-depth and ceil-mode pooling backward in f64), BatchNorm in batch-statistics mode
//! updating its running statistics, and clear errors for bad input shapes.

use asl_core::{AslConfig, AsymmetricLoss};
use asl_tresnet::model::{avg_pool_2x2_ceil, blur_pool, space_to_depth};
use asl_tresnet::{TResNet, TResNetConfig};
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

/// Checks d(sum(f(x) * r))/dx from autograd against central differences at every element.
fn check_gradient(
    name: &str,
    shape: (usize, usize, usize, usize),
    f: impl Fn(&Tensor) -> Result<Tensor>,
) {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f64, 1., shape, &dev).unwrap()).unwrap();
    let out = f(x.as_tensor()).unwrap();
    let r = Tensor::randn(0f64, 1., out.shape(), &dev).unwrap();
    let objective = |t: &Tensor| -> f64 {
        (f(t).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let grads = (out * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads
        .get(&x)
        .expect("gradient")
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let base = x
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let h = 1e-6;
    for i in 0..base.len() {
        let at = |d: f64| {
            let mut v = base.clone();
            v[i] += d;
            Tensor::from_vec(v, shape, &dev).unwrap()
        };
        let fd = (objective(&at(h)) - objective(&at(-h))) / (2.0 * h);
        assert!(
            (g[i] - fd).abs() < 1e-6 * fd.abs().max(1.0),
            "{name} element {i}: autograd {} vs fd {fd}",
            g[i]
        );
    }
}

#[test]
fn building_blocks_backward_matches_finite_differences() {
    check_gradient("blur 5x6", (1, 2, 5, 6), blur_pool);
    check_gradient("blur 4x4", (2, 1, 4, 4), blur_pool);
    check_gradient("avg pool ceil 5x7", (1, 2, 5, 7), avg_pool_2x2_ceil);
    check_gradient("avg pool 4x6", (1, 1, 4, 6), avg_pool_2x2_ceil);
    check_gradient("space to depth", (1, 3, 8, 4), space_to_depth);
}

#[test]
fn blur_and_pool_values() {
    let dev = Device::Cpu;
    // Reflect padding: a constant image stays constant; ceil sizes.
    let x = Tensor::full(3f32, (1, 1, 5, 7), &dev).unwrap();
    let y = blur_pool(&x).unwrap();
    assert_eq!(y.dims(), [1, 1, 3, 4]);
    assert!(y
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| (v - 3.0).abs() < 1e-6));
    // Ceil-mode pooling averages only the valid elements of a border window.
    let x = Tensor::arange(0f32, 9., &dev)
        .unwrap()
        .reshape((1, 1, 3, 3))
        .unwrap();
    let y = avg_pool_2x2_ceil(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(y, vec![2.0, 3.5, 6.5, 8.0]);
}

#[test]
fn trains_end_to_end_and_updates_running_statistics() {
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let cfg = TResNetConfig::variant([1, 1, 1, 1], 0.125, false, 4);
    let model = TResNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev)).unwrap();
    let x = Tensor::rand(0f32, 1., (2, 3, 36, 44), &dev).unwrap();
    let y = Tensor::new(&[[1f32, 0., 0., 1.], [0., 1., 0., 0.]], &dev).unwrap();
    let running = |name: &str| {
        vars.data().lock().unwrap()[name]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap()
    };
    let before = running("body.layer2.0.conv1.bn.running_mean");
    let logits = model.forward_t(&x, true).unwrap();
    assert_eq!(logits.dims(), [2, 4]);
    let loss = AsymmetricLoss::new(AslConfig::paper())
        .forward(&logits, &y)
        .unwrap();
    let grads = loss.backward().unwrap();
    let data = vars.data().lock().unwrap();
    let mut with_grad = 0;
    for (name, var) in data.iter() {
        if name.contains("running_") {
            continue;
        }
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let v = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        with_grad += 1;
    }
    drop(data);
    assert!(with_grad > 40, "{with_grad} parameters");
    let stem = grads
        .get(&vars.data().lock().unwrap()["body.conv1.conv.weight"])
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        stem > 0.0,
        "the stem receives gradient through blur, pooling and space-to-depth"
    );
    assert_ne!(
        before,
        running("body.layer2.0.conv1.bn.running_mean"),
        "train mode updates running stats"
    );
}

#[test]
fn bad_input_shapes_are_refused() {
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let cfg = TResNetConfig::variant([1, 1, 1, 1], 0.125, false, 3);
    let model = TResNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev)).unwrap();
    for shape in [(1, 3, 30, 32), (1, 1, 32, 32), (1, 3, 16, 32)] {
        let x = Tensor::zeros(shape, DType::F32, &dev).unwrap();
        let err = model.forward_t(&x, false).expect_err("bad shape");
        assert!(err.to_string().contains("multiples of 4"), "{err}");
    }
    let x = Tensor::zeros((3, 32, 32), DType::F32, &dev).unwrap();
    assert!(model.forward_t(&x, false).is_err());
}

#[test]
fn fused_blur_equals_the_composed_blur() {
    let dev = Device::Cpu;
    for (h, w) in [(2, 2), (5, 7), (8, 6), (57, 49), (3, 10)] {
        for dt in [DType::F32, DType::F64] {
            let x = Tensor::randn(0f32, 1., (2, 3, h, w), &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap();
            let a = blur_pool(&x).unwrap();
            let b = asl_tresnet::model::blur_pool_fused(&x).unwrap();
            assert_eq!(a.dims(), b.dims());
            let diff = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(diff < 1e-6, "{h}x{w} {dt:?}: {diff}");
        }
    }
    let x = Tensor::zeros((1, 1, 1, 4), DType::F32, &dev).unwrap();
    assert!(asl_tresnet::model::blur_pool_fused(&x).is_err());
}

#[test]
fn frozen_backbone_trains_only_the_head() {
    use candle_nn::Optimizer;
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let cfg = TResNetConfig::variant([1, 1, 1, 1], 0.125, false, 3);
    let model = TResNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev)).unwrap();
    let all = asl_tresnet::trainable_vars(&vars, false).unwrap();
    let head = asl_tresnet::trainable_vars(&vars, true).unwrap();
    assert_eq!(head.len(), 2, "head.fc weight and bias");
    assert!(all.len() > 40);
    let snapshot = |name: &str| {
        vars.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (stem0, head0) = (
        snapshot("body.conv1.conv.weight"),
        snapshot("head.fc.weight"),
    );
    let mut opt = candle_nn::SGD::new(head, 0.1).unwrap();
    let x = Tensor::rand(0f32, 1., (2, 3, 32, 32), &dev).unwrap();
    let y = Tensor::new(&[[1f32, 0., 1.], [0., 1., 0.]], &dev).unwrap();
    let loss = AsymmetricLoss::new(AslConfig::paper())
        .forward(&model.forward_t(&x, true).unwrap(), &y)
        .unwrap();
    opt.backward_step(&loss).unwrap();
    assert_eq!(stem0, snapshot("body.conv1.conv.weight"), "backbone frozen");
    assert_ne!(head0, snapshot("head.fc.weight"), "head trained");
}

/// Flattened f64 values of a tensor.
fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn autocast_tracks_f32_and_trains_the_f32_weights() {
    // The mechanism is dtype-generic; on the CPU candle multiplies f16 but not bf16, so f16
    // stands in here (bf16 runs on CUDA: scripts/device-check.sh).
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let cfg = TResNetConfig::variant([1, 1, 1, 1], 0.125, false, 5);
    let model = TResNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev)).unwrap();
    let mixed = model.clone().with_autocast(Some(DType::F16)).unwrap();
    assert_eq!(mixed.autocast(), Some(DType::F16));
    let x = Tensor::rand(0f32, 1., (3, 3, 32, 40), &dev).unwrap();

    // eval: the logits are f32 and close to the f32 model's, but not equal (bf16 products)
    let full = model.forward_t(&x, false).unwrap();
    let half = mixed.forward_t(&x, false).unwrap();
    assert_eq!(
        half.dtype(),
        DType::F32,
        "logits (and so the loss) stay f32"
    );
    let (a, b) = (values(&full), values(&half));
    let scale = a.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (p, q)| m.max((p - q).abs()));
    assert!(
        diff > 0.0,
        "autocast changed nothing: the products did not run in f16"
    );
    assert!(diff < 0.02 * scale, "f16 logits drift: {diff} of {scale}");

    // train: every parameter gets an f32 gradient pointing where the f32 model's points
    let r = Tensor::randn(0f32, 1., (3, 5), &dev).unwrap();
    let grads_of = |m: &TResNet| {
        (m.forward_t(&x, true).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    };
    let (g_full, g_half) = (grads_of(&model), grads_of(&mixed));
    let data = vars.data().lock().unwrap();
    for (name, var) in data.iter() {
        if name.contains("running_") {
            continue;
        }
        let gh = g_half
            .get(var)
            .unwrap_or_else(|| panic!("no gradient for {name} under autocast"));
        assert_eq!(gh.dtype(), DType::F32, "{name}");
        if name == "body.conv1.conv.weight" || name == "head.fc.weight" {
            let c = cosine(&values(g_full.get(var).unwrap()), &values(gh));
            assert!(c > 0.98, "{name}: cosine {c} between f32 and f16 gradients");
        }
    }
    drop(data);

    assert!(model.clone().with_autocast(Some(DType::F32)).is_err());
    let err = model
        .clone()
        .with_autocast(Some(DType::BF16))
        .expect_err("bf16 on the CPU");
    assert!(err.to_string().contains("CUDA"), "{err}");
    let folded = model.into_inference().unwrap();
    assert!(folded.with_autocast(Some(DType::F16)).is_err());
}
