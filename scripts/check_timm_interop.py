#!/usr/bin/env python3
"""Checks full-size checkpoints both ways between tricks and timm.

    pip install torch==2.5.1 timm==1.0.15 safetensors numpy
    cargo build --release
    python3 scripts/check_timm_interop.py [resnet50d resnet18 ...]

For each model:
  1. ours -> timm: `tricks init` writes weights; timm loads them with strict=True.
  2. timm -> ours: timm's randomly initialised state_dict, with perturbed batch-norm
     statistics, saved as safetensors (the layout of the Hub's model.safetensors) and run
     by `tricks forward`.
Both directions compare logits in eval mode on a random 1x3x224x224 input, and in the second
direction the four stage features too. Exits non-zero on any failure.
"""
import os
import subprocess
import sys
import tempfile

import timm
import torch
from safetensors.torch import load_file, save_file

TRICKS = os.environ.get("TRICKS", os.path.join(os.path.dirname(__file__), "..", "target", "release", "tricks"))


def forward(tmp, model, weights, x):
    save_file({"input": x}, os.path.join(tmp, "input.safetensors"))
    out = os.path.join(tmp, "out.safetensors")
    subprocess.run([TRICKS, "forward", "--model", model, "--weights", weights, "--input",
                    os.path.join(tmp, "input.safetensors"), "--output", out, "--features"], check=True)
    return load_file(out)


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def check(name, tmp):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)

    ours = os.path.join(tmp, "ours.safetensors")
    subprocess.run([TRICKS, "init", "--model", name, "--out", ours, "--seed", "1"], check=True, capture_output=True)
    m = timm.create_model(name, pretrained=False).eval()
    m.load_state_dict(load_file(ours), strict=True)
    with torch.no_grad():
        err_in_timm = rel(forward(tmp, name, ours, x)["logits"], m(x))

    m = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for k, b in m.named_buffers():
            if k.endswith("running_mean"):
                b.uniform_(-0.1, 0.1)
            elif k.endswith("running_var"):
                b.uniform_(0.5, 1.5)
        theirs = os.path.join(tmp, "theirs.safetensors")
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, theirs)
        out = forward(tmp, name, theirs, x)
        ref = m.forward_intermediates(x, intermediates_only=True)
        err_ours = rel(out["logits"], m(x))
        err_feat = max(rel(out[f"features.{i}"], ref[i + 1]) for i in range(4))
    ok = max(err_in_timm, err_ours, err_feat) <= 1e-4
    print(f"{name}: ours in timm (strict load) logits {err_in_timm:.1e}; timm's in ours logits "
          f"{err_ours:.1e}, features {err_feat:.1e} {'ok' if ok else 'FAILED'}")
    return ok


def main():
    names = sys.argv[1:] or ["resnet18", "resnet50", "resnet50c", "resnet50d", "resnet50s", "resnet101d"]
    with tempfile.TemporaryDirectory() as tmp:
        results = [check(n, tmp) for n in names]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
