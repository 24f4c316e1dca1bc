//! Tags images with a model given by registry name, file or hub repo, preprocessing included:
//! `cargo run --release -p asl-tresnet --example tag -- tresnet_l-coco photo.jpg`
use asl_tresnet::images::{load_rgb, Preprocess};
use asl_tresnet::pretrained::{load_model, CfgOverrides, HubConfig, ModelSource};
use candle_core::Device;

fn main() -> asl_tresnet::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((model, images)) = args.split_first() else {
        eprintln!("usage: tag MODEL IMAGE...");
        std::process::exit(2);
    };
    let (source, hub) = (ModelSource::parse(model)?, HubConfig::from_env());
    let loaded = load_model(&source, &CfgOverrides::default(), &hub, &Device::Cpu)?;
    let prep = Preprocess::new(&loaded.cfg);
    for path in images {
        let x = prep.batch(&[load_rgb(path.as_ref(), prep.max_pixels)?], &Device::Cpu)?;
        let tags: Vec<String> = (loaded.labels(&loaded.scores(&x)?[0], None).iter())
            .map(|&(k, score)| format!("{} {score:.2}", loaded.cfg.class_names[k]))
            .collect();
        println!("{path}: {}", tags.join(", "));
    }
    Ok(())
}
