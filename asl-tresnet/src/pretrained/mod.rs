//! Pretrained models: what exists ([`registry`]), where the weights come from ([`hub`], local
//! files), how weight files are read and written ([`weights`]), and loading a model by name
//! ([`load`]).

pub mod classes;
pub mod hub;
pub mod load;
pub mod registry;
pub mod weights;

pub use load::{describe, file_hints, load_model, locate, unpublished_message, LoadedModel, ModelSource, Settings};
