#!/usr/bin/env python3
"""A detector's inference in tricks and in ONNX Runtime (on the graph `tricks export`
writes), side by side in one run on one machine, with the ratio.

    pip install onnxruntime numpy
    cargo build --release
    python3 scripts/bench_detector.py --detector RUN --size 192 [--iters 10] [--repeat 3]

Both run one image of SIZE x ceil(4/3 SIZE) from the normalised image to the final
detections (proposals, RoIAlign, stage 4, per-class NMS), with every core (each
framework's default). The frameworks take turns `--repeat` times so that a slow spell of a
shared machine hits both; medians and ranges are printed. (torchvision is the issue's
reference; it needs PyTorch, which these machines cannot install.)
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TRICKS = os.environ.get("TRICKS", os.path.join(ROOT, "target", "release", "tricks"))


def tricks(*args):
    return subprocess.run([TRICKS, *args], check=True, capture_output=True, text=True).stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--detector", required=True)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    h, w = a.size, -(-4 * a.size // 3)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        tricks("export", a.detector, "--onnx", "--onnx-size", f"{h}x{w}", "--out", tmp)
        session = ort.InferenceSession(os.path.join(tmp, "model.onnx"), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
        ours, theirs = [], []
        for _ in range(a.repeat):
            line = tricks("bench", "--detector", a.detector, "--size", str(h), "--iters", str(a.iters))
            ours.append(float(re.search(r"([\d.]+) s/img", line).group(1)))
            session.run(None, {"image": x})
            times = []
            for _ in range(a.iters):
                start = time.perf_counter()
                session.run(None, {"image": x})
                times.append(time.perf_counter() - start)
            theirs.append(statistics.median(times))
    for name, t in [("tricks", ours), (f"onnxruntime {ort.__version__}", theirs)]:
        print(f"{name:<22} {statistics.median(t):.4f} s/img (range {min(t):.4f}-{max(t):.4f}) at {h}x{w}")
    print(f"tricks / onnxruntime throughput: {statistics.median(theirs) / statistics.median(ours):.2f}x")


if __name__ == "__main__":
    main()
