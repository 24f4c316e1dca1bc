"""Shared helpers of the comparison scripts (bench_vs_pytorch.py, bench_vs_timm.py,
bench_vs_runtimes.py, bench_asl_torch_cuda.py): one timing loop for all of them, the case list
parser, the asl-cli to run."""

import subprocess
import time


def time_ms(step, runs, warmup=2, sync=None, pipelined=False):
    """Times `step()`: `warmup` untimed calls, then `runs` timed calls, each between two calls of
    `sync` (e.g. `torch.cuda.synchronize`; None on the CPU). Returns the sorted times in
    milliseconds; with `pipelined`, also the mean of `runs` back-to-back calls followed by one
    `sync` (what a GPU reaches when launches overlap)."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(runs):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    if not pipelined:
        return times
    t = time.perf_counter()
    for _ in range(runs):
        step()
    sync()
    return times, (time.perf_counter() - t) * 1e3 / runs


def pick(sorted_times, q):
    """The `q` quantile (0.5: the median) of sorted times, nearest rank."""
    return sorted_times[round((len(sorted_times) - 1) * q)]


def parse_cases(text):
    """`arch@size:batch,...` -> [(arch, size, batch)]."""
    out = []
    for case in text.split(","):
        arch, rest = case.split("@")
        size, batch = rest.split(":")
        out.append((arch, int(size), int(batch)))
    return out


def asl_cli(path):
    """`path`, or a release asl-cli built here when it is None."""
    if path is not None:
        return path
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "asl-cli"], check=True)
    return "target/release/asl-cli"
