#!/usr/bin/env python3
"""Runs an exported detector in ONNX Runtime and compares it with `tricks predict`.

    pip install onnxruntime safetensors numpy
    python3 scripts/check_onnx_detector.py MODEL.onnx INPUT.safetensors PREDICT.json

INPUT holds the tensor `image` (1, 3, H, W), the normalised image that `tricks predict`
ran at scale 1 (an image of the graph's input size); PREDICT.json is what it wrote. Every
detection must be there on both sides: same class, IoU >= 0.999 and scores within 1e-4
(absolute). Exits non-zero otherwise, or when the graph's names or shapes are wrong.
"""
import json
import sys

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(np.allclose(a, b, atol=1e-4))


def main():
    model, inputs, predicted = sys.argv[1:4]
    x = load_file(inputs)["image"]
    want = json.load(open(predicted))["detections"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names_in = [i.name for i in session.get_inputs()]
    names_out = [o.name for o in session.get_outputs()]
    if names_in != ["image"] or names_out != ["boxes", "scores", "labels"]:
        sys.exit(f"graph names: inputs {names_in}, outputs {names_out}")
    boxes, scores, labels = session.run(None, {"image": x})
    if boxes.shape != (len(scores), 4) or labels.shape != scores.shape:
        sys.exit(f"shapes: boxes {boxes.shape}, scores {scores.shape}, labels {labels.shape}")
    if len(scores) != len(want):
        sys.exit(f"{len(scores)} detections in ONNX Runtime, {len(want)} from tricks predict")
    unmatched = list(range(len(want)))
    worst_iou, worst_score = 1.0, 0.0
    for b, s, l in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        candidates = [k for k in unmatched if want[k]["class_index"] == l]
        if not candidates:
            sys.exit(f"ONNX detection class {l} score {s:.5f} box {b}: none left in tricks predict")
        k = max(candidates, key=lambda k: (iou(b, want[k]["box"]), -abs(want[k]["score"] - s)))
        unmatched.remove(k)
        worst_iou = min(worst_iou, iou(b, want[k]["box"]))
        worst_score = max(worst_score, abs(want[k]["score"] - s))
    print(
        f"onnxruntime {ort.__version__}: {len(scores)} detections, "
        f"lowest IoU {worst_iou:.6f}, largest score difference {worst_score:.2e}"
    )
    if worst_iou < 0.999 or worst_score > 1e-4:
        sys.exit("the detections differ beyond IoU 0.999 / score 1e-4")


if __name__ == "__main__":
    main()
