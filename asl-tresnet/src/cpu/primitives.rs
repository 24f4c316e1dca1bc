//! The primitives both engines are built of: the `gemm` matrix product, the im2col of a 3x3
//! "same" convolution, and the per-plane ops on channel-major activations (space-to-depth,
//! 2x2 ceil-mode average pooling, the anti-aliasing blur).

use num_traits::Float;
use rayon::prelude::*;

use super::buffers::{Act, Pool};

/// `dst[m x n] (+)= lhs[m x k] * rhs[k x n]`, row-major with the given row strides, unit column
/// strides.
///
/// # Safety
/// `dst` must be valid for writes (and reads with `accumulate`) of `m` rows of `n` elements at
/// row stride `dst.1`, `rhs` valid for reads of `k` rows of `n` at stride `rhs.1`, and neither
/// may overlap the other or `lhs`.
pub(crate) unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    accumulate: bool,
    lhs: &[f32],
    rhs: (*const f32, usize),
    parallelism: gemm::Parallelism,
) {
    assert!(lhs.len() >= m * k);
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        accumulate,
        lhs.as_ptr(),
        1,
        k as isize,
        rhs.0,
        1,
        rhs.1 as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    )
}

/// Columns `j0..j1` of the im2col matrix of a 3x3, padding-1 convolution of a CNHW
/// activation, written to `out` as `[c * 9, j1 - j0]`: row `ch * 9 + ky * 3 + kx`, column
/// `img * h * w + y * w + x` holds channel `ch` of image `img` at `(y + ky - 1, x + kx - 1)`,
/// zero outside the image. Every element is written (no zero-fill first). Parallel over
/// channels when the range is the whole matrix.
pub(crate) fn im2col3x3(x: &Act, out: &mut [f32], j0: usize, j1: usize) {
    let (n, h, w) = (x.n, x.h, x.w);
    let plane = h * w;
    let width = j1 - j0;
    let channel = |ch: usize, dst: &mut [f32]| {
        for tap in 0..9 {
            let (ky, kx) = (tap / 3, tap % 3);
            let d = &mut dst[tap * width..][..width];
            // one image row segment at a time
            let mut j = j0;
            while j < j1 {
                let (img, rem) = (j / plane, j % plane);
                let (y, x0) = (rem / w, rem % w);
                let len = (w - x0).min(j1 - j);
                let seg = &mut d[j - j0..][..len];
                // source row y + ky - 1; outside the image it is the zero padding
                let sy = y + ky;
                if sy == 0 || sy > h {
                    seg.fill(0.0);
                } else {
                    // source column x + kx - 1 is inside for lo <= x < hi
                    let lo = x0.max(1 - kx.min(1));
                    let hi = (x0 + len).min(w + 1 - kx.max(1));
                    let src = &x.data[(ch * n + img) * plane + (sy - 1) * w..][..w];
                    seg[..lo - x0].fill(0.0);
                    seg[lo - x0..hi - x0].copy_from_slice(&src[lo + kx - 1..hi + kx - 1]);
                    seg[hi - x0..].fill(0.0);
                }
                j += len;
            }
        }
    };
    let chunks = out[..x.c * 9 * width].chunks_mut(9 * width);
    if width == n * plane {
        chunks
            .collect::<Vec<_>>()
            .into_par_iter()
            .enumerate()
            .for_each(|(ch, dst)| channel(ch, dst));
    } else {
        chunks.enumerate().for_each(|(ch, dst)| channel(ch, dst));
    }
}

/// `AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)` on every plane.
pub(crate) fn avg_pool_2x2_ceil(x: &Act, pool: &mut Pool) -> Act {
    let (h, w) = (x.h, x.w);
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = pool.take(x.c * x.n * ho * wo);
    out.par_chunks_mut(ho * wo)
        .zip(x.data.par_chunks(h * w))
        .for_each(|(o, src)| {
            for oy in 0..ho {
                let rows = &src[2 * oy * w..(2 * oy + 2).min(h) * w];
                let nr = rows.len() / w;
                for ox in 0..wo {
                    let cols = 2 * ox..(2 * ox + 2).min(w);
                    let count = (nr * cols.len()) as f32;
                    let sum: f32 = rows
                        .chunks_exact(w)
                        .map(|r| r[cols.clone()].iter().sum::<f32>())
                        .sum();
                    o[oy * wo + ox] = sum / count;
                }
            }
        });
    Act {
        data: out,
        c: x.c,
        n: x.n,
        h: ho,
        w: wo,
    }
}

/// `[N, C, H, W]` pixels to the CNHW space-to-depth activation `[16 C, N, H/4, W/4]`, channel
/// `(dy * 4 + dx) * C + c` as timm's `SpaceToDepth`.
pub(crate) fn space_to_depth_cnhw(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    pool: &mut Pool,
) -> Act {
    let (ho, wo) = (h / 4, w / 4);
    let mut out = pool.take(16 * c * n * ho * wo);
    out.par_chunks_mut(ho * wo).enumerate().for_each(|(p, o)| {
        let (ch_out, img) = (p / n, p % n);
        let (d, ch) = (ch_out / c, ch_out % c);
        let (dy, dx) = (d / 4, d % 4);
        let src = &x[(img * c + ch) * h * w..][..h * w];
        for y in 0..ho {
            let srow = &src[(4 * y + dy) * w..][..w];
            for (xx, v) in o[y * wo..(y + 1) * wo].iter_mut().enumerate() {
                *v = srow[4 * xx + dx];
            }
        }
    });
    Act {
        data: out,
        c: 16 * c,
        n,
        h: ho,
        w: wo,
    }
}

/// PyTorch's reflect index for one element of padding: -1 -> 1, n -> n - 2.
#[inline(always)]
pub(crate) fn reflect(i: isize, n: usize) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im2col_tiles_are_columns_of_the_whole() {
        let (c, n, h, w) = (3, 2, 5, 7);
        let data: Vec<f32> = (0..c * n * h * w).map(|i| i as f32 + 1.0).collect();
        let x = Act { data, c, n, h, w };
        let nl = n * h * w;
        let mut whole = vec![f32::NAN; c * 9 * nl];
        im2col3x3(&x, &mut whole, 0, nl);
        // spot checks of the definition: centre tap is the input, corner taps see the padding
        assert_eq!(whole[4 * nl..5 * nl], x.data[..nl]);
        assert_eq!(whole[0], 0.0); // tap (0, 0) at (0, 0) reads (-1, -1)
        assert_eq!(whole[w + 1], x.data[0]); // tap (0, 0) at (1, 1) reads (0, 0)
        assert_eq!(whole[8 * nl + w - 1], 0.0); // tap (2, 2) at (0, w-1) reads (1, w)
        for (j0, j1) in [(0, 1), (3, 40), (33, 70), (69, 70), (0, nl)] {
            let width = j1 - j0;
            let mut tile = vec![f32::NAN; c * 9 * width];
            im2col3x3(&x, &mut tile, j0, j1);
            for r in 0..c * 9 {
                assert_eq!(
                    tile[r * width..(r + 1) * width],
                    whole[r * nl + j0..r * nl + j1],
                    "row {r}, columns {j0}..{j1}"
                );
            }
        }
    }
}
