//! Fine-tuning a TResNet with ASL, the paper's recipe as a library: Adam with coupled L2 weight
//! decay on weights only, OneCycle stepped per iteration (learning rate and beta1), an EMA of the
//! weights and BatchNorm statistics, Cutout + RandAugment, validation of the raw and the EMA model
//! every epoch keeping the best of either; atomic, exactly resumable checkpoints.
//!
//! ```no_run
//! use asl_cli::data::{read_dataset, ReadOptions};
//! use asl_cli::train::{fit, TrainConfig, TrainOptions};
//! let train = read_dataset("train.csv".as_ref(), &ReadOptions::default())?;
//! let val = read_dataset("val.csv".as_ref(), &ReadOptions::default())?;
//! let cfg = TrainConfig { epochs: 10, ..TrainConfig::recipe("tresnet_m") };
//! let summary = fit(&cfg, &train, &val, &TrainOptions::new("runs/mine"))?;
//! println!("best mAP {:.2} ({})", summary.best_map, summary.best_path.display());
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # Determinism and resuming
//! The order of an epoch and every image's augmentation are drawn from generators seeded by
//! `(seed, epoch)` and `(seed, epoch, sample)`, so they do not depend on thread timing, and a
//! checkpoint needs only the epoch and batch position to continue exactly: a run of two epochs
//! and a run of one epoch resumed for a second give the same weights on the CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use asl_core::adaptive::{AdaptiveAsymmetry, GapAccumulator};
use asl_core::{AslConfig, AsymmetricLoss, MetricAccumulator};
use asl_tresnet::registry::Activation;
use asl_tresnet::weights::{save_safetensors, save_tensors_atomic, ModelMetadata, ResizeMode};
use asl_tresnet::{TResNet, TResNetConfig};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::augment::{augment, AugmentConfig};
use crate::data::{Dataset, Loader};
use crate::images;

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
    fn resume_fields(&self) -> Vec<(String, String)> {
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

/// The names and values of the fields that differ between a checkpoint's settings and now.
fn changed_fields(saved: &[(String, String)], now: &[(String, String)]) -> Vec<String> {
    let mut changed = Vec::new();
    for (k, v) in now {
        match saved.iter().find(|(sk, _)| sk == k) {
            Some((_, sv)) if sv == v => {}
            Some((_, sv)) => changed.push(format!("{k}: saved {sv}, now {v}")),
            None => changed.push(format!("{k}: not in the checkpoint, now {v}")),
        }
    }
    changed
}

/// Where and how a run happens (not part of what makes runs equal).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub out: PathBuf,
    /// Continue from `out/checkpoint.safetensors`.
    pub resume: bool,
    /// Backbone weights (timm naming); `head.*` entries are dropped and a new classifier made.
    pub pretrained: Option<HashMap<String, Tensor>>,
    pub device: Device,
    /// Batches prepared ahead of the model.
    pub prefetch: usize,
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to stop after the current step with a checkpoint.
    pub stop: Arc<AtomicBool>,
    pub max_pixels: u64,
    /// Stop after this many optimiser steps in total (for tests and benchmarks).
    pub max_steps: Option<usize>,
}

impl TrainOptions {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        TrainOptions {
            out: out.into(),
            resume: false,
            pretrained: None,
            device: Device::Cpu,
            prefetch: 2,
            progress: true,
            stop: Arc::new(AtomicBool::new(false)),
            max_pixels: images::DEFAULT_MAX_PIXELS,
            max_steps: None,
        }
    }
}

/// One epoch's log line (`metrics.csv`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub steps: usize,
    pub train_loss: f64,
    pub val_map: f64,
    pub val_map_ema: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub skipped_batches: usize,
    /// `gamma_neg` at the end of the epoch (moves only with adaptive asymmetry).
    pub gamma_neg: f64,
    /// The epoch's probability gap `p_t+ - p_t-` on the training batches
    /// ([`asl_core::adaptive`]), when they had positives and negatives.
    pub prob_gap: Option<f64>,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub epochs: Vec<EpochLog>,
    pub best_map: f64,
    /// `raw` or `ema`.
    pub best_model: String,
    pub best_path: PathBuf,
    /// Stopped by [`TrainOptions::stop`] (a checkpoint was written).
    pub interrupted: bool,
}

/// Saved with every checkpoint.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct State {
    /// [`TrainConfig::resume_fields`] of the run.
    settings: Vec<(String, String)>,
    classes: Vec<String>,
    /// Epochs fully done.
    epoch: usize,
    /// Optimiser steps done within the current epoch.
    step_in_epoch: usize,
    /// Optimiser steps done in total (the schedule's position).
    step: usize,
    /// Adam updates applied (a step whose micro-batches were all skipped applies none).
    adam_steps: usize,
    loss_sum: f64,
    loss_count: usize,
    skipped_batches: usize,
    epoch_seconds: f64,
    /// The current `gamma_neg` (adaptive asymmetry changes it step by step).
    gamma_neg: f64,
    /// The epoch's gap sums so far: Σ y·p, Σ y, Σ (1-y)(1-p), Σ (1-y).
    gap_sums: [f64; 4],
    /// `None` before the first validation.
    best_map: Option<f64>,
    best_model: String,
    history: Vec<EpochLog>,
}

const STATE_KEY: &str = "asl_train.state";

/// The OneCycle schedule (PyTorch `OneCycleLR`, cosine annealing, `three_phase=False`):
/// learning rate and beta1 at optimiser step `step` of `total`.
pub fn one_cycle(cfg: &TrainConfig, step: usize, total: usize) -> (f64, f64) {
    let initial = cfg.lr / cfg.div_factor;
    let min = initial / cfg.final_div_factor;
    let (b_lo, b_hi) = cfg.beta1_range;
    let warm_end = (cfg.pct_start * total as f64) - 1.0;
    let end = total as f64 - 1.0;
    let cos = |start: f64, stop: f64, pct: f64| {
        stop + (start - stop) / 2.0 * ((std::f64::consts::PI * pct.clamp(0.0, 1.0)).cos() + 1.0)
    };
    let t = step as f64;
    if t <= warm_end {
        let pct = if warm_end > 0.0 { t / warm_end } else { 1.0 };
        (cos(initial, cfg.lr, pct), cos(b_hi, b_lo, pct))
    } else {
        let span = end - warm_end;
        let pct = if span > 0.0 {
            (t - warm_end) / span
        } else {
            1.0
        };
        (cos(cfg.lr, min, pct), cos(b_lo, b_hi, pct))
    }
}

/// Adam with coupled L2 weight decay (PyTorch `Adam(weight_decay=...)`) on the parameters marked
/// for decay; beta1 given per step (OneCycle cycles it). Its moments are plain tensors, saved
/// with the checkpoint.
pub struct Adam {
    params: Vec<(String, Var, bool)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl Adam {
    /// `params`: (name, variable, apply weight decay).
    pub fn new(params: Vec<(String, Var, bool)>, weight_decay: f64) -> Result<Self> {
        let zeros = |p: &[(String, Var, bool)]| -> Result<Vec<Tensor>> {
            p.iter()
                .map(|(_, v, _)| Ok(v.as_tensor().zeros_like()?))
                .collect()
        };
        Ok(Adam {
            m: zeros(&params)?,
            v: zeros(&params)?,
            params,
            step: 0,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// The gradients of the parameters, in order, from a backward pass.
    pub fn grads_for(&self, grads: &candle_core::backprop::GradStore) -> Vec<Option<Tensor>> {
        self.params
            .iter()
            .map(|(_, v, _)| grads.get(v.as_tensor()).cloned())
            .collect()
    }

    /// One update from the gradients `grads[i]` of `params[i]` (`None`: not updated).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64, beta1: f64) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for (i, (_, var, decay)) in self.params.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let w = var.as_tensor();
            let wd = if *decay { self.weight_decay } else { 0.0 };
            if inplace::eligible(&[w, g, &self.m[i], &self.v[i]]) {
                // CPU f32: three in-place passes, nothing allocated
                self.m[i].inplace_op3(g, w, &inplace::Moment::new(beta1, wd, false))?;
                self.v[i].inplace_op3(g, w, &inplace::Moment::new(self.beta2, wd, true))?;
                w.inplace_op3(
                    &self.m[i],
                    &self.v[i],
                    &inplace::AdamUpdate {
                        step_size: (lr / bc1) as f32,
                        sqrt_bc2: bc2.sqrt() as f32,
                        eps: self.eps as f32,
                    },
                )?;
                continue;
            }
            let g = if *decay && self.weight_decay > 0.0 {
                (g + (w * self.weight_decay)?)?
            } else {
                g.clone()
            };
            self.m[i] = ((&self.m[i] * beta1)? + (&g * (1.0 - beta1))?)?;
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((self.v[i].sqrt()? / bc2.sqrt())? + self.eps)?;
            let update = ((&self.m[i] / denom)? * (lr / bc1))?;
            var.set(&(w - update)?)?;
        }
        Ok(())
    }
}

/// Every variable of a VarMap, sorted by name.
fn named_vars(vars: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Overwrites a fresh model's variables with the reference's initialisation (timm
/// `TResNet._init_weights`): convolutions Kaiming-normal (fan out, gain sqrt 2), BatchNorm
/// weight 1 and bias 0 except the last BatchNorm of every residual branch (weight 0), the
/// classifier normal(0, 0.01) with zero bias; SE biases zero. Every value comes from `rng`, so
/// the initial model is a function of the seed.
fn reference_init(named: &[(String, Var)], rng: &mut ChaCha8Rng) -> Result<()> {
    for (name, var) in named {
        let t = var.as_tensor();
        let dims = t.dims().to_vec();
        let n = t.elem_count();
        let normal = |rng: &mut ChaCha8Rng, std: f64| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    // Box-Muller
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                    (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
                })
                .collect()
        };
        let values: Option<Vec<f32>> = if name.starts_with("head.") {
            Some(if dims.len() == 2 {
                normal(rng, 0.01)
            } else {
                vec![0.0; n]
            })
        } else if dims.len() == 4 {
            // every convolution, the SE ones included
            let fan_out = dims[0] * dims[2] * dims[3];
            Some(normal(rng, (2.0 / fan_out as f64).sqrt()))
        } else if name.ends_with("bn.weight") {
            let last = name.ends_with("conv3.bn.weight")
                || (name.ends_with("conv2.bn.weight") && is_basic_conv2(name, named));
            Some(vec![if last { 0.0 } else { 1.0 }; n])
        } else if name.ends_with("bn.bias") {
            Some(vec![0.0; n])
        } else if name.ends_with(".bias") {
            // SE biases: zero (PyTorch draws them uniformly; zero keeps the init seeded)
            Some(vec![0.0; n])
        } else {
            None // running statistics keep their initial 0 (mean) and 1 (variance)
        };
        if let Some(v) = values {
            var.set(&Tensor::from_vec(v, dims, t.device())?.to_dtype(t.dtype())?)?;
        }
    }
    Ok(())
}

/// Whether `name` (`...conv2.bn.weight`) belongs to a BasicBlock (no conv3 in the same block).
fn is_basic_conv2(name: &str, named: &[(String, Var)]) -> bool {
    let block = name.trim_end_matches("conv2.bn.weight");
    !named
        .iter()
        .any(|(n, _)| n.starts_with(block) && n.contains(".conv3."))
}

/// A sub-seed for (seed, a, b), mixing with SplitMix64.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sample order of `epoch`.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch as u64, 0x5EED));
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// Mean average precision (paper definition) of `tensors` as an eval model on `val`.
fn evaluate(
    cfg: &TResNetConfig,
    tensors: HashMap<String, Tensor>,
    val: &Dataset,
    size: usize,
    opts: &TrainOptions,
    batch_size: usize,
) -> Result<f64> {
    let model = TResNet::new(
        cfg,
        VarBuilder::from_tensors(tensors, DType::F32, &opts.device),
    )?
    .into_inference()?;
    let k = cfg.num_classes;
    let mut acc = MetricAccumulator::new(k);
    let loader = crate::data::loader(
        val.image_paths(),
        size as u32,
        ResizeMode::Squish,
        batch_size,
        opts.prefetch,
        opts.max_pixels,
    );
    for batch in loader {
        if let Some((i, e)) = batch.failed.first() {
            bail!(
                "validation image {} ({}): {e}",
                val.samples[*i].origin,
                val.samples[*i].image.display()
            );
        }
        let n = batch.indices.len();
        if n == 0 {
            continue;
        }
        let x = Tensor::from_vec(batch.inputs, (n, 3, size, size), &opts.device)?;
        let p = candle_nn::ops::sigmoid(&model.forward_t(&x, false)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if p.iter().any(|v| v.is_nan()) {
            bail!("the model's outputs on the validation images are not numbers: the weights have diverged");
        }
        acc.push_slices(&p, &val.labels_for(&batch.indices))?;
    }
    Ok(acc.compute(0.5).map)
}

fn snapshot(named: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    named
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn write_metrics_csv(path: &Path, history: &[EpochLog]) -> Result<()> {
    let mut text = String::from(
        "epoch,steps,train_loss,val_map,val_map_ema,lr,seconds,images_per_s,skipped_batches,\
         gamma_neg,prob_gap\n",
    );
    for e in history {
        text.push_str(&format!(
            "{},{},{},{},{},{},{:.3},{:.2},{},{},{}\n",
            e.epoch,
            e.steps,
            e.train_loss,
            e.val_map,
            e.val_map_ema.map(|v| v.to_string()).unwrap_or_default(),
            e.lr,
            e.seconds,
            e.images_per_s,
            e.skipped_batches,
            e.gamma_neg,
            e.prob_gap.map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    crate::files::write_atomic(path, |w| w.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn write_curves(out: &Path, history: &[EpochLog]) -> Result<()> {
    use crate::plots::{line_chart, save_png, Series};
    let pts = |f: &dyn Fn(&EpochLog) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let loss = line_chart(
        "Training loss (mean per batch)",
        "epoch",
        "loss",
        &[Series {
            name: "train".into(),
            points: pts(&|e| Some(e.train_loss)),
        }],
        None,
        None,
    );
    save_png(&loss, &out.join("loss.png"))?;
    let mut series = vec![Series {
        name: "raw".into(),
        points: pts(&|e| Some(e.val_map)),
    }];
    if history.iter().any(|e| e.val_map_ema.is_some()) {
        series.push(Series {
            name: "EMA".into(),
            points: pts(&|e| e.val_map_ema),
        });
    }
    let map = line_chart("Validation mAP", "epoch", "mAP (%)", &series, None, None);
    save_png(&map, &out.join("map.png"))?;
    let lr = line_chart(
        "Learning rate (end of epoch)",
        "epoch",
        "lr",
        &[Series {
            name: "lr".into(),
            points: pts(&|e| Some(e.lr)),
        }],
        None,
        None,
    );
    save_png(&lr, &out.join("lr.png"))?;
    Ok(())
}

/// Trains on `train`, validating on `val` (both over the same class list) every epoch; writes
/// `checkpoint.safetensors`, `best.safetensors` (the project's model format: `asl-cli infer` and
/// `validate` read it), `metrics.csv` and the curves (`loss.png`, `map.png`, `lr.png`) into
/// `opts.out`.
pub fn fit(
    cfg: &TrainConfig,
    train: &Dataset,
    val: &Dataset,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    if train.classes != val.classes {
        bail!("the training and validation sets have different class lists");
    }
    if train.samples.is_empty() || val.samples.is_empty() {
        bail!("the training and validation sets must not be empty");
    }
    if cfg.batch_size == 0 || cfg.accumulate == 0 || cfg.epochs == 0 {
        bail!("epochs, batch size and accumulation must be at least 1");
    }
    if !cfg.image_size.is_multiple_of(4) || cfg.image_size < asl_tresnet::model::MIN_INPUT_SIDE {
        bail!(
            "the image size must be a multiple of 4 and at least {}",
            asl_tresnet::model::MIN_INPUT_SIDE
        );
    }
    cfg.loss.validate()?;
    if let Some(a) = &cfg.adaptive {
        a.validate()?;
    }
    let classes = train.classes.clone();
    let k = classes.len();
    let model_cfg = TResNetConfig::from_arch(&cfg.arch, k)
        .with_context(|| format!("unknown architecture {:?}", cfg.arch))?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let ckpt_path = opts.out.join("checkpoint.safetensors");
    let best_path = opts.out.join("best.safetensors");

    // the model, its optimiser and its EMA
    let vars = VarMap::new();
    let model = TResNet::new(
        &model_cfg,
        VarBuilder::from_varmap(&vars, DType::F32, &opts.device),
    )?
    .with_autocast(cfg.autocast)?;
    let named = named_vars(&vars)?;
    let mut init_rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, 0x1417, 0));
    reference_init(&named, &mut init_rng)?;
    if let Some(pre) = &opts.pretrained {
        let mut loaded = 0;
        for (name, var) in &named {
            if name.starts_with("head.") {
                continue;
            }
            let t = pre
                .get(name)
                .with_context(|| format!("the pretrained weights have no {name}"))?;
            if t.dims() != var.as_tensor().dims() {
                bail!(
                    "pretrained {name} has shape {:?}, the model wants {:?}",
                    t.dims(),
                    var.as_tensor().dims()
                );
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(&opts.device)?)?;
            loaded += 1;
        }
        if loaded == 0 {
            bail!("no backbone weight was loaded from the pretrained weights");
        }
    }
    let params: Vec<(String, Var, bool)> = named
        .iter()
        .filter(|(n, _)| !is_running_stat(n))
        .map(|(n, v)| (n.clone(), v.clone(), v.as_tensor().rank() > 1))
        .collect();
    let mut adam = Adam::new(params, cfg.weight_decay)?;
    let mut ema: Option<HashMap<String, Tensor>> = match cfg.ema_decay {
        Some(_) => Some(snapshot(&named)?),
        None => None,
    };
    let steps_per_epoch = train
        .samples
        .len()
        .div_ceil(cfg.batch_size * cfg.accumulate);
    let total_steps = steps_per_epoch * cfg.epochs;
    let mut state = State {
        settings: cfg.resume_fields(),
        classes: classes.clone(),
        epoch: 0,
        step_in_epoch: 0,
        step: 0,
        adam_steps: 0,
        loss_sum: 0.0,
        loss_count: 0,
        skipped_batches: 0,
        epoch_seconds: 0.0,
        gamma_neg: cfg.loss.gamma_neg,
        gap_sums: [0.0; 4],
        best_map: None,
        best_model: String::new(),
        history: Vec::new(),
    };

    if opts.resume {
        let (tensors, header) = read_checkpoint(&ckpt_path)?;
        let saved: State =
            serde_json::from_str(header.get(STATE_KEY).with_context(|| {
                format!("{} is not a training checkpoint", ckpt_path.display())
            })?)
            .with_context(|| format!("reading the state in {}", ckpt_path.display()))?;
        let changed = changed_fields(&saved.settings, &state.settings);
        if !changed.is_empty() {
            bail!(
                "{} was written with other training settings; resume with the same options \
                 ({})",
                ckpt_path.display(),
                changed.join("; ")
            );
        }
        if saved.epoch > cfg.epochs {
            bail!(
                "{} has already trained {} epochs; resume with --epochs {} or more",
                ckpt_path.display(),
                saved.epoch,
                saved.epoch
            );
        }
        if saved.classes != classes {
            bail!("{} was trained on other classes", ckpt_path.display());
        }
        let get = |key: String| -> Result<Tensor> {
            tensors
                .get(&key)
                .cloned()
                .with_context(|| format!("{} lacks {key}", ckpt_path.display()))
        };
        for (name, var) in &named {
            var.set(&get(format!("model/{name}"))?.to_device(&opts.device)?)?;
        }
        for (i, (name, _, _)) in adam.params.iter().enumerate() {
            adam.m[i] = get(format!("adam_m/{name}"))?.to_device(&opts.device)?;
            adam.v[i] = get(format!("adam_v/{name}"))?.to_device(&opts.device)?;
        }
        adam.step = saved.adam_steps;
        if let Some(e) = ema.as_mut() {
            for (name, _) in &named {
                e.insert(
                    name.clone(),
                    get(format!("ema/{name}"))?.to_device(&opts.device)?,
                );
            }
        }
        state = saved;
    }

    let save_checkpoint =
        |state: &State, adam: &Adam, ema: &Option<HashMap<String, Tensor>>| -> Result<()> {
            let mut t = HashMap::new();
            for (name, var) in &named {
                t.insert(format!("model/{name}"), var.as_tensor().clone());
            }
            for (i, (name, _, _)) in adam.params.iter().enumerate() {
                t.insert(format!("adam_m/{name}"), adam.m[i].clone());
                t.insert(format!("adam_v/{name}"), adam.v[i].clone());
            }
            if let Some(e) = ema {
                for (name, v) in e {
                    t.insert(format!("ema/{name}"), v.clone());
                }
            }
            let header = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(state)?)]);
            save_tensors_atomic(&ckpt_path, &t, header)
                .with_context(|| format!("writing the checkpoint {}", ckpt_path.display()))
        };
    let metadata = |source: String| ModelMetadata {
        arch: model_cfg.name(),
        num_classes: k,
        class_names: classes.clone(),
        input_size: cfg.image_size,
        resize: ResizeMode::Squish,
        threshold: cfg.threshold,
        activation: Activation::Sigmoid,
        class_thresholds: None,
        source,
    };

    let stop_now = |state: &State| {
        opts.stop.load(Ordering::SeqCst) || opts.max_steps.is_some_and(|m| state.step >= m)
    };
    let size = cfg.image_size;
    let paths: Arc<[PathBuf]> = train.image_paths().into();
    let mut interrupted = false;
    'epochs: while state.epoch < cfg.epochs {
        let epoch = state.epoch;
        let order = epoch_order(train.samples.len(), cfg.seed, epoch);
        // resume mid-epoch: skip the micro-batches already used (every optimiser step is a
        // group of `accumulate` loader batches, skipped ones included)
        let batches = train.samples.len().div_ceil(cfg.batch_size);
        let mut batch_index = state.step_in_epoch * cfg.accumulate;
        let done = state.step_in_epoch * cfg.batch_size * cfg.accumulate;
        let order: Vec<usize> = order.into_iter().skip(done).collect();
        let (aug, seed, max_pixels) = (cfg.augment.clone(), cfg.seed, opts.max_pixels);
        let loader = Loader::with_transform(
            Arc::clone(&paths),
            order.clone(),
            cfg.batch_size,
            opts.prefetch,
            move |i, path| {
                // as the reference: resize first, then augment at the model's size
                let img = images::load_rgb(path, max_pixels)?;
                let img = images::resize(&img, size as u32, ResizeMode::Squish);
                let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch as u64 + 1, i as u64));
                Ok(images::to_chw(&augment(&img, &aug, &mut rng)))
            },
        );
        let bar = if opts.progress {
            let b = indicatif::ProgressBar::new(order.len() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} {bar:25} {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let started = Instant::now();
        let mut images_seen = 0usize;
        let mut pending: Vec<Option<Tensor>> = vec![None; adam.params.len()];
        let mut micro = 0usize;
        // the probability gap of the current optimiser step's micro-batches
        let mut step_gap = GapAccumulator::default();
        for batch in loader {
            batch_index += 1;
            if let Some((i, e)) = batch.failed.first() {
                if !cfg.skip_bad {
                    bail!(
                        "training image {} ({}): {e}; pass --skip-bad to skip unreadable images",
                        train.samples[*i].origin,
                        train.samples[*i].image.display()
                    );
                }
            }
            let n = batch.indices.len();
            bar.inc((n + batch.failed.len()) as u64);
            'micro: {
                if n == 0 {
                    break 'micro;
                }
                let x = Tensor::from_vec(batch.inputs, (n, 3, size, size), &opts.device)?;
                // ignored labels (-1) train as negatives
                let y: Vec<f32> = train
                    .labels_for(&batch.indices)
                    .into_iter()
                    .map(|l| l.max(0.0))
                    .collect();
                let y = Tensor::from_vec(y, (n, k), &opts.device)?;
                let loss_fn = AsymmetricLoss::new(AslConfig {
                    gamma_neg: state.gamma_neg,
                    ..cfg.loss
                });
                let (logits, loss, grads) =
                    model.train_step(&x, &|logits| loss_fn.forward(logits, &y))?;
                let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !value.is_finite() {
                    if cfg.skip_nonfinite {
                        state.skipped_batches += 1;
                        break 'micro;
                    }
                    let last = if ckpt_path.exists() {
                        format!("the last good checkpoint is {}", ckpt_path.display())
                    } else {
                        "no checkpoint was written yet".to_string()
                    };
                    bail!(
                        "non-finite loss ({value}) at epoch {}, batch {batch_index} (images {}): \
                         {last}; lower --lr, or pass --skip-nonfinite to skip such batches",
                        epoch + 1,
                        batch
                            .indices
                            .iter()
                            .take(4)
                            .map(|&i| train.samples[i].origin.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                step_gap.push(&logits, &y)?;
                for (i, (_, var, _)) in adam.params.iter().enumerate() {
                    if let Some(g) = grads.get(var.as_tensor()) {
                        pending[i] = Some(match pending[i].take() {
                            Some(p) => (p + g)?,
                            None => g.clone(),
                        });
                    }
                }
                state.loss_sum += value;
                state.loss_count += 1;
                images_seen += n;
            }
            micro += 1;
            // a step after every `accumulate` batches, and after the epoch's last (the tail)
            if micro < cfg.accumulate && batch_index < batches {
                continue;
            }
            micro = 0;
            if pending.iter().all(Option::is_none) {
                // every micro-batch of this step was skipped: the schedule moves on, nothing else
                state.step += 1;
                state.step_in_epoch += 1;
                if stop_now(&state) {
                    state.epoch_seconds += started.elapsed().as_secs_f64();
                    save_checkpoint(&state, &adam, &ema)?;
                    bar.abandon();
                    interrupted = true;
                    break 'epochs;
                }
                continue;
            }
            let (lr, beta1) = one_cycle(
                cfg,
                state.step.min(total_steps.saturating_sub(1)),
                total_steps,
            );
            adam.step(&pending, lr, beta1)?;
            state.adam_steps += 1;
            pending = vec![None; adam.params.len()];
            if let (Some(ctl), Some(gap)) = (&cfg.adaptive, step_gap.gap()) {
                state.gamma_neg = ctl.update(state.gamma_neg, gap);
            }
            let mut epoch_gap = gaps_of(state.gap_sums);
            epoch_gap.merge(&step_gap);
            state.gap_sums = gap_sums(&epoch_gap);
            step_gap = GapAccumulator::default();
            if let (Some(e), Some(decay)) = (ema.as_mut(), cfg.ema_decay) {
                let t = (state.step + 1) as f64;
                let d = if cfg.ema_warmup {
                    decay.min((1.0 + t) / (10.0 + t))
                } else {
                    decay
                };
                for (name, var) in &named {
                    if let Some(old) = e.get_mut(name) {
                        let w = var.as_tensor();
                        if inplace::eligible(&[old, w]) {
                            old.inplace_op2(w, &inplace::Ema { decay: d as f32 })?;
                        } else {
                            *old = ((&*old * d)? + (w * (1.0 - d))?)?;
                        }
                    }
                }
            }
            state.step += 1;
            state.step_in_epoch += 1;
            bar.set_message(format!(
                "loss {:.3}",
                state.loss_sum / state.loss_count.max(1) as f64
            ));
            if stop_now(&state) {
                state.epoch_seconds += started.elapsed().as_secs_f64();
                save_checkpoint(&state, &adam, &ema)?;
                bar.abandon();
                interrupted = true;
                break 'epochs;
            }
        }
        bar.finish_and_clear();
        // validate the raw and the EMA model, keep the best of either
        let seconds = state.epoch_seconds + started.elapsed().as_secs_f64();
        let skipped = state.skipped_batches;
        let context = || {
            format!(
                "validating after epoch {} ({skipped} batches skipped for a non-finite loss); \
                 lower --lr",
                epoch + 1
            )
        };
        let val_map = evaluate(
            &model_cfg,
            snapshot(&named)?,
            val,
            size,
            opts,
            cfg.batch_size,
        )
        .with_context(context)?;
        let val_map_ema = match &ema {
            Some(e) => Some(
                evaluate(&model_cfg, e.clone(), val, size, opts, cfg.batch_size)
                    .with_context(context)?,
            ),
            None => None,
        };
        let (lr, _) = one_cycle(
            cfg,
            state.step.min(total_steps.saturating_sub(1)),
            total_steps,
        );
        let log = EpochLog {
            epoch: epoch + 1,
            steps: state.step,
            train_loss: state.loss_sum / state.loss_count.max(1) as f64,
            val_map,
            val_map_ema,
            lr,
            seconds,
            images_per_s: images_seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
            skipped_batches: state.skipped_batches,
            gamma_neg: state.gamma_neg,
            prob_gap: gaps_of(state.gap_sums).gap(),
        };
        let (map, which) = match val_map_ema {
            Some(e) if e > val_map => (e, "ema"),
            _ => (val_map, "raw"),
        };
        if state.best_map.is_none_or(|b| map > b) {
            let tensors = if which == "ema" {
                ema.clone().unwrap_or_default()
            } else {
                snapshot(&named)?
            };
            let source = format!(
                "asl-cli train: epoch {} of {}, {which} model, validation mAP {map:.2}",
                epoch + 1,
                cfg.epochs
            );
            save_safetensors(&best_path, &tensors, &metadata(source))
                .with_context(|| format!("writing {}", best_path.display()))?;
            state.best_map = Some(map);
            state.best_model = which.to_string();
        }
        state.history.push(log);
        state.epoch += 1;
        state.step_in_epoch = 0;
        state.loss_sum = 0.0;
        state.loss_count = 0;
        state.skipped_batches = 0;
        state.epoch_seconds = 0.0;
        state.gap_sums = [0.0; 4];
        save_checkpoint(&state, &adam, &ema)?;
        write_metrics_csv(&opts.out.join("metrics.csv"), &state.history)?;
        write_curves(&opts.out, &state.history)?;
        if opts.progress {
            let e = state
                .history
                .last()
                .map(|l| (l.train_loss, l.val_map, l.val_map_ema));
            if let Some((loss, m, me)) = e {
                eprintln!(
                    "epoch {}/{}: loss {loss:.4}, mAP {m:.2}{}",
                    epoch + 1,
                    cfg.epochs,
                    me.map(|v| format!(", EMA {v:.2}")).unwrap_or_default()
                );
            }
        }
        if opts.stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
    }
    Ok(TrainSummary {
        epochs: state.history.clone(),
        best_map: state.best_map.unwrap_or(f64::NAN),
        best_model: state.best_model.clone(),
        best_path,
        interrupted,
    })
}

/// A gap accumulator as the checkpoint stores it, and back.
fn gap_sums(g: &GapAccumulator) -> [f64; 4] {
    [g.positive.0, g.positive.1, g.negative.0, g.negative.1]
}

fn gaps_of(s: [f64; 4]) -> GapAccumulator {
    GapAccumulator {
        positive: (s[0], s[1]),
        negative: (s[2], s[3]),
    }
}

fn read_checkpoint(path: &Path) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    if !path.exists() {
        bail!(
            "--resume: {} does not exist (is this the --out folder of an earlier run?)",
            path.display()
        );
    }
    Ok(asl_tresnet::weights::load_tensors_with_header(
        path,
        &Device::Cpu,
    )?)
}

/// In-place CPU f32 updates of the optimiser and the EMA: one pass each, no allocation (as
/// tensor ops, each step would allocate and fault in several copies of every parameter).
mod inplace {
    use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
    use rayon::prelude::*;

    const CHUNK: usize = 1 << 14;

    /// Whether every tensor is a contiguous f32 CPU tensor of the same shape.
    pub(super) fn eligible(ts: &[&Tensor]) -> bool {
        ts.iter().all(|t| {
            t.device().is_cpu()
                && t.dtype() == candle_core::DType::F32
                && t.is_contiguous()
                && t.shape() == ts[0].shape()
        })
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
            _ => candle_core::bail!("in-place update: a contiguous f32 tensor is needed"),
        }
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
            _ => candle_core::bail!("in-place update: a contiguous f32 tensor is needed"),
        }
    }

    /// `f(dst[i], a[i], b[i])` for every element, rayon-parallel over chunks.
    fn update3(
        dst: (&mut CpuStorage, &Layout),
        a: (&CpuStorage, &Layout),
        b: (&CpuStorage, &Layout),
        f: impl Fn(&mut f32, f32, f32) + Sync,
    ) -> Result<()> {
        let (a, b) = (slice(a.0, a.1)?, slice(b.0, b.1)?);
        let dst = slice_mut(dst.0, dst.1)?;
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(d, (a, b))| {
                for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                    f(d, a, b);
                }
            });
        Ok(())
    }

    /// `m = beta m + (1 - beta) h(g + wd w)`, `h` the identity or the square.
    pub(super) struct Moment {
        beta: f32,
        wd: f32,
        square: bool,
    }

    impl Moment {
        pub(super) fn new(beta: f64, wd: f64, square: bool) -> Self {
            Moment {
                beta: beta as f32,
                wd: wd as f32,
                square,
            }
        }
    }

    impl InplaceOp3 for Moment {
        fn name(&self) -> &'static str {
            "adam-moment"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<()> {
            let (beta, wd, square) = (self.beta, self.wd, self.square);
            update3((s1, l1), (s2, l2), (s3, l3), |m, g, w| {
                let e = g + wd * w;
                let h = if square { e * e } else { e };
                *m = beta * *m + (1.0 - beta) * h;
            })
        }
    }

    /// `w -= step_size * m / (sqrt(v) / sqrt_bc2 + eps)`.
    pub(super) struct AdamUpdate {
        pub(super) step_size: f32,
        pub(super) sqrt_bc2: f32,
        pub(super) eps: f32,
    }

    impl InplaceOp3 for AdamUpdate {
        fn name(&self) -> &'static str {
            "adam-update"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<()> {
            let (step, bc, eps) = (self.step_size, self.sqrt_bc2, self.eps);
            update3((s1, l1), (s2, l2), (s3, l3), |w, m, v| {
                *w -= step * m / (v.sqrt() / bc + eps)
            })
        }
    }

    /// `e = decay e + (1 - decay) w`.
    pub(super) struct Ema {
        pub(super) decay: f32,
    }

    impl InplaceOp2 for Ema {
        fn name(&self) -> &'static str {
            "ema"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<()> {
            let w = slice(s2, l2)?;
            let e = slice_mut(s1, l1)?;
            let d = self.decay;
            e.par_chunks_mut(CHUNK)
                .zip(w.par_chunks(CHUNK))
                .for_each(|(e, w)| {
                    for (e, &w) in e.iter_mut().zip(w) {
                        *e = d * *e + (1.0 - d) * w;
                    }
                });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cycle_matches_pytorch_shape() {
        let cfg = TrainConfig {
            lr: 1e-3,
            ..TrainConfig::recipe("tresnet_m")
        };
        let total = 100;
        let (lr0, b0) = one_cycle(&cfg, 0, total);
        assert!((lr0 - 1e-3 / 25.0).abs() < 1e-12 && (b0 - 0.95).abs() < 1e-12);
        // peak at step pct_start * total - 1 = 19
        let (peak, bp) = one_cycle(&cfg, 19, total);
        assert!((peak - 1e-3).abs() < 1e-12 && (bp - 0.85).abs() < 1e-12);
        let (last, bl) = one_cycle(&cfg, 99, total);
        assert!((last - 1e-3 / 25.0 / 1e4).abs() < 1e-15 && (bl - 0.95).abs() < 1e-12);
        // monotone up, then down
        let lrs: Vec<f64> = (0..total).map(|s| one_cycle(&cfg, s, total).0).collect();
        assert!(lrs[..20].windows(2).all(|w| w[1] >= w[0]));
        assert!(lrs[19..].windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn adam_matches_the_closed_form_first_steps() {
        // one scalar parameter, constant gradient g: after step 1, w -= lr * g / (|g| + eps')
        let var = Var::new(&[2.0f32, -1.0], &Device::Cpu).expect("var");
        let mut adam = Adam::new(vec![("w".into(), var.clone(), false)], 0.0).expect("adam");
        let g = Tensor::new(&[0.5f32, -0.25], &Device::Cpu).expect("g");
        adam.step(&[Some(g)], 0.1, 0.9).expect("step");
        let w = var.as_tensor().to_vec1::<f32>().expect("w");
        assert!(
            (w[0] - 1.9).abs() < 1e-5 && (w[1] + 0.9).abs() < 1e-5,
            "{w:?}"
        );
        // coupled weight decay acts through the gradient (w = 2 and wd 0.5 double a zero gradient)
        let var = Var::new(&[2.0f32], &Device::Cpu).expect("var");
        let mut adam = Adam::new(vec![("w".into(), var.clone(), true)], 0.5).expect("adam");
        let g = Tensor::new(&[0.0f32], &Device::Cpu).expect("g");
        adam.step(&[Some(g)], 0.1, 0.9).expect("step");
        let w = var.as_tensor().to_vec1::<f32>().expect("w");
        assert!((w[0] - 1.9).abs() < 1e-5, "{w:?}");
    }

    #[test]
    fn epoch_orders_are_permutations_that_depend_on_seed_and_epoch() {
        let a = epoch_order(50, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 1, 0));
        assert_ne!(a, epoch_order(50, 1, 1));
        assert_ne!(a, epoch_order(50, 2, 0));
    }
}
