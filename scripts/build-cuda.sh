#!/usr/bin/env bash
# build-cuda.sh - build asl-rs with `--features cuda` on a machine WITHOUT a GPU, driver or
# system CUDA toolkit, using the CUDA 13.0 (Update 2) compiler and libraries from PyPI wheels.
#
# Usage (from anywhere; paths are relative to the repository root):
#   scripts/build-cuda.sh setup        # only install the toolchain and write the env file
#   scripts/build-cuda.sh check        # + clippy of all workspace targets, --features cuda, -D warnings,
#                                      #   and ptxas -arch=sm_90 on asl-core's PTX
#   scripts/build-cuda.sh bundle DIR   # + release asl-cli, the examples and the test executables
#                                      #   with GPU tests, built with --features cuda, stripped, packed
#                                      #   into DIR/asl-cuda-bundle.tar.xz for carrying to the GPU
#                                      #   machine (see scripts/device-check.sh); DIR is typically
#                                      #   target/cuda-bundle (git-ignored)
#   source "${CUDA_BUILD_ROOT:-$HOME/.cache/asl-cuda-build}/env.sh"   # the env, for your own cargo
#
# Environment:
#   CUDA_BUILD_ROOT   where the toolchain lives (default $HOME/.cache/asl-cuda-build): a venv with
#                     the pinned wheels, a CUDA_HOME-like folder `cuda/`, and `env.sh`.
#   PYTHON            the python3 used to create the venv (default python3).
#   BUNDLE_ALL=1      bundle: carry every test executable, not only those with ignored `cuda`
#                     tests (the archive stores the kernels they share once).
#
# The toolchain set-up is idempotent (a stamp file records the installed pins; pip runs with
# --no-cache-dir). A first set-up downloads about 680 MB (1.2 GB installed). Builds go to
# target/cuda (CARGO_TARGET_DIR), so they never invalidate the default target/debug and
# target/release builds. On 2 cores a cold `check` takes about 8 minutes, 4.5 of them in
# candle-kernels' build script (its PTX modules and an sm_90a MoE library); a cold `bundle`
# (release) takes longer; incremental runs take seconds.
#
# Needs: python3 with venv, a C compiler `cc` (for the libcuda link stub), gcc/g++ <= 14 as
# nvcc's host compiler, and for `bundle` also `strip`, `tar` and `xz`.
#
# Why these pins: 13.1+ emits PTX ISA 9.1+, which the
# R580 (CUDA 13.0) driver of the H200 rejects, and cudarc 0.19 (candle 0.11.1) knows CUDA only up
# to 13.4. The binaries are built for compute capability 9.0 (sm_90a: H100/H200 only).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${CUDA_BUILD_ROOT:-$HOME/.cache/asl-cuda-build}"
VENV="$ROOT/venv"
CUDA_HOME_DIR="$ROOT/cuda"
PY="${PYTHON:-python3}"
TARGET_DIR="$REPO/target/cuda"

# CUDA 13.0 Update 2.
WHEELS=(
  nvidia-cuda-nvcc==13.0.88    # nvcc, ptxas, fatbinary, nvlink, cudafe++
  nvidia-cuda-crt==13.0.88     # include/crt/* (host_config.h, ...), needed by nvcc
  nvidia-nvvm==13.0.88         # nvvm/bin/cicc, libdevice, libnvvm
  nvidia-cuda-runtime==13.0.96 # cuda_runtime.h, cuda.h, libcudart.so.13
  nvidia-cuda-cccl==13.0.85    # include/cccl: <nv/target> for cuda_fp16.h, cub/thrust for candle-kernels
  nvidia-cuda-nvrtc==13.0.88   # libnvrtc.so.13 (+ builtins): link-time dependency of cudarc
  nvidia-cublas==13.1.0.3      # libcublas.so.13, libcublasLt.so.13 (the 13.0 U2 release)
  nvidia-curand==10.4.0.35     # libcurand.so.10 + headers (the 13.0 U2 release)
)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

log() { echo "build-cuda.sh: $*" >&2; }

# ---- toolchain ---------------------------------------------------------------------------------
setup() {
  mkdir -p "$ROOT"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$ROOT/wheels.stamp" want
  want="$(printf '%s\n' "${WHEELS[@]}")"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing the pinned CUDA 13.0 wheels into $VENV (about 680 MB on a first run)"
    # A no-op for pins already installed; exact pins downgrade/upgrade others.
    "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check "${WHEELS[@]}"
    printf '%s\n' "$want" > "$stamp"
  fi

  local site cu
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  cu="$site/nvidia/cu13" # every CUDA 13 wheel installs into site-packages/nvidia/cu13
  [ -x "$cu/bin/nvcc" ] || { log "nvcc not found under $cu"; exit 1; }

  # CUDA_HOME-like folder: bin, include, nvvm, lib link to the wheels; lib64/ links every library
  # and adds the unversioned names `ld -lfoo` needs (the wheels ship only libfoo.so.N).
  mkdir -p "$CUDA_HOME_DIR/lib64/stubs"
  local d f pair n v
  for d in bin include nvvm lib; do ln -sfn "$cu/$d" "$CUDA_HOME_DIR/$d"; done
  for f in "$cu"/lib/*.so* "$cu"/lib/*.a; do
    [ -e "$f" ] || continue
    ln -sfn "$f" "$CUDA_HOME_DIR/lib64/$(basename "$f")"
  done
  for pair in cudart:13 cublas:13 cublasLt:13 nvrtc:13 curand:10 nvvm:4; do
    n="${pair%%:*}"
    v="${pair##*:}"
    ln -sfn "lib$n.so.$v" "$CUDA_HOME_DIR/lib64/lib$n.so"
  done

  # No wheel ships the driver: candle-core links cudarc dynamically, so binaries need
  # `libcuda.so.1` at link time. Generate a link-only stub exporting every cu* name of cuda.h;
  # each returns CUDA_ERROR_STUB_LIBRARY (34). Never put it on the library path of a GPU machine.
  local stub="$CUDA_HOME_DIR/lib64/stubs/libcuda.so"
  if [ ! -f "$stub" ] || [ "$cu/include/cuda.h" -nt "$stub" ]; then
    local gen="$CUDA_HOME_DIR/lib64/stubs/libcuda_stub.c"
    {
      echo '/* generated by build-cuda.sh: link-only stub of libcuda.so.1 (every cu* name in cuda.h).'
      echo '   Each entry point returns CUDA_ERROR_STUB_LIBRARY (34). Never ship it. */'
      echo 'static const char *S = "CUDA_ERROR_STUB_LIBRARY";'
      echo 'static const char *M = "CUDA driver is a stub library (build machine, no real driver)";'
      echo 'int cuGetErrorName(int e, const char **p){ (void)e; if(p) *p = S; return 0; }'
      echo 'int cuGetErrorString(int e, const char **p){ (void)e; if(p) *p = M; return 0; }'
      grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\b' "$cu/include/cuda.h" | sort -u \
        | grep -vxE 'cuGetErrorName|cuGetErrorString' \
        | sed 's/.*/int &(void){ return 34; }/'
    } > "$gen"
    cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$stub" "$gen"
    ln -sfn libcuda.so "$CUDA_HOME_DIR/lib64/stubs/libcuda.so.1"
  fi

  cat > "$ROOT/env.sh" <<EOF
# generated by asl-rs scripts/build-cuda.sh - source me before 'cargo build --features cuda'
export CUDA_HOME="$CUDA_HOME_DIR"       # cudarc build.rs: link search in \$CUDA_HOME/lib64 and lib64/stubs
export CUDA_PATH="$CUDA_HOME_DIR"
export PATH="$CUDA_HOME_DIR/bin:\$PATH"  # nvcc for cudarc's version probe and cudaforge
export NVCC="$CUDA_HOME_DIR/bin/nvcc"    # cudaforge looks here first
export CUDA_COMPUTE_CAP=90               # no nvidia-smi: tell cudaforge the target (H200 -> sm_90a)
export CUDARC_CUDA_VERSION=13000         # pin cudarc bindings to CUDA 13.0 (= what nvcc --version says)
export CUDAFORGE_THREADS=\$(nproc)       # default is 50% of cores -> 1 nvcc at a time on 2 cores
# for RUNNING here only (e.g. a smoke test): ld.so finds cudart/cublas/nvrtc/curand here.
# libcuda.so.1 is NOT on this path on purpose; add \$CUDA_HOME/lib64/stubs to run against the stub.
export CUDA_BUILD_RUNTIME_LIBS="$CUDA_HOME_DIR/lib64"
EOF
}

use_env() {
  # shellcheck disable=SC1091
  source "$ROOT/env.sh"
  export CARGO_TARGET_DIR="$TARGET_DIR"
  cd "$REPO"
}

# ---- modes ---------------------------------------------------------------------------------------
check() {
  use_env
  local t0=$SECONDS
  log "cargo clippy --workspace --all-targets --features cuda -- -D warnings (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  cargo clippy --workspace --all-targets --features cuda -- -D warnings
  ptx_check
  log "check done in $((SECONDS - t0)) s"
}

# asl-core's PTX (written by its build script during the clippy run) assembled for sm_90 by
# ptxas, as the driver's JIT does on the H200: any error fails the check. Prints registers per
# thread, barriers and spills of each kernel family's f32 and f64 instance.
ptx_check() {
  local ptx info
  ptx=$(ls -t "$TARGET_DIR"/debug/build/asl-core-*/out/asl.ptx 2>/dev/null | head -n 1)
  if [ -z "$ptx" ]; then
    log "no asl.ptx under $TARGET_DIR/debug/build"
    exit 1
  fi
  if ! info=$("$CUDA_HOME_DIR/bin/ptxas" -arch=sm_90 -v "$ptx" -o /dev/null 2>&1); then
    echo "$info" >&2
    log "ptxas -arch=sm_90 failed on $ptx"
    exit 1
  fi
  log "ptxas -arch=sm_90: $(grep -c "Compiling entry function" <<<"$info") kernels assembled"
  awk '
    /Compiling entry function/ { f = $0; sub(/.*function .\047?/, "", f); sub(/\047.*/, "", f) }
    /bytes spill/ { spill[f] = $0; sub(/.*frame, /, "", spill[f]) }
    /Used [0-9]+ registers/ {
      if (f ~ /^asl_(ml_f32_f32|ml_f64_f64|sl_f32_u32|sl_f64_u32|sum_partials_f64|scale_rows_f32)$/) {
        r = $0; sub(/.*Used /, "", r); printf "  %-22s %s; %s\n", f, r, spill[f]
      }
    }' <<<"$info" >&2
}

# Prints "size_bytes path" lines and the total, in MiB, for the files in a folder.
sizes() {
  (cd "$1" && find . -type f -printf '%s %P\n' | sort -k2) | awk '
    { printf "%8.1f MiB  %s\n", $1 / 1048576, $2; t += $1 }
    END { printf "%8.1f MiB  total\n", t / 1048576 }'
}

bundle() {
  local out="${1:?bundle needs a DIR}"
  use_env
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  local stage="$CARGO_TARGET_DIR/bundle" t0=$SECONDS
  rm -rf "$stage"
  mkdir -p "$stage/bin" "$stage/examples" "$stage/tests"

  # One cargo invocation builds the test executables and, for asl-cli's integration tests, the
  # asl-cli binary, all with one feature set: a separate `cargo build -p asl-cli` would resolve
  # other features (no dev-dependencies) and build candle and its kernels a second time.
  log "cargo test --release --workspace --features cuda --no-run"
  local json="$CARGO_TARGET_DIR/bundle-artifacts.json"
  cargo test --release --workspace --features cuda --no-run --message-format=json > "$json"
  # "KIND NAME EXECUTABLE PACKAGE_DIR" per executable: KIND bin for asl-cli, example for the
  # examples (cuda_bench, tresnet_logits, ...: the device checks' benchmarks and comparisons),
  # test for the test executables (lib, bin and integration tests; NAME =
  # package-folder.target-kind).
  local list
  list="$("$VENV/bin/python" - "$json" "$REPO" <<'PYEOF' | sort -u
import json, os, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    pkg = os.path.relpath(os.path.dirname(m["manifest_path"]), sys.argv[2])
    if m["profile"]["test"]:
        print("test", f'{os.path.basename(pkg)}.{t["name"]}-{t["kind"][0]}', m["executable"], pkg)
    elif t["kind"] == ["bin"] and t["name"] == "asl-cli":
        print("bin", t["name"], m["executable"], pkg)
    elif t["kind"] == ["example"]:
        print("example", t["name"], m["executable"], pkg)
PYEOF
)"
  grep -q '^bin asl-cli ' <<<"$list" || { log "no asl-cli binary in cargo's output"; exit 1; }

  # The GPU machine carries at most 64 MiB in all, and every executable embeds candle's CUDA
  # kernels (about 33 MiB of sm_90a code and the PTX): keep only the executables with an ignored
  # test named *cuda* (the GPU tests device-check.sh runs; BUNDLE_ALL=1: every one). Listing
  # the tests needs the executable to start: run it against the libcuda stub.
  local kind name exe pkg tests kept=0 total=0
  : > "$stage/executables.txt"
  while read -r kind name exe pkg; do
    [ -n "$kind" ] || continue
    case "$kind" in
      bin) cp "$exe" "$stage/bin/$name"; continue ;;
      example) cp "$exe" "$stage/examples/$name"; continue ;;
    esac
    total=$((total + 1))
    tests="$(LD_LIBRARY_PATH="$CUDA_HOME/lib64:$CUDA_HOME/lib64/stubs" timeout 60 \
      "$exe" --list --ignored --format terse 2>/dev/null | sed -n 's/: test$//p' || true)"
    if [ "${BUNDLE_ALL:-0}" = 1 ] || grep -q cuda <<<"$tests"; then
      cp "$exe" "$stage/tests/$name"
      # device-check.sh runs each from its package folder, as cargo test does.
      echo "tests/$name $pkg" >> "$stage/executables.txt"
      kept=$((kept + 1))
    fi
  done <<<"$list"
  log "kept $kept of $total test executables"
  strip --strip-unneeded "$stage"/bin/* "$stage"/examples/* "$stage"/tests/* 2>/dev/null || true

  # Integration tests find their fixtures through CARGO_MANIFEST_DIR, baked in at build time:
  # device-check.sh links `repo` to its working tree when that path is missing there.
  {
    echo "repo=$REPO"
    echo "commit=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "dirty_files=$(git -C "$REPO" status --porcelain 2>/dev/null | grep -c . || true)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cuda_compute_cap=$CUDA_COMPUTE_CAP"
    echo "nvcc=$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  } > "$stage/manifest.txt"
  log "stripped executables (target/cuda/bundle):"
  sizes "$stage" >&2

  # One solid xz archive with a dictionary larger than an executable: the candle kernels every
  # executable repeats are stored once (about 62 MiB -> 10 MiB for asl-cli, +0.4 MiB per
  # further test executable). Preset 1: the long repeats matter, not the last percent.
  log "packing $out/asl-cuda-bundle.tar.xz"
  rm -f "$out/asl-cuda-bundle.tar.xz"
  tar -C "$stage" -cf - . | xz -T1 --lzma2=preset=1,dict=256MiB > "$out/asl-cuda-bundle.tar.xz.tmp"
  mv "$out/asl-cuda-bundle.tar.xz.tmp" "$out/asl-cuda-bundle.tar.xz"
  cp "$stage/manifest.txt" "$stage/executables.txt" "$out/"
  log "bundle done in $((SECONDS - t0)) s; carry $out (64 MiB at most, with the working tree):"
  sizes "$out" >&2
}

mode="${1:-}"
case "$mode" in
  setup) setup ;;
  check) setup; check ;;
  bundle) [ $# -eq 2 ] || usage; setup; bundle "$2" ;;
  *) usage ;;
esac
