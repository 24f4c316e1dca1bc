#!/usr/bin/env python3
"""CPU inference speed: asl-rs (`asl-cli bench`) against timm eager, ONNX Runtime and OpenVINO,
in alternating rounds of one run.

Every side runs the same architecture, input size and batch in fp32 with the same thread count
and random weights. The ONNX file is exported from timm (`torch.onnx.export(dynamo=True, opset
18)`) and checked against timm's logits before anything is timed; OpenVINO compiles that file
with `INFERENCE_PRECISION_HINT` f32 (no bf16, no int8 on any side). A round times every runtime
once (`--runs` timed passes after two warm-ups, median), in a rotating order; the machine is
noisy, so only the ratios within a round are compared. Prints one Markdown table per case: the
images/s of each side per round, the per-round ratio of asl-rs over the fastest other side, and
the median of those ratios. `--json` also writes every number as one JSON line per case.

`--profile` instead prints, per case, OpenVINO's per-layer times (PERF_COUNT) summed by layer type
and by the kernel it chose, beside `asl-cli bench --profile`'s op types, and the machine's
measured fp32 peak (a large sgemm in PyTorch at the same thread count) with each side's achieved
fraction of it.

Usage (from the repository root):
    python3 -m venv .venv && .venv/bin/pip install torch timm onnxruntime openvino onnx onnxscript
    .venv/bin/python scripts/bench_vs_runtimes.py [--threads 2] [--rounds 5] [--runs 5]
    .venv/bin/python scripts/bench_vs_runtimes.py --profile
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import asl_cli, parse_cases, pick, time_ms  # noqa: E402

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

CASES = "tresnet_m@224:1,tresnet_m@224:8,tresnet_l@448:1"
# the ONNX export must agree with timm to this fraction of the logits' scale before timing
EXPORT_TOLERANCE = 1e-4


def scaled_diff(a, b):
    """max |a - b| over max |b|: the export check's measure."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


class Timm:
    name = "timm"

    def __init__(self, model, x):
        self.model = model.to(memory_format=torch.channels_last)
        self.x = x.contiguous(memory_format=torch.channels_last)

    def run(self):
        with torch.no_grad():
            return self.model(self.x)


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, path, x, threads):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.x = x.numpy()

    def run(self):
        return self.session.run(None, {self.input: self.x})[0]


class OpenVino:
    name = "openvino"

    def __init__(self, path, x, threads, perf_count=False):
        import openvino as ov
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32"}
        if perf_count:
            config["PERF_COUNT"] = "YES"
        self.compiled = ov.Core().compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.x = x.numpy()

    def run(self):
        self.request.infer({0: self.x})
        return self.request.get_output_tensor(0).data.copy()


def asl_cli_ips(cli, arch, size, batch, args):
    """One `asl-cli bench` run: its median images/s (it times `--runs` passes after two warm-ups)."""
    cmd = [cli, "bench", "--arch", arch, "--input-size", str(size), "--batch-size", str(batch),
           "--threads", str(args.threads), "--runs", str(args.runs), "--format", "json"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr}")
    return json.loads(run.stdout)["images_per_s"]


def export(arch, size, batch, folder):
    """timm's model with random weights (seed 0), exported to ONNX and checked against timm."""
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    x = torch.rand(batch, 3, size, size)
    path = os.path.join(folder, f"{arch}-{size}-b{batch}.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (x,), path, dynamo=True, opset_version=18,
                          input_names=["x"], output_names=["logits"])
        expected = model(x).numpy()
    return model, x, path, expected


def build_sides(model, x, path, expected, threads):
    sides = [Timm(model, x), OnnxRuntime(path, x, threads), OpenVino(path, x, threads)]
    for side in sides[1:]:
        diff = scaled_diff(np.asarray(side.run()), expected)
        print(f"  {side.name} vs timm: max |diff| {diff:.2e} of the logits' scale", flush=True)
        if diff > EXPORT_TOLERANCE:
            raise SystemExit(f"{side.name}'s output differs from timm's ({diff:.2e}): "
                             "the export is wrong, nothing timed")
    return sides


def rounds(cli, case, sides, args):
    """Alternating rounds: every side once per round, in a rotating order."""
    arch, size, batch = case
    names = ["asl-rs"] + [s.name for s in sides]
    table = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name == "asl-rs":
                table[name].append(asl_cli_ips(cli, arch, size, batch, args))
            else:
                side = next(s for s in sides if s.name == name)
                table[name].append(batch * 1e3 / pick(time_ms(side.run, args.runs), 0.5))
    return table


def report(case, table):
    arch, size, batch = case
    others = [n for n in table if n != "asl-rs"]
    ratios = [table["asl-rs"][r] / max(table[n][r] for n in others)
              for r in range(len(table["asl-rs"]))]
    print(f"\n{arch}@{size} batch {batch}, images/s per round:\n")
    print("| round | " + " | ".join(table) + " | asl-rs / fastest other |")
    print("|---|" + "---|" * (len(table) + 1))
    for r, ratio in enumerate(ratios):
        cells = " | ".join(f"{table[n][r]:.2f}" for n in table)
        print(f"| {r + 1} | {cells} | {ratio:.2f} |")
    medians = {n: float(np.median(v)) for n, v in table.items()}
    cells = " | ".join(f"{medians[n]:.2f}" for n in table)
    print(f"| median | {cells} | **{float(np.median(ratios)):.2f}x** |", flush=True)
    return {"arch": arch, "size": size, "batch": batch, "images_per_s": table,
            "ratios": ratios, "median_ratio": float(np.median(ratios))}


def measured_peak_gflops(threads):
    """fp32 GFLOP/s of a large square sgemm in PyTorch (MKL/oneDNN): the machine's usable peak."""
    n = 2048
    a, b = torch.rand(n, n), torch.rand(n, n)
    times = time_ms(lambda: torch.mm(a, b), 10, warmup=3)
    return 2 * n ** 3 / (pick(times, 0.0) * 1e-3) / 1e9


def model_gflops(arch, size):
    """Multiply-adds x 2 of one image's forward pass, counted by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode
    model = timm.create_model(arch, pretrained=False).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def openvino_profile(path, x, threads, runs):
    """OpenVINO's per-layer times, summed by (layer type, kernel) over `runs` passes."""
    side = OpenVino(path, x, threads, perf_count=True)
    side.run()
    by_kind = {}
    for _ in range(runs):
        side.run()
        for info in side.request.get_profiling_info():
            us = info.real_time.total_seconds() * 1e6
            if us <= 0:
                continue
            key = (info.node_type, info.exec_type)
            by_kind[key] = by_kind.get(key, 0.0) + us / runs
    return by_kind


def asl_profile(cli, arch, size, batch, threads):
    cmd = [cli, "bench", "--arch", arch, "--input-size", str(size), "--batch-size", str(batch),
           "--threads", str(threads), "--runs", "3", "--profile", "--format", "json"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return out["profile"], out["median_s"]


def profile(cli, case, folder, args, peak):
    arch, size, batch = case
    model, x, path, _ = export(arch, size, batch, folder)
    gflop = model_gflops(arch, size) * batch
    ov = openvino_profile(path, x, args.threads, args.runs)
    ov_total = sum(ov.values())
    rows, asl_median = asl_profile(cli, arch, size, batch, args.threads)
    print(f"\n{arch}@{size} batch {batch}: {gflop:.1f} GFLOP per pass; measured fp32 peak "
          f"{peak:.0f} GFLOP/s ({args.threads} threads)")
    print(f"- OpenVINO: {ov_total / 1e3:.1f} ms summed over layers, "
          f"{gflop / (ov_total * 1e-6) / peak * 100:.0f}% of peak")
    print(f"- asl-rs: {asl_median * 1e3:.1f} ms per pass, "
          f"{gflop / asl_median / peak * 100:.0f}% of peak\n")
    print("| OpenVINO layer type | kernel | ms | share |")
    print("|---|---|---|---|")
    for (kind, kernel), us in sorted(ov.items(), key=lambda kv: -kv[1]):
        if us / ov_total >= 0.002:
            print(f"| {kind} | {kernel} | {us / 1e3:.2f} | {us / ov_total * 100:.1f}% |")
    print("\n| asl-rs op type | ms | share |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['op']} | {row['seconds'] * 1e3:.2f} | {row['share'] * 100:.1f}% |")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="threads of every side")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    ap.add_argument("--runs", type=int, default=5, help="timed passes per side and round")
    ap.add_argument("--cases", default=CASES, help=f"arch@size:batch,... (default: {CASES})")
    ap.add_argument("--asl-cli", help="a built asl-cli (default: cargo build --release here)")
    ap.add_argument("--profile", action="store_true",
                    help="per-layer times of OpenVINO and asl-rs, and the fp32 peak")
    ap.add_argument("--json", help="also append one JSON line per case to this file")
    args = ap.parse_args()
    cli = asl_cli(args.asl_cli)
    torch.set_num_threads(args.threads)
    import onnxruntime
    import openvino
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {args.threads} threads, fp32; torch "
          f"{torch.__version__}, timm {timm.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"openvino {openvino.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        if args.profile:
            peak = measured_peak_gflops(args.threads)
            for case in parse_cases(args.cases):
                profile(cli, case, folder, args, peak)
            return
        for case in parse_cases(args.cases):
            print(f"\nexporting {case[0]}@{case[1]} batch {case[2]}", flush=True)
            sides = build_sides(*export(*case, folder), args.threads)
            result = report(case, rounds(cli, case, sides, args))
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
