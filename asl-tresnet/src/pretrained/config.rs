//! What a set of weights needs beside its tensors to be used: timm's `pretrained_cfg` for
//! TResNet. One [`PretrainedCfg`] describes a model everywhere: the registry's entries, the
//! metadata in the project's weight files, a timm hub repo's `config.json`, and the image
//! preprocessing that feeds the model. [`CfgOverrides`] is the same record with every field
//! optional, for the layers a configuration is resolved from (command-line options, the file,
//! the registry or `config.json`, defaults).

use std::collections::HashMap;
use std::fmt;

use crate::{Error, Result};

/// The header key that marks a file as the project's own format, and its version.
pub const FORMAT_KEY: &str = "asl.format";
pub const FORMAT_VERSION: &str = "asl-rs/1";

/// TResNet's input normalisation: none (pixels / 255, as timm's `pretrained_cfg` says with mean
/// 0 and std 1).
pub const TRESNET_MEAN: [f32; 3] = [0.0; 3];
pub const TRESNET_STD: [f32; 3] = [1.0; 3];

/// The decision threshold of the ASL reference's inference.
pub const DEFAULT_THRESHOLD: f64 = 0.7;

/// The input size of a model file that says nothing.
pub const DEFAULT_INPUT_SIZE: usize = 224;

/// timm's centre-crop fraction for its ImageNet models.
pub const TIMM_CROP_PCT: f64 = 0.875;

/// How images are resized for a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    /// Resize to S x S, aspect ratio not kept (the ASL multi-label models).
    Squish,
    /// Resize the shorter side to S / crop_pct, centre-crop S (timm's ImageNet models).
    Crop { crop_pct: f64 },
}

impl fmt::Display for ResizeMode {
    /// `squish` or `crop 0.875`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResizeMode::Squish => write!(f, "squish"),
            ResizeMode::Crop { crop_pct } => write!(f, "crop {crop_pct}"),
        }
    }
}

impl ResizeMode {
    /// The header form: `squish` or `crop:0.875`.
    fn header_value(self) -> String {
        match self {
            ResizeMode::Squish => "squish".to_string(),
            ResizeMode::Crop { crop_pct } => format!("crop:{crop_pct}"),
        }
    }

    fn from_header_value(v: &str) -> Result<Self> {
        if v == "squish" {
            return Ok(ResizeMode::Squish);
        }
        match v.strip_prefix("crop:").and_then(|p| p.parse().ok()) {
            Some(crop_pct) => Ok(ResizeMode::Crop { crop_pct }),
            None => Err(Error::Metadata(format!(
                "metadata asl.resize: unknown mode {v:?}"
            ))),
        }
    }
}

/// How scores are read from the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Independent per-class sigmoid probabilities (multi-label; the ASL models).
    Sigmoid,
    /// A softmax over the classes (single-label; timm's ImageNet models).
    Softmax,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Softmax => "softmax",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sigmoid" => Some(Activation::Sigmoid),
            "softmax" => Some(Activation::Softmax),
            _ => None,
        }
    }
}

/// Everything needed to use a set of weights.
#[derive(Clone, Debug, PartialEq)]
pub struct PretrainedCfg {
    /// Architecture name, e.g. `tresnet_l` (see [`crate::TResNetConfig::from_arch`]).
    pub arch: String,
    pub num_classes: usize,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// The square input side.
    pub input_size: usize,
    pub resize: ResizeMode,
    /// Per-channel normalisation `(x - mean) / std` of RGB in [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub activation: Activation,
    /// Default decision threshold on the scores.
    pub threshold: f64,
    /// Per-class decision thresholds (`asl-cli validate --calibrate`), used instead of
    /// `threshold` when present.
    pub class_thresholds: Option<Vec<f64>>,
    /// Where the weights came from (file name and format), so a file is never converted twice.
    pub source: String,
    /// The weights' licence, when known.
    pub license: Option<String>,
}

impl PretrainedCfg {
    /// The decision threshold of every class.
    pub fn thresholds(&self) -> Vec<f64> {
        self.class_thresholds
            .clone()
            .unwrap_or_else(|| vec![self.threshold; self.num_classes])
    }

    /// The safetensors header entries of the project's format.
    pub fn to_header(&self) -> HashMap<String, String> {
        let mut header = HashMap::from([
            (FORMAT_KEY.to_string(), FORMAT_VERSION.to_string()),
            ("asl.arch".into(), self.arch.clone()),
            ("asl.num_classes".into(), self.num_classes.to_string()),
            ("asl.class_names".into(), json(&self.class_names)),
            ("asl.input_size".into(), self.input_size.to_string()),
            ("asl.resize".into(), self.resize.header_value()),
            ("asl.mean".into(), json(&self.mean.to_vec())),
            ("asl.std".into(), json(&self.std.to_vec())),
            ("asl.threshold".into(), self.threshold.to_string()),
            ("asl.activation".into(), self.activation.name().to_string()),
            ("asl.source".into(), self.source.clone()),
        ]);
        if let Some(t) = &self.class_thresholds {
            header.insert("asl.class_thresholds".into(), json(t));
        }
        if let Some(l) = &self.license {
            header.insert("asl.license".into(), l.clone());
        }
        header
    }

    /// Reads the header entries back; `None` when the file is not in the project's format.
    /// Files written before mean, std and licence were stored read as TResNet's normalisation
    /// and no licence; without `asl.activation` they are multi-label (sigmoid).
    pub fn from_header(h: &HashMap<String, String>) -> Result<Option<Self>> {
        if h.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT_VERSION) {
            return Ok(None);
        }
        let header = Header(h);
        let num_classes = header.number("asl.num_classes")? as usize;
        Ok(Some(PretrainedCfg {
            arch: header.get("asl.arch")?.clone(),
            num_classes,
            class_names: header.json("asl.class_names")?,
            input_size: header.number("asl.input_size")? as usize,
            resize: ResizeMode::from_header_value(header.get("asl.resize")?)?,
            mean: header.rgb("asl.mean", TRESNET_MEAN)?,
            std: header.rgb("asl.std", TRESNET_STD)?,
            threshold: header.number("asl.threshold")?,
            activation: match h.get("asl.activation") {
                None => Activation::Sigmoid,
                Some(a) => Activation::parse(a).ok_or_else(|| {
                    Error::Metadata(format!(
                        "metadata asl.activation: unknown activation {a:?} (sigmoid or softmax)"
                    ))
                })?,
            },
            class_thresholds: header.class_thresholds(num_classes)?,
            source: header.get("asl.source")?.clone(),
            license: h.get("asl.license").cloned(),
        }))
    }
}

/// The JSON text of a header value.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// A safetensors header being read, with errors naming the key.
struct Header<'a>(&'a HashMap<String, String>);

impl Header<'_> {
    fn get(&self, k: &str) -> Result<&String> {
        self.0
            .get(k)
            .ok_or_else(|| Error::Metadata(format!("metadata key {k} is missing")))
    }

    fn number(&self, k: &str) -> Result<f64> {
        self.get(k)?
            .parse::<f64>()
            .map_err(|e| Error::Metadata(format!("metadata {k}: {e}")))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, k: &str) -> Result<T> {
        serde_json::from_str(self.get(k)?)
            .map_err(|e| Error::Metadata(format!("metadata {k}: {e}")))
    }

    fn rgb(&self, k: &str, default: [f32; 3]) -> Result<[f32; 3]> {
        if !self.0.contains_key(k) {
            return Ok(default);
        }
        let v: Vec<f32> = self.json(k)?;
        v.try_into().map_err(|v: Vec<f32>| {
            Error::Metadata(format!("metadata {k}: {} values, expected 3", v.len()))
        })
    }

    fn class_thresholds(&self, k: usize) -> Result<Option<Vec<f64>>> {
        if !self.0.contains_key("asl.class_thresholds") {
            return Ok(None);
        }
        let t: Vec<f64> = self.json("asl.class_thresholds")?;
        if t.len() != k || t.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::Metadata(format!(
                "metadata asl.class_thresholds: expected {k} values in [0, 1], got {}",
                t.len()
            )));
        }
        Ok(Some(t))
    }
}

/// A [`PretrainedCfg`] with every field optional: what one source says about a model (`None`:
/// not said here). Layers are combined with [`CfgOverrides::or`], the first that says wins.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CfgOverrides {
    pub arch: Option<String>,
    pub class_names: Option<Vec<String>>,
    pub input_size: Option<usize>,
    pub resize: Option<ResizeMode>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub threshold: Option<f64>,
    pub activation: Option<Activation>,
    pub class_thresholds: Option<Vec<f64>>,
    pub license: Option<String>,
}

impl CfgOverrides {
    /// Each field from `self`, else from `other`.
    pub fn or(self, other: CfgOverrides) -> CfgOverrides {
        CfgOverrides {
            arch: self.arch.or(other.arch),
            class_names: self.class_names.or(other.class_names),
            input_size: self.input_size.or(other.input_size),
            resize: self.resize.or(other.resize),
            mean: self.mean.or(other.mean),
            std: self.std.or(other.std),
            threshold: self.threshold.or(other.threshold),
            activation: self.activation.or(other.activation),
            class_thresholds: self.class_thresholds.or(other.class_thresholds),
            license: self.license.or(other.license),
        }
    }

    /// What a timm hub repo's `config.json` says (`architecture`, `pretrained_cfg.input_size`,
    /// `crop_pct`, `mean`, `std`, `license`; no class names: 1000 and 11221 classes get the
    /// bundled ImageNet lists). timm models are single-label: softmax.
    pub fn from_timm_config(json: &str) -> Result<CfgOverrides> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Metadata(format!("config.json is not valid JSON: {e}")))?;
        let cfg = v.get("pretrained_cfg").unwrap_or(&v);
        let num_classes = v
            .get("num_classes")
            .or_else(|| cfg.get("num_classes"))
            .and_then(|n| n.as_u64());
        Ok(CfgOverrides {
            arch: v
                .get("architecture")
                .and_then(|a| a.as_str())
                .map(|a| a.split('.').next().unwrap_or(a).to_string()),
            class_names: match num_classes {
                Some(1000) => super::classes::builtin("imagenet-1k"),
                Some(11221) => super::classes::builtin("imagenet-21k-p"),
                _ => None,
            },
            input_size: cfg
                .get("input_size")
                .and_then(|s| s.as_array())
                .and_then(|s| s.last())
                .and_then(|s| s.as_u64())
                .map(|s| s as usize),
            resize: timm_resize(cfg)?,
            mean: timm_rgb(cfg.get("mean")),
            std: timm_rgb(cfg.get("std")),
            threshold: Some(0.0),
            activation: Some(Activation::Softmax),
            class_thresholds: None,
            license: cfg
                .get("license")
                .and_then(|l| l.as_str())
                .map(str::to_string),
        })
    }
}

/// `crop_pct` and `crop_mode` of a timm `pretrained_cfg` (centre crops only).
fn timm_resize(cfg: &serde_json::Value) -> Result<Option<ResizeMode>> {
    let crop_pct = cfg.get("crop_pct").and_then(|c| c.as_f64());
    let crop_mode = cfg.get("crop_mode").and_then(|c| c.as_str());
    match (crop_pct, crop_mode) {
        (Some(p), None | Some("center")) => Ok(Some(ResizeMode::Crop { crop_pct: p })),
        (None, None) => Ok(None),
        (_, Some(other)) => Err(Error::Metadata(format!(
            "config.json: crop_mode {other:?} is not supported (center only)"
        ))),
    }
}

fn timm_rgb(v: Option<&serde_json::Value>) -> Option<[f32; 3]> {
    let a = v?.as_array()?;
    let values: Vec<f32> = a
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect::<Option<_>>()?;
    values.try_into().ok()
}

impl From<&PretrainedCfg> for CfgOverrides {
    fn from(m: &PretrainedCfg) -> CfgOverrides {
        CfgOverrides {
            arch: Some(m.arch.clone()),
            class_names: (!m.class_names.is_empty()).then(|| m.class_names.clone()),
            input_size: Some(m.input_size),
            resize: Some(m.resize),
            mean: Some(m.mean),
            std: Some(m.std),
            threshold: Some(m.threshold),
            activation: Some(m.activation),
            class_thresholds: m.class_thresholds.clone(),
            license: m.license.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timm_config_is_read() {
        let json = r#"{"architecture": "tresnet_m", "num_classes": 11221, "num_features": 2048,
            "pretrained_cfg": {"tag": "miil_in21k", "input_size": [3,224,224],
            "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
            "mean": [0,0,0], "std": [1,1,1], "num_classes": 11221, "license": "apache-2.0"}}"#;
        let s = CfgOverrides::from_timm_config(json).expect("config");
        assert_eq!(s.arch.as_deref(), Some("tresnet_m"));
        assert_eq!(s.input_size, Some(224));
        assert_eq!(s.resize, Some(ResizeMode::Crop { crop_pct: 0.875 }));
        assert_eq!(s.activation, Some(Activation::Softmax));
        assert_eq!(s.class_names.map(|c| c.len()), Some(11221));
        assert_eq!((s.mean, s.std), (Some(TRESNET_MEAN), Some(TRESNET_STD)));
        assert_eq!(s.license.as_deref(), Some("apache-2.0"));
        assert!(CfgOverrides::from_timm_config("{").is_err());
        let odd = r#"{"architecture": "tresnet_m", "pretrained_cfg": {"crop_pct": 1.0, "crop_mode": "squash"}}"#;
        assert!(CfgOverrides::from_timm_config(odd).is_err());
    }

    #[test]
    fn the_header_round_trips_and_old_files_read() {
        let cfg = PretrainedCfg {
            arch: "tresnet_m".into(),
            num_classes: 2,
            class_names: vec!["cat".into(), "dog".into()],
            input_size: 224,
            resize: ResizeMode::Crop { crop_pct: 0.9 },
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.5, 2.0],
            activation: Activation::Softmax,
            threshold: 0.3,
            class_thresholds: Some(vec![0.1, 0.9]),
            source: "test".into(),
            license: Some("MIT".into()),
        };
        let mut header = cfg.to_header();
        assert_eq!(
            PretrainedCfg::from_header(&header).expect("read"),
            Some(cfg.clone())
        );
        for k in ["asl.mean", "asl.std", "asl.license", "asl.activation"] {
            header.remove(k);
        }
        let old = PretrainedCfg::from_header(&header)
            .expect("old")
            .expect("ours");
        assert_eq!(
            (old.mean, old.std, old.license),
            (TRESNET_MEAN, TRESNET_STD, None)
        );
        assert_eq!(old.activation, Activation::Sigmoid);
        header.insert("asl.class_thresholds".into(), "[0.5]".into());
        assert!(PretrainedCfg::from_header(&header).is_err());
        assert_eq!(
            PretrainedCfg::from_header(&HashMap::new()).expect("none"),
            None
        );
    }
}
