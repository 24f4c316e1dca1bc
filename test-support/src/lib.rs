//! Helpers shared by the asl-rs crates' tests (not published): [`hub`], a local Hugging Face
//! hub on 127.0.0.1; [`fixtures`], reading the reference fixtures and comparing numbers;
//! [`alloc`], a counting allocator for memory measurements; `models` (feature `models`), small
//! model files.

pub mod alloc;
pub mod fixtures;
pub mod hub;
#[cfg(feature = "models")]
pub mod models;
