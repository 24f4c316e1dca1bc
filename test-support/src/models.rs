//! Small models for tests: random weights of an architecture, and model files in the
//! project's format (feature `models`).

use std::collections::HashMap;
use std::path::Path;

use asl_tresnet::pretrained::weights::save_safetensors;
use asl_tresnet::pretrained::{Activation, PretrainedCfg, ResizeMode};
use asl_tresnet::{TResNet, TResNetConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

/// Random weights of `cfg` (candle's default initialisation), by timm name.
pub fn random_weights(cfg: &TResNetConfig) -> HashMap<String, Tensor> {
    let vars = VarMap::new();
    TResNet::new(
        cfg,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .expect("random model");
    let data = vars.data().lock().expect("vars");
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// The configuration of a multi-label model of `cfg` over `classes`: squish at `input_size`,
/// no normalisation, sigmoid scores at `threshold`.
pub fn multilabel_cfg(
    cfg: &TResNetConfig,
    classes: &[&str],
    input_size: usize,
    threshold: f64,
) -> PretrainedCfg {
    PretrainedCfg {
        arch: cfg.name(),
        num_classes: classes.len(),
        class_names: classes.iter().map(|c| c.to_string()).collect(),
        input_size,
        resize: ResizeMode::Squish,
        mean: [0.0; 3],
        std: [1.0; 3],
        activation: Activation::Sigmoid,
        threshold,
        class_thresholds: None,
        source: "random test weights".into(),
        license: None,
    }
}

/// Writes a model of `cfg` with random weights and `meta` to `path`.
pub fn write_model(path: &Path, cfg: &TResNetConfig, meta: &PretrainedCfg) {
    save_safetensors(path, &random_weights(cfg), meta).expect("write model");
}

/// The classes of [`write_small_tagger`]'s model.
pub const SMALL_TAGGER_CLASSES: [&str; 3] = ["cat", "dog", "bird"];

/// Writes `small.safetensors` in `dir`: a random one-block-per-stage model at width 0.25 over
/// [`SMALL_TAGGER_CLASSES`], 32 px, threshold 0 (so that every class is tagged). Returns its
/// path.
pub fn write_small_tagger(dir: &Path) -> std::path::PathBuf {
    let cfg = TResNetConfig::variant([1, 1, 1, 1], 0.25, false, SMALL_TAGGER_CLASSES.len());
    let path = dir.join("small.safetensors");
    write_model(
        &path,
        &cfg,
        &multilabel_cfg(&cfg, &SMALL_TAGGER_CLASSES, 32, 0.0),
    );
    path
}
