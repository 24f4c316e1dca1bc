//! The ASL paper's original checkpoints: PyTorch zip files read without executing pickle code,
//! their weight names renamed to timm's, their InPlaceABN gammas turned into plain BatchNorm
//! scales.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// InPlaceABN multiplies by `|weight| + 1e-5` (original TResNet / ASL checkpoints).
const INPLACE_ABN_EPS: f32 = 1e-5;

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
    let ctx = |e: &dyn std::fmt::Display| {
        Error::Metadata(format!(
            "reading PyTorch checkpoint {}: {e}",
            path.display()
        ))
    };
    let tensors = match candle_core::pickle::read_all_with_key(path, Some("model")) {
        Ok(t) if !t.is_empty() => t,
        _ => candle_core::pickle::read_all(path).map_err(|e| ctx(&e))?,
    };
    if tensors.is_empty() {
        return Err(ctx(&"no tensors found"));
    }
    let (num_classes, class_names) = read_pth_extras(path).unwrap_or((None, None));
    Ok(PthCheckpoint {
        tensors,
        num_classes,
        class_names,
    })
}

/// `num_classes` and `idx_to_class` (class names by index) of an ASL model-zoo checkpoint.
fn read_pth_extras(path: &Path) -> candle_core::Result<(Option<usize>, Option<Vec<String>>)> {
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
        .ok_or_else(|| candle_core::Error::Msg("no data.pkl in the archive".into()))?;
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
