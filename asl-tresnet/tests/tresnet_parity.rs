//! TResNet logits against timm's, on small random models of every block type (fixtures from
//! `tests/fixtures/gen_tresnet_fixtures.py`: random weights, randomised BatchNorm statistics and gammas),
//! at 224 x 224 and at 228 x 196 (odd feature maps: reflect padding and ceil-mode pooling).

mod common;

use asl_test_support::fixtures::{max_rel_diff, pixels_to_input};
use asl_tresnet::TResNet;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{config_from_metadata, fixture};

#[test]
fn small_tresnets_match_timm() {
    for name in ["small_basic", "small_v2"] {
        let weights = fixture(&format!("tresnet/{name}.weights.safetensors"));
        let cfg = config_from_metadata(&weights);
        let tensors = candle_core::safetensors::load(&weights, &Device::Cpu).expect("weights");
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = TResNet::new(&cfg, vb).expect("model from timm-named weights");
        let inference = model
            .clone()
            .into_inference()
            .expect("folded inference path");
        assert!(inference.is_inference() && !model.is_inference());
        let io = candle_core::safetensors::load(
            fixture(&format!("tresnet/{name}.io.safetensors")),
            &Device::Cpu,
        )
        .expect("io");
        for size in ["224", "228x196"] {
            let x = pixels_to_input(&io[&format!("pixels_{size}")]);
            let want = io[&format!("logits_{size}")].clone();
            for (path, m) in [
                ("training path (eval)", &model),
                ("inference path", &inference),
            ] {
                let got = m.forward_t(&x, false).expect("forward");
                assert_eq!(got.dims(), want.dims(), "{name} {size}");
                let rel = max_rel_diff(&got, &want);
                assert!(
                    rel <= 1e-4,
                    "{name} at {size}, {path}: max |diff| is {rel} of the logits' scale"
                );
            }
        }
        let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert!(
            inference.forward_t(&x, true).is_err(),
            "no training mode on folded weights"
        );
    }
}
