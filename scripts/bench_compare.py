#!/usr/bin/env python3
"""Runs one workload in tricks, PyTorch (timm) and ONNX Runtime (our exported model) and
prints images/s side by side with the ratios, in one run on one machine.

    pip install torch==2.5.1 timm==1.0.15 onnxruntime numpy
    cargo build --release
    python3 scripts/bench_compare.py --model resnet50d --batch 16 --size 224 [--train]
    [--device cuda]

Inference compares all three (ONNX Runtime on the CPU only); a training step (forward,
cross-entropy backward, Nesterov SGD) compares tricks with PyTorch (ONNX Runtime does not
train). A framework that is not installed is skipped with a note. Every framework uses all
cores, its default. With `--repeat N` the frameworks run in turn N times (so that a slow
spell of a shared machine hits all of them) and the median and range of each are printed.
"""
import os
import re
import statistics
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


def onnxruntime_session(a):
    """An ONNX Runtime session on our exported model, or None where it does not apply."""
    if a.train or a.device != "cpu":
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "w.safetensors")
        tricks("init", "--model", a.model, "--out", weights)
        tricks("export", weights, "--model", a.model, "--onnx", "--out", tmp)
        return ort.InferenceSession(os.path.join(tmp, "model.onnx"), providers=["CPUExecutionProvider"])


def bench_onnxruntime(a, session):
    import numpy as np

    x = (np.random.default_rng(0).random((a.batch, 3, a.size, a.size), dtype=np.float32) * 2 - 1)
    return a.batch / timed(lambda: session.run(None, {"input": x}), a.iters)


def main():
    a = workload_args()
    kind = "training step" if a.train else "inference"
    session = onnxruntime_session(a)
    runs = {"tricks": [], "pytorch": [], "onnxruntime": []}
    for _ in range(max(a.repeat, 1)):
        runs["tricks"].append(bench_tricks(a))
        runs["pytorch"].append(bench_pytorch(a))
        runs["onnxruntime"].append(bench_onnxruntime(a, session) if session else None)
    where = f"{os.cpu_count()} cores" if a.device == "cpu" else a.device
    rounds = f", median of {a.repeat} rounds" if a.repeat > 1 else ""
    print(f"{a.model} {kind}, batch {a.batch} at {a.size}x{a.size}, {where}{rounds}")
    median = {name: statistics.median(v) if None not in v else None for name, v in runs.items()}
    ours = median["tricks"]
    for name, ips in median.items():
        if ips is None:
            print(f"  {name:<12} -")
            continue
        ratio = "" if name == "tricks" else f"  tricks/{name} = {ours / ips:.2f}x"
        spread = f" ({min(runs[name]):.2f}-{max(runs[name]):.2f})" if a.repeat > 1 else ""
        print(f"  {name:<12} {ips:8.2f} img/s{spread}{ratio}")


if __name__ == "__main__":
    sys.exit(main())
