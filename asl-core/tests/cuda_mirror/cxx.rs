//! Building the host C++ programs of these tests with `$CXX` (else `c++`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The compiler these tests use.
pub fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// `asl-core/kernels`.
pub fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels")
}

/// Compiles `src` with the include directories `includes` into `exe`: the same floating-point
/// rules as the Rust side (no FMA contraction, no fast math). `None` when the compiler cannot be
/// run at all and `ASL_REQUIRE_CXX` is unset (the caller skips, saying so); a compile error
/// panics with the compiler's output.
pub fn compile(src: &Path, includes: &[PathBuf], exe: &Path) -> Option<()> {
    let cxx = compiler();
    let mut cmd = Command::new(&cxx);
    cmd.args(["-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math"]);
    for dir in includes {
        cmd.arg("-I").arg(dir);
    }
    let built = match cmd.arg(src).arg("-o").arg(exe).output() {
        Ok(o) => o,
        Err(e) => {
            assert!(
                std::env::var_os("ASL_REQUIRE_CXX").is_none(),
                "cannot run the C++ compiler {cxx:?}: {e}"
            );
            eprintln!("SKIPPED: cannot run the C++ compiler {cxx:?} ({e}); set CXX");
            return None;
        }
    };
    assert!(
        built.status.success(),
        "{cxx} failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    Some(())
}
