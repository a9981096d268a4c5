#!/usr/bin/env python3
"""Runs one workload in tricks, PyTorch (timm) and ONNX Runtime (our exported model) and
prints images/s side by side with the ratios, in one run on one machine.

    pip install torch==2.5.1 timm==1.0.15 onnxruntime numpy
    cargo build --release
    python3 scripts/bench_compare.py --model resnet50d --batch 16 --size 224 [--train]
    [--device cuda]

Inference compares all three (ONNX Runtime on the CPU only); a training step (forward, cross-entropy backward, Nesterov
SGD) compares tricks with PyTorch (ONNX Runtime does not train). A framework that is not
installed is skipped with a note. Every framework uses all cores, its default.
"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pytorch import seconds_per_iter, timed, workload_args  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TRICKS = os.environ.get("TRICKS", os.path.join(ROOT, "target", "release", "tricks"))


def tricks(*args):
    out = subprocess.run([TRICKS, *args], check=True, capture_output=True, text=True)
    return out.stdout


def bench_tricks(a):
    args = ["bench", "--model", a.model, "--batch", str(a.batch), "--size", str(a.size), "--iters", str(a.iters),
            "--device", a.device]
    line = tricks(*args, *(["--train"] if a.train else []))
    return float(re.search(r"([\d.]+) img/s", line).group(1))


def bench_pytorch(a):
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return None
    return a.batch / seconds_per_iter(a.model, a.batch, a.size, a.train, a.iters, a.device)


def bench_onnxruntime(a):
    if a.train or a.device != "cpu":
        return None
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "w.safetensors")
        tricks("init", "--model", a.model, "--out", weights)
        tricks("export", weights, "--model", a.model, "--onnx", "--out", tmp)
        session = ort.InferenceSession(os.path.join(tmp, "model.onnx"), providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(0).random((a.batch, 3, a.size, a.size), dtype=np.float32) * 2 - 1)
    return a.batch / timed(lambda: session.run(None, {"input": x}), a.iters)


def main():
    a = workload_args()
    kind = "training step" if a.train else "inference"
    results = {"tricks": bench_tricks(a), "pytorch": bench_pytorch(a), "onnxruntime": bench_onnxruntime(a)}
    where = f"{os.cpu_count()} cores" if a.device == "cpu" else a.device
    print(f"{a.model} {kind}, batch {a.batch} at {a.size}x{a.size}, {where}")
    ours = results["tricks"]
    for name, ips in results.items():
        if ips is None:
            print(f"  {name:<12} -")
            continue
        ratio = "" if name == "tricks" else f"  tricks/{name} = {ours / ips:.2f}x"
        print(f"  {name:<12} {ips:8.2f} img/s{ratio}")


if __name__ == "__main__":
    sys.exit(main())
