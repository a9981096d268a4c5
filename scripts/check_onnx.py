#!/usr/bin/env python3
"""Runs an exported ONNX model in ONNX Runtime and compares it with `tricks forward`.

    pip install onnxruntime safetensors numpy
    python3 scripts/check_onnx.py MODEL.onnx INPUT.safetensors LOGITS.safetensors [TOL]

INPUT holds the tensor `input` (N, C, H, W); LOGITS holds `logits`, what `tricks forward`
wrote for that input. Prints the maximum error relative to the largest |logit| and exits
non-zero when it exceeds TOL (default 1e-4) or when the names, shapes or graph are wrong.
"""
import sys

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file


def main():
    model, inputs, logits = sys.argv[1:4]
    tol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-4
    x = load_file(inputs)["input"]
    expected = load_file(logits)["logits"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names_in = [i.name for i in session.get_inputs()]
    names_out = [o.name for o in session.get_outputs()]
    if names_in != ["input"] or names_out != ["logits"]:
        sys.exit(f"graph names: inputs {names_in}, outputs {names_out}; want input/logits")
    (got,) = session.run(None, {"input": x})
    if got.shape != expected.shape:
        sys.exit(f"shape {got.shape}, tricks forward gave {expected.shape}")
    err = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))
    print(f"onnxruntime {ort.__version__}: input {tuple(x.shape)} max relative error {err:.3e}")
    if not err <= tol:
        sys.exit(f"max relative error {err:.3e} exceeds {tol:.0e}")


if __name__ == "__main__":
    main()
