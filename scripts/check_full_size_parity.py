#!/usr/bin/env python3
"""Full-size TResNet parity against timm (slow; not run in CI).

For each of tresnet_m, tresnet_l, tresnet_xl and tresnet_v2_l: builds the timm model with random
weights and randomised BatchNorm statistics and gammas, saves its state dict as safetensors (timm
naming, num_batches_tracked included), runs the asl-tresnet example `tresnet_logits` on the same
inputs (224x224 and 228x196), and compares both asl-rs paths (training path in eval mode, folded
inference path) with timm's logits. Fails if any max |diff| exceeds 1e-4 of the logits' scale.

Usage (from the repository root; needs torch, timm, safetensors; about 2-4 GB of RAM):
    .venv/bin/python scripts/check_full_size_parity.py [--archs tresnet_m,tresnet_l]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import timm
import torch
from safetensors.torch import load_file, save_file


def randomise(model, gen):
    """Random BN statistics and gammas (some negative). The last BN of every residual branch
    gets small gammas, as trained networks have, so that activations stay in a realistic range:
    with O(1) gammas everywhere a 30-block random net reaches logits of ~1e4, where any change of
    rounding order (such as folding BN into the convolutions) is amplified far beyond 1e-4."""
    last_bn = set()
    for name, m in model.named_modules():
        if name.endswith("conv3.bn") or (name.endswith("conv2.bn") and not hasattr(
                model.get_submodule(name.rsplit(".", 2)[0]), "conv3")):
            last_bn.add(name)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                sign = torch.where(torch.rand(c, generator=gen) < 0.2, -1.0, 1.0)
                scale = 0.1 if name in last_bn else 1.0
                m.weight.copy_(scale * sign * (0.5 + torch.rand(c, generator=gen)))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="tresnet_m,tresnet_l,tresnet_xl,tresnet_v2_l")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "asl-tresnet", "--example",
                    "tresnet_logits"], check=True)
    exe = os.path.join("target", "release", "examples", "tresnet_logits")
    gen = torch.Generator().manual_seed(1)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            model = timm.create_model(arch, pretrained=False).eval()
            randomise(model, gen)
            weights = os.path.join(tmp, f"{arch}.safetensors")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
            for h, w in ((224, 224), (228, 196)):
                x = torch.rand(1, 3, h, w, generator=gen)
                with torch.no_grad():
                    want = model(x)
                inp, out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
                save_file({"input": x}, inp)
                subprocess.run([exe, weights, inp, out], check=True)
                got = load_file(out)
                scale = want.abs().max().item()
                for key in ("logits", "logits_inference"):
                    diff = (got[key] - want).abs().max().item()
                    ok = diff <= 1e-4 * scale
                    failed |= not ok
                    print(f"{arch} {h}x{w} {key}: max |diff| {diff:.3e} (scale {scale:.3f}) "
                          f"{'ok' if ok else 'FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
