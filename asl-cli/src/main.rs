//! `asl-cli`: multi-label image classification with ASL and TResNet, from the command line.
//!
//! Status: the commands (`infer`, `validate`, `train`, `convert`, `models`, `bench`, `demo`)
//! arrive with the model and data issues; today the binary only explains that.

use std::process::ExitCode;

const HELP: &str = "\
asl-cli: multi-label image classification with the Asymmetric Loss (ASL) and TResNet

USAGE:
    asl-cli <COMMAND> [OPTIONS]

COMMANDS (planned, not implemented yet):
    infer      label images with a pretrained or fine-tuned model
    validate   mAP and CP/CR/CF1/OP/OR/OF1 of a model on a labelled dataset
    train      fine-tune a TResNet with ASL on your own multi-label data
    convert    convert timm / original ASL checkpoints to asl-rs safetensors
    models     list the pretrained registry
    bench      measure speed on this machine
    demo       run the embedded default end to end

What works today is the library asl-core (the ASL loss family and the metrics):
see README.md, and `cargo run --release -p asl-core --example toy_multilabel`.

OPTIONS:
    -h, --help       print this help
    -V, --version    print the version
";

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        None | Some("-h") | Some("--help") | Some("help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("-V") | Some("--version") => {
            println!("asl-cli {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(cmd) => {
            eprintln!(
                "asl-cli: `{cmd}` is not available yet: the command-line tool has no commands in \
                 this version (see `asl-cli --help`)."
            );
            ExitCode::from(2)
        }
    }
}
