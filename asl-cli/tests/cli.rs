//! The binary explains itself and refuses commands it does not have yet, with a non-zero exit.

use std::process::Command;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asl-cli"))
        .args(args)
        .output()
        .expect("run asl-cli")
}

#[test]
fn help_lists_the_commands() {
    let out = cli(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "infer", "validate", "train", "convert", "models", "bench", "demo",
    ] {
        assert!(text.contains(cmd), "help should mention {cmd}");
    }
}

#[test]
fn unknown_or_unimplemented_commands_fail_clearly() {
    let out = cli(&["infer", "photo.jpg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available yet"));
}

#[test]
fn version() {
    let out = cli(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("asl-cli "));
}
