//! Convolution + BatchNorm (+ LeakyReLU, + blur) in training mode, forward and backward.
//!
//! Every TResNet convolution is stride 1, "same" padding, 1x1 or 3x3: forward
//! `Y = W · cols(X)` as one matrix product over the whole batch (3x3: Winograd unless disabled);
//! backward `dW = dY · cols(X)^T` and `dX = col2im(W^T · dY)` (1x1: `cols(X) = X`; 3x3 with
//! Winograd: `dX` is the convolution of `dY` with the transposed, flipped kernel). BatchNorm and
//! the activation are fused, the normalised activation kept for the backward pass.

use std::rc::Rc;

use candle_core::{Result, Tensor, Var};
use rayon::prelude::*;

use super::kernels::{
    blur_backward, col2im3x3, cols3x3, lane_dot, lane_sum, matmul, matmul_split_k, winograd_conv,
    winograd_run,
};
use super::recycle::{give, give_act, record, take, timed};
use super::{ConvBnLayer, Grads};
use crate::cpu::buffers::Act;
use crate::cpu::primitives::blur_planes_into;
use crate::cpu::{tensor_f32, winograd};

/// What a convolution + BatchNorm layer keeps for its backward pass.
pub(super) struct ConvBnSaved {
    pub(super) input: Rc<Act>,
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

/// A batch's mean and biased variance per channel of `y` `[c, m]`.
fn batch_stats(y: &[f32], m: usize) -> Vec<(f32, f32)> {
    y.par_chunks(m)
        .map(|row| {
            let mean = lane_sum(row, |v| v) / m as f64;
            let mf = mean as f32;
            let var = lane_sum(row, |v| (v - mf) * (v - mf)) / m as f64;
            (mf, var as f32)
        })
        .collect()
}

impl ConvBnLayer {
    /// `(c_out, c_in, k)`.
    fn geometry(&self) -> Result<(usize, usize, usize)> {
        let (c_out, c_in, k, k2) = self.weight.dims4()?;
        if k != k2 || !(k == 1 || k == 3) {
            candle_core::bail!("training engine: unsupported {k}x{k2} convolution");
        }
        Ok((c_out, c_in, k))
    }

    /// The convolution of `x` into `y` `[c_out, n * h * w]`; the im2col matrix when the weight
    /// gradient needs it.
    fn convolve(&self, weight: &[f32], x: &Act, y: &mut [f32]) -> Result<Option<Vec<f32>>> {
        let (c_out, c_in, k) = self.geometry()?;
        let (m, kk) = (x.n * x.plane(), c_in * k * k);
        if k == 1 {
            timed("conv forward (1x1 gemm)", || {
                matmul(y, (c_out, m, kk), weight, false, &x.data, false)
            });
            return Ok(None);
        }
        if winograd::enabled() {
            timed("conv forward (3x3 Winograd)", || {
                winograd_conv(weight, (c_out, c_in), x, y)
            });
            return Ok(None);
        }
        let cols = timed("im2col", || cols3x3(x));
        timed("conv forward (3x3 gemm)", || {
            matmul(y, (c_out, m, kk), weight, false, &cols, false)
        });
        Ok(Some(cols))
    }

    /// BatchNorm on the batch statistics, the affine and the activation: `y` becomes the
    /// normalised `xhat` in place, the output is returned; the running statistics are updated.
    fn normalise(&self, y: &mut [f32], m: usize, gamma: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let beta = tensor_f32(&self.beta)?;
        let start = std::time::Instant::now();
        let stats = batch_stats(y, m);
        let inv_std: Vec<f32> = stats
            .iter()
            .map(|&(_, v)| (1.0 / (v as f64 + self.eps).sqrt()) as f32)
            .collect();
        let slope = self.slope.map(|s| s as f32);
        let mut out = take(y.len());
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
        self.update_running(&stats, m)?;
        record("batchnorm + act forward", start);
        Ok((out, inv_std))
    }

    /// Updates the running statistics from a batch's mean and biased variance over `m` values,
    /// as candle's `BatchNorm::forward_train` (PyTorch): unbiased variance, momentum.
    fn update_running(&self, stats: &[(f32, f32)], m: usize) -> Result<()> {
        let mom = self.momentum;
        let unbias = m as f64 / (m as f64 - 1.0).max(1.0);
        let blend = |running: &Tensor, batch: &dyn Fn(usize) -> f64, scale: f64| -> Result<()> {
            let var = Var::from_tensor(running)?;
            let new: Vec<f32> = tensor_f32(var.as_tensor())?
                .iter()
                .enumerate()
                .map(|(i, &o)| (o as f64 * (1.0 - mom) + batch(i) * mom * scale) as f32)
                .collect();
            let dev = var.as_tensor().device().clone();
            var.set(&Tensor::from_vec(new, stats.len(), &dev)?)
        };
        blend(&self.running_mean, &|i| stats[i].0 as f64, 1.0)?;
        blend(&self.running_var, &|i| stats[i].1 as f64, unbias)
    }

    /// The blur after the layer (strided layers), on `out` `[c, n, h, w]`.
    fn blurred(&self, out: Vec<f32>, (c, n, h, w): (usize, usize, usize, usize)) -> Act {
        if !self.blur {
            return Act {
                data: out,
                c,
                n,
                h,
                w,
            };
        }
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let mut blurred = take(c * n * ho * wo);
        timed("blur forward", || {
            blur_planes_into(&out, &mut blurred, h, w)
        });
        give(out);
        Act {
            data: blurred,
            c,
            n,
            h: ho,
            w: wo,
        }
    }

    pub(super) fn train_forward(&self, x: Rc<Act>) -> Result<(Rc<Act>, ConvBnSaved)> {
        let (c_out, c_in, _) = self.geometry()?;
        if x.c != c_in {
            candle_core::bail!(
                "training engine: {} channels into a {c_in}-channel conv",
                x.c
            );
        }
        let gamma = tensor_f32(&self.gamma)?;
        let weight = tensor_f32(&self.weight)?;
        let m = x.n * x.plane();
        let mut y = take(c_out * m);
        let cols = self.convolve(&weight, &x, &mut y)?;
        let (out, inv_std) = self.normalise(&mut y, m, &gamma)?;
        let (h, w) = (x.h, x.w);
        let out = self.blurred(out, (c_out, x.n, h, w));
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

    /// The activation's and BatchNorm's backward, per channel: `dz` (the gradient after the
    /// activation) becomes the convolution output's gradient; the gamma and beta gradients are
    /// recorded.
    fn normalise_backward(&self, dz: &mut [f32], s: &ConvBnSaved, grads: &mut Grads) -> Result<()> {
        let m = s.xhat.len() / s.gamma.len();
        let (gamma, inv_std) = (&s.gamma, &s.inv_std);
        let beta = tensor_f32(&self.beta)?;
        let slope = self.slope.map(|sl| sl as f32);
        let start = std::time::Instant::now();
        let sums: Vec<(f32, f32)> = dz
            .par_chunks_mut(m)
            .zip(s.xhat.par_chunks(m))
            .enumerate()
            .map(|(ch, (d, xh))| {
                let (g, b) = (gamma[ch], beta[ch]);
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
                let scale = g * inv_std[ch];
                for (dv, &xv) in d.iter_mut().zip(xh) {
                    *dv = scale * (*dv - mb - xv * mg);
                }
                (dgamma as f32, dbeta as f32)
            })
            .collect();
        record("batchnorm + act backward", start);
        grads.put(&self.gamma, sums.iter().map(|v| v.0).collect())?;
        grads.put(&self.beta, sums.iter().map(|v| v.1).collect())
    }

    /// The weight gradient from the convolution output's gradient `dy`.
    fn weight_grad(&self, dy: &[f32], s: &mut ConvBnSaved) -> Result<Vec<f32>> {
        let (c_out, c_in, k) = self.geometry()?;
        let (n, m, kk) = (s.input.n, s.input.n * s.h * s.w, c_in * k * k);
        Ok(match s.cols.take() {
            None if k == 3 => timed("conv weight grad (3x3 Winograd)", || {
                winograd::weight_grad(dy, &s.input.data, (c_out, c_in), (n, s.h, s.w))
            }),
            None => timed("conv weight grad (1x1 gemm)", || {
                let mut dw = vec![0f32; c_out * kk];
                matmul_split_k(&mut dw, (c_out, kk, m), dy, &s.input.data);
                dw
            }),
            Some(cols) => {
                let mut dw = vec![0f32; c_out * kk];
                timed("conv weight grad (3x3 gemm)", || {
                    matmul_split_k(&mut dw, (c_out, kk, m), dy, &cols)
                });
                give(cols);
                dw
            }
        })
    }

    /// The input gradient from the convolution output's gradient `dy` (consumed) of sides
    /// `(n, h, w)`, for the layer's weights `weight` as the forward pass read them.
    fn input_grad(
        &self,
        dy: Vec<f32>,
        weight: &[f32],
        (n, h, w): (usize, usize, usize),
    ) -> Result<Vec<f32>> {
        let (c_out, c_in, k) = self.geometry()?;
        let (m, kk) = (n * h * w, c_in * k * k);
        if k == 3 && winograd::enabled() {
            // the input gradient of a stride-1 3x3 convolution is the 3x3 convolution of dy
            // with the kernel transposed (in and out channels swapped) and flipped
            let dy = Act {
                data: dy,
                c: c_out,
                n,
                h,
                w,
            };
            let mut dx = take(c_in * m);
            timed("conv input grad (3x3 Winograd)", || {
                let wg = winograd::Winograd::for_input_grad(weight, c_out, c_in);
                winograd_run(&wg, &dy, &mut dx)
            });
            give(dy.data);
            return Ok(dx);
        }
        let mut dcols = take(kk * m);
        let kind = if k == 1 {
            "conv input grad (1x1 gemm)"
        } else {
            "conv input grad (3x3 gemm)"
        };
        timed(kind, || {
            matmul(&mut dcols, (kk, m, c_out), weight, true, &dy, false)
        });
        give(dy);
        if k == 1 {
            return Ok(dcols);
        }
        let dx = timed("col2im", || col2im3x3(&dcols, c_in, n, h, w));
        give(dcols);
        Ok(dx)
    }

    /// Backward from the gradient of this layer's output; returns the input's gradient (`None`
    /// when `need_input` is false: the stem, whose input is the image).
    pub(super) fn train_backward(
        &self,
        dout: Vec<f32>,
        mut s: ConvBnSaved,
        need_input: bool,
        grads: &mut Grads,
    ) -> Result<Option<Vec<f32>>> {
        let (c_out, _, _) = self.geometry()?;
        let mut dz = if self.blur {
            let d = timed("blur backward", || {
                blur_backward(&dout, c_out * s.input.n, s.h, s.w)
            });
            give(dout);
            d
        } else {
            dout
        };
        self.normalise_backward(&mut dz, &s, grads)?;
        let dy = dz;
        let dw = self.weight_grad(&dy, &mut s)?;
        grads.put(&self.weight, dw)?;
        let sides = (s.input.n, s.h, s.w);
        give(s.xhat);
        give_act(s.input);
        if !need_input {
            give(dy);
            return Ok(None);
        }
        Ok(Some(self.input_grad(dy, &s.weight, sides)?))
    }
}
