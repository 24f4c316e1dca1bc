//! Weights in and out: timm-named safetensors, the ASL paper's original `.pth` checkpoints
//! (renamed to timm naming, InPlaceABN gammas converted), and the project's own format (timm
//! naming plus metadata in the safetensors header). See `shared/spec/tresnet.md`.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::model::{HeadKind, TResNet, TResNetConfig};
use super::registry::Activation;

/// The header key that marks a file as the project's own format, and its version.
pub const FORMAT_KEY: &str = "asl.format";
pub const FORMAT_VERSION: &str = "asl-rs/1";

/// An error for the user: a message without a captured backtrace (candle's `bail!` and
/// `Error::msg` attach one when `RUST_BACKTRACE` is set, and `Display` prints it).
fn user_error(msg: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(msg.to_string())
}

/// InPlaceABN multiplies by `|weight| + 1e-5` (original TResNet / ASL checkpoints).
const INPLACE_ABN_EPS: f32 = 1e-5;

/// Where a weight file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// timm's safetensors (timm naming, no metadata).
    TimmSafetensors,
    /// The project's own safetensors (timm naming, metadata).
    AslSafetensors,
    /// A PyTorch zip checkpoint in the original ASL/TResNet naming.
    OriginalPth,
}

/// How images are resized for a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    /// Resize to S x S, aspect ratio not kept (the ASL multi-label models).
    Squish,
    /// Resize the shorter side to S / crop_pct, centre-crop S (timm's ImageNet models).
    Crop { crop_pct: f64 },
}

/// What the project's format stores beside the tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMetadata {
    /// Architecture name, e.g. `tresnet_l`.
    pub arch: String,
    pub num_classes: usize,
    /// Class names in output order (empty when unknown).
    pub class_names: Vec<String>,
    pub input_size: usize,
    pub resize: ResizeMode,
    /// Default decision threshold on the scores.
    pub threshold: f64,
    /// How scores are read from the logits (header key `asl.activation`; files without it are
    /// multi-label: sigmoid).
    pub activation: Activation,
    /// Per-class decision thresholds (`asl-cli validate --calibrate`), used instead of
    /// `threshold` when present (header key `asl.class_thresholds`, optional).
    pub class_thresholds: Option<Vec<f64>>,
    /// Where the weights came from (file name and format), so a file is never converted twice.
    pub source: String,
}

impl ModelMetadata {
    /// The safetensors header entries.
    pub fn to_header(&self) -> HashMap<String, String> {
        let resize = match self.resize {
            ResizeMode::Squish => "squish".to_string(),
            ResizeMode::Crop { crop_pct } => format!("crop:{crop_pct}"),
        };
        let mut header = HashMap::from([
            (FORMAT_KEY.to_string(), FORMAT_VERSION.to_string()),
            ("asl.arch".into(), self.arch.clone()),
            ("asl.num_classes".into(), self.num_classes.to_string()),
            (
                "asl.class_names".into(),
                serde_json::to_string(&self.class_names).unwrap_or_else(|_| "[]".into()),
            ),
            ("asl.input_size".into(), self.input_size.to_string()),
            ("asl.resize".into(), resize),
            ("asl.threshold".into(), self.threshold.to_string()),
            ("asl.activation".into(), self.activation.name().to_string()),
            ("asl.source".into(), self.source.clone()),
        ]);
        if let Some(t) = &self.class_thresholds {
            header.insert(
                "asl.class_thresholds".into(),
                serde_json::to_string(t).unwrap_or_else(|_| "[]".into()),
            );
        }
        header
    }

    /// Reads the header entries back; `None` when the file is not in the project's format.
    pub fn from_header(h: &HashMap<String, String>) -> Result<Option<Self>> {
        if h.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT_VERSION) {
            return Ok(None);
        }
        let get = |k: &str| {
            h.get(k)
                .ok_or_else(|| user_error(format!("metadata key {k} is missing")))
        };
        let num = |k: &str| -> Result<f64> {
            get(k)?
                .parse::<f64>()
                .map_err(|e| user_error(format!("metadata {k}: {e}")))
        };
        let resize = match get("asl.resize")?.as_str() {
            "squish" => ResizeMode::Squish,
            other => match other.strip_prefix("crop:").and_then(|v| v.parse().ok()) {
                Some(crop_pct) => ResizeMode::Crop { crop_pct },
                None => {
                    return Err(user_error(format!(
                        "metadata asl.resize: unknown mode {other:?}"
                    )))
                }
            },
        };
        Ok(Some(ModelMetadata {
            arch: get("asl.arch")?.clone(),
            num_classes: num("asl.num_classes")? as usize,
            class_names: serde_json::from_str(get("asl.class_names")?)
                .map_err(|e| user_error(format!("metadata asl.class_names: {e}")))?,
            input_size: num("asl.input_size")? as usize,
            resize,
            threshold: num("asl.threshold")?,
            activation: match h.get("asl.activation") {
                None => Activation::Sigmoid,
                Some(a) => Activation::parse(a).ok_or_else(|| {
                    user_error(format!(
                        "metadata asl.activation: unknown activation {a:?} (sigmoid or softmax)"
                    ))
                })?,
            },
            class_thresholds: match h.get("asl.class_thresholds") {
                None => None,
                Some(t) => {
                    let t: Vec<f64> = serde_json::from_str(t)
                        .map_err(|e| user_error(format!("metadata asl.class_thresholds: {e}")))?;
                    let k = num("asl.num_classes")? as usize;
                    if t.len() != k || t.iter().any(|v| !(0.0..=1.0).contains(v)) {
                        return Err(user_error(format!(
                            "metadata asl.class_thresholds: expected {k} values in [0, 1], got {}",
                            t.len()
                        )));
                    }
                    Some(t)
                }
            },
            source: get("asl.source")?.clone(),
        }))
    }
}

/// A `VarBuilder` backend that records the names and shapes a model asks for, allocating
/// nothing (every tensor is a broadcast zero).
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<(String, Shape)>>,
}

impl SimpleBackend for &Recorder {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((name.to_string(), s.clone()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        Err(user_error(format!("unexpected unchecked read of {name}")))
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
        .map_err(|_| user_error("weight recorder poisoned"))
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
        return Err(user_error(format!(
            "the weights do not fit {} layers {:?} width {} with {} classes:\n{mismatch}",
            if cfg.v2 { "TResNet v2" } else { "TResNet" },
            cfg.layers,
            cfg.width_factor,
            cfg.num_classes
        )));
    }
    let tensors = tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    TResNet::new(cfg, VarBuilder::from_tensors(tensors, DType::F32, device))
}

/// The original ASL/TResNet name of a weight in timm naming, by the spec's rename rules:
/// `conv(\d+).0.0 -> conv\1.conv`, `conv(\d+).0.1 -> conv\1.bn`, `conv(\d+).0 -> conv\1.conv`,
/// `conv(\d+).1 -> conv\1.bn`, `downsample.(\d+).0 -> downsample.\1.conv`,
/// `downsample.(\d+).1 -> downsample.\1.bn`, applied on whole name components.
pub fn original_to_timm(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(parts.len());
    let is_conv = |p: &str| {
        p.len() > 4 && p.starts_with("conv") && p[4..].bytes().all(|b| b.is_ascii_digit())
    };
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i];
        let next = parts.get(i + 1).copied();
        let after = parts.get(i + 2).copied();
        if is_conv(p) && next == Some("0") && matches!(after, Some("0") | Some("1")) {
            out.push(p);
            out.push(if after == Some("0") { "conv" } else { "bn" });
            i += 3;
        } else if is_conv(p) && matches!(next, Some("0") | Some("1")) {
            out.push(p);
            out.push(if next == Some("0") { "conv" } else { "bn" });
            i += 2;
        } else if p == "downsample"
            && next.is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && matches!(after, Some("0") | Some("1"))
        {
            out.push(p);
            out.push(next.unwrap_or_default());
            out.push(if after == Some("0") { "conv" } else { "bn" });
            i += 3;
        } else {
            out.push(p);
            i += 1;
        }
    }
    out.join(".")
}

/// Renames an original state dict to timm naming and converts every InPlaceABN gamma to the
/// plain BatchNorm scale `|w| + 1e-5`. `num_batches_tracked` entries are dropped.
pub fn convert_original(tensors: Vec<(String, Tensor)>) -> Result<HashMap<String, Tensor>> {
    tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| {
            let name = original_to_timm(&k);
            let t = if name.ends_with(".bn.weight") {
                (t.to_dtype(DType::F32)?.abs()? + INPLACE_ABN_EPS as f64)?
            } else {
                t
            };
            Ok((name, t))
        })
        .collect()
}

/// A PyTorch checkpoint's contents: tensors (as stored) and, for ASL model-zoo files, the class
/// count and names.
pub struct PthCheckpoint {
    pub tensors: Vec<(String, Tensor)>,
    pub num_classes: Option<usize>,
    pub class_names: Option<Vec<String>>,
}

/// Reads a PyTorch zip checkpoint without executing pickle code: a dict holding `model` (the
/// state dict), `num_classes` and `idx_to_class`, or a bare state dict.
pub fn read_pth(path: &Path) -> Result<PthCheckpoint> {
    let ctx = |e: candle_core::Error| {
        user_error(format!(
            "reading PyTorch checkpoint {}: {e}",
            path.display()
        ))
    };
    let tensors = match candle_core::pickle::read_all_with_key(path, Some("model")) {
        Ok(t) if !t.is_empty() => t,
        _ => candle_core::pickle::read_all(path).map_err(ctx)?,
    };
    if tensors.is_empty() {
        return Err(ctx(user_error("no tensors found")));
    }
    let (num_classes, class_names) = read_pth_extras(path).unwrap_or((None, None));
    Ok(PthCheckpoint {
        tensors,
        num_classes,
        class_names,
    })
}

/// `num_classes` and `idx_to_class` (class names by index) of an ASL model-zoo checkpoint.
fn read_pth_extras(path: &Path) -> Result<(Option<usize>, Option<Vec<String>>)> {
    use candle_core::pickle::{Object, Stack};
    let file = std::fs::File::open(path)?;
    let mut zip = zip::ZipArchive::new(file).map_err(candle_core::Error::wrap)?;
    let name = (0..zip.len())
        .filter_map(|i| {
            zip.name_for_index(i)
                .and_then(|n| n.ok())
                .map(|n| n.to_string())
        })
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| user_error("no data.pkl in the archive"))?;
    let mut bytes = Vec::new();
    zip.by_name(&name)
        .map_err(candle_core::Error::wrap)?
        .read_to_end(&mut bytes)?;
    let mut stack = Stack::empty();
    stack.read_loop(&mut std::io::BufReader::new(bytes.as_slice()))?;
    let Object::Dict(entries) = stack.finalize()? else {
        return Ok((None, None));
    };
    let mut num_classes = None;
    let mut names = None;
    for (k, v) in entries {
        match (k, v) {
            (Object::Unicode(k), Object::Int(n)) if k == "num_classes" => {
                num_classes = Some(n as usize)
            }
            (Object::Unicode(k), Object::Long(n)) if k == "num_classes" => {
                num_classes = Some(n as usize)
            }
            (Object::Unicode(k), Object::Dict(map)) if k == "idx_to_class" => {
                // Ordered by index (the reference inserts them in index order; candle's pickle
                // reader does not keep the insertion order). Indices must be 0..K-1.
                let mut pairs = map
                    .into_iter()
                    .map(|(i, v)| match (i, v) {
                        (Object::Int(i), Object::Unicode(s)) => Some((i as i64, s)),
                        (Object::Long(i), Object::Unicode(s)) => Some((i, s)),
                        _ => None,
                    })
                    .collect::<Option<Vec<(i64, String)>>>()
                    .unwrap_or_default();
                pairs.sort_by_key(|(i, _)| *i);
                if pairs.iter().enumerate().all(|(n, (i, _))| *i == n as i64) && !pairs.is_empty() {
                    // The OpenImages checkpoint's names carry stray quote characters.
                    let clean = |s: String| s.trim_matches(|c| c == '\'' || c == '"').to_string();
                    names = Some(pairs.into_iter().map(|(_, s)| clean(s)).collect());
                }
            }
            _ => {}
        }
    }
    Ok((num_classes, names))
}

/// Writes tensors and metadata as safetensors, atomically (temporary file, fsync, rename).
pub fn save_safetensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &ModelMetadata,
) -> Result<()> {
    save_tensors_atomic(path, tensors, meta.to_header())
}

/// Writes tensors and header entries as safetensors, atomically: a temporary file next to
/// `path`, synced, then renamed over it, so a reader (or a crash) never sees a half-written file.
pub fn save_tensors_atomic(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    header: HashMap<String, String>,
) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<Result<_>>()?;
    let written = safetensors::serialize_to_file(contiguous, Some(header), &tmp)
        .map_err(|e| user_error(format!("writing {}: {e}", tmp.display())))
        .and_then(|()| Ok(std::fs::File::open(&tmp)?.sync_all()?))
        .and_then(|()| Ok(std::fs::rename(&tmp, path)?));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Reads a safetensors file's tensors and its header entries (the counterpart of
/// [`save_tensors_atomic`]).
pub fn load_tensors_with_header(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| user_error(format!("cannot read {}: {e}", path.display())))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| user_error(format!("{} is not a safetensors file: {e}", path.display())))?;
    let header = meta.metadata().clone().unwrap_or_default();
    Ok((
        candle_core::safetensors::load_buffer(&bytes, device)?,
        header,
    ))
}

/// A weight file read from disk, in timm naming.
pub struct LoadedWeights {
    pub format: SourceFormat,
    pub tensors: HashMap<String, Tensor>,
    /// The project's metadata (only for its own format).
    pub metadata: Option<ModelMetadata>,
    /// Class count and names found in an original checkpoint.
    pub pth_num_classes: Option<usize>,
    pub pth_class_names: Option<Vec<String>>,
}

/// Reads a weight file, detecting its format by content: a zip archive is a PyTorch checkpoint
/// (converted in memory from the original naming), otherwise safetensors (the project's format
/// when its header says so, timm's otherwise).
pub fn load_weights(path: &Path, device: &Device) -> Result<LoadedWeights> {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| user_error(format!("cannot read {}: {e}", path.display())))?;
    if &magic == b"PK\x03\x04" {
        let ckpt = read_pth(path)?;
        let tensors = convert_original(ckpt.tensors)?
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(device)?)))
            .collect::<Result<_>>()?;
        return Ok(LoadedWeights {
            format: SourceFormat::OriginalPth,
            tensors,
            metadata: None,
            pth_num_classes: ckpt.num_classes,
            pth_class_names: ckpt.class_names,
        });
    }
    let bytes = std::fs::read(path)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        user_error(format!(
            "{} is neither a PyTorch checkpoint nor a safetensors file: {e}",
            path.display()
        ))
    })?;
    let metadata = match header.metadata() {
        Some(h) => ModelMetadata::from_header(h)?,
        None => None,
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
    Ok(LoadedWeights {
        format: if metadata.is_some() {
            SourceFormat::AslSafetensors
        } else {
            SourceFormat::TimmSafetensors
        },
        tensors,
        metadata,
        pth_num_classes: None,
        pth_class_names: None,
    })
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
        _ => Err(user_error(
            "no classifier found: expected head.fc.weight (or head.fc.FC.weight and \
                 head.fc.embedding_generator.0.weight)",
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
                return Err(user_error(format!(
                    "unknown architecture {a:?} (known: {})",
                    TResNetConfig::ARCHS.join(", ")
                )));
            }
            vec![a]
        }
        None => TResNetConfig::ARCHS.to_vec(),
    };
    let mut closest: Option<(usize, String, KeyMismatch)> = None;
    for name in candidates {
        let cfg = TResNetConfig {
            head,
            ..TResNetConfig::from_arch(name, num_classes)
                .ok_or_else(|| user_error(format!("unknown architecture {name:?}")))?
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
    let (_, name, report) =
        closest.ok_or_else(|| user_error("no candidate architecture to check"))?;
    Err(user_error(format!(
        "the weights do not match {} (with {num_classes} classes){}:\n{report}",
        name,
        if arch.is_some() {
            ""
        } else {
            ", the closest known architecture"
        }
    )))
}
