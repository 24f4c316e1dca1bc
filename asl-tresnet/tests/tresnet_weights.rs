//! Weight files: the architecture's names and shapes against the real key lists of the
//! published checkpoints, the original `.pth` through the real conversion (rename rules and
//! InPlaceABN gammas), the project's own format round trip, and refusals that name the keys.

use std::collections::{BTreeMap, HashMap};

mod common;

use asl_test_support::fixtures::{max_rel_diff, pixels_to_input};
use asl_tresnet::pretrained::convert::original_to_timm;
use asl_tresnet::pretrained::keys::{check_weights, expected_weights, model_from_tensors};
use asl_tresnet::pretrained::weights::{load_weights, save_safetensors, SourceFormat};
use asl_tresnet::pretrained::{PretrainedCfg, ResizeMode};
use asl_tresnet::{HeadKind, TResNetConfig};
use candle_core::{Device, Tensor};
use common::fixture;

/// `name -> shape` from a key list of a published checkpoint (under `tests/fixtures/keys`): lines
/// `name\t[d, ...]\tdtype` (timm) or `name [d, ...]` (original), `#` comments.
fn key_list(file: &str) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixture(&format!("keys/{file}"))).expect("key list");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, rest) = l.split_once(['\t', ' ']).expect("name and shape");
            let shape = rest.trim().trim_start_matches('[');
            let shape = shape.split(']').next().unwrap_or("");
            let dims = shape
                .split(',')
                .filter(|d| !d.trim().is_empty())
                .map(|d| d.trim().parse().expect("dimension"))
                .collect();
            (name.to_string(), dims)
        })
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .collect()
}

fn expected(cfg: &TResNetConfig) -> BTreeMap<String, Vec<usize>> {
    expected_weights(cfg)
        .expect("expected weights")
        .into_iter()
        .map(|(n, s)| (n, s.dims().to_vec()))
        .collect()
}

#[test]
fn full_size_variants_ask_for_exactly_the_published_weights() {
    for (cfg, file) in [
        (TResNetConfig::tresnet_m(1000), "tresnet_m_timm.txt"),
        (TResNetConfig::tresnet_l(1000), "tresnet_l_timm.txt"),
        (TResNetConfig::tresnet_xl(1000), "tresnet_xl_timm.txt"),
        (TResNetConfig::tresnet_v2_l(1000), "tresnet_v2_l_timm.txt"),
    ] {
        assert_eq!(expected(&cfg), key_list(file), "{file}");
    }
}

#[test]
fn original_names_rename_to_timm_names() {
    // The paper's COCO TResNet-L checkpoint, renamed, is exactly timm's tresnet_l with 80 classes.
    let renamed: BTreeMap<String, Vec<usize>> = key_list("tresnet_l_coco_asl.txt")
        .into_iter()
        .map(|(k, s)| (original_to_timm(&k), s))
        .collect();
    assert_eq!(renamed, expected(&TResNetConfig::tresnet_l(80)));
    // The OpenImages checkpoint: the 512-d bottleneck head.
    let renamed: BTreeMap<String, Vec<usize>> = key_list("tresnet_l_openimages_asl.txt")
        .into_iter()
        .map(|(k, s)| (original_to_timm(&k), s))
        .collect();
    let cfg = TResNetConfig {
        head: HeadKind::Bottleneck { embedding: 512 },
        ..TResNetConfig::tresnet_l(9605)
    };
    assert_eq!(renamed, expected(&cfg));
    assert_eq!(
        original_to_timm("body.layer2.0.conv1.0.1.running_var"),
        "body.layer2.0.conv1.bn.running_var"
    );
    assert_eq!(
        original_to_timm("body.layer3.0.downsample.1.0.weight"),
        "body.layer3.0.downsample.1.conv.weight"
    );
    assert_eq!(
        original_to_timm("body.layer1.0.se.fc1.weight"),
        "body.layer1.0.se.fc1.weight"
    );
}

#[test]
fn original_pth_converts_to_the_same_model() {
    let dev = Device::Cpu;
    let loaded =
        load_weights(&fixture("tresnet/small_basic.original.pth"), &dev).expect("load .pth");
    assert_eq!(loaded.format, SourceFormat::OriginalPth);
    assert_eq!(loaded.pth_num_classes, Some(7));
    let names = loaded.pth_class_names.clone().expect("class names");
    assert_eq!(names[0], "cat");
    assert_eq!(names[4], "traffic light");
    let cfg = TResNetConfig::variant([1, 2, 2, 1], 0.125, false, 7);
    let model = model_from_tensors(&cfg, loaded.tensors, &dev).expect("model");
    let io = candle_core::safetensors::load(
        fixture("tresnet/small_basic.original.io.safetensors"),
        &dev,
    )
    .unwrap();
    let got = model
        .forward_t(&pixels_to_input(&io["pixels_224"]), false)
        .unwrap();
    let rel = max_rel_diff(&got, &io["logits_224"]);
    assert!(
        rel < 1e-4,
        "converted .pth logits differ by {rel} of their scale"
    );
}

#[test]
fn own_format_round_trips_with_metadata() {
    let dev = Device::Cpu;
    let src = load_weights(&fixture("tresnet/small_basic.weights.safetensors"), &dev).unwrap();
    assert_eq!(src.format, SourceFormat::TimmSafetensors);
    let meta = PretrainedCfg {
        arch: "custom".into(),
        num_classes: 7,
        class_names: (0..7).map(|i| format!("label {i}")).collect(),
        input_size: 224,
        resize: ResizeMode::Crop { crop_pct: 0.875 },
        threshold: 0.7,
        activation: asl_tresnet::pretrained::Activation::Softmax,
        class_thresholds: Some((0..7).map(|i| i as f64 / 10.0).collect()),
        source: "small_basic.weights.safetensors (timm safetensors)".into(),
        mean: [0.0; 3],
        std: [1.0; 3],
        license: None,
    };
    let dir = std::env::temp_dir().join(format!("asl-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("model.safetensors");
    save_safetensors(&out, &src.tensors, &meta).expect("save");
    assert!(
        !dir.join("model.safetensors.tmp").exists(),
        "no temporary file left behind"
    );
    let back = load_weights(&out, &dev).expect("load");
    assert_eq!(back.format, SourceFormat::AslSafetensors);
    assert_eq!(back.metadata.as_ref(), Some(&meta));
    let cfg = TResNetConfig::variant([1, 2, 2, 1], 0.125, false, 7);
    let io = candle_core::safetensors::load(fixture("tresnet/small_basic.io.safetensors"), &dev)
        .unwrap();
    let model = model_from_tensors(&cfg, back.tensors, &dev).unwrap();
    let rel = max_rel_diff(
        &model
            .forward_t(&pixels_to_input(&io["pixels_224"]), false)
            .unwrap(),
        &io["logits_224"],
    );
    assert!(rel < 1e-4, "{rel}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn weights_that_do_not_fit_are_refused_with_their_names() {
    let dev = Device::Cpu;
    let tensors: HashMap<String, Tensor> =
        load_weights(&fixture("tresnet/small_basic.weights.safetensors"), &dev)
            .unwrap()
            .tensors;
    // Wrong class count: the head is mis-shaped.
    let cfg = TResNetConfig::variant([1, 2, 2, 1], 0.125, false, 80);
    let err = model_from_tensors(&cfg, tensors.clone(), &dev)
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("mis-shaped: head.fc.weight: expected [80, 256], found [7, 256]"),
        "{err}"
    );
    // Wrong architecture: missing and unexpected blocks are listed.
    let cfg = TResNetConfig::variant([1, 1, 2, 1], 0.125, false, 7);
    let report = check_weights(&cfg, &tensors).unwrap();
    assert!(report.missing.is_empty());
    assert!(
        report
            .unexpected
            .iter()
            .any(|k| k.starts_with("body.layer2.1.")),
        "{report}"
    );
    let err = model_from_tensors(&cfg, tensors, &dev)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("unexpected: body.layer2.1."), "{err}");
    // Not a weight file at all.
    let junk = std::env::temp_dir().join(format!("asl-junk-{}.bin", std::process::id()));
    std::fs::write(&junk, b"not weights at all").unwrap();
    let err = load_weights(&junk, &dev)
        .err()
        .expect("junk must fail")
        .to_string();
    assert!(
        err.contains("neither a PyTorch checkpoint nor a safetensors file"),
        "{err}"
    );
    std::fs::remove_file(&junk).ok();
}
