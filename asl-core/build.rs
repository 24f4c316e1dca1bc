//! Build script: with the `cuda` feature, compiles `kernels/asl.cu` to PTX with nvcc (embedded by
//! `src/cuda.rs`); without it, does nothing (the default build needs no CUDA at all).
//!
//! nvcc is `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` on `PATH`. The PTX targets
//! `compute_$CUDA_COMPUTE_CAP` (default 90: H100/H200); the driver JIT-compiles it on first use
//! for that GPU or any newer one. `-O3` without fast math (exact `expf`/`logf`/division), and
//! `--fmad=false` so that `a * b + c` rounds like the CPU kernel it mirrors.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let nvcc = env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| {
            ["CUDA_HOME", "CUDA_PATH"]
                .iter()
                .filter_map(env::var_os)
                .map(|home| PathBuf::from(home).join("bin").join("nvcc"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = compute_cap();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("asl.ptx");
    let src = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("kernels")
        .join("asl.cu");

    let mut cmd = Command::new(&nvcc);
    cmd.arg("--ptx")
        .arg(format!("-arch=compute_{cap}"))
        .args(["-O3", "--fmad=false", "-std=c++17", "-o"])
        .arg(&out)
        .arg(&src);
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "asl-core (feature cuda): cannot run nvcc ({}): {e}. Set NVCC or CUDA_HOME, or put \
             nvcc on PATH.",
            nvcc.display()
        ),
    };
    if !output.status.success() {
        panic!(
            "asl-core (feature cuda): nvcc failed to compile {} ({:?}):\n{}{}",
            src.display(),
            cmd,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let ptx = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("asl-core: nvcc wrote no readable {}: {e}", out.display()));
    assert!(
        ptx.contains(&format!(".target sm_{cap}")) && ptx.contains(".entry asl_ml_f32_f32"),
        "asl-core: {} does not look like PTX for sm_{cap} with the ASL kernels",
        out.display()
    );
}

/// The compute capability to target, as digits: `CUDA_COMPUTE_CAP` (`90`, `9.0`, `sm_90`,
/// `90a` all mean 90; the PTX is never arch-specific), default 90.
fn compute_cap() -> String {
    match env::var("CUDA_COMPUTE_CAP") {
        Ok(v) => {
            let digits: String = v.chars().filter(char::is_ascii_digit).collect();
            assert!(
                (2..=3).contains(&digits.len()),
                "asl-core: CUDA_COMPUTE_CAP={v:?} is not a compute capability such as 90"
            );
            digits
        }
        Err(_) => "90".to_string(),
    }
}
