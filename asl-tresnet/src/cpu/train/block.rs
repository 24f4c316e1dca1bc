//! Squeeze-and-excitation, the shortcut and whole residual blocks in training mode, forward and
//! backward.

use std::rc::Rc;

use candle_core::Result;
use rayon::prelude::*;

use super::conv_bn::ConvBnSaved;
use super::kernels::{avg_pool_backward, lane_dot, lane_sum, matmul};
use super::recycle::{give, give_act, record, take, timed};
use super::{BlockLayers, Grads, SeLayer, Shortcut};
use crate::cpu::buffers::{Act, Pool};
use crate::cpu::primitives::avg_pool_2x2_ceil;
use crate::cpu::tensor_f32;

/// What SE keeps for its backward pass.
struct SeSaved {
    input: Rc<Act>,
    means: Vec<f32>,
    hidden: Vec<f32>,
    gates: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
}

impl SeLayer {
    fn train_forward(&self, x: Rc<Act>) -> Result<(Rc<Act>, SeSaved)> {
        let (c, n, plane) = (x.c, x.n, x.plane());
        let w1 = tensor_f32(&self.w1)?;
        let w2 = tensor_f32(&self.w2)?;
        let (b1, b2) = (tensor_f32(&self.b1)?, tensor_f32(&self.b2)?);
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
        grads.put(&self.w1, dw1)?;
        grads.put(&self.w2, dw2)?;
        grads.put(&self.b1, db1)?;
        grads.put(&self.b2, db2)?;
        Ok(dx)
    }
}

struct ShortcutSaved {
    conv: ConvBnSaved,
    /// Input sides before the pooling (when pooled).
    pooled_from: Option<(usize, usize)>,
}

impl Shortcut {
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

pub(super) struct BlockSaved {
    convs: Vec<ConvBnSaved>,
    se: Option<SeSaved>,
    shortcut: Option<ShortcutSaved>,
    /// The block's output (after the final ReLU): its sign is the ReLU's mask.
    out: Rc<Act>,
}

impl BlockLayers {
    pub(super) fn train_forward(&self, x: Rc<Act>) -> Result<(Rc<Act>, BlockSaved)> {
        let (convs, se, downsample) = (&self.convs, &self.se, &self.shortcut);
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

    pub(super) fn train_backward(
        &self,
        mut dout: Vec<f32>,
        s: BlockSaved,
        grads: &mut Grads,
    ) -> Result<Vec<f32>> {
        let (convs, se, downsample) = (&self.convs, &self.se, &self.shortcut);
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
