//! The README's first command (`cargo run --release -p asl-core --example toy_multilabel`) must
//! keep working: run the example's `main` as a smoke test.

#[path = "../examples/toy_multilabel.rs"]
mod toy_multilabel;

#[test]
fn readme_demo_runs() {
    toy_multilabel::main().expect("the README demo runs");
}
