//! The flag groups several subcommands share, flattened into each, and the value enums of every
//! choice.

use std::path::Path;

use anyhow::{bail, Context, Result};
use asl_tresnet::images::DEFAULT_MAX_PIXELS;
use asl_tresnet::pretrained::config::TIMM_CROP_PCT;
use asl_tresnet::pretrained::{classes, Activation, CfgOverrides, HubConfig, ResizeMode};
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    Cpu,
    /// needs a build with `--features cuda`
    Cuda,
}

/// Where the model runs.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

impl DeviceArgs {
    pub fn device(&self) -> Result<Device> {
        match self.device {
            DeviceKind::Cuda if cfg!(feature = "cuda") => Ok(Device::new_cuda(0)?),
            DeviceKind::Cuda => bail!(
                "this asl-cli was built without CUDA; rebuild with `cargo build --release -p \
                 asl-cli --features cuda` (needs the CUDA toolkit) or use --device cpu"
            ),
            DeviceKind::Cpu => Ok(Device::Cpu),
        }
    }
}

/// The hub: `--offline` on top of the `HF_*` environment variables.
#[derive(Args, Clone, Debug)]
pub struct HubArgs {
    /// Use only the local hub cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

impl HubArgs {
    pub fn config(&self) -> HubConfig {
        let mut hub = HubConfig::from_env();
        hub.offline |= self.offline;
        hub
    }
}

/// `--resize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResizeArg {
    /// to S x S, aspect ratio not kept (the ASL models)
    Squish,
    /// shorter side to S / 0.875, centre crop (timm's ImageNet models)
    Crop,
}

impl From<ResizeArg> for ResizeMode {
    fn from(r: ResizeArg) -> ResizeMode {
        match r {
            ResizeArg::Squish => ResizeMode::Squish,
            ResizeArg::Crop => ResizeMode::Crop {
                crop_pct: TIMM_CROP_PCT,
            },
        }
    }
}

/// `--activation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActivationArg {
    Sigmoid,
    Softmax,
}

impl From<ActivationArg> for Activation {
    fn from(a: ActivationArg) -> Activation {
        match a {
            ActivationArg::Sigmoid => Activation::Sigmoid,
            ActivationArg::Softmax => Activation::Softmax,
        }
    }
}

/// What a model file without metadata needs to be read, and overrides of what it says.
#[derive(Args, Clone, Debug, Default)]
pub struct ModelCfgArgs {
    /// Architecture, for a file without metadata: tresnet_m, tresnet_l, tresnet_xl or
    /// tresnet_v2_l (default: inferred from the tensor names and shapes).
    #[arg(long)]
    pub arch: Option<String>,
    /// Class names for a file without them: a text file (one per line) or a built-in list
    /// (coco, voc, nus-wide, imagenet-1k, imagenet-21k-p).
    #[arg(long)]
    pub classes: Option<String>,
    /// Input size (default: the model's; 224 for a file without metadata).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Resize: squish to S x S (the ASL models) or crop (shorter side to S / 0.875, centre
    /// crop; timm's ImageNet models). Default: the model's.
    #[arg(long, value_enum)]
    pub resize: Option<ResizeArg>,
}

impl ModelCfgArgs {
    /// The overrides these flags give (the class list read from its file).
    pub fn overrides(&self) -> Result<CfgOverrides> {
        Ok(CfgOverrides {
            arch: self.arch.clone(),
            class_names: self.classes.as_deref().map(class_list).transpose()?,
            input_size: self.input_size,
            resize: self.resize.map(ResizeMode::from),
            ..CfgOverrides::default()
        })
    }
}

/// `--max-pixels`.
#[derive(Args, Clone, Debug)]
pub struct ImageLimitArgs {
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

/// `--precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// bf16 on CUDA, f32 on the CPU
    Auto,
    F32,
    /// bf16 autocast of the convolutions and the classifier (CUDA only)
    Bf16,
}

impl Precision {
    /// The autocast dtype on `device`: `auto` is bf16 on CUDA and f32 on the CPU; `bf16` on the
    /// CPU is an error (candle's CPU matrix product has no bf16).
    pub fn autocast(self, device: &Device) -> Result<Option<DType>> {
        match (self, device.is_cuda()) {
            (Precision::Bf16, false) => bail!(
                "--precision bf16 needs --device cuda (candle's CPU matrix product has no bf16); \
                 use --precision f32 on the CPU"
            ),
            (Precision::Bf16, true) | (Precision::Auto, true) => Ok(Some(DType::BF16)),
            (Precision::Auto | Precision::F32, _) => Ok(None),
        }
    }
}

/// `--format text|json` of the commands that print a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// A class list given on the command line: a built-in list's name or a file, one name per line.
pub fn class_list(spec: &str) -> Result<Vec<String>> {
    if let Some(list) = classes::builtin(spec) {
        return Ok(list);
    }
    Ok(std::fs::read_to_string(spec)
        .with_context(|| {
            format!(
                "--classes {spec:?} is neither a built-in list ({}) nor a readable file",
                classes::BUILTIN.join(", ")
            )
        })?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// A file path that must not exist unless `force`.
pub fn check_new_file(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    Ok(())
}
