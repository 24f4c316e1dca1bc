//! Validation during training: the paper's mAP of a set of weights on a dataset.

use std::collections::HashMap;
use std::sync::Arc;

use asl_core::MetricAccumulator;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::data::{labels_of, Dataset, Loader};
use crate::images::Preprocess;
use crate::model::{TResNet, TResNetConfig};
use crate::{Error, Result};

/// How validation batches are made.
pub(crate) struct Validation<'a> {
    pub(crate) data: &'a Arc<dyn Dataset>,
    pub(crate) size: usize,
    pub(crate) batch_size: usize,
    pub(crate) prefetch: usize,
    pub(crate) device: &'a Device,
}

impl Validation<'_> {
    /// Mean average precision (paper definition, in percent) of the eval model with `tensors`.
    pub(crate) fn map(&self, cfg: &TResNetConfig, tensors: HashMap<String, Tensor>) -> Result<f64> {
        let model = TResNet::new(
            cfg,
            VarBuilder::from_tensors(tensors, DType::F32, self.device),
        )?
        .into_inference()?;
        let mut acc = MetricAccumulator::new(cfg.num_classes);
        let prep = Preprocess::squish(self.size as u32);
        let data = Arc::clone(self.data);
        let order = (0..data.len()).collect();
        let loader = Loader::new(order, self.batch_size, self.prefetch, move |i| {
            Ok(prep.apply(&data.image(i)?))
        });
        for batch in loader {
            if let Some((i, e)) = batch.failed.first() {
                return Err(Error::Train(format!(
                    "validation image {}: {e}",
                    self.data.describe(*i)
                )));
            }
            let n = batch.indices.len();
            if n == 0 {
                continue;
            }
            let s = self.size;
            let x = Tensor::from_vec(batch.inputs, (n, 3, s, s), self.device)?;
            let p = candle_nn::ops::sigmoid(&model.forward_t(&x, false)?)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if p.iter().any(|v| v.is_nan()) {
                return Err(Error::Train(
                    "the model's outputs on the validation images are not numbers: the weights \
                     have diverged"
                        .into(),
                ));
            }
            acc.push_slices(&p, &labels_of(self.data.as_ref(), &batch.indices))?;
        }
        Ok(acc.compute(0.5).map)
    }
}
