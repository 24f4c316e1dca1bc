//! Starting a fine-tune from a pretrained model in one call: the backbone loaded, a new
//! classifier for the new classes, the pretrained model's preprocessing kept.

use asl_test_support::models::{multilabel_cfg, write_model};
use asl_tresnet::pretrained::weights::load_weights;
use asl_tresnet::pretrained::{
    load_backbone, load_for_finetuning, HubConfig, ModelSource, PretrainedCfg, ResizeMode,
};
use asl_tresnet::TResNetConfig;
use candle_core::{Device, Tensor};

fn same(a: &Tensor, b: &Tensor) -> bool {
    let v = |t: &Tensor| {
        t.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values")
    };
    v(a) == v(b)
}

#[test]
fn load_for_finetuning_keeps_the_backbone_and_makes_a_new_head() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = TResNetConfig::variant([1, 1, 1, 1], 0.25, false, 3);
    let meta = PretrainedCfg {
        resize: ResizeMode::Crop { crop_pct: 0.9 },
        mean: [0.5; 3],
        std: [0.25; 3],
        license: Some("MIT".into()),
        ..multilabel_cfg(&cfg, &["a", "b", "c"], 64, 0.5)
    };
    let path = dir.path().join("pretrained.safetensors");
    write_model(&path, &cfg, &meta);
    let source = ModelSource::File(path.clone());
    let hub = HubConfig::from_env();

    let (model, new_vars, new_cfg) =
        load_for_finetuning(&source, 5, &hub, &Device::Cpu).expect("fine-tuning start");
    // a training-path model with 5 outputs, the pretrained preprocessing, class_i names
    assert!(!model.is_inference());
    assert_eq!(model.config().num_classes, 5);
    assert_eq!((new_cfg.num_classes, new_cfg.class_names.len()), (5, 5));
    assert_eq!((new_cfg.input_size, new_cfg.resize), (64, meta.resize));
    assert_eq!((new_cfg.mean, new_cfg.std), (meta.mean, meta.std));
    let x = Tensor::rand(0f32, 1., (2, 3, 64, 64), &Device::Cpu).expect("x");
    assert_eq!(model.forward_t(&x, false).expect("logits").dims(), &[2, 5]);
    // every backbone weight is the file's; the head is new
    let file = load_weights(&path, &Device::Cpu).expect("file").tensors;
    let data = new_vars.data().lock().expect("vars");
    let mut compared = 0;
    for (name, var) in data.iter() {
        if name.starts_with("head.") {
            assert_eq!(var.as_tensor().dim(0).expect("rows"), 5, "{name}");
            continue;
        }
        assert!(same(var.as_tensor(), &file[name]), "{name}");
        compared += 1;
    }
    assert!(compared > 40, "{compared} backbone weights");
    // the backbone alone, for a trainer
    let backbone = load_backbone(&source, &hub).expect("backbone");
    assert_eq!(backbone.arch, cfg.name());
    assert!(backbone.tensors.keys().all(|k| !k.starts_with("head.")));
    // a source that is not there is an error
    let e = load_for_finetuning(
        &ModelSource::File(dir.path().join("missing.safetensors")),
        5,
        &hub,
        &Device::Cpu,
    );
    assert!(e.is_err());
}
