//! Pretrained models, as timm's `pretrained_cfg`, registry and hub code are for PyTorch:
//!
//! - [`config`]: [`PretrainedCfg`], everything a model needs beside its tensors (architecture,
//!   classes, input size, resize mode, mean/std, activation, thresholds, source, licence);
//! - [`registry`]: every name `--model NAME` accepts, with where its weights live;
//! - [`classes`]: the built-in class lists (COCO, VOC, NUS-WIDE, ImageNet);
//! - [`weights`]: weight files in and out (timm safetensors, the paper's `.pth`, the project's
//!   safetensors with a [`PretrainedCfg`] in the header), [`keys`]: matching tensors to an
//!   architecture by name and shape, [`convert`]: the paper's checkpoints renamed to timm's;
//! - [`hub`]: the Hugging Face hub client (Python's cache layout, offline mode);
//! - [`source`] and [`load`]: loading a model by name for inference or fine-tuning.

pub mod classes;
pub mod config;
pub mod convert;
pub mod hub;
pub mod keys;
pub mod load;
pub mod registry;
pub mod source;
pub mod weights;

pub use config::{Activation, CfgOverrides, PretrainedCfg, ResizeMode};
pub use hub::{HubConfig, HubError};
pub use load::{load_backbone, load_for_finetuning, load_model, resolve, Backbone, LoadedModel};
pub use source::{file_hints, locate, unpublished_message, ModelSource};
