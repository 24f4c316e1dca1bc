//! TResNet (Ridnik et al., "TResNet: High Performance GPU-Dedicated Architecture", WACV 2021,
//! arXiv 2003.13630), as timm's `timm/models/tresnet.py` builds it; the ASL paper's backbones.
//!
//! - [`config`]: the variants (M, L, XL, v2-L, or any depth and width) as data;
//! - [`layers`]: the layers as candle modules, named as timm's state dicts name them, so a
//!   [`candle_nn::VarBuilder`] over a timm `model.safetensors` loads the model as is
//!   (`body.conv1.conv.weight`, `body.layer3.0.se.fc1.bias`, `head.fc.weight`, ...);
//! - [`ops`]: the blur, ceil-mode pooling and space-to-depth, exactly as timm computes them;
//! - [`TResNet`]: the model. Its training path is differentiable end to end (BatchNorm on batch
//!   statistics in training mode); [`TResNet::into_inference`] folds it for inference. On the
//!   CPU with f32 weights both run on the engines of `crate::cpu`.

pub mod config;
mod layers;
pub mod ops;

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{VarBuilder, VarMap};

use crate::cpu::infer;
pub use crate::cpu::KindTimes;
pub use config::{HeadKind, TResNetConfig, MIN_INPUT_SIDE};
use layers::{Block, ConvBn, Head, Pass, STEM_SLOPE};
pub use ops::{avg_pool_2x2_ceil, blur_pool, blur_pool_fused, space_to_depth};

/// A TResNet backbone with its classifier.
#[derive(Clone, Debug)]
pub struct TResNet {
    cfg: TResNetConfig,
    stem: ConvBn,
    /// Empty once folded onto the CPU engine, which then holds the only copy of the weights.
    stages: Vec<Vec<Block>>,
    head: Head,
    /// The CPU f32 engine of the inference path (f32 weights on the CPU only).
    engine: Option<Arc<infer::Engine>>,
    /// Autocast dtype of the convolutions and the classifier (see [`TResNet::with_autocast`]).
    autocast: Option<DType>,
}

impl TResNet {
    /// Builds the model, reading (or, with a `VarMap`, creating) every weight under timm's names.
    pub fn new(cfg: &TResNetConfig, vb: VarBuilder) -> Result<Self> {
        let body = vb.pp("body");
        let stem = ConvBn::new(
            48,
            cfg.planes(),
            3,
            Some(STEM_SLOPE),
            false,
            body.pp("conv1"),
        )?;
        Ok(TResNet {
            cfg: cfg.clone(),
            stem,
            stages: layers::stages(cfg, &body)?,
            head: layers::head(cfg, &vb)?,
            engine: None,
            autocast: None,
        })
    }

    /// Mixed precision, as PyTorch's autocast does it: every convolution and the classifier
    /// multiply in `dtype` (bf16 or f16; inputs and weights cast on the fly, results cast back),
    /// while BatchNorm, activations, the blur, SE, residual sums, pooling and the logits stay in
    /// the weights' dtype (f32), so a loss on the logits is computed in f32. The weights stay
    /// f32 (the optimiser's master copy); gradients flow back through the casts. `None` turns
    /// it off. Not for the folded inference path. bf16 needs CUDA (candle's CPU matrix product
    /// has no bf16); f16 also runs on the CPU, but has a narrow range: without loss scaling small
    /// gradients underflow, so train in bf16 (or f32).
    pub fn with_autocast(mut self, dtype: Option<DType>) -> Result<Self> {
        if let Some(dt) = dtype {
            if !matches!(dt, DType::BF16 | DType::F16) {
                candle_core::bail!("autocast runs in bf16 or f16, not {dt:?}");
            }
            if self.is_inference() {
                candle_core::bail!("autocast is for the training path, not the folded model");
            }
            if dt == DType::BF16 && self.stem.conv.weight().device().is_cpu() {
                candle_core::bail!(
                    "bf16 autocast needs a CUDA device (candle's CPU matrix product has no bf16)"
                );
            }
        }
        self.autocast = dtype;
        Ok(self)
    }

    /// The autocast dtype (`None`: off).
    pub fn autocast(&self) -> Option<DType> {
        self.autocast
    }

    pub fn config(&self) -> &TResNetConfig {
        &self.cfg
    }

    /// The inference path: every BatchNorm folded into its convolution (eval statistics), all
    /// weights plain tensors outside any autograd graph, the blur done by a fused one-pass op.
    /// With f32 weights on the CPU the backbone runs on the CPU engine (`cpu::infer`:
    /// channel-major activations, Winograd and tiled gemm with fused epilogues), which then
    /// holds the only copy of the folded backbone weights. `forward_t(x, true)` is refused on the result.
    pub fn into_inference(self) -> Result<Self> {
        let stem = self.stem.folded()?;
        let stages = self
            .stages
            .iter()
            .map(|s| s.iter().map(Block::folded).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let weight = stem.conv.weight();
        let engine = if weight.dtype() == DType::F32 && weight.device().is_cpu() {
            Some(Arc::new(layers::inference_engine(&stem, &stages)?))
        } else {
            None
        };
        // The engine holds its own copy of the folded weights: drop candle's.
        let stages = if engine.is_some() { Vec::new() } else { stages };
        Ok(TResNet {
            stem,
            stages,
            head: self.head.detached(),
            cfg: self.cfg,
            engine,
            autocast: None,
        })
    }

    /// Whether the folded model runs on the CPU inference engine (f32 weights on the CPU)
    /// rather than on candle's ops.
    pub fn uses_cpu_engine(&self) -> bool {
        self.engine.is_some()
    }

    /// Whether this is the folded inference path.
    pub fn is_inference(&self) -> bool {
        self.stem.bn.is_none()
    }

    /// Checks an input batch: `[N, 3, H, W]`, sides multiples of 4 and at least
    /// [`MIN_INPUT_SIDE`], a float dtype.
    pub fn check_input(x: &Tensor) -> Result<()> {
        let dims = x.dims();
        let ok = dims.len() == 4
            && dims[1] == 3
            && dims[2].is_multiple_of(4)
            && dims[3].is_multiple_of(4)
            && dims[2] >= MIN_INPUT_SIDE
            && dims[3] >= MIN_INPUT_SIDE
            && x.dtype().is_float();
        if ok {
            Ok(())
        } else {
            candle_core::bail!(
                "TResNet input must be a float [N, 3, H, W] batch with H and W multiples of 4 and \
                 at least {MIN_INPUT_SIDE}; got {:?} {:?}",
                x.dims(),
                x.dtype()
            )
        }
    }

    /// The last stage's feature map `[N, num_features, H/32, W/32]` in eval mode, before the
    /// global pool (timm's `forward_features`).
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        Self::check_input(x)?;
        if let Some(engine) = &self.engine {
            return engine.feature_map(&x.to_device(&candle_core::Device::Cpu)?);
        }
        self.body(
            x,
            Pass {
                train: false,
                autocast: self.autocast,
            },
        )
    }

    /// Logits from a feature map `[N, C, H, W]` (global mean pool, then the classifier), or the
    /// pooled features `[N, C]` with `pre_logits` (timm's `forward_head`).
    pub fn forward_head(&self, features: &Tensor, pre_logits: bool) -> Result<Tensor> {
        let pooled = features.flatten_from(2)?.mean(D::Minus1)?;
        if pre_logits {
            return Ok(pooled);
        }
        self.head.forward(&pooled, self.autocast)
    }

    /// The stem and the four stages on candle's ops.
    fn body(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let mut x = self.stem.forward_t(&space_to_depth(x)?, pass)?;
        for block in self.stages.iter().flatten() {
            x = block.forward_t(&x, pass)?;
        }
        Ok(x)
    }

    /// Pooled features `[N, num_features]` (the global mean of the last stage).
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Self::check_input(x)?;
        if train && self.is_inference() {
            candle_core::bail!(
                "this TResNet is the folded inference path: it cannot run in training mode"
            );
        }
        if let Some(engine) = &self.engine {
            // (train is false here: checked above)
            return Ok(engine
                .features(&x.to_device(&candle_core::Device::Cpu)?, false)?
                .0);
        }
        let pass = Pass {
            train,
            autocast: self.autocast,
        };
        self.body(x, pass)?.flatten_from(2)?.mean(D::Minus1)
    }

    /// Logits `[N, num_classes]`. Input: RGB in [0, 1] (pixels / 255, no normalisation).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.features_t(x, train)?;
        self.head.forward(&f, self.autocast)
    }

    /// One training step's forward and backward pass: the logits in training mode (BatchNorm on
    /// batch statistics, running statistics updated), `loss_of(logits)`, and the gradient of
    /// that loss for every parameter (a [`GradStore`](candle_core::backprop::GradStore) keyed
    /// by the parameter tensors, as `loss.backward()` would give). With f32 weights on the
    /// CPU, no autocast and a linear head, it runs on the CPU training engine
    /// (`cpu::train`: channel-major activations, matrix-product convolutions with hand-written
    /// backward passes); otherwise on candle's autograd.
    pub fn train_step(
        &self,
        x: &Tensor,
        loss_of: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, candle_core::backprop::GradStore)> {
        Self::check_input(x)?;
        if self.is_inference() {
            candle_core::bail!(
                "this TResNet is the folded inference path: it cannot run in training mode"
            );
        }
        let weight = self.stem.conv.weight();
        let engine = weight.dtype() == DType::F32
            && weight.device().is_cpu()
            && x.device().is_cpu()
            && self.autocast.is_none()
            && matches!(self.head, Head::Linear(_));
        if engine {
            let net = layers::train_network(&self.stem, &self.stages, &self.head)?;
            return net.train_step(&x.to_dtype(DType::F32)?, loss_of);
        }
        self.train_step_autograd(x, loss_of)
    }

    /// [`Self::train_step`] on the CPU training engine, with the time spent in each kind of
    /// work (for `asl-cli bench --train --profile`). Only for f32 weights on the CPU, no
    /// autocast, linear head.
    pub fn train_step_profiled(
        &self,
        x: &Tensor,
        loss_of: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, candle_core::backprop::GradStore, KindTimes)> {
        Self::check_input(x)?;
        let weight = self.stem.conv.weight();
        if self.is_inference()
            || weight.dtype() != DType::F32
            || !weight.device().is_cpu()
            || self.autocast.is_some()
            || !matches!(self.head, Head::Linear(_))
        {
            candle_core::bail!(
                "profiling the training step needs the CPU engine: f32 weights on the CPU, \
                 training path, no autocast, linear head"
            );
        }
        layers::train_network(&self.stem, &self.stages, &self.head)?.train_step_profiled(x, loss_of)
    }

    /// The same step on candle's autograd whatever the device and dtype (the reference the
    /// engine is tested against).
    pub fn train_step_autograd(
        &self,
        x: &Tensor,
        loss_of: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, candle_core::backprop::GradStore)> {
        let logits = self.forward_t(x, true)?;
        let loss = loss_of(&logits)?;
        let grads = loss.backward()?;
        Ok((logits.detach(), loss, grads))
    }

    /// Logits of the CPU f32 inference path with the time spent in each kind of layer
    /// (convolution products, im2col, bias + activation, blur, SE, residual, pooling, head):
    /// where the time goes, for `asl-cli bench --profile`. Only for a model from
    /// [`Self::into_inference`] with f32 weights.
    pub fn forward_profiled(&self, x: &Tensor) -> Result<(Tensor, KindTimes)> {
        Self::check_input(x)?;
        let engine = self.engine.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "profiling needs the CPU f32 inference path (TResNet::into_inference on f32 \
                 weights)"
                    .into(),
            )
        })?;
        let (f, mut times) = engine.features(&x.to_device(&candle_core::Device::Cpu)?, true)?;
        let start = std::time::Instant::now();
        let logits = self.head.forward(&f, None)?;
        times.push(("head", start.elapsed()));
        Ok((logits, times))
    }
}

/// The eval forward pass (`model.forward(&x)`: logits, BatchNorm on running statistics).
/// Through candle's blanket `ModuleT` impl the `train` flag is then ignored: for training mode
/// call the inherent [`TResNet::forward_t`]`(x, true)` or [`TResNet::train_step`].
impl Module for TResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        TResNet::forward_t(self, x, false)
    }
}

/// The parameters an optimiser should update for a model built from `vars`: everything but the
/// BatchNorm running statistics (which the forward pass updates itself), or, with
/// `freeze_backbone`, only the classifier (`head.*`), for linear probing or a warm-up phase.
pub fn trainable_vars(vars: &VarMap, freeze_backbone: bool) -> Result<Vec<candle_core::Var>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    let mut named: Vec<(&String, &candle_core::Var)> = data
        .iter()
        .filter(|(name, _)| !name.ends_with("running_mean") && !name.ends_with("running_var"))
        .filter(|(name, _)| !freeze_backbone || name.starts_with("head."))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    Ok(named.into_iter().map(|(_, v)| v.clone()).collect())
}
