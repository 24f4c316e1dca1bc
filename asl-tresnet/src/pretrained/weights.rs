//! Weight files in and out: timm-named safetensors, the ASL paper's original `.pth` checkpoints
//! (converted in memory, see [`super::convert`]), and the project's own format (timm naming plus
//! a [`PretrainedCfg`] in the safetensors header), written atomically.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::config::PretrainedCfg;
use super::convert::{convert_original, read_pth};
use crate::atomic::write_atomic_via;
use crate::{Error, Result};

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

/// Writes tensors and metadata as safetensors, atomically (temporary file, fsync, rename).
pub fn save_safetensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    cfg: &PretrainedCfg,
) -> Result<()> {
    save_tensors_atomic(path, tensors, cfg.to_header())
}

/// Writes tensors and header entries as safetensors, atomically: a temporary file next to
/// `path`, synced, then renamed over it, so a reader (or a crash) never sees a half-written file.
pub fn save_tensors_atomic(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    header: HashMap<String, String>,
) -> Result<()> {
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<Result<_>>()?;
    write_atomic_via(path, |tmp| {
        safetensors::serialize_to_file(contiguous, Some(header), tmp).map_err(std::io::Error::other)
    })
    .map_err(|e| Error::write(path, e))
}

/// Reads a safetensors file's tensors and its header entries (the counterpart of
/// [`save_tensors_atomic`]).
pub fn load_tensors_with_header(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::read(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::Metadata(format!("{} is not a safetensors file: {e}", path.display()))
    })?;
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
    pub metadata: Option<PretrainedCfg>,
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
        .map_err(|e| Error::read(path, e))?;
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
    let bytes = std::fs::read(path).map_err(|e| Error::read(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::Metadata(format!(
            "{} is neither a PyTorch checkpoint nor a safetensors file: {e}",
            path.display()
        ))
    })?;
    let metadata = match header.metadata() {
        Some(h) => PretrainedCfg::from_header(h)?,
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
