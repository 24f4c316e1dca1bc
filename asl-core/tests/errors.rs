//! Bad input gets a clear error, never a panic; and the loss trains inside a normal candle loop.

use asl_core::{AslConfig, AslSingleLabel, AsymmetricLoss, Reduction, SingleLabelConfig};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};

fn err_text(r: candle_core::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.dims()),
        Err(e) => e.to_string(),
    }
}

fn both_paths(cfg: AslConfig, x: &Tensor, y: &Tensor, expect: &[&str]) {
    let loss = AsymmetricLoss::new(cfg);
    for (path, r) in [
        ("fused", loss.forward(x, y)),
        ("composed", loss.forward_composed(x, y)),
    ] {
        let msg = err_text(r);
        for part in expect {
            assert!(
                msg.contains(part),
                "{path}: {msg:?} should mention {part:?}"
            );
        }
    }
}

#[test]
fn multilabel_rejects_bad_shapes_and_dtypes() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    let cfg = AslConfig::default();
    both_paths(
        cfg,
        &x,
        &Tensor::zeros((2, 4), DType::F32, &dev).unwrap(),
        &["targets", "[2, 3]", "[2, 4]"],
    );
    both_paths(
        cfg,
        &Tensor::zeros(6, DType::F32, &dev).unwrap(),
        &Tensor::zeros(6, DType::F32, &dev).unwrap(),
        &["logits", "[N, C]"],
    );
    both_paths(
        cfg,
        &Tensor::zeros((0, 3), DType::F32, &dev).unwrap(),
        &Tensor::zeros((0, 3), DType::F32, &dev).unwrap(),
        &["non-empty"],
    );
    both_paths(
        cfg,
        &Tensor::zeros((2, 3), DType::U32, &dev).unwrap(),
        &x,
        &["logits", "U32"],
    );
    both_paths(
        cfg,
        &x,
        &Tensor::zeros((2, 3), DType::I16, &dev).unwrap(),
        &["targets", "I16"],
    );
}

#[test]
fn multilabel_rejects_nan_and_out_of_range_targets_with_their_position() {
    let dev = Device::Cpu;
    let (n, c) = (3, 130); // more than one fast-path block per row
    let x = Tensor::zeros((n, c), DType::F32, &dev).unwrap();
    for (bad, shown) in [(f32::NAN, "NaN"), (1.5, "1.5"), (-0.25, "-0.25")] {
        let mut y = vec![0f32; n * c];
        y[c + 100] = bad;
        let y = Tensor::from_vec(y, (n, c), &dev).unwrap();
        both_paths(AslConfig::default(), &x, &y, &["[1, 100]", shown, "[0, 1]"]);
    }
    let y = Tensor::full(2u32, (n, c), &dev).unwrap();
    both_paths(AslConfig::default(), &x, &y, &["[0, 0]", "2"]);
}

#[test]
fn invalid_configurations_are_refused() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 2), DType::F32, &dev).unwrap();
    for (cfg, word) in [
        (
            AslConfig {
                gamma_neg: -1.0,
                ..AslConfig::default()
            },
            "gamma_neg",
        ),
        (
            AslConfig {
                gamma_pos: f64::NAN,
                ..AslConfig::default()
            },
            "gamma_pos",
        ),
        (
            AslConfig {
                clip: 1.0,
                ..AslConfig::default()
            },
            "clip",
        ),
        (
            AslConfig {
                eps: -1e-8,
                ..AslConfig::default()
            },
            "eps",
        ),
    ] {
        both_paths(cfg, &x, &x, &[word]);
    }
    let single = AslSingleLabel::new(SingleLabelConfig {
        eps: 1.5,
        ..SingleLabelConfig::default()
    });
    let t = Tensor::new(&[0u32], &dev).unwrap();
    assert!(err_text(single.forward(&x, &t)).contains("label smoothing"));
}

#[test]
fn single_label_rejects_bad_indices_and_shapes() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
    let loss = AslSingleLabel::new(SingleLabelConfig::default());
    for t in [
        Tensor::new(&[0i64, 4, 1], &dev).unwrap(),
        Tensor::new(&[0u32, 4, 1], &dev).unwrap(),
    ] {
        for r in [loss.forward(&x, &t), loss.forward_composed(&x, &t)] {
            let msg = err_text(r);
            assert!(
                msg.contains("row 1") && msg.contains('4') && msg.contains("4 classes"),
                "{msg}"
            );
        }
    }
    let t = Tensor::new(&[0i64, -1, 1], &dev).unwrap();
    assert!(err_text(loss.forward(&x, &t)).contains("-1"));
    let t = Tensor::new(&[0i64, 1], &dev).unwrap();
    assert!(err_text(loss.forward(&x, &t)).contains("[3]"));
    let t = Tensor::new(&[0f32, 1., 2.], &dev).unwrap();
    assert!(err_text(loss.forward(&x, &t)).contains("class indices"));
}

#[test]
fn non_contiguous_inputs_are_accepted() {
    let dev = Device::Cpu;
    let x = Tensor::arange(0f32, 24., &dev)
        .unwrap()
        .affine(0.3, -3.0)
        .unwrap()
        .reshape((4, 6))
        .unwrap();
    let y = Tensor::arange(0u32, 24, &dev)
        .unwrap()
        .reshape((4, 6))
        .unwrap()
        .ge(12u32)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let loss = AsymmetricLoss::new(AslConfig {
        reduction: Reduction::None,
        ..AslConfig::default()
    });
    let direct = loss
        .forward(
            &x.t().unwrap().contiguous().unwrap(),
            &y.t().unwrap().contiguous().unwrap(),
        )
        .unwrap();
    let viewed = loss.forward(&x.t().unwrap(), &y.t().unwrap()).unwrap();
    assert!(!x.t().unwrap().is_contiguous());
    assert_eq!(
        direct.to_vec2::<f32>().unwrap(),
        viewed.to_vec2::<f32>().unwrap()
    );
}

#[test]
fn trains_a_linear_classifier_with_a_candle_optimizer() {
    // Two separable labels from a 4-d input: the fused loss must drive the loss down through
    // backward() and a candle_nn optimiser, in both gradient modes.
    let dev = Device::Cpu;
    let xs = Tensor::new(
        &[
            [1f32, 0., 0., 1.],
            [0., 1., 1., 0.],
            [1., 1., 0., 0.],
            [0., 0., 1., 1.],
        ],
        &dev,
    )
    .unwrap();
    let ys = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.], [0., 0.]], &dev).unwrap();
    for detach in [true, false] {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let model = candle_nn::linear(4, 2, vb).unwrap();
        let mut opt = candle_nn::AdamW::new_lr(vars.all_vars(), 0.1).unwrap();
        let loss = AsymmetricLoss::new(AslConfig {
            detach_focal_weight: detach,
            ..AslConfig::default()
        });
        let first = loss
            .forward(&model.forward(&xs).unwrap(), &ys)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let mut last = first;
        for _ in 0..100 {
            let l = loss.forward(&model.forward(&xs).unwrap(), &ys).unwrap();
            opt.backward_step(&l).unwrap();
            last = l.to_scalar::<f32>().unwrap();
        }
        assert!(
            last < 0.05 * first,
            "detach {detach}: loss {first} -> {last}"
        );
    }
}
