//! The [`Trainer`]: a run built from a [`TrainConfig`], trained step by step or epoch by epoch,
//! validated, checkpointed and resumed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use asl_core::adaptive::GapAccumulator;
use asl_core::{AslConfig, AsymmetricLoss};
use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::adam::Adam;
use super::checkpoint::{self, State};
use super::config::{TrainConfig, TrainOptions};
use super::ema::{snapshot, Ema};
use super::evaluate::Validation;
use super::events::{emit, write_metrics_csv, Callback, EpochLog, Event, Flow, TrainSummary};
use super::init::{is_running_stat, named_vars, reference_init};
use super::schedule::{ema_decay, one_cycle};
use super::seeds;
use crate::augment::augment;
use crate::data::{labels_of, Batch, Dataset, Loader};
use crate::images::{resize, to_chw};
use crate::model::{TResNet, TResNetConfig};
use crate::pretrained::config::{Activation, PretrainedCfg, ResizeMode, TRESNET_MEAN, TRESNET_STD};
use crate::pretrained::weights::save_safetensors;
use crate::pretrained::Backbone;
use crate::{Error, Result};

/// One optimiser step's outcome.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Optimiser steps done in total, this one included.
    pub step: usize,
    /// The learning rate of the step (OneCycle).
    pub lr: f64,
    /// Whether an update was applied (`false`: every micro-batch of the step was skipped).
    pub applied: bool,
}

/// How an epoch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochOutcome {
    /// Trained, validated, the best model and the checkpoint written.
    Finished(EpochLog),
    /// Stopped mid-epoch (a callback asked, or `max_steps`), the checkpoint written.
    Stopped,
}

/// Validation mAP (paper definition, percent) of the raw and, when kept, the EMA model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub raw: f64,
    pub ema: Option<f64>,
}

/// A fine-tuning run: the model, Adam, the EMA model and the run's state, with the recipe of
/// its [`TrainConfig`]. See the [module docs](super) for an example.
pub struct Trainer {
    cfg: TrainConfig,
    opts: TrainOptions,
    model_cfg: TResNetConfig,
    model: TResNet,
    /// Every variable by name, sorted; the VarMap that owns them.
    named: Vec<(String, Var)>,
    _vars: VarMap,
    adam: Adam,
    ema: Option<Ema>,
    state: State,
    /// Optimiser steps the schedule plans in all (set by [`Trainer::plan`]).
    total_steps: Option<usize>,
    /// Gradients summed since the last optimiser step, per Adam parameter.
    pending: Vec<Option<Tensor>>,
    /// The probability gap of the current step's micro-batches.
    step_gap: GapAccumulator,
}

impl Trainer {
    /// A new run over `classes`: the model built for `cfg.arch` and initialised as the reference
    /// does (drawn from `cfg.seed`), Adam and the EMA model ready. Nothing is written yet.
    pub fn new(cfg: TrainConfig, classes: Vec<String>, opts: TrainOptions) -> Result<Trainer> {
        cfg.validate()?;
        let model_cfg = TResNetConfig::named(&cfg.arch, classes.len())?;
        let vars = VarMap::new();
        let model = TResNet::new(
            &model_cfg,
            VarBuilder::from_varmap(&vars, DType::F32, &opts.device),
        )?
        .with_autocast(cfg.autocast)?;
        let named = named_vars(&vars)?;
        reference_init(&named, &mut seeds::init_rng(cfg.seed))?;
        let params: Vec<(String, Var, bool)> = named
            .iter()
            .filter(|(n, _)| !is_running_stat(n))
            .map(|(n, v)| (n.clone(), v.clone(), v.as_tensor().rank() > 1))
            .collect();
        let adam = Adam::new(params, cfg.weight_decay)?;
        let ema = cfg.ema_decay.map(|_| Ema::new(&named)).transpose()?;
        let state = State::new(&cfg, &classes);
        Ok(Trainer {
            pending: vec![None; adam.params.len()],
            cfg,
            opts,
            model_cfg,
            model,
            named,
            _vars: vars,
            adam,
            ema,
            state,
            total_steps: None,
            step_gap: GapAccumulator::default(),
        })
    }

    /// Continues the run whose checkpoint is in `opts.out`, exactly where it stopped: `cfg` and
    /// `classes` must be the run's (the number of epochs may grow).
    pub fn resume(cfg: TrainConfig, classes: Vec<String>, opts: TrainOptions) -> Result<Trainer> {
        let mut t = Trainer::new(cfg, classes, opts)?;
        let path = t.checkpoint_path();
        t.state = checkpoint::restore(
            &path,
            &t.cfg,
            &t.state.classes,
            (&t.named, &mut t.adam, t.ema.as_mut()),
            &t.opts.device,
        )?;
        Ok(t)
    }

    /// Starts from a pretrained backbone (its classifier dropped; this run's stays as
    /// initialised). Only before the first step. Returns the number of weights loaded.
    pub fn load_backbone(&mut self, backbone: &Backbone) -> Result<usize> {
        if self.state.step > 0 {
            return Err(Error::Train(
                "the backbone must be loaded before the first step".into(),
            ));
        }
        let loaded = backbone.load_into(&self._vars, &self.opts.device)?;
        if self.ema.is_some() {
            self.ema = Some(Ema::new(&self.named)?);
        }
        Ok(loaded)
    }

    /// The model being trained (the training path; its variables are updated in place).
    pub fn model(&self) -> &TResNet {
        &self.model
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The classes of the run, in output order.
    pub fn classes(&self) -> &[String] {
        &self.state.classes
    }

    /// Epochs done, and the log of each.
    pub fn history(&self) -> &[EpochLog] {
        &self.state.history
    }

    /// Optimiser steps done in all.
    pub fn steps_done(&self) -> usize {
        self.state.step
    }

    /// `out/checkpoint.safetensors`.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.opts.out.join("checkpoint.safetensors")
    }

    /// `out/best.safetensors`: the best model so far, in the project's weight format.
    pub fn best_path(&self) -> PathBuf {
        self.opts.out.join("best.safetensors")
    }

    /// Plans the schedule for `train_samples` training samples per epoch. A resumed run must
    /// plan for the same number of samples as it started with.
    pub fn plan(&mut self, train_samples: usize) -> Result<()> {
        if train_samples == 0 {
            return Err(Error::Train("the training set must not be empty".into()));
        }
        match self.state.train_samples {
            Some(n) if n != train_samples => {
                return Err(Error::Train(format!(
                    "{} was written for a training set of {n} samples, not {train_samples}: \
                     resume with the same data",
                    self.checkpoint_path().display()
                )))
            }
            _ => self.state.train_samples = Some(train_samples),
        }
        self.total_steps = Some(self.cfg.steps_per_epoch(train_samples) * self.cfg.epochs);
        Ok(())
    }

    /// The learning rate and beta1 of the next optimiser step.
    fn schedule(&self) -> Result<(f64, f64)> {
        let total = self.total_steps.ok_or_else(|| {
            Error::Train("plan the schedule first (Trainer::plan, or train_epoch/fit)".into())
        })?;
        Ok(one_cycle(
            &self.cfg,
            self.state.step.min(total.saturating_sub(1)),
            total,
        ))
    }

    /// One micro-batch: the forward pass in training mode, the loss (ASL at the current
    /// `gamma_neg`) and its gradients, added to the step's. `x` is `[N, 3, S, S]`, `y` the
    /// targets `[N, K]` in [0, 1]. Returns the loss; a non-finite loss adds nothing.
    pub fn micro_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<f64> {
        let loss_fn = AsymmetricLoss::new(AslConfig {
            gamma_neg: self.state.gamma_neg,
            ..self.cfg.loss
        });
        let (logits, loss, grads) = self
            .model
            .train_step(x, &|logits| loss_fn.forward(logits, y))?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Ok(value);
        }
        self.step_gap.push(&logits, y)?;
        for (i, (_, var, _)) in self.adam.params.iter().enumerate() {
            if let Some(g) = grads.get(var.as_tensor()) {
                self.pending[i] = Some(match self.pending[i].take() {
                    Some(p) => (p + g)?,
                    None => g.clone(),
                });
            }
        }
        self.state.loss_sum += value;
        self.state.loss_count += 1;
        Ok(value)
    }

    /// The optimiser step of the micro-batches since the last one: Adam at the scheduled
    /// learning rate, then adaptive asymmetry and the EMA. With no gradients (every micro-batch
    /// skipped) only the schedule moves on.
    pub fn apply_step(&mut self) -> Result<StepReport> {
        let (lr, beta1) = self.schedule()?;
        let applied = self.pending.iter().any(Option::is_some);
        if applied {
            self.adam.step(&self.pending, lr, beta1)?;
            self.state.adam_steps += 1;
            self.pending = vec![None; self.adam.params.len()];
            if let (Some(ctl), Some(gap)) = (&self.cfg.adaptive, self.step_gap.gap()) {
                self.state.gamma_neg = ctl.update(self.state.gamma_neg, gap);
            }
            let mut epoch_gap = self.state.epoch_gap();
            epoch_gap.merge(&self.step_gap);
            self.state.set_epoch_gap(&epoch_gap);
            self.step_gap = GapAccumulator::default();
            if let (Some(e), Some(decay)) = (self.ema.as_mut(), self.cfg.ema_decay) {
                e.update(
                    &self.named,
                    ema_decay(decay, self.cfg.ema_warmup, self.state.step + 1),
                )?;
            }
        }
        self.state.step += 1;
        self.state.step_in_epoch += 1;
        Ok(StepReport {
            step: self.state.step,
            lr,
            applied,
        })
    }

    /// One optimiser step on one batch: [`Self::micro_batch`] then [`Self::apply_step`].
    pub fn step(&mut self, x: &Tensor, y: &Tensor) -> Result<(f64, StepReport)> {
        let loss = self.micro_batch(x, y)?;
        Ok((loss, self.apply_step()?))
    }

    /// The validation mAP of the raw and the EMA model on `val`.
    pub fn evaluate(&self, val: &Arc<dyn Dataset>) -> Result<Evaluation> {
        let v = Validation {
            data: val,
            size: self.cfg.image_size,
            batch_size: self.cfg.batch_size,
            prefetch: self.opts.prefetch,
            device: &self.opts.device,
        };
        Ok(Evaluation {
            raw: v.map(&self.model_cfg, snapshot(&self.named)?)?,
            ema: match &self.ema {
                Some(e) => Some(v.map(&self.model_cfg, e.tensors.clone())?),
                None => None,
            },
        })
    }

    /// Writes the checkpoint (`out/checkpoint.safetensors`).
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let path = self.checkpoint_path();
        checkpoint::save(
            &path,
            &self.state,
            &self.named,
            &self.adam,
            self.ema.as_ref(),
        )?;
        Ok(path)
    }

    /// Trains on `train`, validating on `val` (both over the run's classes) after every epoch,
    /// until `cfg.epochs` are done or a callback stops the run; writes the checkpoint, the best
    /// model and `metrics.csv` into `opts.out`.
    pub fn fit(
        &mut self,
        train: Arc<dyn Dataset>,
        val: Arc<dyn Dataset>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<TrainSummary> {
        if train.classes() != self.classes() || val.classes() != self.classes() {
            return Err(Error::Train(
                "the training and validation sets have different class lists".into(),
            ));
        }
        if train.is_empty() || val.is_empty() {
            return Err(Error::Train(
                "the training and validation sets must not be empty".into(),
            ));
        }
        let mut interrupted = false;
        while self.state.epoch < self.cfg.epochs {
            if self.train_epoch(&train, &val, callbacks)? == EpochOutcome::Stopped {
                interrupted = true;
                break;
            }
        }
        Ok(TrainSummary {
            epochs: self.state.history.clone(),
            best_map: self.state.best_map.unwrap_or(f64::NAN),
            best_model: self.state.best_model.clone(),
            best_path: self.best_path(),
            interrupted,
        })
    }

    /// The next epoch (or the rest of it, after a resume): every batch of the epoch's order,
    /// an optimiser step after every `accumulate` batches and after the last, then validation,
    /// the best model and the checkpoint.
    pub fn train_epoch(
        &mut self,
        train: &Arc<dyn Dataset>,
        val: &Arc<dyn Dataset>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<EpochOutcome> {
        self.plan(train.len())?;
        std::fs::create_dir_all(&self.opts.out).map_err(|e| Error::write(&self.opts.out, e))?;
        let started = Instant::now();
        let Some(images) = self.train_batches(train, callbacks)? else {
            self.state.epoch_seconds += started.elapsed().as_secs_f64();
            let path = self.save_checkpoint()?;
            emit(callbacks, &Event::Checkpoint { path: &path })?;
            return Ok(EpochOutcome::Stopped);
        };
        let log = self.finish_epoch(val, started, images, callbacks)?;
        let stop = emit(callbacks, &Event::EpochEnded(&self.state.history))? == Flow::Stop;
        if stop && self.state.epoch < self.cfg.epochs {
            return Ok(EpochOutcome::Stopped);
        }
        Ok(EpochOutcome::Finished(log))
    }

    /// The loader of the rest of the current epoch: decode, resize, augment (seeded per
    /// sample), planar.
    fn epoch_loader(&self, train: &Arc<dyn Dataset>) -> (Loader, usize) {
        let epoch = self.state.epoch;
        let order = seeds::epoch_order(train.len(), self.cfg.seed, epoch);
        // every optimiser step is a group of `accumulate` loader batches, skipped ones included
        let done = self.state.step_in_epoch * self.cfg.accumulate;
        let order: Vec<usize> = order.into_iter().skip(done * self.cfg.batch_size).collect();
        let remaining = order.len();
        let (data, aug, seed) = (Arc::clone(train), self.cfg.augment.clone(), self.cfg.seed);
        let size = self.cfg.image_size as u32;
        let loader = Loader::new(order, self.cfg.batch_size, self.opts.prefetch, move |i| {
            // as the reference: resize first, then augment at the model's size
            let img = resize(&data.image(i)?, size, ResizeMode::Squish);
            Ok(to_chw(&augment(
                &img,
                &aug,
                &mut seeds::sample_rng(seed, epoch, i),
            )))
        });
        (loader, remaining)
    }

    /// The epoch's batches; `Some(images trained on)` when the epoch is done, `None` when the
    /// run stops mid-epoch.
    fn train_batches(
        &mut self,
        train: &Arc<dyn Dataset>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Option<usize>> {
        let batches = train.len().div_ceil(self.cfg.batch_size);
        let mut batch_index = self.state.step_in_epoch * self.cfg.accumulate;
        let (loader, remaining) = self.epoch_loader(train);
        let mut stop = emit(
            callbacks,
            &Event::EpochStarted {
                epoch: self.state.epoch + 1,
                epochs: self.cfg.epochs,
                images: remaining,
            },
        )? == Flow::Stop;
        let (mut micro, mut images) = (0, 0);
        for batch in loader {
            batch_index += 1;
            let (trained, flow) = self.train_batch(train, batch, batch_index, callbacks)?;
            images += trained;
            stop |= flow == Flow::Stop;
            micro += 1;
            if micro < self.cfg.accumulate && batch_index < batches {
                continue;
            }
            micro = 0;
            let report = self.apply_step()?;
            let mean_loss = self.state.loss_sum / self.state.loss_count.max(1) as f64;
            let event = Event::Step {
                step: report.step,
                lr: report.lr,
                mean_loss,
            };
            stop |= emit(callbacks, &event)? == Flow::Stop;
            if stop || self.opts.max_steps.is_some_and(|m| self.state.step >= m) {
                return Ok(None);
            }
        }
        Ok(Some(images))
    }

    /// One loader batch as a micro-batch, with the run's policy for unreadable images and
    /// non-finite losses; returns the images trained on.
    fn train_batch(
        &mut self,
        train: &Arc<dyn Dataset>,
        batch: Batch,
        batch_index: usize,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<(usize, Flow)> {
        let mut flow = Flow::Continue;
        for (i, e) in &batch.failed {
            if !self.cfg.skip_bad {
                return Err(Error::Train(format!(
                    "training image {}: {e}; pass --skip-bad to skip unreadable images",
                    train.describe(*i)
                )));
            }
            let event = Event::ImageSkipped {
                sample: train.describe(*i),
                error: e.to_string(),
            };
            if emit(callbacks, &event)? == Flow::Stop {
                flow = Flow::Stop;
            }
        }
        let n = batch.indices.len();
        let images = n + batch.failed.len();
        let loss = if n == 0 {
            None
        } else {
            self.micro_batch_of(train, batch, batch_index)?
        };
        if emit(callbacks, &Event::Batch { images, loss })? == Flow::Stop {
            flow = Flow::Stop;
        }
        Ok((if loss.is_some() { n } else { 0 }, flow))
    }

    /// The micro-batch of a loader batch; `None` when its loss is not finite and such batches
    /// are skipped.
    fn micro_batch_of(
        &mut self,
        train: &Arc<dyn Dataset>,
        batch: Batch,
        batch_index: usize,
    ) -> Result<Option<f64>> {
        let (n, k, s) = (
            batch.indices.len(),
            self.state.classes.len(),
            self.cfg.image_size,
        );
        let dev = &self.opts.device;
        let x = Tensor::from_vec(batch.inputs, (n, 3, s, s), dev)?;
        // ignored labels (-1) train as negatives
        let y: Vec<f32> = labels_of(train.as_ref(), &batch.indices)
            .into_iter()
            .map(|l| l.max(0.0))
            .collect();
        let y = Tensor::from_vec(y, (n, k), dev)?;
        let value = self.micro_batch(&x, &y)?;
        if value.is_finite() {
            return Ok(Some(value));
        }
        if self.cfg.skip_nonfinite {
            self.state.skipped_batches += 1;
            return Ok(None);
        }
        Err(self.non_finite(value, train, &batch.indices, batch_index))
    }

    fn non_finite(
        &self,
        value: f64,
        train: &Arc<dyn Dataset>,
        indices: &[usize],
        index: usize,
    ) -> Error {
        let ckpt = self.checkpoint_path();
        let last = if ckpt.exists() {
            format!("the last good checkpoint is {}", ckpt.display())
        } else {
            "no checkpoint was written yet".to_string()
        };
        let images: Vec<String> = indices.iter().take(4).map(|&i| train.describe(i)).collect();
        Error::Train(format!(
            "non-finite loss ({value}) at epoch {}, batch {index} (images {}): {last}; lower the \
             learning rate (--lr), or skip such batches (--skip-nonfinite)",
            self.state.epoch + 1,
            images.join(", ")
        ))
    }

    /// Validation, the epoch's log, the best model, then the next epoch's state, the checkpoint
    /// and `metrics.csv`.
    fn finish_epoch(
        &mut self,
        val: &Arc<dyn Dataset>,
        started: Instant,
        images: usize,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<EpochLog> {
        let epoch = self.state.epoch;
        emit(callbacks, &Event::Validating { epoch: epoch + 1 })?;
        let seconds = self.state.epoch_seconds + started.elapsed().as_secs_f64();
        let eval = self.evaluate(val).map_err(|e| {
            e.context(format!(
                "validating after epoch {} ({} batches skipped for a non-finite loss); lower \
                 the learning rate (--lr)",
                epoch + 1,
                self.state.skipped_batches
            ))
        })?;
        let (lr, _) = self.schedule()?;
        let log = EpochLog {
            epoch: epoch + 1,
            steps: self.state.step,
            train_loss: self.state.loss_sum / self.state.loss_count.max(1) as f64,
            val_map: eval.raw,
            val_map_ema: eval.ema,
            lr,
            seconds,
            images_per_s: images as f64 / started.elapsed().as_secs_f64().max(1e-9),
            skipped_batches: self.state.skipped_batches,
            gamma_neg: self.state.gamma_neg,
            prob_gap: self.state.epoch_gap().gap(),
        };
        self.keep_best(&eval, callbacks)?;
        self.state.history.push(log.clone());
        self.state.next_epoch();
        let path = self.save_checkpoint()?;
        emit(callbacks, &Event::Checkpoint { path: &path })?;
        write_metrics_csv(&self.opts.out.join("metrics.csv"), &self.state.history)?;
        Ok(log)
    }

    /// Writes `best.safetensors` when the raw or EMA model beat the best so far.
    fn keep_best(&mut self, eval: &Evaluation, callbacks: &mut [&mut dyn Callback]) -> Result<()> {
        let (map, which) = match eval.ema {
            Some(e) if e > eval.raw => (e, "ema"),
            _ => (eval.raw, "raw"),
        };
        if !self.state.best_map.is_none_or(|b| map > b) {
            return Ok(());
        }
        let tensors = match (&self.ema, which) {
            (Some(e), "ema") => e.tensors.clone(),
            _ => snapshot(&self.named)?,
        };
        let source = format!(
            "asl-rs trainer: epoch {} of {}, {which} model, validation mAP {map:.2}",
            self.state.epoch + 1,
            self.cfg.epochs
        );
        let path = self.best_path();
        save_safetensors(&path, &tensors, &self.model_cfg_for(source))
            .map_err(|e| e.context(format!("writing {}", path.display())))?;
        self.state.best_map = Some(map);
        self.state.best_model = which.to_string();
        emit(
            callbacks,
            &Event::BestModel {
                path: &path,
                map,
                which,
            },
        )?;
        Ok(())
    }

    /// The configuration saved with the best model.
    fn model_cfg_for(&self, source: String) -> PretrainedCfg {
        PretrainedCfg {
            arch: self.model_cfg.name(),
            num_classes: self.state.classes.len(),
            class_names: self.state.classes.clone(),
            input_size: self.cfg.image_size,
            resize: ResizeMode::Squish,
            mean: TRESNET_MEAN,
            std: TRESNET_STD,
            threshold: self.cfg.threshold,
            activation: Activation::Sigmoid,
            class_thresholds: None,
            source,
            license: None,
        }
    }
}
