//! What defines a training run ([`TrainConfig`], the paper's recipe by default) and where and
//! how it runs ([`TrainOptions`]).

use std::path::PathBuf;

use asl_core::adaptive::AdaptiveAsymmetry;
use asl_core::AslConfig;
use candle_core::{DType, Device};

use crate::augment::AugmentConfig;
use crate::model::{TResNetConfig, MIN_INPUT_SIDE};
use crate::{Error, Result};

/// Everything that defines a training run (a resumed run must use the same values).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// A [`TResNetConfig::from_arch`] name (`tresnet_m`, or `tresnet_custom:1-1-1-1:0.25`).
    pub arch: String,
    pub image_size: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Micro-batches summed into one optimiser step (gradient accumulation).
    pub accumulate: usize,
    /// The OneCycle maximum learning rate.
    pub lr: f64,
    /// Coupled L2 weight decay on weights (tensors of rank > 1) only.
    pub weight_decay: f64,
    pub loss: AslConfig,
    /// Adaptive asymmetry (paper section 2.7): after every optimiser step, move `gamma_neg`
    /// (starting from `loss.gamma_neg`) toward the target probability gap. `None`: fixed.
    pub adaptive: Option<AdaptiveAsymmetry>,
    /// Mixed precision: convolutions and the classifier multiply in this dtype (bf16 on CUDA;
    /// see [`TResNet::with_autocast`]); weights, optimiser, BatchNorm and the loss stay f32.
    /// `None`: all f32.
    pub autocast: Option<DType>,
    /// EMA decay of weights and BatchNorm statistics (`None`: no EMA model).
    pub ema_decay: Option<f64>,
    /// Ramp the EMA decay up as `min(decay, (1 + t) / (10 + t))` (not in the reference; useful
    /// for short runs, where 0.9997 would leave the EMA model at its initial weights).
    pub ema_warmup: bool,
    pub augment: AugmentConfig,
    pub seed: u64,
    /// OneCycle: fraction of steps warming up, initial lr = lr / div_factor, final lr =
    /// initial / final_div_factor; beta1 cycles between these.
    pub pct_start: f64,
    pub div_factor: f64,
    pub final_div_factor: f64,
    pub beta1_range: (f64, f64),
    /// Skip batches with a non-finite loss (counted) instead of stopping.
    pub skip_nonfinite: bool,
    /// Skip images that fail to decode (counted) instead of stopping.
    pub skip_bad: bool,
    /// Threshold of the default decision in the saved model's metadata.
    pub threshold: f64,
}

impl TrainConfig {
    /// The paper's recipe for `arch`: 224 px, batch 128 (accumulate when memory is short), Adam
    /// lr 1e-4 with weight decay 1e-4, OneCycle (pct_start 0.2, div 25, final div 1e4, beta1
    /// 0.95 -> 0.85), ASL (4, 0, 0.05, focal weight detached), EMA 0.9997, Cutout + RandAugment.
    pub fn recipe(arch: &str) -> Self {
        TrainConfig {
            arch: arch.to_string(),
            image_size: 224,
            epochs: 40,
            batch_size: 128,
            accumulate: 1,
            lr: 1e-4,
            weight_decay: 1e-4,
            loss: AslConfig::paper(),
            adaptive: None,
            autocast: None,
            ema_decay: Some(0.9997),
            ema_warmup: false,
            augment: AugmentConfig::default(),
            seed: 0,
            pct_start: 0.2,
            div_factor: 25.0,
            final_div_factor: 1e4,
            beta1_range: (0.85, 0.95),
            skip_nonfinite: false,
            skip_bad: false,
            threshold: 0.7,
        }
    }

    /// The settings a resumed run must share with the run it continues, by name: everything
    /// that shapes the trajectory. The number of epochs may grow (the OneCycle schedule is then
    /// planned over the new total); the skip switches and the saved threshold may change.
    /// Refuses settings that cannot train: no epochs, batches or accumulation, an input size
    /// TResNet cannot take, an invalid loss or adaptive-asymmetry setting, an unknown
    /// architecture.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.accumulate == 0 || self.epochs == 0 {
            return Err(Error::Config(
                "epochs, batch size and accumulation must be at least 1".into(),
            ));
        }
        if !self.image_size.is_multiple_of(4) || self.image_size < MIN_INPUT_SIDE {
            return Err(Error::Config(format!(
                "the image size must be a multiple of 4 and at least {MIN_INPUT_SIDE}"
            )));
        }
        self.loss
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if let Some(a) = &self.adaptive {
            a.validate().map_err(|e| Error::Config(e.to_string()))?;
        }
        TResNetConfig::named(&self.arch, 1).map(|_| ())
    }

    /// Optimiser steps per epoch over `samples` samples: every `accumulate` batches, and the
    /// epoch's last (a shorter tail).
    pub fn steps_per_epoch(&self, samples: usize) -> usize {
        samples.div_ceil(self.batch_size).div_ceil(self.accumulate)
    }

    pub(crate) fn resume_fields(&self) -> Vec<(String, String)> {
        let l = &self.loss;
        let a = &self.augment;
        let fields: [(&str, String); 19] = [
            ("arch", self.arch.clone()),
            ("image_size", self.image_size.to_string()),
            ("batch_size", self.batch_size.to_string()),
            ("accumulate", self.accumulate.to_string()),
            ("lr", self.lr.to_string()),
            ("weight_decay", self.weight_decay.to_string()),
            (
                "loss",
                format!(
                    "gamma_neg {} gamma_pos {} clip {} eps {} detach_focal_weight {} {:?}",
                    l.gamma_neg, l.gamma_pos, l.clip, l.eps, l.detach_focal_weight, l.reduction
                ),
            ),
            (
                "adaptive",
                self.adaptive.map_or("off".into(), |a| {
                    format!(
                        "target_gap {} step {} gamma_max {}",
                        a.target_gap, a.step, a.gamma_max
                    )
                }),
            ),
            ("autocast", format!("{:?}", self.autocast)),
            ("ema_decay", format!("{:?}", self.ema_decay)),
            ("ema_warmup", self.ema_warmup.to_string()),
            (
                "augment.cutout",
                format!("{} {}", a.cutout, a.cutout_factor),
            ),
            (
                "augment.rand_augment",
                format!(
                    "{} ops {} magnitude {:?} p {}",
                    a.rand_augment, a.ops_per_image, a.magnitude, a.op_probability
                ),
            ),
            ("augment.hflip", a.hflip.to_string()),
            ("seed", self.seed.to_string()),
            ("pct_start", self.pct_start.to_string()),
            ("div_factor", self.div_factor.to_string()),
            ("final_div_factor", self.final_div_factor.to_string()),
            ("beta1_range", format!("{:?}", self.beta1_range)),
        ];
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

/// Where and how a run happens (not part of what makes runs equal).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The run's folder: `checkpoint.safetensors`, `best.safetensors`, `metrics.csv`.
    pub out: PathBuf,
    pub device: Device,
    /// Batches prepared ahead of the model.
    pub prefetch: usize,
    /// Stop after this many optimiser steps in total, with a checkpoint (for tests and quick
    /// trials).
    pub max_steps: Option<usize>,
}

impl TrainOptions {
    /// A run in `out` on the CPU.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        TrainOptions {
            out: out.into(),
            device: Device::Cpu,
            prefetch: 2,
            max_steps: None,
        }
    }
}
