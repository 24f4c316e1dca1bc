//! What this crate's tests share: their fixtures' paths and the TResNet variant a fixture
//! records.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use asl_test_support::fixtures::{fixture_path, variant_from_metadata};
use asl_tresnet::TResNetConfig;

/// `asl-tresnet/tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    fixture_path(env!("CARGO_MANIFEST_DIR"), name)
}

/// The configuration a fixture's weights file records in its safetensors metadata.
pub fn config_from_metadata(path: &Path) -> TResNetConfig {
    let v = variant_from_metadata(path);
    TResNetConfig::variant(v.layers, v.width_factor, v.v2, v.num_classes)
}
