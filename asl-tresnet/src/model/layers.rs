//! TResNet's layers as candle modules, named as timm's state dicts name them
//! (`conv1.conv.weight`, `conv1.bn.running_var`, `se.fc1.bias`, `downsample.1.conv.weight`, ...),
//! with their training forward pass, their BatchNorm folding, and the conversion of each layer
//! into the CPU engines' structures.

use candle_core::{DType, Module, ModuleT, Result, Tensor, D};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::config::{HeadKind, TResNetConfig, EXPANSION};
use super::ops::{avg_pool_2x2_ceil, blur_pool, blur_pool_fused};
use crate::cpu::{infer, train};

/// LeakyReLU slope of the stem (PyTorch's default).
pub(crate) const STEM_SLOPE: f64 = 0.01;
/// LeakyReLU slope inside every block (timm / the original TResNet: 1e-3).
pub(crate) const BLOCK_SLOPE: f64 = 1e-3;
/// BatchNorm epsilon (PyTorch's default).
const BN_EPS: f64 = 1e-5;
/// How one forward pass runs: training mode (batch statistics) and the autocast dtype of the
/// convolutions and the classifier (`None`: everything in the weights' dtype).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass {
    pub(crate) train: bool,
    pub(crate) autocast: Option<DType>,
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
pub(crate) fn linear_autocast(
    linear: &Linear,
    x: &Tensor,
    autocast: Option<DType>,
) -> Result<Tensor> {
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
    pub(crate) fn new(
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

    pub(crate) fn forward_t(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
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
            (true, None) => blur_pool_fused(&x),
        }
    }

    /// The same layer with its BatchNorm folded into the convolution (weights detached from any
    /// autograd graph).
    pub(crate) fn folded(&self) -> Result<Self> {
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

    /// This folded layer as a layer of the CPU inference engine.
    fn inference_layer(&self) -> Result<infer::ConvLayer> {
        let bias = self.conv.bias().ok_or_else(|| {
            candle_core::Error::Msg("inference engine: the layer is not folded".into())
        })?;
        infer::ConvLayer::new(self.conv.weight(), bias, self.slope, self.blur)
    }

    /// This layer as the CPU training engine reads it (its tensors, not copies).
    fn train_layer(&self) -> Result<train::ConvBnLayer> {
        let bn = self.bn.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("training engine: the layer is folded".into())
        })?;
        let (gamma, beta) = bn
            .weight_and_bias()
            .ok_or_else(|| candle_core::Error::Msg("BatchNorm without affine".into()))?;
        Ok(train::ConvBnLayer {
            weight: self.conv.weight().clone(),
            gamma: gamma.clone(),
            beta: beta.clone(),
            running_mean: bn.running_mean().clone(),
            running_var: bn.running_var().clone(),
            momentum: bn.momentum(),
            eps: bn.eps(),
            slope: self.slope,
            blur: self.blur,
        })
    }
}

/// Squeeze-and-excitation: global mean, 1x1 conv, ReLU, 1x1 conv, sigmoid, rescale.
#[derive(Clone, Debug)]
pub(crate) struct SqueezeExcite {
    pub(crate) fc1: Conv2d,
    pub(crate) fc2: Conv2d,
}

impl SqueezeExcite {
    pub(crate) fn new(channels: usize, reduced: usize, vb: VarBuilder) -> Result<Self> {
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
    fn biases(&self) -> Result<(Tensor, Tensor)> {
        let bias = |c: &Conv2d| {
            c.bias()
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("SE convolution without bias".into()))
        };
        Ok((bias(&self.fc1)?, bias(&self.fc2)?))
    }

    fn inference_layer(&self) -> Result<infer::SeLayer> {
        let (b1, b2) = self.biases()?;
        infer::SeLayer::new(self.fc1.weight(), &b1, self.fc2.weight(), &b2)
    }

    fn train_layer(&self) -> Result<train::SeLayer> {
        let (b1, b2) = self.biases()?;
        Ok(train::SeLayer {
            w1: self.fc1.weight().clone(),
            b1,
            w2: self.fc2.weight().clone(),
            b2,
        })
    }
}

impl Downsample {
    fn inference_layer(&self) -> Result<infer::Shortcut> {
        Ok(infer::Shortcut {
            pool: self.pool,
            conv: self.conv.inference_layer()?,
        })
    }

    fn train_layer(&self) -> Result<train::Shortcut> {
        Ok(train::Shortcut {
            pool: self.pool,
            conv: self.conv.train_layer()?,
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

#[derive(Clone, Debug)]
pub(crate) enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    pub(crate) fn folded(&self) -> Result<Self> {
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

    fn inference_block(&self) -> Result<infer::EngineBlock> {
        use infer::EngineBlock;
        let se = |s: &Option<SqueezeExcite>| s.as_ref().map(|s| s.inference_layer()).transpose();
        let ds = |d: &Option<Downsample>| d.as_ref().map(|d| d.inference_layer()).transpose();
        Ok(match self {
            Block::Basic(b) => EngineBlock::Basic {
                conv1: b.conv1.inference_layer()?,
                conv2: b.conv2.inference_layer()?,
                se: se(&b.se)?,
                downsample: ds(&b.downsample)?,
            },
            Block::Bottleneck(b) => EngineBlock::Bottleneck {
                conv1: b.conv1.inference_layer()?,
                conv2: b.conv2.inference_layer()?,
                se: se(&b.se)?,
                conv3: b.conv3.inference_layer()?,
                downsample: ds(&b.downsample)?,
            },
        })
    }

    /// This block as the CPU training engine reads it.
    fn train_block(&self) -> Result<train::BlockLayers> {
        let (convs, se, downsample) = match self {
            Block::Basic(b) => (vec![&b.conv1, &b.conv2], &b.se, &b.downsample),
            Block::Bottleneck(b) => (vec![&b.conv1, &b.conv2, &b.conv3], &b.se, &b.downsample),
        };
        Ok(train::BlockLayers {
            convs: convs
                .into_iter()
                .map(ConvBn::train_layer)
                .collect::<Result<_>>()?,
            se: se.as_ref().map(SqueezeExcite::train_layer).transpose()?,
            shortcut: downsample
                .as_ref()
                .map(Downsample::train_layer)
                .transpose()?,
        })
    }

    pub(crate) fn forward_t(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
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

/// Where a block sits: its stage, its index in the stage and its channels.
struct BlockPlace {
    stage: usize,
    index: usize,
    in_ch: usize,
    planes: usize,
    bottleneck: bool,
}

impl BlockPlace {
    fn out_ch(&self) -> usize {
        self.planes * if self.bottleneck { EXPANSION } else { 1 }
    }

    /// The first block of stages 2-4 downsamples (blur after its 3x3 convolution, pooled
    /// shortcut).
    fn strided(&self) -> bool {
        self.stage > 0 && self.index == 0
    }

    fn shortcut(&self, vb: &VarBuilder) -> Result<Option<Downsample>> {
        if self.index != 0 || !(self.stage > 0 || self.in_ch != self.out_ch()) {
            return Ok(None);
        }
        // timm's Sequential: index 0 is the AvgPool when there is one.
        let idx = if self.strided() { "1" } else { "0" };
        Ok(Some(Downsample {
            pool: self.strided(),
            conv: ConvBn::new(
                self.in_ch,
                self.out_ch(),
                1,
                None,
                false,
                vb.pp("downsample").pp(idx),
            )?,
        }))
    }

    /// SE in stages 1-3, reducing to `max(64, planes * 4 / 8)` (Bottleneck) or
    /// `max(64, planes / 4)` (BasicBlock) channels.
    fn se(&self, vb: &VarBuilder) -> Result<Option<SqueezeExcite>> {
        if self.stage >= 3 {
            return Ok(None);
        }
        let reduced = if self.bottleneck {
            (self.planes * EXPANSION / 8).max(64)
        } else {
            (self.planes / 4).max(64)
        };
        SqueezeExcite::new(self.planes, reduced, vb.pp("se")).map(Some)
    }

    fn block(&self, vb: &VarBuilder) -> Result<Block> {
        let (p, leaky) = (self.planes, Some(BLOCK_SLOPE));
        let (se, downsample) = (self.se(vb)?, self.shortcut(vb)?);
        Ok(if self.bottleneck {
            Block::Bottleneck(Bottleneck {
                conv1: ConvBn::new(self.in_ch, p, 1, leaky, false, vb.pp("conv1"))?,
                conv2: ConvBn::new(p, p, 3, leaky, self.strided(), vb.pp("conv2"))?,
                se,
                conv3: ConvBn::new(p, self.out_ch(), 1, None, false, vb.pp("conv3"))?,
                downsample,
            })
        } else {
            Block::Basic(BasicBlock {
                conv1: ConvBn::new(self.in_ch, p, 3, leaky, self.strided(), vb.pp("conv1"))?,
                conv2: ConvBn::new(p, p, 3, None, false, vb.pp("conv2"))?,
                se,
                downsample,
            })
        })
    }
}

/// The four stages under `body` (`body.layer1` ... `body.layer4`): BasicBlocks in the first two
/// (Bottlenecks everywhere for v2), Bottlenecks in the last two, planes doubling per stage.
pub(crate) fn stages(cfg: &TResNetConfig, body: &VarBuilder) -> Result<Vec<Vec<Block>>> {
    let planes = cfg.planes();
    let mut in_ch = planes;
    let mut stages = Vec::with_capacity(4);
    for (stage, &blocks) in cfg.layers.iter().enumerate() {
        let vb_stage = body.pp(format!("layer{}", stage + 1));
        let mut out = Vec::with_capacity(blocks);
        for index in 0..blocks {
            let place = BlockPlace {
                stage,
                index,
                in_ch,
                planes: planes << stage,
                bottleneck: stage >= 2 || cfg.v2,
            };
            out.push(place.block(&vb_stage.pp(index.to_string()))?);
            in_ch = place.out_ch();
        }
        stages.push(out);
    }
    Ok(stages)
}

/// The classifier under `head.fc`.
pub(crate) fn head(cfg: &TResNetConfig, vb: &VarBuilder) -> Result<Head> {
    let features = cfg.num_features();
    let vb_fc = vb.pp("head").pp("fc");
    Ok(match cfg.head {
        HeadKind::Linear => Head::Linear(candle_nn::linear(features, cfg.num_classes, vb_fc)?),
        HeadKind::Bottleneck { embedding } => Head::Bottleneck {
            embedding: candle_nn::linear(
                features,
                embedding,
                vb_fc.pp("embedding_generator").pp("0"),
            )?,
            fc: candle_nn::linear(embedding, cfg.num_classes, vb_fc.pp("FC"))?,
        },
    })
}

impl Head {
    /// The logits of pooled features, the products in `autocast`'s dtype when given.
    pub(crate) fn forward(&self, f: &Tensor, autocast: Option<DType>) -> Result<Tensor> {
        match self {
            Head::Linear(fc) => linear_autocast(fc, f, autocast),
            Head::Bottleneck { embedding, fc } => {
                linear_autocast(fc, &linear_autocast(embedding, f, autocast)?, autocast)
            }
        }
    }

    /// The same head with its weights detached from any autograd graph.
    pub(crate) fn detached(&self) -> Head {
        let d = |l: &Linear| Linear::new(l.weight().detach(), l.bias().map(|b| b.detach()));
        match self {
            Head::Linear(fc) => Head::Linear(d(fc)),
            Head::Bottleneck { embedding, fc } => Head::Bottleneck {
                embedding: d(embedding),
                fc: d(fc),
            },
        }
    }
}

/// The folded network as the CPU inference engine.
pub(crate) fn inference_engine(stem: &ConvBn, stages: &[Vec<Block>]) -> Result<infer::Engine> {
    Ok(infer::Engine {
        stem: stem.inference_layer()?,
        blocks: stages
            .iter()
            .flatten()
            .map(Block::inference_block)
            .collect::<Result<_>>()?,
    })
}

/// The training path as the CPU training engine reads it (linear head only).
pub(crate) fn train_network(
    stem: &ConvBn,
    stages: &[Vec<Block>],
    head: &Head,
) -> Result<train::Network> {
    let Head::Linear(fc) = head else {
        candle_core::bail!("training engine: only the linear head is supported");
    };
    Ok(train::Network {
        stem: stem.train_layer()?,
        blocks: stages
            .iter()
            .flatten()
            .map(Block::train_block)
            .collect::<Result<_>>()?,
        fc_weight: fc.weight().clone(),
        fc_bias: fc.bias().cloned(),
    })
}
