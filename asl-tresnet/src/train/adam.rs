//! Adam with coupled L2 weight decay, updating CPU f32 parameters in place.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Adam with coupled L2 weight decay (PyTorch `Adam(weight_decay=...)`) on the parameters marked
/// for decay; beta1 given per step (OneCycle cycles it). Its moments are plain tensors, saved
/// with the checkpoint.
pub struct Adam {
    /// (name, variable, apply weight decay)
    pub(crate) params: Vec<(String, Var, bool)>,
    /// First and second moments, per parameter.
    pub(crate) m: Vec<Tensor>,
    pub(crate) v: Vec<Tensor>,
    /// Updates applied (for the bias corrections).
    pub(crate) step: usize,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl Adam {
    /// `params`: (name, variable, apply weight decay).
    pub fn new(params: Vec<(String, Var, bool)>, weight_decay: f64) -> Result<Self> {
        let zeros = |p: &[(String, Var, bool)]| -> Result<Vec<Tensor>> {
            p.iter()
                .map(|(_, v, _)| v.as_tensor().zeros_like())
                .collect()
        };
        Ok(Adam {
            m: zeros(&params)?,
            v: zeros(&params)?,
            params,
            step: 0,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// The gradients of the parameters, in order, from a backward pass.
    pub fn grads_for(&self, grads: &GradStore) -> Vec<Option<Tensor>> {
        self.params
            .iter()
            .map(|(_, v, _)| grads.get(v.as_tensor()).cloned())
            .collect()
    }

    /// One update from the gradients `grads[i]` of `params[i]` (`None`: not updated).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64, beta1: f64) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for (i, (_, var, decay)) in self.params.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let w = var.as_tensor();
            let wd = if *decay { self.weight_decay } else { 0.0 };
            if inplace::eligible(&[w, g, &self.m[i], &self.v[i]]) {
                // CPU f32: three in-place passes, nothing allocated
                self.m[i].inplace_op3(g, w, &inplace::Moment::new(beta1, wd, false))?;
                self.v[i].inplace_op3(g, w, &inplace::Moment::new(self.beta2, wd, true))?;
                w.inplace_op3(
                    &self.m[i],
                    &self.v[i],
                    &inplace::AdamUpdate {
                        step_size: (lr / bc1) as f32,
                        sqrt_bc2: bc2.sqrt() as f32,
                        eps: self.eps as f32,
                    },
                )?;
                continue;
            }
            let g = if *decay && self.weight_decay > 0.0 {
                (g + (w * self.weight_decay)?)?
            } else {
                g.clone()
            };
            self.m[i] = ((&self.m[i] * beta1)? + (&g * (1.0 - beta1))?)?;
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((self.v[i].sqrt()? / bc2.sqrt())? + self.eps)?;
            let update = ((&self.m[i] / denom)? * (lr / bc1))?;
            var.set(&(w - update)?)?;
        }
        Ok(())
    }
}

/// In-place CPU f32 updates of the optimiser and the EMA: one pass each, no allocation (as
/// tensor ops, each step would allocate and fault in several copies of every parameter).
pub(crate) mod inplace {
    use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
    use rayon::prelude::*;

    const CHUNK: usize = 1 << 14;

    /// Whether every tensor is a contiguous f32 CPU tensor of the same shape.
    pub(crate) fn eligible(ts: &[&Tensor]) -> bool {
        ts.iter().all(|t| {
            t.device().is_cpu()
                && t.dtype() == candle_core::DType::F32
                && t.is_contiguous()
                && t.shape() == ts[0].shape()
        })
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
            _ => candle_core::bail!("in-place update: a contiguous f32 tensor is needed"),
        }
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
            _ => candle_core::bail!("in-place update: a contiguous f32 tensor is needed"),
        }
    }

    /// `f(dst[i], a[i], b[i])` for every element, rayon-parallel over chunks.
    fn update3(
        dst: (&mut CpuStorage, &Layout),
        a: (&CpuStorage, &Layout),
        b: (&CpuStorage, &Layout),
        f: impl Fn(&mut f32, f32, f32) + Sync,
    ) -> Result<()> {
        let (a, b) = (slice(a.0, a.1)?, slice(b.0, b.1)?);
        let dst = slice_mut(dst.0, dst.1)?;
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(d, (a, b))| {
                for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                    f(d, a, b);
                }
            });
        Ok(())
    }

    /// `m = beta m + (1 - beta) h(g + wd w)`, `h` the identity or the square.
    pub(super) struct Moment {
        beta: f32,
        wd: f32,
        square: bool,
    }

    impl Moment {
        pub(super) fn new(beta: f64, wd: f64, square: bool) -> Self {
            Moment {
                beta: beta as f32,
                wd: wd as f32,
                square,
            }
        }
    }

    impl InplaceOp3 for Moment {
        fn name(&self) -> &'static str {
            "adam-moment"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<()> {
            let (beta, wd, square) = (self.beta, self.wd, self.square);
            update3((s1, l1), (s2, l2), (s3, l3), |m, g, w| {
                let e = g + wd * w;
                let h = if square { e * e } else { e };
                *m = beta * *m + (1.0 - beta) * h;
            })
        }
    }

    /// `w -= step_size * m / (sqrt(v) / sqrt_bc2 + eps)`.
    pub(super) struct AdamUpdate {
        pub(super) step_size: f32,
        pub(super) sqrt_bc2: f32,
        pub(super) eps: f32,
    }

    impl InplaceOp3 for AdamUpdate {
        fn name(&self) -> &'static str {
            "adam-update"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<()> {
            let (step, bc, eps) = (self.step_size, self.sqrt_bc2, self.eps);
            update3((s1, l1), (s2, l2), (s3, l3), |w, m, v| {
                *w -= step * m / (v.sqrt() / bc + eps)
            })
        }
    }

    /// `e = decay e + (1 - decay) w`.
    pub(crate) struct Ema {
        pub(crate) decay: f32,
    }

    impl InplaceOp2 for Ema {
        fn name(&self) -> &'static str {
            "ema"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<()> {
            let w = slice(s2, l2)?;
            let e = slice_mut(s1, l1)?;
            let d = self.decay;
            e.par_chunks_mut(CHUNK)
                .zip(w.par_chunks(CHUNK))
                .for_each(|(e, w)| {
                    for (e, &w) in e.iter_mut().zip(w) {
                        *e = d * *e + (1.0 - d) * w;
                    }
                });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adam_matches_the_closed_form_first_steps() {
        // one scalar parameter, constant gradient g: after step 1, w -= lr * g / (|g| + eps')
        let var = Var::new(&[2.0f32, -1.0], &Device::Cpu).expect("var");
        let mut adam = Adam::new(vec![("w".into(), var.clone(), false)], 0.0).expect("adam");
        let g = Tensor::new(&[0.5f32, -0.25], &Device::Cpu).expect("g");
        adam.step(&[Some(g)], 0.1, 0.9).expect("step");
        let w = var.as_tensor().to_vec1::<f32>().expect("w");
        assert!(
            (w[0] - 1.9).abs() < 1e-5 && (w[1] + 0.9).abs() < 1e-5,
            "{w:?}"
        );
        // coupled weight decay acts through the gradient (w = 2 and wd 0.5 double a zero gradient)
        let var = Var::new(&[2.0f32], &Device::Cpu).expect("var");
        let mut adam = Adam::new(vec![("w".into(), var.clone(), true)], 0.5).expect("adam");
        let g = Tensor::new(&[0.0f32], &Device::Cpu).expect("g");
        adam.step(&[Some(g)], 0.1, 0.9).expect("step");
        let w = var.as_tensor().to_vec1::<f32>().expect("w");
        assert!((w[0] - 1.9).abs() < 1e-5, "{w:?}");
    }
}
