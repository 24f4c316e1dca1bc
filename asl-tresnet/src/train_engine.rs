//! The CPU f32 training step: TResNet's forward pass in training mode (BatchNorm on batch
//! statistics, running statistics updated as candle's `BatchNorm` does) and its hand-written
//! backward pass, on channel-major (C, N, H, W) activations.
//!
//! Candle's autograd runs every op of the training path as a separate pass over fresh memory,
//! and its convolution backward uses a direct loop; here each layer is one or two passes:
//! - convolution (every TResNet convolution is stride 1, "same" padding, 1x1 or 3x3): forward
//!   `Y = W · cols(X)` as one matrix product over the whole batch; backward `dW = dY · cols(X)^T`
//!   and `dX = col2im(W^T · dY)` (1x1: `cols(X) = X`);
//! - BatchNorm + LeakyReLU fused, the normalised activation kept for the backward pass;
//! - the anti-aliasing blur, average pooling, SE and residual sums with their exact adjoints.
//!
//! The result is the same as candle's autograd on [`crate::TResNet::forward_t`] in training mode
//! (a test compares logits, every gradient and the running statistics).

use std::rc::Rc;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};
use candle_nn::{BatchNorm, Conv2d};
use rayon::prelude::*;

use crate::infer::{avg_pool_2x2_ceil, im2col3x3, space_to_depth_cnhw, tensor_f32, Act, Pool};
use crate::model::{Block, ConvBn, Downsample, Head, SqueezeExcite};

/// `dst[m x n] = A[m x k] · B[k x n]`, all row-major; `a_t`: `a` holds `A^T` (`[k x m]`),
/// `b_t`: `b` holds `B^T` (`[n x k]`).
#[allow(clippy::too_many_arguments)]
fn matmul(
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
fn matmul_split_k(dst: &mut [f32], (m, n, k): (usize, usize, usize), a: &[f32], b: &[f32]) {
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

/// Gradients of the parameters, summed over the layers that use them.
struct Grads {
    store: GradStore,
}

impl Grads {
    fn put(&mut self, param: &Tensor, grad: Vec<f32>) -> Result<()> {
        let g = Tensor::from_vec(grad, param.shape(), &Device::Cpu)?;
        let g = match self.store.remove(param) {
            Some(old) => (old + g)?,
            None => g,
        };
        self.store.insert(param, g);
        Ok(())
    }
}

/// What a convolution + BatchNorm layer keeps for its backward pass.
struct ConvBnSaved {
    input: Rc<Act>,
    /// A 3x3 layer's im2col matrix, kept from the forward pass for the weight gradient (not
    /// with Winograd, which transforms the input again in the backward pass).
    cols: Option<Vec<f32>>,
    /// The normalised convolution output `[c_out, n * h * w]`.
    xhat: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    weight: Vec<f32>,
    /// Output sides before the blur.
    h: usize,
    w: usize,
}

fn conv_geometry(conv: &Conv2d) -> Result<(usize, usize, usize)> {
    let (c_out, c_in, k, k2) = conv.weight().dims4()?;
    let cfg = conv.config();
    if k != k2 || !(k == 1 || k == 3) || cfg.stride != 1 || cfg.padding != k / 2 {
        candle_core::bail!("training engine: unsupported convolution {k}x{k2}, {cfg:?}");
    }
    Ok((c_out, c_in, k))
}

fn bn_parts(bn: &Option<BatchNorm>) -> Result<&BatchNorm> {
    bn.as_ref()
        .ok_or_else(|| candle_core::Error::Msg("training engine: the layer is folded".into()))
}

thread_local! {
    /// Time per kind of work, while [`train_step_profiled`] runs.
    static PROFILE: std::cell::RefCell<Option<Vec<(&'static str, std::time::Duration)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, adding its time to `kind` when profiling.
fn timed<R>(kind: &'static str, f: impl FnOnce() -> R) -> R {
    if PROFILE.with(|p| p.borrow().is_none()) {
        return f();
    }
    let start = std::time::Instant::now();
    let r = f();
    record(kind, start);
    r
}

/// Adds the time since `start` to `kind` when profiling.
fn record(kind: &'static str, start: std::time::Instant) {
    PROFILE.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            crate::infer::add_time(p, kind, start.elapsed());
        }
    });
}

thread_local! {
    /// Buffers of earlier layers and steps, handed out again (best fit) so that a step
    /// neither zeroes nor faults in fresh memory for every activation.
    static FREE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `len` values with unspecified contents (a recycled one when one is large
/// enough).
fn take(len: usize) -> Vec<f32> {
    let reused = FREE.with(|f| {
        let mut f = f.borrow_mut();
        let best = f
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        best.map(|i| f.swap_remove(i))
    });
    match reused {
        Some(mut b) => {
            b.truncate(len);
            b.resize(len, 0.0);
            b
        }
        None => vec![0.0; len],
    }
}

/// A buffer of `len` zeros.
fn take_zeroed(len: usize) -> Vec<f32> {
    let mut b = take(len);
    b.fill(0.0);
    b
}

/// Returns a buffer for reuse.
fn give(b: Vec<f32>) {
    if b.capacity() >= 1024 {
        FREE.with(|f| f.borrow_mut().push(b));
    }
}

/// Returns an activation's buffer when this was its last holder.
fn give_act(a: Rc<Act>) {
    if let Ok(a) = Rc::try_unwrap(a) {
        give(a.data);
    }
}

/// `Σ f(v)` over `x`, accumulated in 16 f32 lanes (vectorised) per block of 4096 values, the
/// blocks summed in f64.
#[inline]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
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
fn lane_dot(a: &[f32], b: &[f32]) -> f64 {
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
fn cols3x3(x: &Act) -> Vec<f32> {
    let m = x.n * x.plane();
    let mut cols = take(x.c * 9 * m);
    im2col3x3(x, &mut cols, 0, m);
    cols
}

/// `y` `[c_out, n, h, w]` = the stride-1, padding-1 3x3 convolution of `x` with `weight`
/// `[c_out, c_in, 3, 3]`, by Winograd F(2x2, 3x3) (the transform of the weights is redone per
/// call: they change every step).
fn winograd_conv(weight: &[f32], (c_out, c_in): (usize, usize), x: &Act, y: &mut [f32]) {
    winograd_run(&crate::winograd::Winograd::new(weight, c_out, c_in), x, y)
}

/// `y` = `wg`'s convolution of `x`, no bias, no activation.
fn winograd_run(wg: &crate::winograd::Winograd, x: &Act, y: &mut [f32]) {
    let bias = vec![0f32; wg.c_out()];
    let ep = crate::winograd::Epilogue {
        bias: &bias,
        accumulate: false,
        act: None,
    };
    wg.run(&x.data, (x.n, x.h, x.w), y, ep);
}

/// Adds the columns `dcols` `[c * 9, n * h * w]` back onto the input positions they were read
/// from (the adjoint of [`cols3x3`]): `dx` `[c, n, h, w]`.
fn col2im3x3(dcols: &[f32], c: usize, n: usize, h: usize, w: usize) -> Vec<f32> {
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
fn blur_backward(dout: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let reflect = |i: isize, n: usize| -> usize {
        if i < 0 {
            (-i) as usize
        } else if i as usize >= n {
            2 * n - 2 - i as usize
        } else {
            i as usize
        }
    };
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
fn avg_pool_backward(dout: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
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

/// Updates a BatchNorm's running statistics from a batch's mean and biased variance over `m`
/// values, as candle's `BatchNorm::forward_train` (PyTorch): unbiased variance, momentum.
fn update_running(bn: &BatchNorm, mean: &[f32], var: &[f32], m: usize) -> Result<()> {
    let mom = bn.momentum();
    let unbias = m as f64 / (m as f64 - 1.0).max(1.0);
    let rm = Var::from_tensor(bn.running_mean())?;
    let rv = Var::from_tensor(bn.running_var())?;
    let old_m = tensor_f32(rm.as_tensor())?;
    let old_v = tensor_f32(rv.as_tensor())?;
    let new_m: Vec<f32> = old_m
        .iter()
        .zip(mean)
        .map(|(&o, &b)| (o as f64 * (1.0 - mom) + b as f64 * mom) as f32)
        .collect();
    let new_v: Vec<f32> = old_v
        .iter()
        .zip(var)
        .map(|(&o, &b)| (o as f64 * (1.0 - mom) + b as f64 * mom * unbias) as f32)
        .collect();
    let dev = rm.as_tensor().device().clone();
    rm.set(&Tensor::from_vec(new_m, mean.len(), &dev)?)?;
    rv.set(&Tensor::from_vec(new_v, var.len(), &dev)?)?;
    Ok(())
}

impl ConvBn {
    fn train_forward(&self, x: Rc<Act>) -> Result<(Rc<Act>, ConvBnSaved)> {
        let (c_out, c_in, k) = conv_geometry(&self.conv)?;
        if x.c != c_in {
            candle_core::bail!(
                "training engine: {} channels into a {c_in}-channel conv",
                x.c
            );
        }
        let bn = bn_parts(&self.bn)?;
        let (gamma_t, beta_t) = bn
            .weight_and_bias()
            .ok_or_else(|| candle_core::Error::Msg("BatchNorm without affine".into()))?;
        let (gamma, beta) = (tensor_f32(gamma_t)?, tensor_f32(beta_t)?);
        let weight = tensor_f32(self.conv.weight())?;
        let m = x.n * x.plane();
        let kk = c_in * k * k;
        let mut y = take(c_out * m);
        let cols = if k == 1 {
            timed("conv forward (1x1 gemm)", || {
                matmul(&mut y, (c_out, m, kk), &weight, false, &x.data, false)
            });
            None
        } else if crate::winograd::enabled() {
            timed("conv forward (3x3 Winograd)", || {
                winograd_conv(&weight, (c_out, c_in), &x, &mut y)
            });
            None
        } else {
            let cols = timed("im2col", || cols3x3(&x));
            timed("conv forward (3x3 gemm)", || {
                matmul(&mut y, (c_out, m, kk), &weight, false, &cols, false)
            });
            Some(cols)
        };
        // batch statistics, normalisation (in place: y becomes xhat), affine, activation
        let eps = bn.eps();
        let bn_start = std::time::Instant::now();
        let stats: Vec<(f32, f32)> = y
            .par_chunks(m)
            .map(|row| {
                let mean = lane_sum(row, |v| v) / m as f64;
                let mf = mean as f32;
                let var = lane_sum(row, |v| (v - mf) * (v - mf)) / m as f64;
                (mf, var as f32)
            })
            .collect();
        let inv_std: Vec<f32> = stats
            .iter()
            .map(|&(_, v)| (1.0 / (v as f64 + eps).sqrt()) as f32)
            .collect();
        let slope = self.slope.map(|s| s as f32);
        let mut out = take(c_out * m);
        y.par_chunks_mut(m)
            .zip(out.par_chunks_mut(m))
            .enumerate()
            .for_each(|(ch, (row, o))| {
                let (mean, is) = (stats[ch].0, inv_std[ch]);
                let (g, b) = (gamma[ch], beta[ch]);
                for (v, ov) in row.iter_mut().zip(o.iter_mut()) {
                    *v = (*v - mean) * is;
                    let z = g * *v + b;
                    *ov = match slope {
                        Some(s) if z < 0.0 => s * z,
                        _ => z,
                    };
                }
            });
        let means: Vec<f32> = stats.iter().map(|s| s.0).collect();
        let vars: Vec<f32> = stats.iter().map(|s| s.1).collect();
        update_running(bn, &means, &vars, m)?;
        record("batchnorm + act forward", bn_start);
        let (h, w) = (x.h, x.w);
        let out = if self.blur {
            let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
            let mut blurred = take(c_out * x.n * ho * wo);
            timed("blur forward", || {
                crate::ops::blur_planes_into(&out, &mut blurred, h, w)
            });
            give(out);
            Act {
                data: blurred,
                c: c_out,
                n: x.n,
                h: ho,
                w: wo,
            }
        } else {
            Act {
                data: out,
                c: c_out,
                n: x.n,
                h,
                w,
            }
        };
        let saved = ConvBnSaved {
            input: x,
            cols,
            xhat: y,
            inv_std,
            gamma,
            weight,
            h,
            w,
        };
        Ok((Rc::new(out), saved))
    }

    /// Backward from the gradient of this layer's output; returns the input's gradient (`None`
    /// when `need_input` is false: the stem, whose input is the image).
    fn train_backward(
        &self,
        dout: Vec<f32>,
        s: ConvBnSaved,
        need_input: bool,
        grads: &mut Grads,
    ) -> Result<Option<Vec<f32>>> {
        let (c_out, c_in, k) = conv_geometry(&self.conv)?;
        let n = s.input.n;
        let m = n * s.h * s.w;
        let mut dz = if self.blur {
            let d = timed("blur backward", || {
                blur_backward(&dout, c_out * n, s.h, s.w)
            });
            give(dout);
            d
        } else {
            dout
        };
        let bn = bn_parts(&self.bn)?;
        let (gamma_t, beta_t) = bn
            .weight_and_bias()
            .ok_or_else(|| candle_core::Error::Msg("BatchNorm without affine".into()))?;
        let beta = tensor_f32(beta_t)?;
        let slope = self.slope.map(|sl| sl as f32);
        // activation and BatchNorm backward, per channel: dz becomes dy (the conv output grad)
        let bn_start = std::time::Instant::now();
        let sums: Vec<(f32, f32)> = dz
            .par_chunks_mut(m)
            .zip(s.xhat.par_chunks(m))
            .enumerate()
            .map(|(ch, (d, xh))| {
                let (g, b) = (s.gamma[ch], beta[ch]);
                if let Some(sl) = slope {
                    for (dv, &xv) in d.iter_mut().zip(xh) {
                        if g * xv + b < 0.0 {
                            *dv *= sl;
                        }
                    }
                }
                let dbeta = lane_sum(d, |v| v);
                let dgamma = lane_dot(d, xh);
                let (mb, mg) = ((dbeta / m as f64) as f32, (dgamma / m as f64) as f32);
                let scale = g * s.inv_std[ch];
                for (dv, &xv) in d.iter_mut().zip(xh) {
                    *dv = scale * (*dv - mb - xv * mg);
                }
                (dgamma as f32, dbeta as f32)
            })
            .collect();
        record("batchnorm + act backward", bn_start);
        grads.put(gamma_t, sums.iter().map(|v| v.0).collect())?;
        grads.put(beta_t, sums.iter().map(|v| v.1).collect())?;
        let dy = dz;
        let kk = c_in * k * k;
        let dw = match s.cols {
            None if k == 3 => timed("conv weight grad (3x3 Winograd)", || {
                crate::winograd::weight_grad(&dy, &s.input.data, (c_out, c_in), (n, s.h, s.w))
            }),
            None => timed("conv weight grad (1x1 gemm)", || {
                let mut dw = vec![0f32; c_out * kk];
                matmul_split_k(&mut dw, (c_out, kk, m), &dy, &s.input.data);
                dw
            }),
            Some(cols) => {
                let mut dw = vec![0f32; c_out * kk];
                timed("conv weight grad (3x3 gemm)", || {
                    matmul_split_k(&mut dw, (c_out, kk, m), &dy, &cols)
                });
                give(cols);
                dw
            }
        };
        grads.put(self.conv.weight(), dw)?;
        give(s.xhat);
        give_act(s.input);
        if !need_input {
            give(dy);
            return Ok(None);
        }
        if k == 3 && crate::winograd::enabled() {
            // the input gradient of a stride-1 3x3 convolution is the 3x3 convolution of dy
            // with the kernel transposed (in and out channels swapped) and flipped
            let dy_act = Act {
                data: dy,
                c: c_out,
                n,
                h: s.h,
                w: s.w,
            };
            let mut dx = take(c_in * m);
            timed("conv input grad (3x3 Winograd)", || {
                let wg = crate::winograd::Winograd::for_input_grad(&s.weight, c_out, c_in);
                winograd_run(&wg, &dy_act, &mut dx)
            });
            give(dy_act.data);
            return Ok(Some(dx));
        }
        let mut dcols = take(kk * m);
        let kind = if k == 1 {
            "conv input grad (1x1 gemm)"
        } else {
            "conv input grad (3x3 gemm)"
        };
        timed(kind, || {
            matmul(&mut dcols, (kk, m, c_out), &s.weight, true, &dy, false)
        });
        give(dy);
        Ok(Some(if k == 1 {
            dcols
        } else {
            let dx = timed("col2im", || col2im3x3(&dcols, c_in, n, s.h, s.w));
            give(dcols);
            dx
        }))
    }
}

/// What SE keeps for its backward pass.
struct SeSaved {
    input: Rc<Act>,
    means: Vec<f32>,
    hidden: Vec<f32>,
    gates: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
}

impl SqueezeExcite {
    fn train_forward(&self, x: Rc<Act>) -> Result<(Rc<Act>, SeSaved)> {
        let (c, n, plane) = (x.c, x.n, x.plane());
        let w1 = tensor_f32(self.fc1.weight())?;
        let w2 = tensor_f32(self.fc2.weight())?;
        let bias = |conv: &Conv2d| -> Result<Vec<f32>> {
            tensor_f32(
                conv.bias()
                    .ok_or_else(|| candle_core::Error::Msg("SE convolution without bias".into()))?,
            )
        };
        let (b1, b2) = (bias(&self.fc1)?, bias(&self.fc2)?);
        let r = b1.len();
        let means: Vec<f32> = x
            .data
            .par_chunks(plane)
            .map(|p| (lane_sum(p, |v| v) / plane as f64) as f32)
            .collect();
        // hidden [r, n] = relu(W1 [r, c] · means [c, n] + b1)
        let mut hidden = vec![0f32; r * n];
        matmul(&mut hidden, (r, n, c), &w1, false, &means, false);
        for (j, row) in hidden.chunks_exact_mut(n).enumerate() {
            row.iter_mut().for_each(|v| *v = (*v + b1[j]).max(0.0));
        }
        let mut gates = vec![0f32; c * n];
        matmul(&mut gates, (c, n, r), &w2, false, &hidden, false);
        for (ch, row) in gates.chunks_exact_mut(n).enumerate() {
            row.iter_mut()
                .for_each(|v| *v = 1.0 / (1.0 + (-(*v + b2[ch])).exp()));
        }
        let mut out = take(x.data.len());
        out.par_chunks_mut(plane)
            .zip(x.data.par_chunks(plane))
            .enumerate()
            .for_each(|(p, (o, src))| {
                let g = gates[p];
                o.iter_mut().zip(src).for_each(|(ov, &v)| *ov = v * g);
            });
        let out = Act {
            data: out,
            c,
            n,
            h: x.h,
            w: x.w,
        };
        Ok((
            Rc::new(out),
            SeSaved {
                input: x,
                means,
                hidden,
                gates,
                w1,
                w2,
            },
        ))
    }

    fn train_backward(&self, dout: Vec<f32>, s: SeSaved, grads: &mut Grads) -> Result<Vec<f32>> {
        let (c, n, plane) = (s.input.c, s.input.n, s.input.plane());
        let r = s.hidden.len() / n;
        // d gate per plane, then through the sigmoid
        let dpre2: Vec<f32> = dout
            .par_chunks(plane)
            .zip(s.input.data.par_chunks(plane))
            .enumerate()
            .map(|(p, (d, x))| {
                let dg = lane_dot(d, x) as f32;
                let g = s.gates[p];
                dg * g * (1.0 - g)
            })
            .collect();
        let mut dw2 = vec![0f32; c * r];
        matmul(&mut dw2, (c, r, n), &dpre2, false, &s.hidden, true);
        let db2: Vec<f32> = dpre2.chunks_exact(n).map(|row| row.iter().sum()).collect();
        let mut dhidden = vec![0f32; r * n];
        matmul(&mut dhidden, (r, n, c), &s.w2, true, &dpre2, false);
        for (dv, &hv) in dhidden.iter_mut().zip(&s.hidden) {
            if hv <= 0.0 {
                *dv = 0.0;
            }
        }
        let mut dw1 = vec![0f32; r * c];
        matmul(&mut dw1, (r, c, n), &dhidden, false, &s.means, true);
        let db1: Vec<f32> = dhidden
            .chunks_exact(n)
            .map(|row| row.iter().sum())
            .collect();
        let mut dmeans = vec![0f32; c * n];
        matmul(&mut dmeans, (c, n, r), &s.w1, true, &dhidden, false);
        let mut dx = dout;
        dx.par_chunks_mut(plane).enumerate().for_each(|(p, d)| {
            let (g, dm) = (s.gates[p], dmeans[p] / plane as f32);
            d.iter_mut().for_each(|v| *v = *v * g + dm);
        });
        give_act(s.input);
        let shaped = |conv: &Conv2d| conv.weight().clone();
        grads.put(&shaped(&self.fc1), dw1)?;
        grads.put(&shaped(&self.fc2), dw2)?;
        if let (Some(b1), Some(b2)) = (self.fc1.bias(), self.fc2.bias()) {
            grads.put(b1, db1)?;
            grads.put(b2, db2)?;
        }
        Ok(dx)
    }
}

struct ShortcutSaved {
    conv: ConvBnSaved,
    /// Input sides before the pooling (when pooled).
    pooled_from: Option<(usize, usize)>,
}

impl Downsample {
    fn train_forward(&self, x: Rc<Act>) -> Result<(Rc<Act>, ShortcutSaved)> {
        let pooled_from = self.pool.then_some((x.h, x.w));
        let input = if self.pool {
            let mut pool = Pool::default();
            Rc::new(timed("pooling", || avg_pool_2x2_ceil(&x, &mut pool)))
        } else {
            x
        };
        let (out, conv) = self.conv.train_forward(input)?;
        Ok((out, ShortcutSaved { conv, pooled_from }))
    }

    fn train_backward(
        &self,
        dout: Vec<f32>,
        s: ShortcutSaved,
        grads: &mut Grads,
    ) -> Result<Vec<f32>> {
        let (c, n) = (s.conv.input.c, s.conv.input.n);
        let d = self
            .conv
            .train_backward(dout, s.conv, true, grads)?
            .ok_or_else(|| candle_core::Error::Msg("missing shortcut gradient".into()))?;
        Ok(match s.pooled_from {
            Some((h, w)) => timed("pooling", || avg_pool_backward(&d, c * n, h, w)),
            None => d,
        })
    }
}

struct BlockSaved {
    convs: Vec<ConvBnSaved>,
    se: Option<SeSaved>,
    shortcut: Option<ShortcutSaved>,
    /// The block's output (after the final ReLU): its sign is the ReLU's mask.
    out: Rc<Act>,
}

impl Block {
    fn parts(&self) -> (Vec<&ConvBn>, &Option<SqueezeExcite>, &Option<Downsample>) {
        match self {
            Block::Basic(b) => (vec![&b.conv1, &b.conv2], &b.se, &b.downsample),
            Block::Bottleneck(b) => (vec![&b.conv1, &b.conv2, &b.conv3], &b.se, &b.downsample),
        }
    }

    fn train_forward(&self, x: Rc<Act>) -> Result<(Rc<Act>, BlockSaved)> {
        let (convs, se, downsample) = self.parts();
        // SE follows conv2 in both block types
        let mut saved = Vec::with_capacity(convs.len());
        let mut se_saved = None;
        let mut cur = Rc::clone(&x);
        for (i, conv) in convs.iter().enumerate() {
            let (out, s) = conv.train_forward(cur)?;
            saved.push(s);
            cur = out;
            if i == 1 {
                if let Some(se) = se {
                    let (out, s) = timed("se forward", || se.train_forward(cur))?;
                    se_saved = Some(s);
                    cur = out;
                }
            }
        }
        let (shortcut, sc_saved) = match downsample {
            Some(d) => {
                let (o, s) = d.train_forward(Rc::clone(&x))?;
                (o, Some(s))
            }
            None => (x, None),
        };
        let mut out = take(cur.data.len());
        timed("residual", || {
            out.par_iter_mut()
                .zip(cur.data.par_iter().zip(shortcut.data.par_iter()))
                .for_each(|(o, (&a, &b))| *o = (a + b).max(0.0))
        });
        let out = Rc::new(Act {
            data: out,
            c: cur.c,
            n: cur.n,
            h: cur.h,
            w: cur.w,
        });
        Ok((
            Rc::clone(&out),
            BlockSaved {
                convs: saved,
                se: se_saved,
                shortcut: sc_saved,
                out,
            },
        ))
    }

    fn train_backward(
        &self,
        mut dout: Vec<f32>,
        s: BlockSaved,
        grads: &mut Grads,
    ) -> Result<Vec<f32>> {
        let (convs, se, downsample) = self.parts();
        let start = std::time::Instant::now();
        dout.par_iter_mut()
            .zip(s.out.data.par_iter())
            .for_each(|(d, &o)| {
                if o <= 0.0 {
                    *d = 0.0;
                }
            });
        record("residual", start);
        give_act(s.out);
        // the residual sum's gradient goes to the shortcut and to the branch
        let copy = |d: &[f32]| {
            let mut c = take(d.len());
            c.copy_from_slice(d);
            c
        };
        let dshort = match (downsample, s.shortcut) {
            (Some(ds), Some(saved)) => ds.train_backward(copy(&dout), saved, grads)?,
            _ => copy(&dout),
        };
        let mut d = dout;
        let mut se_saved = s.se;
        let mut saved = s.convs;
        for i in (0..convs.len()).rev() {
            // SE follows conv2 (index 1): its output's gradient is conv3's input gradient in a
            // Bottleneck, the residual branch's in a BasicBlock
            if i == 1 {
                if let (Some(se), Some(ss)) = (se, se_saved.take()) {
                    d = timed("se backward", || se.train_backward(d, ss, grads))?;
                }
            }
            let conv_saved = saved
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("missing saved layer".into()))?;
            d = convs[i]
                .train_backward(d, conv_saved, true, grads)?
                .ok_or_else(|| candle_core::Error::Msg("missing input gradient".into()))?;
        }
        timed("residual", || {
            d.par_iter_mut()
                .zip(dshort.par_iter())
                .for_each(|(a, &b)| *a += b)
        });
        give(dshort);
        Ok(d)
    }
}

/// [`train_step`] with the time spent in each kind of work (convolution products by kind and
/// direction, im2col / col2im, BatchNorm + activation, blur, SE, residual, pooling, the rest).
pub(crate) fn train_step_profiled(
    model: &crate::TResNet,
    x: &Tensor,
    loss_of: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor, GradStore, crate::model::KindTimes)> {
    PROFILE.with(|p| *p.borrow_mut() = Some(Vec::new()));
    let start = std::time::Instant::now();
    let r = train_step(model, x, loss_of);
    let total = start.elapsed();
    let mut times = PROFILE.with(|p| p.borrow_mut().take()).unwrap_or_default();
    let (logits, loss, grads) = r?;
    let counted: std::time::Duration = times.iter().map(|(_, t)| *t).sum();
    times.push(("other (head, loss, copies)", total.saturating_sub(counted)));
    Ok((logits, loss, grads, times))
}

/// One training step's forward and backward pass on the CPU engine: returns the logits
/// (detached), the loss `loss_of(logits)` and every parameter's gradient (keyed by the
/// parameter tensors, as candle's autograd would); the BatchNorm running statistics are
/// updated as `forward_t(x, true)` does.
pub(crate) fn train_step(
    model: &crate::TResNet,
    x: &Tensor,
    loss_of: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor, GradStore)> {
    let (n, c, h, w) = x.dims4()?;
    let pixels = x.flatten_all()?.to_vec1::<f32>()?;
    let mut pool = Pool::default();
    let input = Rc::new(space_to_depth_cnhw(&pixels, n, c, h, w, &mut pool));
    drop(pixels);
    let (mut act, stem_saved) = model.stem.train_forward(input)?;
    let mut saved = Vec::new();
    for block in model.stages.iter().flatten() {
        let (out, s) = block.train_forward(act)?;
        saved.push(s);
        act = out;
    }
    let Head::Linear(fc) = &model.head else {
        candle_core::bail!("training engine: only the linear head is supported");
    };
    let (f_dim, plane) = (act.c, act.plane());
    // features [n, f]
    let mut feats = vec![0f32; n * f_dim];
    for (ch, planes) in act.data.chunks_exact(n * plane).enumerate() {
        for (img, p) in planes.chunks_exact(plane).enumerate() {
            feats[img * f_dim + ch] = p.iter().sum::<f32>() / plane as f32;
        }
    }
    let last = act;
    let feats_t = Tensor::from_vec(feats.clone(), (n, f_dim), &Device::Cpu)?;
    let logits = fc.forward_detached(&feats_t)?;
    let leaf = Var::from_tensor(&logits)?;
    let loss = loss_of(leaf.as_tensor())?;
    let dlogits_store = loss.backward()?;
    let dlogits = dlogits_store
        .get(leaf.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("the loss does not depend on the logits".into()))?
        .to_dtype(candle_core::DType::F32)?;
    let classes = dlogits.dim(1)?;
    let dl = dlogits.flatten_all()?.to_vec1::<f32>()?;
    let mut grads = Grads {
        store: GradStore::default(),
    };
    // head: logits = feats · W^T + b
    let wt = tensor_f32(fc.weight())?;
    let mut dw = vec![0f32; classes * f_dim];
    matmul(&mut dw, (classes, f_dim, n), &dl, true, &feats, false);
    grads.put(fc.weight(), dw)?;
    if let Some(b) = fc.bias() {
        let db: Vec<f32> = (0..classes)
            .map(|j| (0..n).map(|i| dl[i * classes + j]).sum())
            .collect();
        grads.put(b, db)?;
    }
    let mut dfeats = vec![0f32; n * f_dim];
    matmul(&mut dfeats, (n, f_dim, classes), &dl, false, &wt, false);
    // global mean pool: every position of plane (ch, img) gets dfeats[img, ch] / plane
    let mut d = vec![0f32; last.data.len()];
    d.par_chunks_mut(plane).enumerate().for_each(|(p, dp)| {
        let (ch, img) = (p / n, p % n);
        dp.fill(dfeats[img * f_dim + ch] / plane as f32);
    });
    drop(last);
    let blocks: Vec<&Block> = model.stages.iter().flatten().collect();
    for (block, s) in blocks.into_iter().zip(saved).rev() {
        d = block.train_backward(d, s, &mut grads)?;
    }
    model
        .stem
        .train_backward(d, stem_saved, false, &mut grads)?;
    Ok((logits, loss, grads.store))
}

trait ForwardDetached {
    fn forward_detached(&self, x: &Tensor) -> Result<Tensor>;
}

impl ForwardDetached for candle_nn::Linear {
    fn forward_detached(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight().detach().t()?)?;
        match self.bias() {
            Some(b) => y.broadcast_add(&b.detach()),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{TResNet, TResNetConfig};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    fn max_abs(t: &Tensor) -> f64 {
        t.abs()
            .and_then(|a| a.max_all())
            .and_then(|m| m.to_dtype(DType::F64))
            .and_then(|m| m.to_scalar::<f64>())
            .expect("max")
    }

    /// Uniform values in `[lo, hi)` from a fixed xorshift stream: the comparison below is
    /// between two f32 computations, and rare inputs put a LeakyReLU or ReLU input within
    /// rounding of 0, where the two may take different sides of the kink (candle's random
    /// tensors cannot be seeded on the CPU); a fixed stream keeps the test reproducible.
    fn seeded(shape: &[usize], lo: f32, hi: f32, state: &mut u64) -> Tensor {
        let len = shape.iter().product();
        let v: Vec<f32> = (0..len)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                lo + (hi - lo) * ((*state >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("seeded")
    }

    /// Two models with the same pseudo-random weights (BatchNorm affine and running statistics
    /// included), built from two VarMaps.
    fn twin_models(cfg: &TResNetConfig, state: &mut u64) -> (TResNet, VarMap, TResNet, VarMap) {
        let dev = Device::Cpu;
        let (va, vb) = (VarMap::new(), VarMap::new());
        let a = TResNet::new(cfg, VarBuilder::from_varmap(&va, DType::F32, &dev)).expect("a");
        let b = TResNet::new(cfg, VarBuilder::from_varmap(&vb, DType::F32, &dev)).expect("b");
        let da = va.data().lock().expect("lock");
        let db = vb.data().lock().expect("lock");
        let mut names: Vec<&String> = da.keys().collect();
        names.sort();
        for name in names {
            let var = &da[name];
            let dims = var.as_tensor().dims().to_vec();
            // positive variances and BatchNorm scales, anything else centred
            let v = if name.ends_with("running_var") || name.ends_with("bn.weight") {
                seeded(&dims, 0.5, 1.5, state)
            } else {
                seeded(&dims, -0.5, 0.5, state)
            };
            var.set(&v).expect("set a");
            db[name].set(&v).expect("set b");
        }
        drop((da, db));
        (a, va, b, vb)
    }

    /// The engine's step against candle's autograd: logits, loss, every parameter's gradient
    /// and the updated running statistics, for both block types (with and without SE and
    /// shortcut convolutions) at odd sizes (ceil-mode blur and pooling).
    #[test]
    fn engine_step_matches_autograd() {
        for (cfg, (h, w)) in [
            (
                TResNetConfig::variant([1, 2, 1, 1], 0.125, false, 5),
                (44, 36),
            ),
            (
                TResNetConfig::variant([1, 1, 2, 1], 0.125, true, 3),
                (36, 52),
            ),
        ] {
            let mut state = 0x2545_F491_4F6C_DD1D;
            let (a, va, b, vb) = twin_models(&cfg, &mut state);
            let x = seeded(&[3, 3, h, w], 0.0, 1.0, &mut state);
            let k = cfg.num_classes;
            let r = seeded(&[3, k], -1.0, 1.0, &mut state);
            let loss_of = |l: &Tensor| (l * &r)?.sum_all();
            let (la, lossa, ga) = a.train_step_autograd(&x, &loss_of).expect("autograd");
            let (lb, lossb, gb) = b.train_step(&x, &loss_of).expect("engine");
            let scale = max_abs(&la);
            let dl = max_abs(&(&la - &lb).expect("diff"));
            assert!(
                dl <= 1e-4 * scale.max(1.0),
                "logits differ by {dl} (scale {scale})"
            );
            let dloss = max_abs(&(&lossa - &lossb).expect("diff"));
            assert!(dloss <= 1e-4 * max_abs(&lossa).max(1.0), "loss {dloss}");
            let (da, db) = (va.data().lock().expect("a"), vb.data().lock().expect("b"));
            let mut checked = 0;
            for (name, var_a) in da.iter() {
                let var_b = &db[name];
                if name.contains("running_") {
                    let d = max_abs(&(var_a.as_tensor() - var_b.as_tensor()).expect("d"));
                    assert!(d < 1e-4, "{name}: running statistics differ by {d}");
                    continue;
                }
                let g_a = ga
                    .get(var_a.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: autograd"));
                let g_b = gb
                    .get(var_b.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: engine"));
                let s = max_abs(g_a);
                let d = max_abs(&(g_a - g_b).expect("d"));
                assert!(
                    d <= 2e-4 * s + 1e-6,
                    "{name}: gradient differs by {d} (scale {s})"
                );
                checked += 1;
            }
            assert!(checked > 30, "{checked} gradients");
        }
    }
}
