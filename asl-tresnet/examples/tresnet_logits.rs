//! Computes TResNet logits for `scripts/check_full_size_parity.py`: reads a weight file (any
//! format `asl_tresnet::pretrained::weights::load_weights` reads) and a safetensors file
//! holding `input` `[N, 3, H, W]`, writes `logits` of the training path (eval) and of the inference path.
//!
//! `cargo run --release -p asl-tresnet --example tresnet_logits -- WEIGHTS INPUT OUTPUT`

use std::collections::HashMap;

use asl_tresnet::pretrained::keys::{config_for_tensors, model_from_tensors};
use asl_tresnet::pretrained::weights::load_weights;
use asl_tresnet::Result;
use candle_core::Device;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, input, output] = args.as_slice() else {
        eprintln!("usage: tresnet_logits WEIGHTS INPUT.safetensors OUTPUT.safetensors");
        std::process::exit(2);
    };
    let dev = Device::Cpu;
    let loaded = load_weights(weights.as_ref(), &dev)?;
    let (arch, cfg) = config_for_tensors(&loaded.tensors, None)?;
    let model = model_from_tensors(&cfg, loaded.tensors, &dev)?;
    let x = candle_core::safetensors::load(input, &dev)?
        .remove("input")
        .ok_or_else(|| candle_core::Error::Msg("no `input` tensor".into()))?;
    let train_path = model.forward_t(&x, false)?;
    let inference = model.into_inference()?.forward_t(&x, false)?;
    let out = HashMap::from([
        ("logits".to_string(), train_path),
        ("logits_inference".to_string(), inference),
    ]);
    candle_core::safetensors::save(&out, output)?;
    eprintln!("{arch}: wrote {output}");
    Ok(())
}
