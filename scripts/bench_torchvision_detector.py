#!/usr/bin/env python3
"""Faster R-CNN C4 in tricks and in torchvision, side by side in one run on one machine:
one training step and one inference per image, with the ratios.

    pip install torch==2.15.0 torchvision==0.29.2 timm==1.0.31
    cargo build --release
    python3 scripts/bench_torchvision_detector.py --backbone resnet50 --size 384 [--iters 3] [--repeat 3]

Both sides are the same network at the same counts (Section 6.1's Faster R-CNN with
GluonCV's VOC settings, `recipes/detection.toml`): the timm ResNet `--backbone` cut after
stage 3 (stride 16), batch norm frozen, the stem and stage 1 frozen; the RPN's 3x3
convolution to 1024 channels with 15 anchors (scales 2-32 x 16, ratios 0.5, 1, 2);
12000 -> 2000 proposals (NMS 0.7) in training, 6000 -> 300 at test; 256 anchors and 128
regions sampled (positive fractions 0.5 and 0.25); RoIAlign to 14x14 (sampling ratio 2,
torchvision's `aligned=False`, GluonCV's); stage 4 and global average pooling as the box
head; 21-way classifier and class-specific boxes; test filter score 0.001, per-class NMS
0.3, 100 detections. One image of SIZE x ceil(4/3 SIZE) with three objects, untrained heads
(the cost of a step does not depend on the weights' values: every count above is fixed).
torchvision's transform is given an image already of its size (its resize keeps the
size). Left different: torchvision drops proposals under 1e-3 px, GluonCV and tricks under
16 px, so tricks' proposal NMS sees fewer boxes. SGD with momentum 0.9 and weight decay 5e-4 (the recipe's) on both sides. Each
framework uses every core (its default); they take turns `--repeat` times so that a slow
spell of a shared machine hits both; medians and ranges are printed.
"""
import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pytorch import alternate, median_seconds  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# The detection recipe's `rpn_channels`, which `tricks bench --detector-backbone` builds.
RPN_CHANNELS = 1024
TRICKS = os.environ.get("TRICKS", os.path.join(ROOT, "target", "release", "tricks"))


def tricks_seconds(backbone, size, iters, train):
    args = [TRICKS, "bench", "--detector-backbone", backbone, "--size", str(size), "--iters", str(iters)]
    if train:
        args.append("--train")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"([\d.]+) s/img", out).group(1))


def rpn_head(in_channels, channels, anchors):
    """GluonCV's RPN head (and tricks'): a 3x3 convolution to `channels` (1024 in the
    recipe, whatever the backbone) with ReLU, then 1x1 objectness and box layers.
    torchvision's `RPNHead` keeps the input's width instead."""
    import torch

    class RpnHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, channels, 3, padding=1)
            self.cls_logits = torch.nn.Conv2d(channels, anchors, 1)
            self.bbox_pred = torch.nn.Conv2d(channels, 4 * anchors, 1)

        def forward(self, features):
            logits, boxes = [], []
            for x in features:
                t = torch.relu(self.conv(x))
                logits.append(self.cls_logits(t))
                boxes.append(self.bbox_pred(t))
            return logits, boxes

    return RpnHead()


def torchvision_detector(backbone_name, h, w, rpn_channels):
    import timm
    import torch
    from timm.layers import freeze_batch_norm_2d
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    net = freeze_batch_norm_2d(timm.create_model(backbone_name, pretrained=False, num_classes=0))
    body = torch.nn.Sequential(net.conv1, net.bn1, net.act1, net.maxpool, net.layer1, net.layer2, net.layer3)
    for module in (net.conv1, net.bn1, net.layer1):
        for p in module.parameters():
            p.requires_grad_(False)
    body.out_channels = net.feature_info[3]["num_chs"]
    head = torch.nn.Sequential(net.layer4, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    c4 = net.num_features
    return FasterRCNN(
        body,
        num_classes=None,
        min_size=h,
        max_size=max(h, w),
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        rpn_anchor_generator=AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)),
        rpn_head=rpn_head(body.out_channels, rpn_channels, 15),
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=300,
        rpn_nms_thresh=0.7,
        rpn_batch_size_per_image=256,
        rpn_positive_fraction=0.5,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=2),
        box_head=head,
        box_predictor=FastRCNNPredictor(c4, 21),
        box_score_thresh=0.001,
        box_nms_thresh=0.3,
        box_detections_per_img=100,
        box_batch_size_per_image=128,
        box_positive_fraction=0.25,
    )


def torchvision_seconds(model, size, iters, train):
    import torch

    h, w = size, -(-4 * size // 3)
    torch.manual_seed(0)
    image = torch.rand(3, h, w)
    target = {
        "boxes": torch.tensor(
            [[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h], [0.6 * w, 0.05 * h, 0.75 * w, 0.3 * h]]
        ),
        "labels": torch.tensor([1, 7, 15]),
    }
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def once():
        if train:
            model.train()
            loss = sum(model([image], [target]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                model([image])

    return median_seconds(once, iters)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    import torch
    import torchvision

    h, w = a.size, -(-4 * a.size // 3)
    model = torchvision_detector(a.backbone, h, w, RPN_CHANNELS)
    for train in (False, True):
        what = "training step" if train else "inference"
        title = f"{what}, {a.backbone} C4 at {h}x{w}, one image"
        alternate(title, lambda: tricks_seconds(a.backbone, a.size, a.iters, train),
                  lambda: torchvision_seconds(model, a.size, a.iters, train), a.repeat,
                  f"torchvision {torchvision.__version__}", "img")
    print(f"({torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()
