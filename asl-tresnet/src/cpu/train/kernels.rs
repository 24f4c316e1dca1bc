//! The training engine's matrix products and the adjoints of the forward primitives
//! (col2im, the blur's and the pooling's backward), on the recycled buffers.

use rayon::prelude::*;

use super::recycle::{take, take_zeroed};
use crate::cpu::buffers::Act;
use crate::cpu::primitives::{im2col3x3, reflect};
use crate::cpu::winograd::{Epilogue, Winograd};

/// `dst[m x n] = A[m x k] · B[k x n]`, all row-major; `a_t`: `a` holds `A^T` (`[k x m]`),
/// `b_t`: `b` holds `B^T` (`[n x k]`).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst[..m * n].fill(0.0);
        return;
    }
    let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
    let threads = rayon::current_num_threads();
    let parallelism = if m * n * k > 1 << 15 && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index the strides reach; the three slices are
    // distinct borrows, so they do not overlap.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Pieces the reduction of [`matmul_split_k`] is cut into: fixed (not the thread count), so
/// the partial sums add up in the same order on every machine.
const K_SPLIT: usize = 8;

/// `dst[m x n] = A · B^T` for `a` `[m x k]` and `b` `[n x k]` (both row-major), with the long
/// reduction (`k`: a weight gradient sums over every pixel of the batch) cut into
/// [`K_SPLIT`] pieces computed in parallel and summed in order. The output is small, so this
/// parallelises where splitting the output would not.
pub(super) fn matmul_split_k(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= n * k);
    let piece = k.div_ceil(K_SPLIT).max(1);
    let partials: Vec<Vec<f32>> = (0..k.div_ceil(piece))
        .into_par_iter()
        .map(|p| {
            let (k0, k1) = (p * piece, ((p + 1) * piece).min(k));
            let mut part = vec![0f32; m * n];
            // SAFETY: A's rows are read at k0..k1 (< k) of rows of length k, B's likewise;
            // `part` holds m * n values; nothing overlaps.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k1 - k0,
                    part.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr().add(k0),
                    1,
                    k as isize,
                    b.as_ptr().add(k0),
                    k as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
            part
        })
        .collect();
    let out = &mut dst[..m * n];
    out.fill(0.0);
    for part in &partials {
        out.iter_mut().zip(part).for_each(|(o, p)| *o += p);
    }
}

/// `Σ f(v)` over `x`, accumulated in 16 f32 lanes (vectorised) per block of 4096 values, the
/// blocks summed in f64.
#[inline]
pub(super) fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    x.chunks(4096)
        .map(|block| {
            let mut acc = [0f32; 16];
            let mut it = block.chunks_exact(16);
            for c in &mut it {
                for i in 0..16 {
                    acc[i] += f(c[i]);
                }
            }
            let rest: f32 = it.remainder().iter().map(|&v| f(v)).sum();
            acc.iter().map(|&v| v as f64).sum::<f64>() + rest as f64
        })
        .sum()
}

/// `Σ a·b`, accumulated as [`lane_sum`].
#[inline]
pub(super) fn lane_dot(a: &[f32], b: &[f32]) -> f64 {
    a.chunks(4096)
        .zip(b.chunks(4096))
        .map(|(a, b)| {
            let mut acc = [0f32; 16];
            let (mut ia, mut ib) = (a.chunks_exact(16), b.chunks_exact(16));
            for (ca, cb) in (&mut ia).zip(&mut ib) {
                for i in 0..16 {
                    acc[i] += ca[i] * cb[i];
                }
            }
            let rest: f32 = ia
                .remainder()
                .iter()
                .zip(ib.remainder())
                .map(|(x, y)| x * y)
                .sum();
            acc.iter().map(|&v| v as f64).sum::<f64>() + rest as f64
        })
        .sum()
}

/// The im2col matrix `[c * 9, n * h * w]` of a 3x3 convolution's input.
pub(super) fn cols3x3(x: &Act) -> Vec<f32> {
    let m = x.n * x.plane();
    let mut cols = take(x.c * 9 * m);
    im2col3x3(x, &mut cols, 0, m);
    cols
}

/// `y` `[c_out, n, h, w]` = the stride-1, padding-1 3x3 convolution of `x` with `weight`
/// `[c_out, c_in, 3, 3]`, by Winograd F(2x2, 3x3) (the transform of the weights is redone per
/// call: they change every step).
pub(super) fn winograd_conv(weight: &[f32], (c_out, c_in): (usize, usize), x: &Act, y: &mut [f32]) {
    winograd_run(&Winograd::new(weight, c_out, c_in), x, y)
}

/// `y` = `wg`'s convolution of `x`, no bias, no activation.
pub(super) fn winograd_run(wg: &Winograd, x: &Act, y: &mut [f32]) {
    let bias = vec![0f32; wg.c_out()];
    let ep = Epilogue {
        bias: &bias,
        accumulate: false,
        act: None,
    };
    wg.run(&x.data, (x.n, x.h, x.w), y, ep);
}

/// Adds the columns `dcols` `[c * 9, n * h * w]` back onto the input positions they were read
/// from (the adjoint of [`cols3x3`]): `dx` `[c, n, h, w]`.
pub(super) fn col2im3x3(dcols: &[f32], c: usize, n: usize, h: usize, w: usize) -> Vec<f32> {
    let plane = h * w;
    let m = n * plane;
    let mut dx = take_zeroed(c * m);
    dx.par_chunks_mut(m).enumerate().for_each(|(ch, d)| {
        for tap in 0..9 {
            let (ky, kx) = (tap / 3, tap % 3);
            let src = &dcols[(ch * 9 + tap) * m..][..m];
            for img in 0..n {
                for yo in 0..h {
                    // column (img, yo, xo) read input (yo + ky - 1, xo + kx - 1)
                    let sy = yo + ky;
                    if sy == 0 || sy > h {
                        continue;
                    }
                    let lo = 1 - kx.min(1); // first xo with xo + kx - 1 >= 0
                    let hi = (w + 1 - kx).min(w); // xo < hi keeps xo + kx - 1 < w
                    let s = &src[img * plane + yo * w..][..w];
                    let drow = &mut d[img * plane + (sy - 1) * w..][..w];
                    for xo in lo..hi {
                        drow[xo + kx - 1] += s[xo];
                    }
                }
            }
        }
    });
    dx
}

/// The blur's adjoint: `dout` `[planes, ceil(h/2), ceil(w/2)]` to `dx` `[planes, h, w]`.
pub(super) fn blur_backward(dout: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let taps = [1f32 / 16.0, 2.0 / 16.0, 1.0 / 16.0];
    let mut dx = take_zeroed(planes * h * w);
    dx.par_chunks_mut(h * w)
        .zip(dout.par_chunks(ho * wo))
        .for_each(|(d, g)| {
            let mut row = vec![0f32; w];
            for oy in 0..ho {
                // the horizontal pass of output row oy, scattered to input columns
                row.fill(0.0);
                for ox in 0..wo {
                    let v = g[oy * wo + ox];
                    for (b, t) in taps.iter().enumerate() {
                        row[reflect(2 * ox as isize + b as isize - 1, w)] += t * v;
                    }
                }
                for (a, t) in [1f32, 2.0, 1.0].iter().enumerate() {
                    let y = reflect(2 * oy as isize + a as isize - 1, h);
                    for (dv, rv) in d[y * w..(y + 1) * w].iter_mut().zip(&row) {
                        *dv += t * rv;
                    }
                }
            }
        });
    dx
}

/// The adjoint of `AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`.
pub(super) fn avg_pool_backward(dout: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let mut dx = take(planes * h * w);
    dx.par_chunks_mut(h * w)
        .zip(dout.par_chunks(ho * wo))
        .for_each(|(d, g)| {
            for y in 0..h {
                let ny = if 2 * (y / 2) + 1 < h { 2 } else { 1 };
                for x in 0..w {
                    let nx = if 2 * (x / 2) + 1 < w { 2 } else { 1 };
                    d[y * w + x] = g[(y / 2) * wo + x / 2] / (ny * nx) as f32;
                }
            }
        });
    dx
}
