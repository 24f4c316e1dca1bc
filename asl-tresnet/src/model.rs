//! TResNet (Ridnik et al., "TResNet: High Performance GPU-Dedicated Architecture", WACV 2021,
//! arXiv 2003.13630), as timm's `timm/models/tresnet.py` builds it; the ASL paper's backbones.
//!
//! The module tree is the weight-key tree of timm's state dicts (`body.conv1.conv.weight`,
//! `body.layer3.0.se.fc1.bias`, `head.fc.weight`, ...), so a [`candle_nn::VarBuilder`] over a
//! timm `model.safetensors` loads it as is. This is the training path: plain convolutions and
//! BatchNorm layers that run on batch statistics (and update their running statistics) when
//! `train` is true, differentiable end to end. See `shared/spec/tresnet.md` for the architecture.

use candle_core::{DType, Module, ModuleT, Result, Tensor, D};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};

/// LeakyReLU slope of the stem (PyTorch's default).
const STEM_SLOPE: f64 = 0.01;
/// LeakyReLU slope inside every block (timm / the original TResNet: 1e-3).
const BLOCK_SLOPE: f64 = 1e-3;
/// BatchNorm epsilon (PyTorch's default).
const BN_EPS: f64 = 1e-5;
/// The smallest input side: every stage's blur needs at least 2 pixels to reflect-pad.
pub const MIN_INPUT_SIDE: usize = 20;

/// Time spent per kind of work (a profile), in the order first met.
pub type KindTimes = Vec<(&'static str, std::time::Duration)>;

/// How one forward pass runs: training mode (batch statistics) and the autocast dtype of the
/// convolutions and the classifier (`None`: everything in the weights' dtype).
#[derive(Clone, Copy, Debug)]
struct Pass {
    train: bool,
    autocast: Option<DType>,
}

/// `x` through `conv`, with the product in `autocast`'s dtype when one is given (input and weight
/// cast, the result cast back to `x`'s dtype; the bias added after, in `x`'s dtype). The casts
/// are part of the autograd graph, so the gradient reaches the f32 weights.
fn conv_autocast(conv: &Conv2d, x: &Tensor, autocast: Option<DType>) -> Result<Tensor> {
    match autocast {
        Some(dt) if dt != x.dtype() => {
            let c = conv.config();
            let w = conv.weight().to_dtype(dt)?;
            let y = x
                .to_dtype(dt)?
                .conv2d(&w, c.padding, c.stride, c.dilation, c.groups)?
                .to_dtype(x.dtype())?;
            match conv.bias() {
                Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
                None => Ok(y),
            }
        }
        _ => conv.forward(x),
    }
}

/// `x` `[N, F]` through `linear`, the product in `autocast`'s dtype as [`conv_autocast`].
fn linear_autocast(linear: &Linear, x: &Tensor, autocast: Option<DType>) -> Result<Tensor> {
    match autocast {
        Some(dt) if dt != x.dtype() => {
            let y = x
                .to_dtype(dt)?
                .matmul(&linear.weight().to_dtype(dt)?.t()?)?
                .to_dtype(x.dtype())?;
            match linear.bias() {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            }
        }
        _ => linear.forward(x),
    }
}

/// The classifier on top of the pooled features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// `head.fc`: one linear layer (timm and every ASL model but OpenImages).
    Linear,
    /// The ASL OpenImages model's head: `head.fc.embedding_generator.0` (features -> `embedding`)
    /// then `head.fc.FC` (embedding -> classes), no activation between them.
    Bottleneck { embedding: usize },
}

/// A TResNet variant: depth and width are data, so small test and demo models are configs too.
#[derive(Clone, Debug, PartialEq)]
pub struct TResNetConfig {
    /// Blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Base width multiplier: stem width `P = int(64 * width_factor)`.
    pub width_factor: f64,
    /// TResNet v2: Bottleneck blocks in all stages, `P` rounded down to a multiple of 8.
    pub v2: bool,
    pub num_classes: usize,
    pub head: HeadKind,
}

impl TResNetConfig {
    pub fn tresnet_m(num_classes: usize) -> Self {
        Self::variant([3, 4, 11, 3], 1.0, false, num_classes)
    }
    pub fn tresnet_l(num_classes: usize) -> Self {
        Self::variant([4, 5, 18, 3], 1.2, false, num_classes)
    }
    pub fn tresnet_xl(num_classes: usize) -> Self {
        Self::variant([4, 5, 24, 3], 1.3, false, num_classes)
    }
    pub fn tresnet_v2_l(num_classes: usize) -> Self {
        Self::variant([3, 4, 23, 3], 1.0, true, num_classes)
    }

    /// Any depth and width, with a linear head.
    pub fn variant(layers: [usize; 4], width_factor: f64, v2: bool, num_classes: usize) -> Self {
        TResNetConfig {
            layers,
            width_factor,
            v2,
            num_classes,
            head: HeadKind::Linear,
        }
    }

    /// The architecture names this crate knows, in the order [`Self::from_arch`] tries them.
    pub const ARCHS: [&'static str; 4] = ["tresnet_m", "tresnet_l", "tresnet_xl", "tresnet_v2_l"];

    /// A variant by name: timm's full-size names (`tresnet_m`, `tresnet_l`, `tresnet_xl`,
    /// `tresnet_v2_l`), or any depth and width as [`Self::name`] writes it
    /// (`tresnet_custom:1-1-1-1:0.25`, `tresnet_custom:2-2-2-2:0.5:v2`).
    pub fn from_arch(arch: &str, num_classes: usize) -> Option<Self> {
        match arch {
            "tresnet_m" => Some(Self::tresnet_m(num_classes)),
            "tresnet_l" => Some(Self::tresnet_l(num_classes)),
            "tresnet_xl" => Some(Self::tresnet_xl(num_classes)),
            "tresnet_v2_l" => Some(Self::tresnet_v2_l(num_classes)),
            _ => {
                let mut parts = arch.strip_prefix("tresnet_custom:")?.split(':');
                let layers: Vec<usize> = parts
                    .next()?
                    .split('-')
                    .map(|n| n.parse().ok().filter(|&n| n > 0))
                    .collect::<Option<_>>()?;
                let width: f64 = parts.next()?.parse().ok()?;
                let v2 = match parts.next() {
                    None => false,
                    Some("v2") => true,
                    Some(_) => return None,
                };
                let cfg = Self::variant(layers.try_into().ok()?, width, v2, num_classes);
                (parts.next().is_none() && width > 0.0 && cfg.planes() >= 8).then_some(cfg)
            }
        }
    }

    /// The architecture's name: timm's for the four published variants, otherwise
    /// `tresnet_custom:L1-L2-L3-L4:WIDTH[:v2]`, which [`Self::from_arch`] reads back.
    pub fn name(&self) -> String {
        for arch in Self::ARCHS {
            if let Some(cfg) = Self::from_arch(arch, self.num_classes) {
                if cfg.layers == self.layers
                    && cfg.width_factor == self.width_factor
                    && cfg.v2 == self.v2
                {
                    return arch.to_string();
                }
            }
        }
        let l = self.layers;
        format!(
            "tresnet_custom:{}-{}-{}-{}:{}{}",
            l[0],
            l[1],
            l[2],
            l[3],
            self.width_factor,
            if self.v2 { ":v2" } else { "" }
        )
    }

    /// The stem width `P`.
    pub fn planes(&self) -> usize {
        let p = (64.0 * self.width_factor) as usize;
        if self.v2 {
            p / 8 * 8
        } else {
            p
        }
    }

    /// Channels of the pooled features the head sees (`8 P * 4`).
    pub fn num_features(&self) -> usize {
        self.planes() * 8 * Bottleneck::EXPANSION
    }
}

/// Conv (no bias, padding k/2, stride 1), BatchNorm, an optional LeakyReLU, and for a strided
/// layer the anti-aliasing blur: timm's `ConvNormAct` with `aa_layer=BlurPool2d`.
#[derive(Clone, Debug)]
pub(crate) struct ConvBn {
    pub(crate) conv: Conv2d,
    /// `None` once folded into `conv` (inference path).
    pub(crate) bn: Option<BatchNorm>,
    pub(crate) slope: Option<f64>,
    pub(crate) blur: bool,
}

impl ConvBn {
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        slope: Option<f64>,
        blur: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: k / 2,
            ..Default::default()
        };
        Ok(ConvBn {
            conv: candle_nn::conv2d_no_bias(c_in, c_out, k, cfg, vb.pp("conv"))?,
            bn: Some(candle_nn::batch_norm(c_out, BN_EPS, vb.pp("bn"))?),
            slope,
            blur,
        })
    }

    fn forward_t(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let x = conv_autocast(&self.conv, x, pass.autocast)?;
        let x = match &self.bn {
            Some(bn) => bn.forward_t(&x, pass.train)?,
            None => x,
        };
        let x = match self.slope {
            Some(s) => candle_nn::ops::leaky_relu(&x, s)?,
            None => x,
        };
        match (self.blur, &self.bn) {
            (false, _) => Ok(x),
            (true, Some(_)) => blur_pool(&x),
            (true, None) => crate::ops::blur_pool_fused(&x),
        }
    }

    /// The same layer with its BatchNorm folded into the convolution (weights detached from any
    /// autograd graph).
    fn folded(&self) -> Result<Self> {
        let conv = match &self.bn {
            Some(bn) => self.conv.absorb_bn(bn)?,
            None => self.conv.clone(),
        };
        let conv = Conv2d::new(
            conv.weight().detach(),
            conv.bias().map(|b| b.detach()),
            *conv.config(),
        );
        Ok(ConvBn {
            conv,
            bn: None,
            slope: self.slope,
            blur: self.blur,
        })
    }

    /// This folded layer as a layer of the CPU f32 engine.
    fn engine_layer(&self) -> Result<crate::infer::ConvLayer> {
        let bias = self.conv.bias().ok_or_else(|| {
            candle_core::Error::Msg("inference engine: the layer is not folded".into())
        })?;
        crate::infer::ConvLayer::new(self.conv.weight(), bias, self.slope, self.blur)
    }
}

/// Anti-aliased downsampling (timm `BlurPool2d`, filter size 3): reflect padding of 1, the
/// binomial filter `[1 2 1]^T [1 2 1] / 16` on every channel, stride 2; output `ceil(H/2)`.
/// All channels of all images go through one single-channel convolution (never a grouped conv,
/// which candle runs as one convolution per channel).
pub fn blur_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    // Only the padded rows and columns some stride-2 window reads: the trailing pad of an even
    // side is never read, and leaving it out also keeps candle's conv2d backward (which assumes
    // every input row is covered) shape-consistent.
    let padded = reflect_pad1(&reflect_pad1(x, 2, h % 2 == 1)?, 3, w % 2 == 1)?;
    let (hp, wp) = padded.dims4().map(|d| (d.2, d.3))?;
    let taps = [1f32, 2., 1., 2., 4., 2., 1., 2., 1.].map(|v| v / 16.0);
    let filter = Tensor::from_slice(&taps, (1, 1, 3, 3), x.device())?.to_dtype(x.dtype())?;
    let y = padded
        .reshape((n * c, 1, hp, wp))?
        .conv2d(&filter, 0, 2, 1, 1)?;
    y.reshape((n, c, h.div_ceil(2), w.div_ceil(2)))
}

/// Reflect padding of one element along `dim` (PyTorch `ReflectionPad`: the neighbour of the
/// border, not the border itself) before the start and, when `trailing`, after the end.
fn reflect_pad1(x: &Tensor, dim: usize, trailing: bool) -> Result<Tensor> {
    let len = x.dim(dim)?;
    if len < 2 {
        candle_core::bail!("reflect padding needs at least 2 elements along dim {dim}, got {len}");
    }
    let lead = x.narrow(dim, 1, 1)?;
    if trailing {
        Tensor::cat(&[&lead, x, &x.narrow(dim, len - 2, 1)?], dim)
    } else {
        Tensor::cat(&[&lead, x], dim)
    }
}

/// `AvgPool2d(2, stride 2, ceil_mode=True, count_include_pad=False)`: a window hanging over an
/// odd border averages only its valid elements.
pub fn avg_pool_2x2_ceil(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h % 2 == 0 && w % 2 == 0 {
        return x.avg_pool2d(2);
    }
    let pad = |t: &Tensor| t.pad_with_zeros(2, 0, h % 2)?.pad_with_zeros(3, 0, w % 2);
    let sums = pad(x)?.avg_pool2d(2)?;
    let counts = pad(&Tensor::ones((1, 1, h, w), x.dtype(), x.device())?)?.avg_pool2d(2)?;
    sums.broadcast_div(&counts)
}

/// Space-to-depth with block 4: `(N, C, H, W) -> (N, 16 C, H/4, W/4)`, channel index
/// `(dy * 4 + dx) * C + c`, as timm's `SpaceToDepth`.
pub fn space_to_depth(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h / 4, 4, w / 4, 4))?
        .permute([0, 3, 5, 1, 2, 4])?
        .reshape((n, c * 16, h / 4, w / 4))
}

/// Squeeze-and-excitation: global mean, 1x1 conv, ReLU, 1x1 conv, sigmoid, rescale.
#[derive(Clone, Debug)]
pub(crate) struct SqueezeExcite {
    pub(crate) fc1: Conv2d,
    pub(crate) fc2: Conv2d,
}

impl SqueezeExcite {
    fn new(channels: usize, reduced: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig::default();
        Ok(SqueezeExcite {
            fc1: candle_nn::conv2d(channels, reduced, 1, cfg, vb.pp("fc1"))?,
            fc2: candle_nn::conv2d(reduced, channels, 1, cfg, vb.pp("fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
        let s = self.fc2.forward(&self.fc1.forward(&s)?.relu()?)?;
        x.broadcast_mul(&candle_nn::ops::sigmoid(&s)?)
    }
}

/// The shortcut of a stage's first block: optional 2x2 average pool, then 1x1 conv + BN.
#[derive(Clone, Debug)]
pub(crate) struct Downsample {
    pub(crate) pool: bool,
    pub(crate) conv: ConvBn,
}

impl SqueezeExcite {
    fn detached(&self) -> Self {
        let d = |c: &Conv2d| {
            Conv2d::new(
                c.weight().detach(),
                c.bias().map(|b| b.detach()),
                *c.config(),
            )
        };
        SqueezeExcite {
            fc1: d(&self.fc1),
            fc2: d(&self.fc2),
        }
    }
}

impl SqueezeExcite {
    fn engine_layer(&self) -> Result<crate::infer::SeLayer> {
        let bias = |c: &Conv2d| {
            c.bias()
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("SE convolution without bias".into()))
        };
        crate::infer::SeLayer::new(
            self.fc1.weight(),
            &bias(&self.fc1)?,
            self.fc2.weight(),
            &bias(&self.fc2)?,
        )
    }
}

impl Downsample {
    fn engine_layer(&self) -> Result<crate::infer::Shortcut> {
        Ok(crate::infer::Shortcut {
            pool: self.pool,
            conv: self.conv.engine_layer()?,
        })
    }

    fn forward_t(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        if self.pool {
            self.conv.forward_t(&avg_pool_2x2_ceil(x)?, pass)
        } else {
            self.conv.forward_t(x, pass)
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct BasicBlock {
    pub(crate) conv1: ConvBn,
    pub(crate) conv2: ConvBn,
    pub(crate) se: Option<SqueezeExcite>,
    pub(crate) downsample: Option<Downsample>,
}

#[derive(Clone, Debug)]
pub(crate) struct Bottleneck {
    pub(crate) conv1: ConvBn,
    pub(crate) conv2: ConvBn,
    pub(crate) se: Option<SqueezeExcite>,
    pub(crate) conv3: ConvBn,
    pub(crate) downsample: Option<Downsample>,
}

impl Bottleneck {
    const EXPANSION: usize = 4;
}

#[derive(Clone, Debug)]
pub(crate) enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    fn folded(&self) -> Result<Self> {
        let ds = |d: &Option<Downsample>| -> Result<Option<Downsample>> {
            d.as_ref()
                .map(|d| {
                    Ok(Downsample {
                        pool: d.pool,
                        conv: d.conv.folded()?,
                    })
                })
                .transpose()
        };
        let se = |s: &Option<SqueezeExcite>| s.as_ref().map(SqueezeExcite::detached);
        Ok(match self {
            Block::Basic(b) => Block::Basic(BasicBlock {
                conv1: b.conv1.folded()?,
                conv2: b.conv2.folded()?,
                se: se(&b.se),
                downsample: ds(&b.downsample)?,
            }),
            Block::Bottleneck(b) => Block::Bottleneck(Bottleneck {
                conv1: b.conv1.folded()?,
                conv2: b.conv2.folded()?,
                se: se(&b.se),
                conv3: b.conv3.folded()?,
                downsample: ds(&b.downsample)?,
            }),
        })
    }

    fn engine_block(&self) -> Result<crate::infer::EngineBlock> {
        use crate::infer::EngineBlock;
        let se = |s: &Option<SqueezeExcite>| s.as_ref().map(|s| s.engine_layer()).transpose();
        let ds = |d: &Option<Downsample>| d.as_ref().map(|d| d.engine_layer()).transpose();
        Ok(match self {
            Block::Basic(b) => EngineBlock::Basic {
                conv1: b.conv1.engine_layer()?,
                conv2: b.conv2.engine_layer()?,
                se: se(&b.se)?,
                downsample: ds(&b.downsample)?,
            },
            Block::Bottleneck(b) => EngineBlock::Bottleneck {
                conv1: b.conv1.engine_layer()?,
                conv2: b.conv2.engine_layer()?,
                se: se(&b.se)?,
                conv3: b.conv3.engine_layer()?,
                downsample: ds(&b.downsample)?,
            },
        })
    }

    fn forward_t(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let (out, downsample) = match self {
            Block::Basic(b) => {
                let out = b.conv2.forward_t(&b.conv1.forward_t(x, pass)?, pass)?;
                let out = match &b.se {
                    Some(se) => se.forward(&out)?,
                    None => out,
                };
                (out, &b.downsample)
            }
            Block::Bottleneck(b) => {
                let out = b.conv2.forward_t(&b.conv1.forward_t(x, pass)?, pass)?;
                let out = match &b.se {
                    Some(se) => se.forward(&out)?,
                    None => out,
                };
                (b.conv3.forward_t(&out, pass)?, &b.downsample)
            }
        };
        let shortcut = match downsample {
            Some(d) => d.forward_t(x, pass)?,
            None => x.clone(),
        };
        (out + shortcut)?.relu()
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Head {
    Linear(Linear),
    Bottleneck { embedding: Linear, fc: Linear },
}

/// A TResNet backbone with its classifier.
#[derive(Clone, Debug)]
pub struct TResNet {
    cfg: TResNetConfig,
    pub(crate) stem: ConvBn,
    pub(crate) stages: Vec<Vec<Block>>,
    pub(crate) head: Head,
    /// The CPU f32 engine of the inference path (f32 weights on the CPU only).
    pub(crate) engine: Option<std::sync::Arc<crate::infer::Engine>>,
    /// Autocast dtype of the convolutions and the classifier (see [`TResNet::with_autocast`]).
    autocast: Option<DType>,
}

impl TResNet {
    /// Builds the model, reading (or, with a `VarMap`, creating) every weight under timm's names.
    pub fn new(cfg: &TResNetConfig, vb: VarBuilder) -> Result<Self> {
        let planes = cfg.planes();
        let body = vb.pp("body");
        let stem = ConvBn::new(48, planes, 3, Some(STEM_SLOPE), false, body.pp("conv1"))?;
        let mut in_ch = planes;
        let mut stages = Vec::with_capacity(4);
        for (s, &blocks) in cfg.layers.iter().enumerate() {
            let bottleneck = s >= 2 || cfg.v2;
            let stage_planes = planes << s;
            let stride2 = s > 0;
            let use_se = s < 3;
            let expansion = if bottleneck { Bottleneck::EXPANSION } else { 1 };
            let out_ch = stage_planes * expansion;
            let vb_stage = body.pp(format!("layer{}", s + 1));
            let mut stage = Vec::with_capacity(blocks);
            for i in 0..blocks {
                let vb_b = vb_stage.pp(i.to_string());
                let strided = stride2 && i == 0;
                let downsample = if i == 0 && (stride2 || in_ch != out_ch) {
                    // timm's Sequential: index 0 is the AvgPool when there is one.
                    let idx = if strided { "1" } else { "0" };
                    Some(Downsample {
                        pool: strided,
                        conv: ConvBn::new(
                            in_ch,
                            out_ch,
                            1,
                            None,
                            false,
                            vb_b.pp("downsample").pp(idx),
                        )?,
                    })
                } else {
                    None
                };
                let leaky = Some(BLOCK_SLOPE);
                let block = if bottleneck {
                    let se = use_se
                        .then(|| {
                            let reduced = (stage_planes * Bottleneck::EXPANSION / 8).max(64);
                            SqueezeExcite::new(stage_planes, reduced, vb_b.pp("se"))
                        })
                        .transpose()?;
                    Block::Bottleneck(Bottleneck {
                        conv1: ConvBn::new(in_ch, stage_planes, 1, leaky, false, vb_b.pp("conv1"))?,
                        conv2: ConvBn::new(
                            stage_planes,
                            stage_planes,
                            3,
                            leaky,
                            strided,
                            vb_b.pp("conv2"),
                        )?,
                        se,
                        conv3: ConvBn::new(stage_planes, out_ch, 1, None, false, vb_b.pp("conv3"))?,
                        downsample,
                    })
                } else {
                    let se = use_se
                        .then(|| {
                            let reduced = (stage_planes / 4).max(64);
                            SqueezeExcite::new(stage_planes, reduced, vb_b.pp("se"))
                        })
                        .transpose()?;
                    Block::Basic(BasicBlock {
                        conv1: ConvBn::new(
                            in_ch,
                            stage_planes,
                            3,
                            leaky,
                            strided,
                            vb_b.pp("conv1"),
                        )?,
                        conv2: ConvBn::new(
                            stage_planes,
                            stage_planes,
                            3,
                            None,
                            false,
                            vb_b.pp("conv2"),
                        )?,
                        se,
                        downsample,
                    })
                };
                stage.push(block);
                in_ch = out_ch;
            }
            stages.push(stage);
        }
        let features = cfg.num_features();
        let vb_fc = vb.pp("head").pp("fc");
        let head = match cfg.head {
            HeadKind::Linear => Head::Linear(candle_nn::linear(features, cfg.num_classes, vb_fc)?),
            HeadKind::Bottleneck { embedding } => Head::Bottleneck {
                embedding: candle_nn::linear(
                    features,
                    embedding,
                    vb_fc.pp("embedding_generator").pp("0"),
                )?,
                fc: candle_nn::linear(embedding, cfg.num_classes, vb_fc.pp("FC"))?,
            },
        };
        Ok(TResNet {
            cfg: cfg.clone(),
            stem,
            stages,
            head,
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
    /// With f32 weights on the CPU the backbone runs on the CPU engine (`infer.rs`: channel-major
    /// activations, tiled im2col + gemm with fused epilogues), which then holds the only copy of
    /// the folded backbone weights. `forward_t(x, true)` is refused on the result.
    pub fn into_inference(self) -> Result<Self> {
        let detach_linear =
            |l: &Linear| Linear::new(l.weight().detach(), l.bias().map(|b| b.detach()));
        let stem = self.stem.folded()?;
        let stages = self
            .stages
            .iter()
            .map(|s| s.iter().map(Block::folded).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let weight = stem.conv.weight();
        let engine = if weight.dtype() == DType::F32 && weight.device().is_cpu() {
            Some(std::sync::Arc::new(crate::infer::Engine {
                stem: stem.engine_layer()?,
                blocks: stages
                    .iter()
                    .flatten()
                    .map(Block::engine_block)
                    .collect::<Result<_>>()?,
            }))
        } else {
            None
        };
        // The engine holds its own copy of the folded weights: drop candle's.
        let stages = if engine.is_some() { Vec::new() } else { stages };
        Ok(TResNet {
            stem,
            stages,
            head: match &self.head {
                Head::Linear(fc) => Head::Linear(detach_linear(fc)),
                Head::Bottleneck { embedding, fc } => Head::Bottleneck {
                    embedding: detach_linear(embedding),
                    fc: detach_linear(fc),
                },
            },
            cfg: self.cfg,
            engine,
            autocast: None,
        })
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
        let mut x = self.stem.forward_t(&space_to_depth(x)?, pass)?;
        for stage in &self.stages {
            for block in stage {
                x = block.forward_t(&x, pass)?;
            }
        }
        x.flatten_from(2)?.mean(D::Minus1)
    }

    /// Logits `[N, num_classes]`. Input: RGB in [0, 1] (pixels / 255, no normalisation).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.features_t(x, train)?;
        self.head_forward(&f)
    }

    fn head_forward(&self, f: &Tensor) -> Result<Tensor> {
        let ac = self.autocast;
        match &self.head {
            Head::Linear(fc) => linear_autocast(fc, f, ac),
            Head::Bottleneck { embedding, fc } => {
                linear_autocast(fc, &linear_autocast(embedding, f, ac)?, ac)
            }
        }
    }

    /// One training step's forward and backward pass: the logits in training mode (BatchNorm on
    /// batch statistics, running statistics updated), `loss_of(logits)`, and the gradient of
    /// that loss for every parameter (a [`GradStore`](candle_core::backprop::GradStore) keyed
    /// by the parameter tensors, as `loss.backward()` would give). With f32 weights on the
    /// CPU, no autocast and a linear head, it runs on the CPU training engine
    /// (`train_engine.rs`: channel-major activations, matrix-product convolutions with
    /// hand-written backward passes); otherwise on candle's autograd.
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
            return crate::train_engine::train_step(self, &x.to_dtype(DType::F32)?, loss_of);
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
        crate::train_engine::train_step_profiled(self, x, loss_of)
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
    pub fn forward_profiled(
        &self,
        x: &Tensor,
    ) -> Result<(Tensor, Vec<(&'static str, std::time::Duration)>)> {
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
        let logits = self.head_forward(&f)?;
        times.push(("head", start.elapsed()));
        Ok((logits, times))
    }
}

impl ModuleT for TResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        TResNet::forward_t(self, x, train)
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
