//! `asl-cli models`: the pretrained registry.

use anyhow::Result;
use asl_tresnet::pretrained::registry::{ORG_ENV, REGISTRY};
use clap::Args;

use crate::args::ReportFormat;

#[derive(Args)]
pub struct ModelsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
}

pub fn run(args: &ModelsArgs) -> Result<()> {
    if args.format == ReportFormat::Json {
        let rows: Vec<_> = REGISTRY
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name, "arch": p.arch, "dataset": p.dataset,
                    "classes": p.classes, "num_classes": p.num_classes,
                    "input_size": p.input_size, "resize": p.resize.to_string(),
                    "activation": p.activation.name(), "threshold": p.threshold,
                    "reported": {"metric": p.reported.metric, "value": p.reported.value,
                                 "source": p.reported.source},
                    "repo": p.repo(), "file": p.file, "license": p.license,
                    "public": p.public, "original_file": p.original_file,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<32} {:<16} {:>7} {:>5} {:<10} {:>12}  {:<7} repo",
        "name", "dataset", "classes", "size", "resize", "reported", "public"
    );
    for p in REGISTRY {
        println!(
            "{:<32} {:<16} {:>7} {:>5} {:<10} {:>12}  {:<7} {}",
            p.name,
            p.dataset,
            p.num_classes,
            p.input_size,
            p.resize.to_string(),
            format!("{} {:.1}", p.reported.metric, p.reported.value),
            if p.public { "yes" } else { "no" },
            p.repo()
        );
    }
    println!(
        "\nRepos marked `no` do not exist on the hub yet: convert the paper's checkpoint with \
         `asl-cli convert` and upload it (see the README), or set {ORG_ENV}=YOUR_ORG."
    );
    Ok(())
}
