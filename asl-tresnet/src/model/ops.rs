//! The tensor ops of TResNet beyond candle's: the anti-aliasing blur (differentiable, and a
//! fused one-pass version for the inference path), ceil-mode average pooling and
//! space-to-depth, each exactly as timm computes it.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use num_traits::Float;

use crate::cpu::primitives::blur_planes_into;

/// The anti-aliasing blur (reflect pad 1, `[1 2 1]^T [1 2 1] / 16`, stride 2) in one pass over
/// each channel plane, rayon-parallel over planes: no padded copy, no im2col. Inference only
/// (no backward); the training path uses [`blur_pool`].
struct BlurPool;

fn blur_planes<T: Float + Send + Sync>(x: &[T], planes: usize, h: usize, w: usize) -> Vec<T> {
    let mut out = vec![T::zero(); planes * h.div_ceil(2) * w.div_ceil(2)];
    blur_planes_into(x, &mut out, h, w);
    out
}

impl CustomOp1 for BlurPool {
    fn name(&self) -> &'static str {
        "tresnet-blur-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        if h < 2 || w < 2 {
            candle_core::bail!("blur pool needs at least 2 x 2 pixels, got {h} x {w}");
        }
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("blur pool: input must be contiguous".into()))?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(blur_planes(&v[start..end], n * c, h, w)),
            CpuStorage::F64(v) => CpuStorage::F64(blur_planes(&v[start..end], n * c, h, w)),
            other => candle_core::bail!("blur pool: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, Shape::from((n, c, h.div_ceil(2), w.div_ceil(2)))))
    }
}

/// The fused blur on a contiguous `[N, C, H, W]` f32/f64 CPU tensor (no autograd).
pub fn blur_pool_fused(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&BlurPool)
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
