#!/usr/bin/env python3
"""TResNet training-step speed: asl-rs (`asl-cli bench --train`) against timm in the same run.

One optimiser step = forward in training mode (BatchNorm on batch statistics), the ASL loss
(gamma_neg 4, gamma_pos 0, clip 0.05, sum), backward, Adam with weight decay. Both sides: random
weights and inputs, fp32, CPU, the same thread count, warm-up excluded, median of several steps.

Usage (from the repository root):
    python3 -m venv .venv && .venv/bin/pip install torch timm
    .venv/bin/python scripts/bench_train_vs_timm.py [--threads 2] [--runs 3]
"""
import argparse
import json
import subprocess
import time

import timm
import torch
from timm.loss import AsymmetricLossMultiLabel

CASES = [("tresnet_m", 224, 8)]
CLASSES = 80


def timm_ips(arch, size, batch, runs):
    model = timm.create_model(arch, pretrained=False, num_classes=CLASSES).train()
    loss_fn = AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=0, clip=0.05, disable_torch_grad_focal_loss=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    x = torch.rand(batch, 3, size, size)
    y = (torch.rand(batch, CLASSES) > 0.8).float()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    return batch / times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "asl-cli"], check=True)
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}; torch {torch.__version__}, timm {timm.__version__}\n")
    print("| model | batch | asl-rs images/s | timm images/s | ratio |")
    print("|---|---|---|---|---|")
    for arch, size, batch in CASES:
        out = subprocess.run(
            ["target/release/asl-cli", "bench", "--train", "--arch", arch, "--input-size", str(size),
             "--batch-size", str(batch), "--threads", str(args.threads), "--runs", str(args.runs),
             "--num-classes", str(CLASSES), "--format", "json"],
            check=True, capture_output=True, text=True).stdout
        ours = json.loads(out)["images_per_s"]
        theirs = timm_ips(arch, size, batch, args.runs)
        print(f"| {arch}@{size} train step | {batch} | {ours:.2f} | {theirs:.2f} | **{ours / theirs:.2f}x** |")


if __name__ == "__main__":
    main()
