#!/usr/bin/env python3
"""Times every convolution shape of ResNet-50-D (batch 16, 224×224) alone, with ReLU, in
tricks (`tricks bench --conv`), ONNX Runtime (the layer exported from PyTorch) and PyTorch,
and prints each shape and the sums weighted by how often the shape occurs in the network.

    pip install torch==2.5.1 onnx onnxruntime numpy
    cargo build --release
    python3 scripts/bench_layers.py [--iters 10]

It tells which layers hold a framework's lead. ONNX Runtime converts to and from its
blocked layout at both ends of a lone layer, which it does not do inside a network, so its
per-layer times overstate its cost there.
"""
import argparse
import os
import re
import subprocess
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TRICKS = os.environ.get("TRICKS", os.path.join(ROOT, "target", "release", "tricks"))

# (C_in, C_out, kernel, stride, input size): count in ResNet-50-D.
LAYERS = [
    ((3, 32, 3, 2, 224), 1), ((32, 32, 3, 1, 112), 1), ((32, 64, 3, 1, 112), 1),
    ((64, 64, 1, 1, 56), 1), ((64, 64, 3, 1, 56), 3), ((64, 256, 1, 1, 56), 4),
    ((256, 64, 1, 1, 56), 2), ((256, 128, 1, 1, 56), 1), ((128, 128, 3, 2, 56), 1),
    ((128, 512, 1, 1, 28), 4), ((256, 512, 1, 1, 28), 1), ((512, 128, 1, 1, 28), 3),
    ((128, 128, 3, 1, 28), 3), ((512, 256, 1, 1, 28), 1), ((256, 256, 3, 2, 28), 1),
    ((256, 1024, 1, 1, 14), 6), ((512, 1024, 1, 1, 14), 1), ((1024, 256, 1, 1, 14), 5),
    ((256, 256, 3, 1, 14), 5), ((1024, 512, 1, 1, 14), 1), ((512, 512, 3, 2, 14), 1),
    ((512, 2048, 1, 1, 7), 3), ((1024, 2048, 1, 1, 7), 1), ((2048, 512, 1, 1, 7), 2),
    ((512, 512, 3, 1, 7), 2),
]


def tricks_ms(shape, batch, iters):
    spec = ",".join(map(str, shape))
    out = subprocess.run([TRICKS, "bench", "--conv", spec, "--batch", str(batch), "--iters", str(iters)],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"([\d.]+) ms", out).group(1))


def mean_ms(run, iters):
    for _ in range(2):
        run()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    return (time.perf_counter() - start) / iters * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=10)
    a = parser.parse_args()
    import onnxruntime as ort
    import torch

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    totals = {"tricks": 0.0, "onnxruntime": 0.0, "pytorch": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.onnx")
        for (c_in, c_out, k, stride, size), count in LAYERS:
            conv = torch.nn.Conv2d(c_in, c_out, k, stride, k // 2)
            layer = torch.nn.Sequential(conv, torch.nn.ReLU()).eval()
            x = torch.randn(a.batch, c_in, size, size)
            torch.onnx.export(layer, x, path, input_names=["x"], opset_version=17)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            feed = {"x": x.numpy()}
            with torch.no_grad():
                times = {
                    "tricks": tricks_ms((c_in, c_out, k, stride, size), a.batch, a.iters),
                    "onnxruntime": mean_ms(lambda: session.run(None, feed), a.iters),
                    "pytorch": mean_ms(lambda: layer(x), a.iters),
                }
            for name, ms in times.items():
                totals[name] += count * ms
            shown = "  ".join(f"{name} {ms:6.1f} ms" for name, ms in times.items())
            print(f"{count} x {c_in}->{c_out} {k}x{k}/{stride} at {size}: {shown}", flush=True)
    print("weighted sums: " + "  ".join(f"{name} {ms:.0f} ms" for name, ms in totals.items()))


if __name__ == "__main__":
    main()
