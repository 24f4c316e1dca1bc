#!/usr/bin/env python3
"""Times asl-rs's fused multi-label ASL against the PyTorch reference loss in one run.

Runs `cargo run --release -p asl-core --example loss_timing` (the fused kernel and the composed
candle-ops reference, forward + backward, medians, with peak extra heap), then times the reference
loss in PyTorch on the same shapes: timm's `AsymmetricLossMultiLabel` with the ASL reference
`AsymmetricLoss` defaults (gamma_neg 4, gamma_pos 1, clip 0.05, eps 1e-8, focal weight detached,
sum), forward + backward, float32, CPU. Both sides use the same number of threads (default 2).
Prints a Markdown table with the ratios for docs/benchmarks.md.

Usage (from the repository root):
    python3 -m venv .venv && .venv/bin/pip install torch timm
    .venv/bin/python scripts/bench_vs_pytorch.py [--threads 2] [--reps 30]
"""
import argparse
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import pick, time_ms  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402
from timm.loss.asymmetric_loss import AsymmetricLossMultiLabel  # noqa: E402

SHAPES = [(128, 80), (64, 9605), (1024, 9605)]


def torch_median_ms(n, c, reps):
    crit = AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8,
                                    disable_torch_grad_focal_loss=True, reduction="sum")
    x = (torch.randn(n, c) * 3 - 2).requires_grad_()
    y = (torch.rand(n, c) < 0.05).float()
    return pick(time_ms(lambda: crit(x, y).backward(), reps, warmup=3), 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = ["cargo", "run", "--quiet", "--release", "-p", "asl-core", "--example", "loss_timing",
           "--", str(args.reps)] + [f"{n}x{c}" for n, c in SHAPES]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    rust = {tuple(r["shape"]): r for r in map(json.loads, out.strip().splitlines())}

    torch.set_num_threads(args.threads)
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {cpu}, {os.cpu_count()} CPUs; "
          f"threads: {args.threads}; torch {torch.__version__}, timm {timm.__version__}")
    print()
    print("| N x C | asl-rs fused fwd+bwd | PyTorch reference fwd+bwd | speed-up | "
          "asl-rs fused fwd only | asl-rs composed fwd+bwd | peak extra heap fused / composed |")
    print("|---|---|---|---|---|---|---|")
    for n, c in SHAPES:
        r = rust[(n, c)]
        t = torch_median_ms(n, c, args.reps)
        comp = r["composed_fwd_bwd_ms"]
        comp_s = "n/a" if comp is None else f"{comp:.2f} ms"
        mem_c = r["composed_peak_bytes"]
        mem = f"{r['fused_fwd_bwd_peak_bytes'] / 2**20:.1f} MiB / " + (
            "n/a" if mem_c is None else f"{mem_c / 2**20:.1f} MiB")
        print(f"| {n} x {c} | {r['fused_fwd_bwd_ms']:.3f} ms | {t:.3f} ms | "
              f"**{t / r['fused_fwd_bwd_ms']:.1f}x** | {r['fused_fwd_only_ms']:.3f} ms | {comp_s} | {mem} |")


if __name__ == "__main__":
    main()
