#!/usr/bin/env python3
"""TResNet speed: asl-rs (`asl-cli bench`) against timm eager on the same shapes, in one run.

Inference (default): random weights, eval mode, fp32, no gradients. `--train`: one optimiser
step = forward in training mode (BatchNorm on batch statistics), the ASL loss (gamma_neg 4,
gamma_pos 0, clip 0.05, sum), backward, Adam with weight decay; `--precision bf16` runs it under
bf16 autocast on both sides (torch.autocast; asl-cli's --precision bf16), weights and Adam in f32.
Both sides: the same device, thread count (CPU) and shapes, two warm-up runs excluded, median of
`--runs` (on CUDA each timed run ends with a device synchronisation). Prints a Markdown table with
the ratio asl-rs images/s over timm images/s for docs/benchmarks.md, and with `--json` one JSON
line per case as well.

Usage (from the repository root):
    python3 -m venv .venv && .venv/bin/pip install torch timm
    .venv/bin/python scripts/bench_vs_timm.py [--threads 2] [--runs 5]       # the CPU inference cases
    .venv/bin/python scripts/bench_vs_timm.py --train --runs 5                # tresnet_m@224 batch 8
    # the GPU machine, with a CUDA asl-cli carried there (no cargo):
    python3 scripts/bench_vs_timm.py --device cuda --asl-cli bin/asl-cli --cases tresnet_l@448:32
    python3 scripts/bench_vs_timm.py --device cuda --asl-cli bin/asl-cli --train \
        --precision bf16 --cases tresnet_m@224:64
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import asl_cli, parse_cases, pick, time_ms  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402

INFER_CASES = "tresnet_m@224:1,tresnet_m@224:8,tresnet_l@448:1"
TRAIN_CASES = "tresnet_m@224:8"
CLASSES = 80  # the training cases' classifier (inference: timm's 1000)


def timm_ips(arch, size, batch, args):
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    x = torch.rand(batch, 3, size, size, device=dev)
    if not args.train:
        model = timm.create_model(arch, pretrained=False).eval().to(dev)
        with torch.no_grad():
            times = time_ms(lambda: model(x), args.runs, sync=sync)
        return batch * 1e3 / pick(times, 0.5)
    from timm.loss import AsymmetricLossMultiLabel
    model = timm.create_model(arch, pretrained=False, num_classes=CLASSES).train().to(dev)
    loss_fn = AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=0, clip=0.05,
                                       disable_torch_grad_focal_loss=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    y = (torch.rand(batch, CLASSES, device=dev) > 0.8).float()
    bf16 = args.precision == "bf16"

    def step():
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss_fn(logits.float(), y).backward()  # the loss in f32, as asl-rs computes it
        opt.step()

    return batch * 1e3 / pick(time_ms(step, args.runs, sync=sync), 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of both sides")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--train", action="store_true", help="time a training step")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="training step arithmetic (bf16: autocast, CUDA)")
    ap.add_argument("--cases", help=f"arch@size:batch,... (default: {INFER_CASES}; "
                                      f"with --train {TRAIN_CASES})")
    ap.add_argument("--asl-cli", help="a built asl-cli (default: cargo build --release here)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per case")
    args = ap.parse_args()
    cli = asl_cli(args.asl_cli)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # f32 means f32 on both sides
        torch.backends.cudnn.allow_tf32 = False
        where = torch.cuda.get_device_name(0)
    else:
        where = f"{args.threads} threads"
    mode = "train step" if args.train else "inference"
    print(f"{mode}, {args.device} ({where}), {args.precision if args.train else 'f32'}; "
          f"torch {torch.__version__}, timm {timm.__version__}\n")
    print("| model | batch | asl-rs images/s | timm images/s | ratio |")
    print("|---|---|---|---|---|")
    for arch, size, batch in parse_cases(args.cases or (TRAIN_CASES if args.train else INFER_CASES)):
        cmd = [cli, "bench", "--arch", arch, "--input-size", str(size), "--batch-size", str(batch),
               "--threads", str(args.threads), "--runs", str(args.runs), "--device", args.device,
               "--format", "json"]
        if args.train:
            cmd += ["--train", "--num-classes", str(CLASSES), "--precision", args.precision]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr}")
        ours = json.loads(run.stdout)["images_per_s"]
        theirs = timm_ips(arch, size, batch, args)
        label = f"{arch}@{size}" + (" train step" if args.train else "")
        print(f"| {label} | {batch} | {ours:.2f} | {theirs:.2f} | **{ours / theirs:.2f}x** |",
              flush=True)
        if args.json:
            print(json.dumps({"arch": arch, "size": size, "batch": batch, "mode": mode,
                              "device": args.device, "precision": args.precision,
                              "asl_rs_ips": ours, "timm_ips": theirs, "ratio": ours / theirs}),
                  flush=True)


if __name__ == "__main__":
    main()
