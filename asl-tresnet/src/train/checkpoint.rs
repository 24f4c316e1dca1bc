//! The run's checkpoint: the model, Adam's moments, the EMA model and the trainer's state in
//! one safetensors file, written atomically; and its restore, refusing a checkpoint whose
//! settings differ (naming each field), so that a resumed run equals the uninterrupted one.

use std::collections::HashMap;
use std::path::Path;

use asl_core::adaptive::GapAccumulator;
use candle_core::{Device, Tensor, Var};

use super::adam::Adam;
use super::config::TrainConfig;
use super::ema::Ema;
use super::events::EpochLog;
use crate::pretrained::weights::{load_tensors_with_header, save_tensors_atomic};
use crate::{Error, Result};

/// Saved with every checkpoint.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct State {
    /// [`TrainConfig::resume_fields`] of the run.
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) classes: Vec<String>,
    /// The training set's size (the epochs' orders and the schedule depend on it); `None`
    /// until the schedule is planned.
    pub(crate) train_samples: Option<usize>,
    /// Epochs fully done.
    pub(crate) epoch: usize,
    /// Optimiser steps done within the current epoch.
    pub(crate) step_in_epoch: usize,
    /// Optimiser steps done in total (the schedule's position).
    pub(crate) step: usize,
    /// Adam updates applied (a step whose micro-batches were all skipped applies none).
    pub(crate) adam_steps: usize,
    pub(crate) loss_sum: f64,
    pub(crate) loss_count: usize,
    pub(crate) skipped_batches: usize,
    pub(crate) epoch_seconds: f64,
    /// The current `gamma_neg` (adaptive asymmetry changes it step by step).
    pub(crate) gamma_neg: f64,
    /// The epoch's gap sums so far: Σ y·p, Σ y, Σ (1-y)(1-p), Σ (1-y).
    pub(crate) gap_sums: [f64; 4],
    /// `None` before the first validation.
    pub(crate) best_map: Option<f64>,
    pub(crate) best_model: String,
    pub(crate) history: Vec<EpochLog>,
}

pub(crate) const STATE_KEY: &str = "asl_train.state";

impl State {
    /// The state of a run that has not started.
    pub(crate) fn new(cfg: &TrainConfig, classes: &[String]) -> State {
        State {
            settings: cfg.resume_fields(),
            classes: classes.to_vec(),
            train_samples: None,
            epoch: 0,
            step_in_epoch: 0,
            step: 0,
            adam_steps: 0,
            loss_sum: 0.0,
            loss_count: 0,
            skipped_batches: 0,
            epoch_seconds: 0.0,
            gamma_neg: cfg.loss.gamma_neg,
            gap_sums: [0.0; 4],
            best_map: None,
            best_model: String::new(),
            history: Vec::new(),
        }
    }

    /// The epoch's gap sums so far, as an accumulator.
    pub(crate) fn epoch_gap(&self) -> GapAccumulator {
        let s = self.gap_sums;
        GapAccumulator {
            positive: (s[0], s[1]),
            negative: (s[2], s[3]),
        }
    }

    pub(crate) fn set_epoch_gap(&mut self, g: &GapAccumulator) {
        self.gap_sums = [g.positive.0, g.positive.1, g.negative.0, g.negative.1];
    }

    /// Starts the next epoch: the finished one's counters reset.
    pub(crate) fn next_epoch(&mut self) {
        self.epoch += 1;
        self.step_in_epoch = 0;
        self.loss_sum = 0.0;
        self.loss_count = 0;
        self.skipped_batches = 0;
        self.epoch_seconds = 0.0;
        self.gap_sums = [0.0; 4];
    }
}

/// Writes the checkpoint.
pub(crate) fn save(
    path: &Path,
    state: &State,
    named: &[(String, Var)],
    adam: &Adam,
    ema: Option<&Ema>,
) -> Result<()> {
    let mut t = HashMap::new();
    for (name, var) in named {
        t.insert(format!("model/{name}"), var.as_tensor().clone());
    }
    for (i, (name, _, _)) in adam.params.iter().enumerate() {
        t.insert(format!("adam_m/{name}"), adam.m[i].clone());
        t.insert(format!("adam_v/{name}"), adam.v[i].clone());
    }
    if let Some(e) = ema {
        for (name, v) in &e.tensors {
            t.insert(format!("ema/{name}"), v.clone());
        }
    }
    let json = serde_json::to_string(state)
        .map_err(|e| Error::Train(format!("the training state cannot be saved: {e}")))?;
    let header = HashMap::from([(STATE_KEY.to_string(), json)]);
    save_tensors_atomic(path, &t, header)
        .map_err(|e| e.context(format!("writing the checkpoint {}", path.display())))
}

/// Restores the checkpoint at `path` into the model's variables, Adam and the EMA, after
/// checking that it belongs to this run (same settings and classes, not more epochs than
/// `cfg.epochs`).
pub(crate) fn restore(
    path: &Path,
    cfg: &TrainConfig,
    classes: &[String],
    (named, adam, ema): (&[(String, Var)], &mut Adam, Option<&mut Ema>),
    device: &Device,
) -> Result<State> {
    if !path.exists() {
        return Err(Error::Train(format!(
            "--resume: {} does not exist (is this the --out folder of an earlier run?)",
            path.display()
        )));
    }
    let (tensors, header) = load_tensors_with_header(path, &Device::Cpu)?;
    let saved = read_state(path, &header)?;
    check_resumable(path, &saved, cfg, classes)?;
    let get = |key: String| -> Result<Tensor> {
        let t = tensors
            .get(&key)
            .ok_or_else(|| Error::Train(format!("{} lacks {key}", path.display())))?;
        Ok(t.to_device(device)?)
    };
    for (name, var) in named {
        var.set(&get(format!("model/{name}"))?)?;
    }
    for i in 0..adam.params.len() {
        let name = adam.params[i].0.clone();
        adam.m[i] = get(format!("adam_m/{name}"))?;
        adam.v[i] = get(format!("adam_v/{name}"))?;
    }
    adam.step = saved.adam_steps;
    if let Some(e) = ema {
        for (name, _) in named {
            e.tensors.insert(name.clone(), get(format!("ema/{name}"))?);
        }
    }
    Ok(saved)
}

fn read_state(path: &Path, header: &HashMap<String, String>) -> Result<State> {
    let json = header
        .get(STATE_KEY)
        .ok_or_else(|| Error::Train(format!("{} is not a training checkpoint", path.display())))?;
    serde_json::from_str(json).map_err(|e| {
        Error::Train(format!(
            "reading the state in {}: {e} (a checkpoint of an older asl-rs cannot be resumed)",
            path.display()
        ))
    })
}

fn check_resumable(
    path: &Path,
    saved: &State,
    cfg: &TrainConfig,
    classes: &[String],
) -> Result<()> {
    let changed = changed_fields(&saved.settings, &cfg.resume_fields());
    if !changed.is_empty() {
        return Err(Error::Train(format!(
            "{} was written with other training settings; resume with the same options ({})",
            path.display(),
            changed.join("; ")
        )));
    }
    if saved.classes != classes {
        return Err(Error::Train(format!(
            "{} was trained on other classes",
            path.display()
        )));
    }
    if saved.epoch > cfg.epochs {
        return Err(Error::Train(format!(
            "{} has already trained {} epochs; resume with --epochs {} or more",
            path.display(),
            saved.epoch,
            saved.epoch
        )));
    }
    Ok(())
}

/// The names and values of the fields that differ between a checkpoint's settings and now.
fn changed_fields(saved: &[(String, String)], now: &[(String, String)]) -> Vec<String> {
    let mut changed = Vec::new();
    for (k, v) in now {
        match saved.iter().find(|(sk, _)| sk == k) {
            Some((_, sv)) if sv == v => {}
            Some((_, sv)) => changed.push(format!("{k}: saved {sv}, now {v}")),
            None => changed.push(format!("{k}: not in the checkpoint, now {v}")),
        }
    }
    changed
}
