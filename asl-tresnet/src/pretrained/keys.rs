//! Matching tensors to architectures: the names and shapes each variant reads, which variant a
//! set of tensors is, and a refusal that lists the first missing, unexpected and mis-shaped keys.

use std::collections::HashMap;
use std::fmt;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::model::{HeadKind, TResNet, TResNetConfig};
use crate::{Error, Result};

/// A `VarBuilder` backend that records the names and shapes a model asks for, allocating
/// nothing (every tensor is a broadcast zero).
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<(String, Shape)>>,
}

impl SimpleBackend for &Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((name.to_string(), s.clone()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unexpected unchecked read of {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every weight name the model for `cfg` reads, with its shape (timm naming).
pub fn expected_weights(cfg: &TResNetConfig) -> Result<Vec<(String, Shape)>> {
    let recorder = Recorder::default();
    TResNet::new(
        cfg,
        VarBuilder::from_backend(Box::new(&recorder), DType::F32, Device::Cpu),
    )?;
    recorder
        .seen
        .into_inner()
        .map_err(|_| Error::Metadata("weight recorder poisoned".into()))
}

/// How a set of tensors fails to fit an architecture.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyMismatch {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, expected shape, found shape)
    pub mis_shaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl KeyMismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mis_shaped.is_empty()
    }
}

impl fmt::Display for KeyMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 5;
        let list = |v: &[String]| {
            let mut s = v.iter().take(SHOW).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > SHOW {
                s.push_str(&format!(", ... ({} in all)", v.len()));
            }
            s
        };
        if !self.missing.is_empty() {
            writeln!(f, "  missing: {}", list(&self.missing))?;
        }
        if !self.unexpected.is_empty() {
            writeln!(f, "  unexpected: {}", list(&self.unexpected))?;
        }
        for (name, want, got) in self.mis_shaped.iter().take(SHOW) {
            writeln!(f, "  mis-shaped: {name}: expected {want:?}, found {got:?}")?;
        }
        if self.mis_shaped.len() > SHOW {
            writeln!(f, "  ... {} mis-shaped in all", self.mis_shaped.len())?;
        }
        Ok(())
    }
}

/// Compares tensors (timm naming) with what `cfg` needs; `num_batches_tracked` is ignored.
pub fn check_weights(
    cfg: &TResNetConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<KeyMismatch> {
    let expected = expected_weights(cfg)?;
    let mut report = KeyMismatch::default();
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => report.missing.push(name.clone()),
            Some(t) if t.shape() != shape => {
                report
                    .mis_shaped
                    .push((name.clone(), shape.dims().to_vec(), t.dims().to_vec()))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    report.unexpected = tensors
        .keys()
        .filter(|k| !known.contains(k.as_str()) && !k.ends_with("num_batches_tracked"))
        .cloned()
        .collect();
    report.missing.sort();
    report.unexpected.sort();
    report.mis_shaped.sort();
    Ok(report)
}

/// Builds the model from tensors in timm naming, refusing (with the first missing, unexpected
/// and mis-shaped names) tensors that do not fit `cfg`.
pub fn model_from_tensors(
    cfg: &TResNetConfig,
    tensors: HashMap<String, Tensor>,
    device: &Device,
) -> Result<TResNet> {
    let mismatch = check_weights(cfg, &tensors)?;
    if !mismatch.is_empty() {
        return Err(Error::KeyMismatch {
            target: format!(
                "fit {} layers {:?} width {} with {} classes",
                if cfg.v2 { "TResNet v2" } else { "TResNet" },
                cfg.layers,
                cfg.width_factor,
                cfg.num_classes
            ),
            mismatch,
        });
    }
    let tensors = tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(TResNet::new(
        cfg,
        VarBuilder::from_tensors(tensors, DType::F32, device),
    )?)
}

/// The class count and head kind the tensors imply (from `head.fc.weight` or the OpenImages
/// bottleneck head `head.fc.FC.weight`).
pub fn head_from_tensors(tensors: &HashMap<String, Tensor>) -> Result<(usize, HeadKind)> {
    if let Some(fc) = tensors.get("head.fc.weight") {
        return Ok((fc.dim(0)?, HeadKind::Linear));
    }
    match (
        tensors.get("head.fc.FC.weight"),
        tensors.get("head.fc.embedding_generator.0.weight"),
    ) {
        (Some(fc), Some(emb)) => Ok((
            fc.dim(0)?,
            HeadKind::Bottleneck {
                embedding: emb.dim(0)?,
            },
        )),
        _ => Err(Error::Metadata(
            "no classifier found: expected head.fc.weight (or head.fc.FC.weight and \
             head.fc.embedding_generator.0.weight)"
                .into(),
        )),
    }
}

/// The architecture that fits the tensors: `arch` when given (refused with the mismatching keys
/// when it does not fit), otherwise the first of [`TResNetConfig::ARCHS`] whose names and shapes
/// all match.
pub fn config_for_tensors(
    tensors: &HashMap<String, Tensor>,
    arch: Option<&str>,
) -> Result<(String, TResNetConfig)> {
    let (num_classes, head) = head_from_tensors(tensors)?;
    let candidates: Vec<&str> = match arch {
        Some(a) => {
            if TResNetConfig::from_arch(a, 1).is_none() {
                return Err(Error::UnknownArch {
                    name: a.to_string(),
                });
            }
            vec![a]
        }
        None => TResNetConfig::ARCHS.to_vec(),
    };
    let mut closest: Option<(usize, String, KeyMismatch)> = None;
    for name in candidates {
        let cfg = TResNetConfig {
            head,
            ..TResNetConfig::named(name, num_classes)?
        };
        let report = check_weights(&cfg, tensors)?;
        if report.is_empty() {
            return Ok((name.to_string(), cfg));
        }
        let problems = report.missing.len() + report.unexpected.len() + report.mis_shaped.len();
        if closest.as_ref().is_none_or(|(p, _, _)| problems < *p) {
            closest = Some((problems, name.to_string(), report));
        }
    }
    let (_, name, mismatch) =
        closest.ok_or_else(|| Error::Metadata("no candidate architecture to check".into()))?;
    Err(Error::KeyMismatch {
        target: format!(
            "match {name} (with {num_classes} classes){}",
            if arch.is_some() {
                ""
            } else {
                ", the closest known architecture"
            }
        ),
        mismatch,
    })
}
