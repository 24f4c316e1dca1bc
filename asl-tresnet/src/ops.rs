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

/// The blur of every `h x w` plane of `x` into the matching `ceil(h/2) x ceil(w/2)` plane of
/// `out`, rayon-parallel over planes.
pub(crate) fn blur_planes_into<T: Float + Send + Sync>(x: &[T], out: &mut [T], h: usize, w: usize) {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let two = T::one() + T::one();
    let sixteenth = T::one() / (two * two * two * two);
    out.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, src)| {
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
}

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
