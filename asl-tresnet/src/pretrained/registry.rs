//! The pretrained registry: every name `--model NAME` accepts, as one table of data.
//!
//! Two kinds of entries:
//! - timm's ten ImageNet TResNets, public on the Hugging Face hub today (`timm/tresnet_*`,
//!   timm naming, `model.safetensors`), single-label (softmax) classifiers;
//! - the ASL paper's multi-label models. Their original `.pth` files were served from the
//!   authors' object store (answering 403 since May 2026) and **no hub repository hosts them**:
//!   the registry names the repo they are meant to be published to ([`DEFAULT_ORG`], or the
//!   organisation in the `ASL_RS_HUB_ORG` environment variable), which a user fills with
//!   `asl-cli convert` and `huggingface-cli upload` (see the README).

use super::config::{
    Activation, CfgOverrides, ResizeMode, TIMM_CROP_PCT, TRESNET_MEAN, TRESNET_STD,
};
use crate::model::HeadKind;

/// A published result for a model, as its authors reported it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reported {
    /// `"mAP"` (multi-label) or `"top-1"` (ImageNet).
    pub metric: &'static str,
    /// Percent.
    pub value: f64,
    pub source: &'static str,
}

/// One pretrained model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pretrained {
    /// The name `--model` takes.
    pub name: &'static str,
    /// A [`crate::TResNetConfig::ARCHS`] name.
    pub arch: &'static str,
    pub dataset: &'static str,
    /// The built-in class list ([`super::classes::builtin`]), or `None` when the names travel
    /// with the weights (OpenImages).
    pub classes: Option<&'static str>,
    pub num_classes: usize,
    pub head: HeadKind,
    pub input_size: usize,
    pub resize: ResizeMode,
    pub activation: Activation,
    /// Default decision threshold on the scores (0 for the softmax models: they report top-k).
    pub threshold: f64,
    pub reported: Reported,
    pub file: &'static str,
    pub license: &'static str,
    /// Whether the hub repo exists and is public today.
    pub public: bool,
    /// The paper's original checkpoint file, for unpublished entries: what to convert.
    pub original_file: Option<&'static str>,
}

/// The organisation the ASL models are meant to be published under.
pub const DEFAULT_ORG: &str = "asl-rs";
/// Environment variable naming another organisation for the unpublished entries.
pub const ORG_ENV: &str = "ASL_RS_HUB_ORG";

impl Pretrained {
    /// The hub repo: `timm/NAME` for timm's public entries; `ORG/NAME` for the others, ORG
    /// being `ASL_RS_HUB_ORG` when set, else [`DEFAULT_ORG`].
    pub fn repo(&self) -> String {
        self.repo_under(std::env::var(ORG_ENV).ok().as_deref())
    }

    /// [`Self::repo`] with the organisation for unpublished entries given explicitly.
    pub fn repo_under(&self, org: Option<&str>) -> String {
        if self.public {
            return format!("timm/{}", self.name);
        }
        let org = org
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .unwrap_or(DEFAULT_ORG);
        format!("{org}/{}", self.name)
    }

    /// The class names, when a built-in list covers them.
    pub fn class_names(&self) -> Option<Vec<String>> {
        self.classes.and_then(super::classes::builtin)
    }

    /// What this entry says about its model's configuration (everything but the class names
    /// of a model whose names travel with its weights).
    pub fn overrides(&self) -> CfgOverrides {
        CfgOverrides {
            arch: Some(self.arch.to_string()),
            class_names: self.class_names(),
            input_size: Some(self.input_size),
            resize: Some(self.resize),
            mean: Some(TRESNET_MEAN),
            std: Some(TRESNET_STD),
            threshold: Some(self.threshold),
            activation: Some(self.activation),
            class_thresholds: None,
            license: Some(self.license.to_string()),
        }
    }
}

const TIMM_LICENSE: &str = "Apache-2.0";
const ASL_LICENSE: &str = "MIT";
const TRESNET_PAPER: &str = "TResNet paper (Ridnik et al., WACV 2021), Table 1 / 448 results";
const IN21K_ZOO: &str = "ImageNet-21K pretraining (Ridnik et al., NeurIPS 2021) model zoo";
const ASL_PAPER: &str = "ASL paper (Ben-Baruch, Ridnik et al., ICCV 2021) model zoo";

const fn timm(
    name: &'static str,
    arch: &'static str,
    in21k: bool,
    input_size: usize,
    top1: f64,
    source: &'static str,
) -> Pretrained {
    Pretrained {
        name,
        arch,
        dataset: if in21k {
            "ImageNet-21K-P"
        } else {
            "ImageNet-1k"
        },
        classes: Some(if in21k {
            "imagenet-21k-p"
        } else {
            "imagenet-1k"
        }),
        num_classes: if in21k { 11221 } else { 1000 },
        head: HeadKind::Linear,
        input_size,
        resize: ResizeMode::Crop {
            crop_pct: TIMM_CROP_PCT,
        },
        activation: Activation::Softmax,
        threshold: 0.0,
        reported: Reported {
            metric: "top-1",
            value: top1,
            source,
        },
        file: "model.safetensors",
        license: TIMM_LICENSE,
        public: true,
        original_file: None,
    }
}

#[allow(clippy::too_many_arguments)]
const fn asl(
    name: &'static str,
    arch: &'static str,
    dataset: &'static str,
    classes: Option<&'static str>,
    num_classes: usize,
    input_size: usize,
    threshold: f64,
    map: f64,
    original_file: &'static str,
) -> Pretrained {
    Pretrained {
        name,
        arch,
        dataset,
        classes,
        num_classes,
        head: HeadKind::Linear,
        input_size,
        resize: ResizeMode::Squish,
        activation: Activation::Sigmoid,
        threshold,
        reported: Reported {
            metric: "mAP",
            value: map,
            source: ASL_PAPER,
        },
        file: "model.safetensors",
        license: ASL_LICENSE,
        public: false,
        original_file: Some(original_file),
    }
}

/// Every pretrained model, ASL multi-label models first.
pub const REGISTRY: &[Pretrained] = &[
    asl(
        "tresnet_m-coco",
        "tresnet_m",
        "MS-COCO 2014",
        Some("coco"),
        80,
        224,
        0.7,
        81.8,
        "MS_COCO_TRresNet_M_224_81.8.pth",
    ),
    asl(
        "tresnet_l-coco",
        "tresnet_l",
        "MS-COCO 2014",
        Some("coco"),
        80,
        448,
        0.7,
        86.6,
        "MS_COCO_TRresNet_L_448_86.6.pth",
    ),
    asl(
        "tresnet_xl-coco",
        "tresnet_xl",
        "MS-COCO 2014",
        Some("coco"),
        80,
        640,
        0.7,
        88.4,
        "MS_COCO_TResNet_xl_640_88.4.pth",
    ),
    asl(
        "tresnet_xl-voc",
        "tresnet_xl",
        "Pascal VOC 2007",
        Some("voc"),
        20,
        448,
        0.7,
        96.0,
        "PASCAL_VOC_TResNet_xl_448_96.0.pth",
    ),
    // Trained at 448, evaluated by the authors at 240.
    asl(
        "tresnet_l-nuswide",
        "tresnet_l",
        "NUS-WIDE",
        Some("nus-wide"),
        81,
        240,
        0.7,
        65.2,
        "NUS_WIDE_TRresNet_L_448_65.2.pth",
    ),
    Pretrained {
        head: HeadKind::Bottleneck { embedding: 512 },
        ..asl(
            "tresnet_l-openimages",
            "tresnet_l",
            "OpenImages V6",
            None,
            9605,
            448,
            0.995,
            86.3,
            "Open_ImagesV6_TRresNet_L_448.pth",
        )
    },
    timm(
        "tresnet_m.miil_in21k_ft_in1k",
        "tresnet_m",
        false,
        224,
        83.1,
        IN21K_ZOO,
    ),
    timm(
        "tresnet_m.miil_in21k",
        "tresnet_m",
        true,
        224,
        76.4,
        IN21K_ZOO,
    ),
    timm(
        "tresnet_m.miil_in1k",
        "tresnet_m",
        false,
        224,
        80.8,
        TRESNET_PAPER,
    ),
    timm(
        "tresnet_m.miil_in1k_448",
        "tresnet_m",
        false,
        448,
        83.2,
        TRESNET_PAPER,
    ),
    timm(
        "tresnet_l.miil_in1k",
        "tresnet_l",
        false,
        224,
        81.5,
        TRESNET_PAPER,
    ),
    timm(
        "tresnet_l.miil_in1k_448",
        "tresnet_l",
        false,
        448,
        83.8,
        TRESNET_PAPER,
    ),
    timm(
        "tresnet_xl.miil_in1k",
        "tresnet_xl",
        false,
        224,
        82.0,
        TRESNET_PAPER,
    ),
    timm(
        "tresnet_xl.miil_in1k_448",
        "tresnet_xl",
        false,
        448,
        84.3,
        TRESNET_PAPER,
    ),
    timm(
        "tresnet_v2_l.miil_in21k_ft_in1k",
        "tresnet_v2_l",
        false,
        224,
        83.9,
        IN21K_ZOO,
    ),
    timm(
        "tresnet_v2_l.miil_in21k",
        "tresnet_v2_l",
        true,
        224,
        76.7,
        IN21K_ZOO,
    ),
];

/// A registry entry by name. timm's names also resolve with a `timm/` prefix.
pub fn lookup(name: &str) -> Option<&'static Pretrained> {
    let name = name.strip_prefix("timm/").unwrap_or(name);
    REGISTRY.iter().find(|p| p.name == name)
}

/// The registry entry whose original `.pth` has this file name (so a converted or loaded
/// `MS_COCO_TRresNet_L_448_86.6.pth` gets that model's input size, threshold and names).
pub fn by_original_file(file_name: &str) -> Option<&'static Pretrained> {
    REGISTRY.iter().find(|p| p.original_file == Some(file_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TResNetConfig;

    #[test]
    fn entries_are_consistent() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|p| p.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len(), "names are unique");
        assert_eq!(REGISTRY.iter().filter(|p| p.public).count(), 10);
        for p in REGISTRY {
            assert!(TResNetConfig::from_arch(p.arch, p.num_classes).is_some());
            assert!(p.name.starts_with(p.arch), "{}", p.name);
            assert!(p.input_size % 4 == 0 && p.input_size >= 224);
            if let Some(names) = p.class_names() {
                assert_eq!(names.len(), p.num_classes, "{}", p.name);
            }
            if p.public {
                assert_eq!(p.repo(), format!("timm/{}", p.name));
                assert_eq!(p.activation, Activation::Softmax);
            } else {
                assert!(p.original_file.is_some() && p.activation == Activation::Sigmoid);
                assert_eq!(p.resize, ResizeMode::Squish);
            }
            assert_eq!(lookup(p.name), Some(p));
            if !p.public {
                assert_eq!(p.repo_under(None), format!("asl-rs/{}", p.name));
                assert_eq!(p.repo_under(Some(" me ")), format!("me/{}", p.name));
            }
        }
        assert_eq!(
            lookup("timm/tresnet_l.miil_in1k").map(|p| p.input_size),
            Some(224)
        );
        assert!(lookup("tresnet_l").is_none());
        assert_eq!(
            by_original_file("NUS_WIDE_TRresNet_L_448_65.2.pth").map(|p| p.name),
            Some("tresnet_l-nuswide")
        );
        assert!(by_original_file("model.pth").is_none());
    }
}

#[cfg(test)]
mod arch_name_tests {
    use crate::TResNetConfig;

    #[test]
    fn architecture_names_round_trip() {
        for arch in TResNetConfig::ARCHS {
            let cfg = TResNetConfig::from_arch(arch, 3).expect("known");
            assert_eq!(cfg.name(), arch);
        }
        for cfg in [
            TResNetConfig::variant([1, 1, 1, 1], 0.25, false, 10),
            TResNetConfig::variant([2, 3, 4, 1], 0.5, true, 10),
        ] {
            let name = cfg.name();
            assert!(name.starts_with("tresnet_custom:"), "{name}");
            assert_eq!(TResNetConfig::from_arch(&name, 10), Some(cfg));
        }
        for bad in [
            "tresnet_custom:1-1-1:0.25",
            "tresnet_custom:1-1-1-1:0",
            "tresnet_custom:1-1-0-1:0.5",
            "tresnet_custom:1-1-1-1:0.5:v3",
            "tresnet_custom:1-1-1-1:0.01",
            "resnet50",
        ] {
            assert!(TResNetConfig::from_arch(bad, 2).is_none(), "{bad}");
        }
    }
}
