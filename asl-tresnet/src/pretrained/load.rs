//! Loading a model by name: a registry name, a local weight file, or a hub repo.
//!
//! ```no_run
//! use asl_tresnet::pretrained::{load_model, ModelSource, Settings};
//! let source = ModelSource::parse("tresnet_l-coco")?;
//! let hub = asl_tresnet::hub::HubConfig::from_env();
//! let loaded = load_model(&source, &Settings::default(), &hub, &candle_core::Device::Cpu)?;
//! println!("{} classes at {} px", loaded.metadata.num_classes, loaded.metadata.input_size);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! What a model needs beside its tensors (architecture, class names, input size, resize mode,
//! threshold, activation) is taken, field by field, from the first that has it: the caller's
//! explicit settings (command-line options), the file's own metadata (the project's format),
//! what the source says (the registry entry, or a timm hub repo's `config.json`), the class
//! names stored in an original `.pth`, and finally the defaults of an ASL model: architecture
//! inferred from the tensor shapes, `class_0..class_{K-1}`, squish at 224, threshold 0.7,
//! sigmoid.

use std::path::{Path, PathBuf};

use candle_core::{Device, Result};

use super::hub::{HubConfig, HubError};
use super::registry::{Activation, Pretrained};
use super::weights::{
    config_for_tensors, load_weights, model_from_tensors, LoadedWeights, ModelMetadata, ResizeMode,
    SourceFormat,
};
use crate::TResNet;

fn user_error(msg: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(msg.to_string())
}

/// Where `--model` points.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    Registry(&'static Pretrained),
    /// A local `.safetensors` (timm or the project's naming) or original `.pth`.
    File(PathBuf),
    /// `hf:ORG/REPO[@REVISION][:FILE]` (file default `model.safetensors`, revision `main`).
    Hub {
        repo: String,
        revision: String,
        file: String,
    },
}

impl ModelSource {
    /// Parses `hf:ORG/REPO[@REVISION][:FILE]`, else an existing path, else a registry name.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("hf:") {
            let (repo_rev, file) = match rest.split_once(':') {
                Some((r, f)) if !f.is_empty() => (r, f.to_string()),
                Some(_) => return Err(user_error(format!("{s:?}: empty file name after ':'"))),
                None => (rest, "model.safetensors".to_string()),
            };
            let (repo, revision) = match repo_rev.split_once('@') {
                Some((r, rev)) if !rev.is_empty() => (r, rev.to_string()),
                Some(_) => return Err(user_error(format!("{s:?}: empty revision after '@'"))),
                None => (repo_rev, "main".to_string()),
            };
            let valid = repo.split('/').count() == 2 && repo.split('/').all(|p| !p.is_empty());
            if !valid {
                return Err(user_error(format!(
                    "{s:?}: expected hf:ORG/REPO[@REVISION][:FILE], e.g. \
                     hf:timm/tresnet_m.miil_in1k or hf:me/my-model@v1:model.safetensors"
                )));
            }
            return Ok(ModelSource::Hub {
                repo: repo.to_string(),
                revision,
                file,
            });
        }
        if Path::new(s).exists() {
            return Ok(ModelSource::File(PathBuf::from(s)));
        }
        if let Some(p) = super::registry::lookup(s) {
            return Ok(ModelSource::Registry(p));
        }
        let looks_like_path = s.contains('/') || s.contains('\\') || s.contains('.');
        let names: Vec<&str> = super::registry::REGISTRY.iter().map(|p| p.name).collect();
        Err(user_error(if looks_like_path && !s.starts_with("timm/") {
            format!("model {s:?}: no such file")
        } else {
            format!(
                "unknown model {s:?}: not a file, not a registry name ({}), not hf:ORG/REPO \
                 (`asl-cli models` lists the registry)",
                names.join(", ")
            )
        }))
    }
}

/// Per-field settings; `None` means "not said here".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub arch: Option<String>,
    pub class_names: Option<Vec<String>>,
    pub input_size: Option<usize>,
    pub resize: Option<ResizeMode>,
    pub threshold: Option<f64>,
    pub activation: Option<Activation>,
    /// Per-class thresholds (a calibrated model's metadata).
    pub class_thresholds: Option<Vec<f64>>,
}

impl Settings {
    /// Each field from `self`, else from `other`.
    pub fn or(self, other: Settings) -> Settings {
        Settings {
            arch: self.arch.or(other.arch),
            class_names: self.class_names.or(other.class_names),
            input_size: self.input_size.or(other.input_size),
            resize: self.resize.or(other.resize),
            threshold: self.threshold.or(other.threshold),
            activation: self.activation.or(other.activation),
            class_thresholds: self.class_thresholds.or(other.class_thresholds),
        }
    }

    pub fn from_metadata(m: &ModelMetadata) -> Settings {
        Settings {
            arch: Some(m.arch.clone()),
            class_names: (!m.class_names.is_empty()).then(|| m.class_names.clone()),
            input_size: Some(m.input_size),
            resize: Some(m.resize),
            threshold: Some(m.threshold),
            activation: Some(m.activation),
            class_thresholds: m.class_thresholds.clone(),
        }
    }

    pub fn from_registry(p: &Pretrained) -> Settings {
        Settings {
            arch: Some(p.arch.to_string()),
            class_names: p.class_names(),
            input_size: Some(p.input_size),
            resize: Some(p.resize),
            threshold: Some(p.threshold),
            activation: Some(p.activation),
            class_thresholds: None,
        }
    }

    /// What a timm hub repo's `config.json` says (`architecture`, `pretrained_cfg.input_size`,
    /// `crop_pct`; no class names: 1000 and 11221 classes get the bundled ImageNet lists). timm
    /// models are single-label: softmax.
    pub fn from_timm_config(json: &str) -> Result<Settings> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| user_error(format!("config.json is not valid JSON: {e}")))?;
        let cfg = v.get("pretrained_cfg").unwrap_or(&v);
        let arch = v
            .get("architecture")
            .and_then(|a| a.as_str())
            .map(|a| a.split('.').next().unwrap_or(a).to_string());
        let input_size = cfg
            .get("input_size")
            .and_then(|s| s.as_array())
            .and_then(|s| s.last())
            .and_then(|s| s.as_u64())
            .map(|s| s as usize);
        let crop_pct = cfg.get("crop_pct").and_then(|c| c.as_f64());
        let crop_mode = cfg.get("crop_mode").and_then(|c| c.as_str());
        let resize = match (crop_pct, crop_mode) {
            (Some(p), None | Some("center")) => Some(ResizeMode::Crop { crop_pct: p }),
            (None, None) => None,
            (_, Some(other)) => {
                return Err(user_error(format!(
                    "config.json: crop_mode {other:?} is not supported (center only)"
                )))
            }
        };
        let num_classes = v
            .get("num_classes")
            .or_else(|| cfg.get("num_classes"))
            .and_then(|n| n.as_u64());
        let class_names = match num_classes {
            Some(1000) => super::classes::builtin("imagenet-1k"),
            Some(11221) => super::classes::builtin("imagenet-21k-p"),
            _ => None,
        };
        Ok(Settings {
            arch,
            class_names,
            input_size,
            resize,
            threshold: Some(0.0),
            activation: Some(Activation::Softmax),
            class_thresholds: None,
        })
    }
}

/// The architecture and full metadata of loaded weights: `explicit` settings first, then the
/// file's metadata, then `hints` (what the source says), then names stored in a `.pth`, then the
/// ASL defaults. Fails (listing keys) when the tensors do not fit the architecture, and when a
/// class-name list does not match the classifier's size.
pub fn describe(
    loaded: &LoadedWeights,
    explicit: &Settings,
    hints: &Settings,
    source: &str,
) -> Result<(crate::TResNetConfig, ModelMetadata)> {
    let from_file = loaded
        .metadata
        .as_ref()
        .map(Settings::from_metadata)
        .unwrap_or_default();
    let from_pth = Settings {
        class_names: loaded.pth_class_names.clone(),
        ..Settings::default()
    };
    let s = explicit
        .clone()
        .or(from_file)
        .or(hints.clone())
        .or(from_pth);
    let (arch, cfg) = config_for_tensors(&loaded.tensors, s.arch.as_deref())?;
    let k = cfg.num_classes;
    if let Some(n) = loaded.pth_num_classes {
        if n != k {
            return Err(user_error(format!(
                "the checkpoint says num_classes = {n} but its classifier has {k} outputs"
            )));
        }
    }
    let class_names = match s.class_names {
        Some(names) if names.len() == k => names,
        Some(names) => {
            return Err(user_error(format!(
                "{} class names were given for a model with {k} classes",
                names.len()
            )))
        }
        None => (0..k).map(|i| format!("class_{i}")).collect(),
    };
    let input_size = s.input_size.unwrap_or(224);
    if !input_size.is_multiple_of(4) || input_size < crate::model::MIN_INPUT_SIDE {
        return Err(user_error(format!(
            "input size {input_size} is not usable: TResNet needs a multiple of 4, at least {}",
            crate::model::MIN_INPUT_SIDE
        )));
    }
    let threshold = s.threshold.unwrap_or(0.7);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(user_error(format!(
            "threshold must be in [0, 1], got {threshold}"
        )));
    }
    let source = match &loaded.metadata {
        Some(m) => m.source.clone(), // already converted: keep where it came from
        None => source.to_string(),
    };
    // An explicit threshold replaces calibrated per-class ones.
    let class_thresholds = match explicit.threshold {
        Some(_) => None,
        None => s.class_thresholds.filter(|t| t.len() == k),
    };
    Ok((
        cfg,
        ModelMetadata {
            arch,
            num_classes: k,
            class_names,
            input_size,
            resize: s.resize.unwrap_or(ResizeMode::Squish),
            threshold,
            activation: s.activation.unwrap_or(Activation::Sigmoid),
            class_thresholds,
            source,
        },
    ))
}

/// A model ready for inference with its settings.
pub struct LoadedModel {
    /// The folded inference path.
    pub model: TResNet,
    pub metadata: ModelMetadata,
    /// The weight file read.
    pub path: PathBuf,
    pub format: SourceFormat,
}

/// The local file of a source (downloading into the hub cache when needed) and what the source
/// says about the model.
pub fn locate(source: &ModelSource, hub: &HubConfig) -> Result<(PathBuf, Settings)> {
    match source {
        ModelSource::File(p) => Ok((p.clone(), file_hints(p))),
        ModelSource::Hub {
            repo,
            revision,
            file,
        } => {
            let path = super::hub::fetch(hub, repo, revision, file).map_err(hub_error)?;
            // timm repos describe the model in config.json; other repos may have none.
            let hints = match super::hub::fetch(hub, repo, revision, "config.json") {
                Ok(cfg) => {
                    let text = std::fs::read_to_string(&cfg)?;
                    Settings::from_timm_config(&text)
                        .map_err(|e| user_error(format!("{repo}: {e}")))?
                }
                Err(HubError::NotFound { .. } | HubError::OfflineMiss { .. }) => {
                    Settings::default()
                }
                Err(e) => return Err(hub_error(e)),
            };
            Ok((path, hints))
        }
        ModelSource::Registry(p) => {
            let repo = p.repo();
            match super::hub::fetch(hub, &repo, "main", p.file) {
                Ok(path) => Ok((path, Settings::from_registry(p))),
                Err(HubError::NotFound { .. }) if !p.public => {
                    Err(user_error(unpublished_message(p, &repo)))
                }
                // Whatever else failed, say that the repo may not exist at all.
                Err(e) if !p.public => Err(user_error(format!(
                    "{e}\n(note: {} is not published by its authors; unless someone uploaded it \
                     to {repo}, convert the original checkpoint: `asl-cli convert {} -o \
                     model.safetensors`, then use --model ./model.safetensors)",
                    p.name,
                    p.original_file.unwrap_or("the original .pth")
                ))),
                Err(e) => Err(hub_error(e)),
            }
        }
    }
}

/// What the registry knows about a local file: a paper checkpoint under its original name.
pub fn file_hints(path: &Path) -> Settings {
    path.file_name()
        .and_then(|n| super::registry::by_original_file(&n.to_string_lossy()))
        .map(Settings::from_registry)
        .unwrap_or_default()
}

fn hub_error(e: HubError) -> candle_core::Error {
    user_error(e)
}

/// What to say when a registry entry's repo does not exist (yet): how to make it.
pub fn unpublished_message(p: &Pretrained, repo: &str) -> String {
    let original = p.original_file.unwrap_or("the original checkpoint");
    format!(
        "{name}: the hub repo {repo} does not exist (no public repository hosts the ASL paper's \
         {dataset} model). To use it, convert the original checkpoint and publish it (or point \
         --model at the converted file):\n  \
         asl-cli convert {original} -o model.safetensors\n  \
         huggingface-cli upload {repo} model.safetensors model.safetensors\n\
         Set {env}=YOUR_ORG to read {name} from YOUR_ORG/{name} instead of {repo}.",
        name = p.name,
        dataset = p.dataset,
        env = super::registry::ORG_ENV,
    )
}

/// Resolves `source`, reads the weights (converting an original `.pth` in memory), checks them
/// against the architecture and builds the folded inference model.
pub fn load_model(
    source: &ModelSource,
    explicit: &Settings,
    hub: &HubConfig,
    device: &Device,
) -> Result<LoadedModel> {
    let (path, hints) = locate(source, hub)?;
    let loaded = load_weights(&path, device)
        .map_err(|e| user_error(format!("reading {}: {e}", path.display())))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let origin = match source {
        ModelSource::Registry(p) => format!("{} ({})", p.name, p.repo()),
        ModelSource::Hub { repo, file, .. } => format!("hf:{repo}:{file}"),
        ModelSource::File(_) => file_name,
    };
    let origin = match loaded.format {
        SourceFormat::OriginalPth => format!("{origin} (original ASL .pth, converted in memory)"),
        _ => origin,
    };
    let (cfg, metadata) = describe(&loaded, explicit, &hints, &origin)
        .map_err(|e| user_error(format!("{}: {e}", path.display())))?;
    let format = loaded.format;
    let model = model_from_tensors(&cfg, loaded.tensors, device)?.into_inference()?;
    Ok(LoadedModel {
        model,
        metadata,
        path,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        let hub = |s: &str| ModelSource::parse(s).expect(s);
        assert_eq!(
            hub("hf:timm/tresnet_m.miil_in1k"),
            ModelSource::Hub {
                repo: "timm/tresnet_m.miil_in1k".into(),
                revision: "main".into(),
                file: "model.safetensors".into()
            }
        );
        assert_eq!(
            hub("hf:me/m@v1.0:weights/x.safetensors"),
            ModelSource::Hub {
                repo: "me/m".into(),
                revision: "v1.0".into(),
                file: "weights/x.safetensors".into()
            }
        );
        assert!(matches!(hub("tresnet_l-coco"), ModelSource::Registry(p) if p.arch == "tresnet_l"));
        assert!(matches!(
            hub("timm/tresnet_m.miil_in21k"),
            ModelSource::Registry(p) if p.num_classes == 11221
        ));
        let this_file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pretrained/load.rs");
        assert_eq!(hub(this_file), ModelSource::File(this_file.into()));
        for bad in ["hf:nope", "hf:a/b/c", "hf:a/b@", "hf:a/b:", "hf:/b"] {
            let e = ModelSource::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
        let e = ModelSource::parse("tresnet_q-coco")
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("unknown model") && e.contains("tresnet_l-coco"),
            "{e}"
        );
        let e = ModelSource::parse("missing/model.safetensors").expect_err("no file");
        assert!(e.to_string().contains("no such file"));
    }

    #[test]
    fn timm_config_is_read() {
        let json = r#"{"architecture": "tresnet_m", "num_classes": 11221, "num_features": 2048,
            "pretrained_cfg": {"tag": "miil_in21k", "input_size": [3,224,224],
            "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
            "mean": [0,0,0], "std": [1,1,1], "num_classes": 11221}}"#;
        let s = Settings::from_timm_config(json).expect("config");
        assert_eq!(s.arch.as_deref(), Some("tresnet_m"));
        assert_eq!(s.input_size, Some(224));
        assert_eq!(s.resize, Some(ResizeMode::Crop { crop_pct: 0.875 }));
        assert_eq!(s.activation, Some(Activation::Softmax));
        assert_eq!(s.class_names.map(|c| c.len()), Some(11221));
        assert!(Settings::from_timm_config("{").is_err());
        let odd = r#"{"architecture": "tresnet_m", "pretrained_cfg": {"crop_pct": 1.0, "crop_mode": "squash"}}"#;
        assert!(Settings::from_timm_config(odd).is_err());
    }

    #[test]
    fn unpublished_entries_explain_themselves() {
        let p = crate::pretrained::registry::lookup("tresnet_l-coco").expect("entry");
        let msg = unpublished_message(p, "asl-rs/tresnet_l-coco");
        for part in [
            "asl-rs/tresnet_l-coco",
            "MS_COCO_TRresNet_L_448_86.6.pth",
            "asl-cli convert",
            "huggingface-cli upload",
            "ASL_RS_HUB_ORG",
        ] {
            assert!(msg.contains(part), "{part} in {msg}");
        }
    }
}
