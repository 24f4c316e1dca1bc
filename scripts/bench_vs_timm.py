#!/usr/bin/env python3
"""TResNet inference speed: asl-rs (`asl-cli bench`) against timm on the same shapes, in one run.

Both sides: random weights, eval mode, fp32, CPU, the same thread count (default 2), warm-up
excluded, median of several runs. Prints a Markdown table with the ratio (asl-rs images/s divided
by timm images/s) for docs/benchmarks.md.

Usage (from the repository root):
    python3 -m venv .venv && .venv/bin/pip install torch timm
    .venv/bin/python scripts/bench_vs_timm.py [--threads 2] [--runs 5]
"""
import argparse
import json
import os
import subprocess
import time

import timm
import torch

CASES = [("tresnet_m", 224, 1), ("tresnet_m", 224, 8), ("tresnet_l", 448, 1)]


def timm_ips(arch, size, batch, runs):
    model = timm.create_model(arch, pretrained=False).eval()
    x = torch.rand(batch, 3, size, size)
    with torch.no_grad():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    times.sort()
    return batch / times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "asl-cli"], check=True)
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}; torch {torch.__version__}, timm {timm.__version__}\n")
    print("| model | batch | asl-rs images/s | timm images/s | ratio |")
    print("|---|---|---|---|---|")
    for arch, size, batch in CASES:
        out = subprocess.run(
            ["target/release/asl-cli", "bench", "--arch", arch, "--input-size", str(size),
             "--batch-size", str(batch), "--threads", str(args.threads), "--runs", str(args.runs),
             "--format", "json"],
            check=True, capture_output=True, text=True).stdout
        ours = json.loads(out)["images_per_s"]
        theirs = timm_ips(arch, size, batch, args.runs)
        print(f"| {arch}@{size} | {batch} | {ours:.2f} | {theirs:.2f} | **{ours / theirs:.2f}x** |")


if __name__ == "__main__":
    main()
