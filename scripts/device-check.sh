#!/usr/bin/env bash
# device-check.sh - run asl-rs's CUDA checks on the GPU machine (H200, R580 driver, CUDA 13.0,
# PyTorch with cu130 wheels; NO Rust toolchain and NO network there).
#
# Usage, on the GPU machine:
#   scripts/device-check.sh OUTDIR [BUNDLE]    (relative paths: to the current folder)
#     OUTDIR  where the logs go (at most 8 files, each well under 16 MiB, so that all come back)
#     BUNDLE  the folder `scripts/build-cuda.sh bundle BUNDLE` filled on the build machine
#             (default: the repository's target/cuda-bundle; carry it along, it is git-ignored):
#             its asl-cuda-bundle.tar.xz is unpacked to a temporary folder. A folder that is
#             already unpacked (bin/asl-cli, examples/, tests/, manifest.txt, executables.txt)
#             works too.
#
# Build machine first:  scripts/build-cuda.sh bundle target/cuda-bundle
# then, for instance, through the device tool: carry ["target/cuda-bundle"],
#   command "scripts/device-check.sh $OUT", timeout_s 540.
#
# Environment: TEST_THREADS (default 1) for the test executables; TESTS_FILTER (default cuda)
# selects the ignored tests run; DEVICE_CHECK_BUDGET_S (default 480) is the overall deadline;
# CUDA_LIB_DIR (a colon-separated list) replaces the search for the CUDA 13 libraries. A dry run
# on the build machine, where every GPU test must fail with CUDA_ERROR_STUB_LIBRARY:
#   CUDA_LIB_DIR=$CUDA_HOME/lib64:$CUDA_HOME/lib64/stubs scripts/device-check.sh /tmp/dc
#
# Steps, each under `timeout` and inside the overall budget of 8 minutes:
#   1. environment: GPU, driver, nvcc, glibc, PyTorch; LD_LIBRARY_PATH set to PyTorch's
#      nvidia/cu13/lib (the CUDA 13 runtime, cuBLAS, cuRAND, NVRTC the binaries need)
#   2. ldd of every carried binary: no library missing, libcuda.so.1 is the real driver
#   3. the ignored GPU tests (`--ignored cuda`) of every carried test executable: the CUDA loss
#      kernels against the CPU kernel for every configuration (asl-core), the timm fixtures'
#      logits on CUDA, tresnet_m on CUDA against the CPU (logits, a training step's loss,
#      gradients, running statistics) and a bf16-autocast training step (asl-tests)
#   4. the fused ASL's speed against PyTorch eager and against the copy-bandwidth floor
#   5. TResNet images/s against timm eager: inference tresnet_l@448 b32, training step
#      tresnet_m@224 b64 in bf16 autocast and in f32 (scripts/bench_vs_timm.py)
#   6. the CLI end to end: `asl-cli demo --device cuda`, then `infer` and `validate` on CUDA
#      against the CPU (every score within 1e-4, the same mAP)
# Files written: summary.txt (one line per step), env.txt (steps 1-2), tests.log (step 3),
# loss-bench.txt + asl-rs-loss-bench.jsonl (4), tresnet-bench.txt (5), cli-e2e.txt (6). The
# exit status is 0 only if no step failed.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
OUTDIR="$1"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="${2:-$REPO/target/cuda-bundle}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
BUNDLE="$(cd "$BUNDLE" && pwd)"
cd "$REPO"
if [ -f "$BUNDLE/asl-cuda-bundle.tar.xz" ]; then
  UNPACKED="$(mktemp -d "${TMPDIR:-/tmp}/asl-cuda-bundle.XXXXXX")"
  # tar's xz, or Python's lzma where xz is missing.
  tar -C "$UNPACKED" -xJf "$BUNDLE/asl-cuda-bundle.tar.xz" 2>/dev/null \
    || python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$BUNDLE/asl-cuda-bundle.tar.xz" "$UNPACKED"
  BUNDLE="$UNPACKED"
  trap 'rm -rf "$UNPACKED"' EXIT
fi
[ -x "$BUNDLE/bin/asl-cli" ] || { echo "device-check: no bin/asl-cli in $BUNDLE" >&2; exit 2; }
export BUNDLE
BUDGET="${DEVICE_CHECK_BUDGET_S:-480}"
SUMMARY="$OUTDIR/summary.txt"
: > "$SUMMARY"
FAILED=0

log() { echo "device-check: $*" | tee -a "$SUMMARY" >&2; }

# run_step NAME LIMIT_S LOGFILE CMD...: runs CMD under `timeout` (the smaller of LIMIT_S and what
# is left of the budget, keeping RESERVE_S for later steps), appends its output to LOGFILE and
# records the result in summary.txt. A failed step does not stop the script.
RESERVE_S=0
run_step() {
  local name="$1" limit="$2" logfile="$3" left rc t0
  shift 3
  left=$((BUDGET - SECONDS - RESERVE_S))
  if [ "$left" -lt 5 ]; then
    log "SKIP $name (budget spent)"
    FAILED=1
    return 0
  fi
  [ "$limit" -le "$left" ] || limit="$left"
  t0=$SECONDS
  echo "==== $name (timeout ${limit}s)" >> "$logfile"
  set +e
  timeout --kill-after=5 "$limit" "$@" >> "$logfile" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    log "PASS $name ($((SECONDS - t0)) s)"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    log "TIMEOUT $name after ${limit} s"
    FAILED=1
  else
    log "FAIL $name (exit $rc, $((SECONDS - t0)) s; see $(basename "$logfile"))"
    FAILED=1
  fi
}

# ---- 1. environment ------------------------------------------------------------------------------
ENV_LOG="$OUTDIR/env.txt"
{
  echo "== bundle manifest"; cat "$BUNDLE/manifest.txt" 2>/dev/null || echo "(no manifest)"
  echo "== host"; uname -a; { ldd --version 2>&1 || true; } | head -1
  echo "== nvidia-smi"; timeout 30 nvidia-smi 2>&1 || true
  echo "== nvcc"; timeout 30 nvcc --version 2>&1 || echo "(no nvcc on PATH)"
  echo "== python3 / torch"
  timeout 60 python3 -c 'import torch; print(torch.__version__, torch.version.cuda,
      torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1 || true
} > "$ENV_LOG"

# The CUDA 13 runtime libraries: PyTorch's cu130 wheels carry them in site-packages/nvidia/cu13/lib
# (`nvidia` is a namespace package: look in each of its folders). Fall back to a system toolkit.
CU13_LIB="${CUDA_LIB_DIR:-}"
[ -n "$CU13_LIB" ] || CU13_LIB="$(timeout 60 python3 -c '
import os, nvidia
for p in nvidia.__path__:
    d = os.path.join(p, "cu13", "lib")
    if os.path.exists(os.path.join(d, "libcudart.so.13")):
        print(d); break
' 2>/dev/null || true)"
if [ -z "$CU13_LIB" ]; then
  for d in /usr/local/cuda-13.0/lib64 /usr/local/cuda/lib64; do
    if [ -e "$d/libcudart.so.13" ]; then CU13_LIB="$d"; break; fi
  done
fi
# Never the build machine's link-only libcuda stub: drop any .../stubs entry.
LD_CLEAN="$(tr ':' '\n' <<<"${LD_LIBRARY_PATH:-}" | grep -v '/stubs' | paste -sd: || true)"
export LD_LIBRARY_PATH="${CU13_LIB}${LD_CLEAN:+:$LD_CLEAN}"
echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$ENV_LOG"
if [ -n "$CU13_LIB" ]; then log "PASS env (CUDA 13 libraries: $CU13_LIB)"; else
  log "FAIL env (no libcudart.so.13 found: PyTorch cu130 wheels or /usr/local/cuda-13.0)"
  FAILED=1
fi

# Integration tests find fixtures through CARGO_MANIFEST_DIR, baked in on the build machine: point
# that path at this working tree when it does not exist here (best effort; needs write access).
BUILT_REPO="$(sed -n 's/^repo=//p' "$BUNDLE/manifest.txt" 2>/dev/null || true)"
if [ -n "$BUILT_REPO" ] && [ ! -e "$BUILT_REPO" ]; then
  if mkdir -p "$(dirname "$BUILT_REPO")" 2>/dev/null && ln -s "$PWD" "$BUILT_REPO" 2>/dev/null; then
    echo "== linked $BUILT_REPO -> $PWD (fixtures)" >> "$ENV_LOG"
  else
    echo "== could not link $BUILT_REPO -> $PWD: tests reading fixtures will fail" >> "$ENV_LOG"
  fi
fi

# ---- 2. ldd --------------------------------------------------------------------------------------
# shellcheck disable=SC2329 # run through `bash -c` (exported)
ldd_check() {
  local b bad=0 out
  for b in "$BUNDLE"/bin/* "$BUNDLE"/examples/* "$BUNDLE"/tests/*; do
    [ -f "$b" ] || continue
    out="$(ldd "$b" 2>&1)"
    echo "-- $(basename "$b")"
    grep -E 'libcuda\.so|libcudart|libcublas|libcurand|libnvrtc|not found' <<<"$out" || true
    if grep -q 'not found' <<<"$out"; then bad=1; fi
    if grep -q 'stubs/libcuda' <<<"$out"; then echo "libcuda.so.1 resolves to a STUB"; bad=1; fi
  done
  return "$bad"
}
export -f ldd_check
run_step ldd 60 "$ENV_LOG" bash -c ldd_check

# ---- 3. ignored GPU tests of the carried test executables ---------------------------------------
TESTS_LOG="$OUTDIR/tests.log"
: > "$TESTS_LOG"
# Keep time for the later steps (4-6: about 4 minutes at their limits; half of a smaller budget).
RESERVE_S=$((BUDGET / 2 < 240 ? BUDGET / 2 : 240))
# executables.txt: "tests/NAME PACKAGE_DIR"; run each from its package folder with
# CARGO_MANIFEST_DIR set, as `cargo test` does.
# shellcheck disable=SC2329 # run through `bash -c` (exported)
run_tests() {
  cd "$REPO/$2" && CARGO_MANIFEST_DIR="$REPO/$2" "$BUNDLE/$1" --ignored "${TESTS_FILTER:-cuda}" \
    --test-threads="${TEST_THREADS:-1}"
}
export -f run_tests
export REPO
while read -r exe pkg; do
  [ -n "$exe" ] || continue
  # First use of each candle PTX module JIT-compiles for seconds: generous per-executable limit.
  run_step "$exe" 240 "$TESTS_LOG" bash -c 'run_tests "$@"' _ "$exe" "$pkg"
done < "$BUNDLE/executables.txt"
[ -s "$BUNDLE/executables.txt" ] || log "no test executables in the bundle"
RESERVE_S=0

# ---- 4. fused ASL against PyTorch eager, on the GPU -----------------------------------------------
# asl-rs's cuda_bench (JSON lines: medians, bytes moved, x over the copy-bandwidth floor), then
# the reference loss in PyTorch eager on the same sizes and inputs, with the table of both.
LOSS_LOG="$OUTDIR/loss-bench.txt"
: > "$LOSS_LOG"
run_step loss-bench-asl-rs 60 "$LOSS_LOG" bash -c \
  'set -o pipefail; "$BUNDLE/examples/cuda_bench" --iters 200 | tee "$0"' "$OUTDIR/asl-rs-loss-bench.jsonl"
run_step loss-bench-torch 60 "$LOSS_LOG" python3 scripts/bench_asl_torch_cuda.py --iters 200 \
  --compare "$OUTDIR/asl-rs-loss-bench.jsonl"

# ---- 5. TResNet images/s against timm eager on the same GPU ----------------------------------------
# Inference tresnet_l@448 batch 32 (f32), training step tresnet_m@224 batch 64 (bf16 autocast and
# f32); scripts/bench_vs_timm.py runs the carried asl-cli and timm one after the other.
TIMM_LOG="$OUTDIR/tresnet-bench.txt"
: > "$TIMM_LOG"
# shellcheck disable=SC2329 # run through `bash -c` (exported)
vs_timm() { python3 scripts/bench_vs_timm.py --device cuda --asl-cli "$BUNDLE/bin/asl-cli" \
  --runs 10 --json "$@"; }
export -f vs_timm
run_step infer-vs-timm 75 "$TIMM_LOG" bash -c 'vs_timm --cases tresnet_l@448:32'
run_step train-bf16-vs-timm 75 "$TIMM_LOG" bash -c \
  'vs_timm --train --precision bf16 --cases tresnet_m@224:64'
run_step train-f32-vs-timm 75 "$TIMM_LOG" bash -c \
  'vs_timm --train --precision f32 --cases tresnet_m@224:64'

# ---- 6. the CLI end to end on CUDA ---------------------------------------------------------------
# `asl-cli demo --device cuda` (train with bf16 autocast, validate, tag), then `infer` and
# `validate` with the trained model on CUDA and on the CPU: every score of every test image
# must agree within 1e-4, and the mAP within 1e-3 (points).
E2E_LOG="$OUTDIR/cli-e2e.txt"
: > "$E2E_LOG"
DEMO_DIR="$(mktemp -d "${TMPDIR:-/tmp}/asl-demo.XXXXXX")"
run_step demo-cuda 90 "$E2E_LOG" "$BUNDLE/bin/asl-cli" demo --device cuda --epochs 2 \
  --train-images 1024 --out "$DEMO_DIR"
# shellcheck disable=SC2329 # run through `bash -c` (exported)
infer_both() {
  local model="$1/asl/best.safetensors" imgs
  mapfile -t imgs < <(find "$1/data/test" -name '*.png' | sort | head -64)
  echo "model $model, ${#imgs[@]} images"
  "$BUNDLE/bin/asl-cli" infer --model "$model" --device cuda --all-scores --format json \
    "${imgs[@]}" > "$1/cuda.jsonl"
  "$BUNDLE/bin/asl-cli" infer --model "$model" --device cpu --all-scores --format json \
    "${imgs[@]}" > "$1/cpu.jsonl"
  python3 - "$1/cuda.jsonl" "$1/cpu.jsonl" <<'PYEOF'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
assert len(a) == len(b) > 0, (len(a), len(b))
worst = max(abs(p - q) for x, y in zip(a, b) for p, q in zip(x["scores"], y["scores"]))
print(f"infer --device cuda vs cpu: {len(a)} images, max |score diff| {worst:.2e}")
sys.exit(0 if worst <= 1e-4 else 1)
PYEOF
  # validate on both devices: the same mAP
  "$BUNDLE/bin/asl-cli" validate --model "$model" --data "$1/data/test/labels.csv" \
    --device cuda --json "$1/val-cuda.json" > /dev/null
  "$BUNDLE/bin/asl-cli" validate --model "$model" --data "$1/data/test/labels.csv" \
    --device cpu --json "$1/val-cpu.json" > /dev/null
  python3 - "$1/val-cuda.json" "$1/val-cpu.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p))["map"] for p in sys.argv[1:3])
print(f"validate mAP: cuda {a}, cpu {b}")
sys.exit(0 if abs(a - b) <= 1e-3 else 1)
PYEOF
}
export -f infer_both
run_step infer-validate-cuda-vs-cpu 75 "$E2E_LOG" bash -c 'infer_both "$0"' "$DEMO_DIR"
rm -rf "$DEMO_DIR"

log "total $SECONDS s; $([ "$FAILED" -eq 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED')"
exit "$FAILED"
