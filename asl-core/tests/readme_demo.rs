//! The library demo of the README's asl-core section (`cargo run --release -p asl-core --example
//! toy_multilabel`) must keep working: run the example's `main` as a smoke test. (The README's
//! first command, `asl-cli demo`, runs shortened in `asl-cli/tests/train.rs`.)

#[path = "../examples/toy_multilabel.rs"]
mod toy_multilabel;

#[test]
fn readme_demo_runs() {
    toy_multilabel::main().expect("the README demo runs");
}
