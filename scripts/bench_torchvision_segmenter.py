#!/usr/bin/env python3
"""FCN in tricks and in torchvision, side by side in one run on one machine: one training
step and one inference per batch, with the ratios.

    pip install torch==2.15.0 torchvision==0.29.2 timm==1.0.31
    cargo build --release
    python3 scripts/bench_torchvision_segmenter.py --backbone resnet50d --batch 2 --size 256 [--iters 3] [--repeat 3]

Both sides are the same network (Section 6.2's FCN with GluonCV's ADE20K settings,
`recipes/segmentation.toml`): the timm ResNet `--backbone` dilated to output stride 8
(`timm.create_model(..., output_stride=8)`, as the zoo builds it), trainable batch norm;
torchvision's `FCN` with its `FCNHead` on stage 4 (3x3 conv to in/4 channels, BN, ReLU,
dropout 0.1, 1x1 conv to 150 classes) and the auxiliary `FCNHead` on stage 3, both
upsampled bilinearly (align_corners=False) to the input; the loss is the per-pixel
cross-entropy with ignore label 255 plus 0.5 x the auxiliary one. Inference is the main
head's upsampled logits. Random images and labels (every class present, one pixel in 16
ignored). SGD with momentum 0.9 and weight decay 1e-4 (the recipe's) on both sides. Each
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
TRICKS = os.environ.get("TRICKS", os.path.join(ROOT, "target", "release", "tricks"))
CLASSES = 150
IGNORE = 255


def tricks_seconds(backbone, batch, size, iters, train):
    args = [TRICKS, "bench", "--segmenter-backbone", backbone, "--batch", str(batch), "--size", str(size),
            "--iters", str(iters)]
    if train:
        args.append("--train")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"([\d.]+) s/iter", out).group(1))


def torchvision_fcn(backbone_name):
    import timm
    import torch
    from torchvision.models.segmentation import FCN
    from torchvision.models.segmentation.fcn import FCNHead

    net = timm.create_model(backbone_name, pretrained=False, num_classes=0, output_stride=8)

    class Backbone(torch.nn.Module):
        """Stage 3 (`aux`) and stage 4 (`out`), as torchvision's IntermediateLayerGetter
        hands them to `FCN`."""

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            n = self.net
            x = n.maxpool(n.act1(n.bn1(n.conv1(x))))
            c3 = n.layer3(n.layer2(n.layer1(x)))
            return {"aux": c3, "out": n.layer4(c3)}

    c3, c4 = net.feature_info[3]["num_chs"], net.feature_info[4]["num_chs"]
    return FCN(Backbone(), FCNHead(c4, CLASSES), FCNHead(c3, CLASSES))


def torchvision_seconds(model, batch, size, iters, train):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    images = torch.rand(batch, 3, size, size) * 2 - 1
    i = torch.arange(batch * size * size)
    labels = torch.where(i % 16 == 0, IGNORE, i // 7 % CLASSES).reshape(batch, size, size)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def once():
        if train:
            model.train()
            out = model(images)
            loss = F.cross_entropy(out["out"], labels, ignore_index=IGNORE) \
                + 0.5 * F.cross_entropy(out["aux"], labels, ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                # The main head only: torchvision's FCN runs its auxiliary head in eval
                # mode too, tricks' does not.
                c4 = model.backbone(images)["out"]
                F.interpolate(model.classifier(c4), size=(size, size), mode="bilinear", align_corners=False)

    return median_seconds(once, iters)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet50d")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    import torch
    import torchvision

    model = torchvision_fcn(a.backbone)
    for train in (False, True):
        what = "training step" if train else "inference"
        title = f"{what}, FCN on {a.backbone} (output stride 8), batch {a.batch} at {a.size}x{a.size}"
        alternate(title, lambda: tricks_seconds(a.backbone, a.batch, a.size, a.iters, train),
                  lambda: torchvision_seconds(model, a.batch, a.size, a.iters, train), a.repeat,
                  f"torchvision {torchvision.__version__}", "batch")
    print(f"({torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()
