//! The fused and composed losses against golden values from the reference formulas
//! (`fixtures/gen_loss_fixtures.py`: exact math checked against timm, and timm's single-label
//! loss in float64).

use asl_core::{AslConfig, AslSingleLabel, AsymmetricLoss, Reduction, SingleLabelConfig};
use asl_test_support::fixtures::{
    assert_close, dtype, fixture_path, load_fixture, tensor2, values, FixtureFile,
};
use candle_core::{DType, Device, Tensor, Var};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct MultiConfig {
    gamma_neg: f64,
    gamma_pos: f64,
    clip: f64,
    eps: f64,
    detach: bool,
    reduction: String,
}

#[derive(Debug, Deserialize)]
struct MultiCase {
    name: String,
    config: MultiConfig,
    dtype: String,
    logits: Vec<Vec<f64>>,
    targets: Vec<Vec<f64>>,
    loss: serde_json::Value,
    grad: Vec<Vec<f64>>,
}

fn reduction(name: &str) -> Reduction {
    match name {
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        "batchmean" => Reduction::BatchMean,
        "none" => Reduction::None,
        other => panic!("unknown reduction {other}"),
    }
}

fn flat_loss(v: &serde_json::Value) -> Vec<f64> {
    match v {
        serde_json::Value::Number(n) => vec![n.as_f64().expect("number")],
        serde_json::Value::Array(rows) => rows.iter().flat_map(flat_loss).collect(),
        other => panic!("unexpected loss value {other}"),
    }
}

/// Tolerances (relative, and absolute as a fraction of the largest magnitude) for a dtype: the
/// loss is computed in f32 (f64 for f64 logits); the gradient comes back in the logits' dtype.
fn tolerances(dt: DType) -> ((f64, f64), (f64, f64)) {
    match dt {
        DType::F64 => ((1e-12, 1e-14), (1e-9, 1e-12)),
        DType::F32 => ((2e-6, 1e-7), (1e-5, 1e-6)),
        DType::F16 => ((2e-6, 1e-7), (1e-3, 1e-3)),
        _ => ((2e-6, 1e-7), (8e-3, 4e-3)),
    }
}

enum Path {
    Fused,
    Composed,
}

fn run_multilabel(case: &MultiCase, path: Path) -> (Vec<f64>, Vec<f64>, DType, DType) {
    let dt = dtype(&case.dtype);
    let cfg = AslConfig {
        gamma_neg: case.config.gamma_neg,
        gamma_pos: case.config.gamma_pos,
        clip: case.config.clip,
        eps: case.config.eps,
        detach_focal_weight: case.config.detach,
        reduction: reduction(&case.config.reduction),
    };
    let logits = Var::from_tensor(&tensor2(&case.logits, dt)).expect("var");
    let target_dt = if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let targets = tensor2(&case.targets, target_dt);
    let loss_fn = AsymmetricLoss::new(cfg);
    let loss = match path {
        Path::Fused => loss_fn.forward(logits.as_tensor(), &targets),
        Path::Composed => loss_fn.forward_composed(logits.as_tensor(), &targets),
    }
    .unwrap_or_else(|e| panic!("{}: forward failed: {e}", case.name));
    let grads = loss.sum_all().and_then(|l| l.backward()).expect("backward");
    let grad = grads.get(&logits).expect("logits gradient");
    (values(&loss), values(grad), loss.dtype(), grad.dtype())
}

#[test]
fn multilabel_fused_matches_reference_fixtures() {
    let file: FixtureFile<MultiCase> = load_fixture(&fixture_path(
        env!("CARGO_MANIFEST_DIR"),
        "loss_multilabel.json",
    ));
    assert!(
        file.cases.len() > 50,
        "fixture has {} cases",
        file.cases.len()
    );
    for case in &file.cases {
        let dt = dtype(&case.dtype);
        let (loss, grad, loss_dt, grad_dt) = run_multilabel(case, Path::Fused);
        let want_loss_dt = if dt == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        assert_eq!(loss_dt, want_loss_dt, "{}: loss dtype", case.name);
        assert_eq!(grad_dt, dt, "{}: gradient dtype", case.name);
        let ((lr, la), (gr, ga)) = tolerances(dt);
        assert_close(
            &format!("{} loss", case.name),
            &loss,
            &flat_loss(&case.loss),
            lr,
            la,
        );
        let want_grad: Vec<f64> = case.grad.iter().flatten().copied().collect();
        assert_close(&format!("{} grad", case.name), &grad, &want_grad, gr, ga);
    }
}

#[test]
fn multilabel_composed_matches_reference_fixtures() {
    let file: FixtureFile<MultiCase> = load_fixture(&fixture_path(
        env!("CARGO_MANIFEST_DIR"),
        "loss_multilabel.json",
    ));
    for case in &file.cases {
        let dt = dtype(&case.dtype);
        let (loss, grad, _, _) = run_multilabel(case, Path::Composed);
        // The composed path computes in f64 but forms log(1 + e) without log1p.
        let ((lr, la), (gr, ga)) = tolerances(dt);
        let (lr, la, gr, ga) = (lr.max(1e-10), la.max(1e-12), gr.max(1e-8), ga.max(1e-10));
        assert_close(
            &format!("{} composed loss", case.name),
            &loss,
            &flat_loss(&case.loss),
            lr,
            la,
        );
        let want_grad: Vec<f64> = case.grad.iter().flatten().copied().collect();
        assert_close(
            &format!("{} composed grad", case.name),
            &grad,
            &want_grad,
            gr,
            ga,
        );
    }
}

#[derive(Debug, Deserialize)]
struct SingleConfig {
    gamma_pos: f64,
    gamma_neg: f64,
    eps: f64,
    reduction: String,
}

#[derive(Debug, Deserialize)]
struct SingleCase {
    name: String,
    config: SingleConfig,
    dtype: String,
    logits: Vec<Vec<f64>>,
    targets: Vec<i64>,
    loss: serde_json::Value,
    grad: Vec<Vec<f64>>,
}

#[test]
fn single_label_matches_reference_fixtures() {
    let file: FixtureFile<SingleCase> = load_fixture(&fixture_path(
        env!("CARGO_MANIFEST_DIR"),
        "loss_single_label.json",
    ));
    assert!(file.cases.len() >= 15);
    for case in &file.cases {
        let dt = dtype(&case.dtype);
        let cfg = SingleLabelConfig {
            gamma_pos: case.config.gamma_pos,
            gamma_neg: case.config.gamma_neg,
            eps: case.config.eps,
            reduction: reduction(&case.config.reduction),
        };
        let want_loss = flat_loss(&case.loss);
        let want_grad: Vec<f64> = case.grad.iter().flatten().copied().collect();
        let ((lr, la), (gr, ga)) = tolerances(dt);
        for composed in [false, true] {
            for target_dt in [DType::I64, DType::U32] {
                let logits = Var::from_tensor(&tensor2(&case.logits, dt)).expect("var");
                let targets = Tensor::new(case.targets.as_slice(), &Device::Cpu)
                    .and_then(|t| t.to_dtype(target_dt))
                    .expect("targets");
                let loss_fn = AslSingleLabel::new(cfg);
                let loss = if composed {
                    loss_fn.forward_composed(logits.as_tensor(), &targets)
                } else {
                    loss_fn.forward(logits.as_tensor(), &targets)
                }
                .expect("single-label forward");
                let grads = loss.sum_all().and_then(|l| l.backward()).expect("backward");
                let grad = grads.get(&logits).expect("gradient");
                assert_eq!(grad.dtype(), dt);
                let tag = format!("{} (composed: {composed})", case.name);
                assert_close(&format!("{tag} loss"), &values(&loss), &want_loss, lr, la);
                assert_close(&format!("{tag} grad"), &values(grad), &want_grad, gr, ga);
            }
        }
    }
}
