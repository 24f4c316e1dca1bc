//! The CPU f32 training step: TResNet's forward pass in training mode (BatchNorm on batch
//! statistics, running statistics updated as candle's `BatchNorm` does) and its hand-written
//! backward pass, on channel-major (C, N, H, W) activations.
//!
//! Candle's autograd runs every op of the training path as a separate pass over fresh memory,
//! and its convolution backward uses a direct loop; here each layer is one or two passes:
//! convolution + BatchNorm + LeakyReLU ([`conv_bn`]), the anti-aliasing blur, average pooling,
//! SE and residual sums with their exact adjoints ([`block`], [`kernels`]).
//!
//! The model hands the engine a [`Network`]: its own tensors, arranged as the engine walks them.
//! The gradients come back keyed by those tensors (as candle's autograd would key them) and the
//! running statistics are updated in them. The result is the same as candle's autograd on the
//! training path (a test compares logits, every gradient and the running statistics).

mod block;
mod conv_bn;
mod kernels;
mod recycle;

use std::rc::Rc;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};
use rayon::prelude::*;

use super::buffers::Pool;
use super::primitives::space_to_depth_cnhw;
use super::{tensor_f32, KindTimes};
use block::BlockSaved;
use conv_bn::ConvBnSaved;
use kernels::matmul;

/// A stride-1 "same" convolution (1x1 or 3x3, no bias) with its BatchNorm, an optional
/// LeakyReLU and an optional blur after it.
pub(crate) struct ConvBnLayer {
    /// `[c_out, c_in, k, k]`
    pub(crate) weight: Tensor,
    pub(crate) gamma: Tensor,
    pub(crate) beta: Tensor,
    pub(crate) running_mean: Tensor,
    pub(crate) running_var: Tensor,
    pub(crate) momentum: f64,
    pub(crate) eps: f64,
    pub(crate) slope: Option<f64>,
    pub(crate) blur: bool,
}

/// Squeeze-and-excitation: `w1` `[r, c, 1, 1]`, `w2` `[c, r, 1, 1]` with their biases.
pub(crate) struct SeLayer {
    pub(crate) w1: Tensor,
    pub(crate) b1: Tensor,
    pub(crate) w2: Tensor,
    pub(crate) b2: Tensor,
}

/// A stage's first shortcut: an optional 2x2 average pool, then a 1x1 convolution + BatchNorm.
pub(crate) struct Shortcut {
    pub(crate) pool: bool,
    pub(crate) conv: ConvBnLayer,
}

/// A residual block: its convolutions in order (SE follows the second), the shortcut, the sum
/// and the ReLU.
pub(crate) struct BlockLayers {
    pub(crate) convs: Vec<ConvBnLayer>,
    pub(crate) se: Option<SeLayer>,
    pub(crate) shortcut: Option<Shortcut>,
}

/// The whole network with a linear classifier.
pub(crate) struct Network {
    pub(crate) stem: ConvBnLayer,
    pub(crate) blocks: Vec<BlockLayers>,
    /// `[classes, features]`
    pub(crate) fc_weight: Tensor,
    pub(crate) fc_bias: Option<Tensor>,
}

/// Gradients of the parameters, summed over the layers that use them.
pub(super) struct Grads {
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

/// What the forward pass keeps for the backward pass.
struct Saved {
    stem: ConvBnSaved,
    blocks: Vec<BlockSaved>,
    /// The last activation's shape `(c, n, plane)`.
    last: (usize, usize, usize),
}

impl Network {
    /// [`Self::train_step`] with the time spent in each kind of work (convolution products by
    /// kind and direction, im2col / col2im, BatchNorm + activation, blur, SE, residual,
    /// pooling, the rest).
    pub(crate) fn train_step_profiled(
        &self,
        x: &Tensor,
        loss_of: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, GradStore, KindTimes)> {
        recycle::start_profile();
        let start = std::time::Instant::now();
        let r = self.train_step(x, loss_of);
        let total = start.elapsed();
        let mut times = recycle::take_profile();
        let (logits, loss, grads) = r?;
        let counted: std::time::Duration = times.iter().map(|(_, t)| *t).sum();
        times.push(("other (head, loss, copies)", total.saturating_sub(counted)));
        Ok((logits, loss, grads, times))
    }

    /// One training step's forward and backward pass on a checked f32 `[N, 3, H, W]` batch:
    /// returns the logits (detached), the loss `loss_of(logits)` and every parameter's
    /// gradient; the BatchNorm running statistics are updated.
    pub(crate) fn train_step(
        &self,
        x: &Tensor,
        loss_of: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, GradStore)> {
        let (feats, saved) = self.forward(x)?;
        let (c, n, _) = saved.last;
        let logits = self.head(&Tensor::from_vec(feats.clone(), (n, c), &Device::Cpu)?)?;
        let leaf = Var::from_tensor(&logits)?;
        let loss = loss_of(leaf.as_tensor())?;
        let dlogits = loss
            .backward()?
            .get(leaf.as_tensor())
            .ok_or_else(|| {
                candle_core::Error::Msg("the loss does not depend on the logits".into())
            })?
            .to_dtype(candle_core::DType::F32)?;
        let mut grads = Grads {
            store: GradStore::default(),
        };
        let d = self.head_backward(&dlogits, &feats, saved.last, &mut grads)?;
        self.backward(d, saved, &mut grads)?;
        Ok((logits, loss, grads.store))
    }

    /// The forward pass up to the pooled features `[n, c]` (row-major).
    fn forward(&self, x: &Tensor) -> Result<(Vec<f32>, Saved)> {
        let (n, c, h, w) = x.dims4()?;
        let pixels = x.flatten_all()?.to_vec1::<f32>()?;
        let mut pool = Pool::default();
        let input = Rc::new(space_to_depth_cnhw(&pixels, n, c, h, w, &mut pool));
        drop(pixels);
        let (mut act, stem) = self.stem.train_forward(input)?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (out, s) = block.train_forward(act)?;
            blocks.push(s);
            act = out;
        }
        let (f_dim, plane) = (act.c, act.plane());
        let mut feats = vec![0f32; n * f_dim];
        for (ch, planes) in act.data.chunks_exact(n * plane).enumerate() {
            for (img, p) in planes.chunks_exact(plane).enumerate() {
                feats[img * f_dim + ch] = p.iter().sum::<f32>() / plane as f32;
            }
        }
        let last = (f_dim, n, plane);
        Ok((feats, Saved { stem, blocks, last }))
    }

    /// The classifier on the features, outside any autograd graph.
    fn head(&self, feats: &Tensor) -> Result<Tensor> {
        let y = feats.matmul(&self.fc_weight.detach().t()?)?;
        match &self.fc_bias {
            Some(b) => y.broadcast_add(&b.detach()),
            None => Ok(y),
        }
    }

    /// The classifier's gradients from the logits' gradient, and the gradient of the last
    /// activation (through the global mean pool).
    fn head_backward(
        &self,
        dlogits: &Tensor,
        feats: &[f32],
        (f_dim, n, plane): (usize, usize, usize),
        grads: &mut Grads,
    ) -> Result<Vec<f32>> {
        let classes = dlogits.dim(1)?;
        let dl = dlogits.flatten_all()?.to_vec1::<f32>()?;
        // logits = feats · W^T + b
        let wt = tensor_f32(&self.fc_weight)?;
        let mut dw = vec![0f32; classes * f_dim];
        matmul(&mut dw, (classes, f_dim, n), &dl, true, feats, false);
        grads.put(&self.fc_weight, dw)?;
        if let Some(b) = &self.fc_bias {
            let db: Vec<f32> = (0..classes)
                .map(|j| (0..n).map(|i| dl[i * classes + j]).sum())
                .collect();
            grads.put(b, db)?;
        }
        let mut dfeats = vec![0f32; n * f_dim];
        matmul(&mut dfeats, (n, f_dim, classes), &dl, false, &wt, false);
        // global mean pool: every position of plane (ch, img) gets dfeats[img, ch] / plane
        let mut d = vec![0f32; f_dim * n * plane];
        d.par_chunks_mut(plane).enumerate().for_each(|(p, dp)| {
            let (ch, img) = (p / n, p % n);
            dp.fill(dfeats[img * f_dim + ch] / plane as f32);
        });
        Ok(d)
    }

    /// The backward pass from the last activation's gradient.
    fn backward(&self, mut d: Vec<f32>, saved: Saved, grads: &mut Grads) -> Result<()> {
        for (block, s) in self.blocks.iter().zip(saved.blocks).rev() {
            d = block.train_backward(d, s, grads)?;
        }
        self.stem.train_backward(d, saved.stem, false, grads)?;
        Ok(())
    }
}
