#!/usr/bin/env python3
"""Runs an exported segmenter in ONNX Runtime and compares it with `tricks predict`.

    pip install onnxruntime safetensors numpy
    python3 scripts/check_onnx_segmenter.py MODEL.onnx INPUT.safetensors LABELS.safetensors

INPUT holds `image` (1, 3, H, W), the normalised image `tricks predict` ran; LABELS holds
`labels` (H, W), the classes it wrote (its label PNG decoded), and `logits` (1, C, H, W),
our network's upsampled logits for the same input. The logits must agree within 1e-4 of
the largest |logit|, and at least 99.9 % of the pixels must get the same class (argmax ties
between nearly equal logits may differ in the last bits). Exits non-zero otherwise, or when
the graph's names or shapes are wrong.
"""
import sys

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file


def main():
    model, inputs, labels = sys.argv[1:4]
    x = load_file(inputs)["image"]
    expected = load_file(labels)
    want = expected["labels"].astype(np.int64)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names_in = [i.name for i in session.get_inputs()]
    names_out = [o.name for o in session.get_outputs()]
    if names_in != ["image"] or names_out != ["logits", "labels"]:
        sys.exit(f"graph names: inputs {names_in}, outputs {names_out}")
    logits, got = session.run(None, {"image": x})
    n, _, h, w = x.shape
    if got.shape != (n, h, w) or logits.shape[2:] != (h, w):
        sys.exit(f"shapes: labels {got.shape}, logits {logits.shape} for input {x.shape}")
    if not np.array_equal(np.argmax(logits, axis=1), got):
        sys.exit("labels are not the argmax of the logits")
    ours = expected["logits"]
    err = float(np.abs(logits - ours).max() / max(np.abs(ours).max(), 1e-12))
    same = float(np.mean(got[0] == want))
    print(f"onnxruntime {ort.__version__}: {h}x{w}, logits within {err:.2e} (relative), "
          f"{100 * same:.3f}% of the pixels agree, {len(np.unique(got))} classes predicted")
    if not err <= 1e-4:
        sys.exit(f"logits differ by {err:.2e} relative to the largest")
    if same < 0.999:
        sys.exit(f"only {100 * same:.3f}% of the pixels agree with tricks predict")


if __name__ == "__main__":
    main()
