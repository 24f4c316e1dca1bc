//! Loading a model by name, for inference or for fine-tuning.
//!
//! ```no_run
//! use asl_tresnet::pretrained::{load_model, CfgOverrides, HubConfig, ModelSource};
//! let source = ModelSource::parse("tresnet_l-coco")?;
//! let hub = HubConfig::from_env();
//! let loaded = load_model(&source, &CfgOverrides::default(), &hub, &candle_core::Device::Cpu)?;
//! println!("{} classes at {} px", loaded.cfg.num_classes, loaded.cfg.input_size);
//! # Ok::<(), asl_tresnet::Error>(())
//! ```
//!
//! A model's [`PretrainedCfg`] is taken, field by field, from the first that has it: the
//! caller's explicit overrides (command-line options), the file's own metadata (the project's
//! format), what the source says (the registry entry, or a timm hub repo's `config.json`), the
//! class names stored in an original `.pth`, and finally the defaults of an ASL model:
//! architecture inferred from the tensor shapes, `class_0..class_{K-1}`, squish at 224, no
//! normalisation, threshold 0.7, sigmoid.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::config::{
    Activation, CfgOverrides, PretrainedCfg, ResizeMode, DEFAULT_INPUT_SIZE, DEFAULT_THRESHOLD,
    TRESNET_MEAN, TRESNET_STD,
};
use super::hub::HubConfig;
use super::keys::{config_for_tensors, model_from_tensors};
use super::source::{locate, ModelSource};
use super::weights::{load_weights, LoadedWeights, SourceFormat};
use crate::model::{TResNet, TResNetConfig, MIN_INPUT_SIDE};
use crate::{Error, Result};

/// The architecture and full configuration of loaded weights: `explicit` first, then the file's
/// metadata, then `hints` (what the source says), then names stored in a `.pth`, then the ASL
/// defaults. Fails (listing keys) when the tensors do not fit the architecture, and when a
/// class-name list does not match the classifier's size.
pub fn resolve(
    loaded: &LoadedWeights,
    explicit: &CfgOverrides,
    hints: &CfgOverrides,
    source: &str,
) -> Result<(TResNetConfig, PretrainedCfg)> {
    let from_file = loaded
        .metadata
        .as_ref()
        .map(CfgOverrides::from)
        .unwrap_or_default();
    let from_pth = CfgOverrides {
        class_names: loaded.pth_class_names.clone(),
        ..CfgOverrides::default()
    };
    let s = explicit
        .clone()
        .or(from_file)
        .or(hints.clone())
        .or(from_pth);
    let (arch, model_cfg) = config_for_tensors(&loaded.tensors, s.arch.as_deref())?;
    let k = model_cfg.num_classes;
    if let Some(n) = loaded.pth_num_classes.filter(|&n| n != k) {
        return Err(Error::Config(format!(
            "the checkpoint says num_classes = {n} but its classifier has {k} outputs"
        )));
    }
    let source = match &loaded.metadata {
        Some(m) => m.source.clone(), // already converted: keep where it came from
        None => source.to_string(),
    };
    // An explicit threshold replaces calibrated per-class ones.
    let class_thresholds = match explicit.threshold {
        Some(_) => None,
        None => s.class_thresholds.clone().filter(|t| t.len() == k),
    };
    let cfg = PretrainedCfg {
        arch,
        num_classes: k,
        class_names: class_names(s.class_names.clone(), k)?,
        input_size: checked_input_size(s.input_size.unwrap_or(DEFAULT_INPUT_SIZE))?,
        resize: s.resize.unwrap_or(ResizeMode::Squish),
        mean: s.mean.unwrap_or(TRESNET_MEAN),
        std: s.std.unwrap_or(TRESNET_STD),
        activation: s.activation.unwrap_or(Activation::Sigmoid),
        threshold: checked_threshold(s.threshold.unwrap_or(DEFAULT_THRESHOLD))?,
        class_thresholds,
        source,
        license: s.license,
    };
    Ok((model_cfg, cfg))
}

/// The class names for `k` classes: the given list when it has `k` names, else `class_i`.
fn class_names(given: Option<Vec<String>>, k: usize) -> Result<Vec<String>> {
    match given {
        Some(names) if names.len() == k => Ok(names),
        Some(names) => Err(Error::Config(format!(
            "{} class names were given for a model with {k} classes",
            names.len()
        ))),
        None => Ok((0..k).map(|i| format!("class_{i}")).collect()),
    }
}

/// An input side TResNet can take.
pub fn checked_input_size(size: usize) -> Result<usize> {
    if !size.is_multiple_of(4) || size < MIN_INPUT_SIDE {
        return Err(Error::Config(format!(
            "input size {size} is not usable: TResNet needs a multiple of 4, at least \
             {MIN_INPUT_SIDE}"
        )));
    }
    Ok(size)
}

fn checked_threshold(threshold: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::Config(format!(
            "threshold must be in [0, 1], got {threshold}"
        )));
    }
    Ok(threshold)
}

/// A model ready for inference with its configuration.
pub struct LoadedModel {
    /// The folded inference path.
    pub model: TResNet,
    pub cfg: PretrainedCfg,
    /// The weight file read.
    pub path: PathBuf,
    pub format: SourceFormat,
}

impl LoadedModel {
    /// The scores `[N][K]` (sigmoid or softmax, as the model's configuration says) of a batch
    /// `[N, 3, S, S]` prepared for this model.
    pub fn scores(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        let logits = self.model.forward_t(x, false)?;
        Ok(scores_of(&logits, self.cfg.activation)?)
    }

    /// The labels of one image's scores: at or above their class's threshold, highest first,
    /// at most `top_k`, as `(class index, score)`.
    pub fn labels(&self, scores: &[f32], top_k: Option<usize>) -> Vec<(usize, f32)> {
        select_labels(scores, &self.cfg.thresholds(), top_k)
    }
}

/// Scores from logits `[N, K]`.
pub fn scores_of(logits: &Tensor, activation: Activation) -> candle_core::Result<Vec<Vec<f32>>> {
    let logits = logits.to_dtype(DType::F32)?;
    let p = match activation {
        Activation::Sigmoid => candle_nn::ops::sigmoid(&logits)?,
        Activation::Softmax => candle_nn::ops::softmax_last_dim(&logits)?,
    };
    p.to_device(&Device::Cpu)?.to_vec2::<f32>()
}

/// The labels of one image: at or above their class's threshold, highest first, at most
/// `top_k`. Compared in f32, so that a score printed as 0.7 passes a threshold of 0.7.
pub fn select_labels(
    scores: &[f32],
    thresholds: &[f64],
    top_k: Option<usize>,
) -> Vec<(usize, f32)> {
    let mut idx: Vec<(usize, f32)> = scores
        .iter()
        .copied()
        .zip(thresholds)
        .enumerate()
        .filter(|(_, (s, &t))| *s >= t as f32)
        .map(|(i, (s, _))| (i, s))
        .collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = top_k {
        idx.truncate(k);
    }
    idx
}

/// The `source` field of a model loaded from `source`, read from `path` in `format`.
fn origin(source: &ModelSource, path: &std::path::Path, format: SourceFormat) -> String {
    let origin = match source {
        ModelSource::Registry(p) => format!("{} ({})", p.name, p.repo()),
        ModelSource::Hub { repo, file, .. } => format!("hf:{repo}:{file}"),
        ModelSource::File(_) => path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
    };
    match format {
        SourceFormat::OriginalPth => format!("{origin} (original ASL .pth, converted in memory)"),
        _ => origin,
    }
}

/// Resolves `source`, reads the weights (converting an original `.pth` in memory), checks them
/// against the architecture and builds the folded inference model.
pub fn load_model(
    source: &ModelSource,
    explicit: &CfgOverrides,
    hub: &HubConfig,
    device: &Device,
) -> Result<LoadedModel> {
    let (path, hints) = locate(source, hub)?;
    let loaded = load_weights(&path, device)
        .map_err(|e| e.context(format!("reading {}", path.display())))?;
    let origin = origin(source, &path, loaded.format);
    let (model_cfg, cfg) =
        resolve(&loaded, explicit, &hints, &origin).map_err(|e| e.context(path.display()))?;
    let format = loaded.format;
    let model = model_from_tensors(&model_cfg, loaded.tensors, device)?.into_inference()?;
    Ok(LoadedModel {
        model,
        cfg,
        path,
        format,
    })
}

/// The backbone of a pretrained model, to start fine-tuning from.
pub struct Backbone {
    /// The architecture name ([`TResNetConfig::from_arch`]).
    pub arch: String,
    /// Every weight but the classifier's (`head.*`), in timm naming, f32 on the CPU.
    pub tensors: HashMap<String, Tensor>,
    /// The pretrained model's configuration (its classes are not the new model's).
    pub cfg: PretrainedCfg,
}

/// Reads the backbone of `source` (a registry name, a file or a hub repo).
pub fn load_backbone(source: &ModelSource, hub: &HubConfig) -> Result<Backbone> {
    let (path, hints) = locate(source, hub)?;
    let loaded = load_weights(&path, &Device::Cpu)
        .map_err(|e| e.context(format!("reading {}", path.display())))?;
    let origin = origin(source, &path, loaded.format);
    let (_, cfg) = resolve(&loaded, &CfgOverrides::default(), &hints, &origin)
        .map_err(|e| e.context(path.display()))?;
    let tensors = loaded
        .tensors
        .into_iter()
        .filter(|(name, _)| !name.starts_with("head.") && !name.ends_with("num_batches_tracked"))
        .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    Ok(Backbone {
        arch: cfg.arch.clone(),
        tensors,
        cfg,
    })
}

impl Backbone {
    /// Copies the backbone into the variables of a fresh model for `num_classes` classes (its
    /// classifier left as it is), refusing missing or mis-shaped weights. Returns how many
    /// weights were copied.
    pub fn load_into(&self, vars: &VarMap, device: &Device) -> Result<usize> {
        let data = vars
            .data()
            .lock()
            .map_err(|_| Error::Config("VarMap lock poisoned".into()))?;
        let mut names: Vec<&String> = data.keys().filter(|n| !n.starts_with("head.")).collect();
        names.sort();
        let mut loaded = 0;
        for name in names {
            let var = &data[name];
            let t = self
                .tensors
                .get(name)
                .ok_or_else(|| Error::Config(format!("the pretrained weights have no {name}")))?;
            if t.dims() != var.as_tensor().dims() {
                return Err(Error::Config(format!(
                    "pretrained {name} has shape {:?}, the model wants {:?}",
                    t.dims(),
                    var.as_tensor().dims()
                )));
            }
            var.set(&t.to_device(device)?)?;
            loaded += 1;
        }
        if loaded == 0 {
            return Err(Error::Config(
                "no backbone weight was loaded from the pretrained weights".into(),
            ));
        }
        Ok(loaded)
    }
}

/// A pretrained model ready to fine-tune on `num_classes` classes, in one call: the training
/// path with the backbone of `source` and a new classifier (PyTorch's default initialisation,
/// as candle's `linear` makes it), and the variables to hand an optimiser. Its configuration
/// (input size, preprocessing) is the pretrained model's, with the new class count and
/// `class_i` names.
pub fn load_for_finetuning(
    source: &ModelSource,
    num_classes: usize,
    hub: &HubConfig,
    device: &Device,
) -> Result<(TResNet, VarMap, PretrainedCfg)> {
    let backbone = load_backbone(source, hub)?;
    let model_cfg = TResNetConfig::named(&backbone.arch, num_classes)?;
    let vars = VarMap::new();
    let model = TResNet::new(
        &model_cfg,
        VarBuilder::from_varmap(&vars, DType::F32, device),
    )?;
    backbone.load_into(&vars, device)?;
    let cfg = PretrainedCfg {
        num_classes,
        class_names: (0..num_classes).map(|i| format!("class_{i}")).collect(),
        class_thresholds: None,
        ..backbone.cfg
    };
    Ok((model, vars, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_thresholded_sorted_and_cut() {
        let s = [0.2, 0.9, 0.7, 0.95, 0.7];
        let t = |v: f64| vec![v; 5];
        let all = vec![(3, 0.95), (1, 0.9), (2, 0.7), (4, 0.7)];
        assert_eq!(select_labels(&s, &t(0.7), None), all);
        assert_eq!(
            select_labels(&s, &t(0.7), Some(2)),
            vec![(3, 0.95), (1, 0.9)]
        );
        assert_eq!(select_labels(&s, &t(0.99), None), vec![]);
        // per-class thresholds
        let per = [0.1, 0.95, 0.5, 0.99, 0.7];
        assert_eq!(
            select_labels(&s, &per, None),
            vec![(2, 0.7), (4, 0.7), (0, 0.2)]
        );
    }
}
