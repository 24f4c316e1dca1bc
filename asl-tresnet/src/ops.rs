//! Fused CPU ops of the inference path.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// The anti-aliasing blur (reflect pad 1, `[1 2 1]^T [1 2 1] / 16`, stride 2) in one pass over
/// each channel plane, rayon-parallel over planes: no padded copy, no im2col. Inference only
/// (no backward); the training path uses [`crate::model::blur_pool`].
struct BlurPool;

/// PyTorch's reflect index for one element of padding: -1 -> 1, n -> n - 2.
#[inline(always)]
fn reflect(i: isize, n: usize) -> usize {
    if i < 0 {
        (-i) as usize
    } else if i as usize >= n {
        2 * n - 2 - i as usize
    } else {
        i as usize
    }
}

fn blur_planes<T: Float + Send + Sync>(x: &[T], planes: usize, h: usize, w: usize) -> Vec<T> {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = vec![T::zero(); planes * ho * wo];
    let two = T::one() + T::one();
    let sixteenth = T::one() / (two * two * two * two);
    out.par_chunks_mut(ho * wo).enumerate().for_each(|(p, o)| {
        let src = &x[p * h * w..(p + 1) * h * w];
        let mut col = vec![T::zero(); w];
        for oy in 0..ho {
            let y = 2 * oy as isize;
            let (r0, r1, r2) = (reflect(y - 1, h), reflect(y, h), reflect(y + 1, h));
            let (a, b, c) = (
                &src[r0 * w..][..w],
                &src[r1 * w..][..w],
                &src[r2 * w..][..w],
            );
            for i in 0..w {
                col[i] = a[i] + two * b[i] + c[i];
            }
            let row = &mut o[oy * wo..(oy + 1) * wo];
            for (ox, v) in row.iter_mut().enumerate() {
                let xx = 2 * ox as isize;
                let (c0, c1, c2) = (reflect(xx - 1, w), reflect(xx, w), reflect(xx + 1, w));
                *v = (col[c0] + two * col[c1] + col[c2]) * sixteenth;
            }
        }
    });
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

/// Columns of a 3x3, stride-1, padding-1 convolution for the whole batch:
/// `[N, C, H, W] -> [C * 9, N * H * W]`, row `c * 9 + ky * 3 + kx` holding channel `c` of every
/// image shifted by `(ky - 1, kx - 1)`, zeros outside. One matrix product then covers the batch.
/// Rayon-parallel over channels, whole row segments copied at a time.
struct Im2Col3x3;

fn im2col_planes(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let plane = h * w;
    let row = n * plane; // one row of the column matrix
    let mut out = vec![0f32; c * 9 * row];
    out.par_chunks_mut(9 * row)
        .enumerate()
        .for_each(|(ch, dst)| {
            for img in 0..n {
                let src = &x[(img * c + ch) * plane..][..plane];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let d = &mut dst[(ky * 3 + kx) * row + img * plane..][..plane];
                        // out[y][x] = src[y + ky - 1][x + kx - 1] where that is inside the image
                        let (x0, x1) = (kx.saturating_sub(1), (w + kx).saturating_sub(1).min(w));
                        let (ox0, ox1) = (1usize.saturating_sub(kx), w - kx.saturating_sub(1));
                        for y in 0..h {
                            let sy = y + ky;
                            if sy == 0 || sy > h {
                                continue; // the zero padding row
                            }
                            let s_row = &src[(sy - 1) * w..][..w];
                            d[y * w + ox0..y * w + ox1].copy_from_slice(&s_row[x0..x1]);
                        }
                    }
                }
            }
        });
    out
}

impl CustomOp1 for Im2Col3x3 {
    fn name(&self) -> &'static str {
        "tresnet-im2col-3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("im2col: input must be contiguous".into()))?;
        match s {
            CpuStorage::F32(v) => Ok((
                CpuStorage::F32(im2col_planes(&v[start..end], n, c, h, w)),
                Shape::from((c * 9, n * h * w)),
            )),
            other => candle_core::bail!("im2col: f32 only, got {:?}", other.dtype()),
        }
    }
}

/// Adds a per-channel bias and applies an optional LeakyReLU, in place, on `[N, O, L]`.
struct BiasLeaky<'a> {
    bias: &'a [f32],
    slope: Option<f32>,
}

impl candle_core::InplaceOp1 for BiasLeaky<'_> {
    fn name(&self) -> &'static str {
        "tresnet-bias-leaky"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let (_, o, len) = l.shape().dims3()?;
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("bias: output must be contiguous".into()))?;
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("bias + leaky relu: f32 only");
        };
        v[start..end]
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, row)| {
                let b = self.bias[i % o];
                match self.slope {
                    Some(slope) => row.iter_mut().for_each(|v| {
                        let t = *v + b;
                        *v = if t >= 0.0 { t } else { t * slope };
                    }),
                    None => row.iter_mut().for_each(|v| *v += b),
                }
            });
        Ok(())
    }
}

/// A stride-1 convolution with "same" padding for 1x1 and 3x3 kernels as one matrix product
/// over the whole batch (after a parallel im2col for 3x3), then bias and LeakyReLU fused in
/// place: the inference path's convolution. `x`: `[N, C, H, W]` f32; `weight`: `[O, C, k, k]`;
/// `bias`: `O` values.
pub fn conv_bias_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &[f32],
    slope: Option<f64>,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (o, _, k, _) = weight.dims4()?;
    let x = x.contiguous()?;
    let cols = match (k, n) {
        (1, 1) => x.reshape((c, h * w))?,
        (1, _) => x
            .reshape((n, c, h * w))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((c, n * h * w))?,
        (3, _) => x.apply_op1_no_bwd(&Im2Col3x3)?,
        _ => candle_core::bail!("conv_bias_act: kernel {k} not supported"),
    };
    // [O, K] x [K, N * L] -> [O, N * L]
    let y = weight
        .reshape((o, c * k * k))?
        .matmul(&cols)?
        .reshape((1, o, n * h * w))?;
    y.inplace_op1(&BiasLeaky {
        bias,
        slope: slope.map(|s| s as f32),
    })?;
    let y = y.reshape((o, n, h, w))?;
    if n == 1 {
        y.reshape((1, o, h, w))
    } else {
        y.transpose(0, 1)?.contiguous()
    }
}
