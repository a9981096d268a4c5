#!/usr/bin/env python3
"""The demo's classification runs in PyTorch + timm with torchvision transforms: the
reference for `tricks train` at the same settings (issue 21's accuracy table).

    pip install torch==2.15.0 torchvision==0.29.2 timm==1.0.31
    python3 scripts/train_pytorch_reference.py --data DATA --recipe baseline --seeds 0,1,2

DATA is an ImageNet-layout folder (`tricks data synth --out DATA`). The network is
`resnet10d_tiny` built from timm's `ResNet` class (one basic block per stage, widths
32-256, deep stem of 16, average-pool shortcuts), initialised by timm (Kaiming normal,
fan-out, on the convolutions: the `--weight-init kaiming` of tricks), batch 32 at 64×64,
lr 0.025 per 32 images, Nesterov SGD (momentum 0.9, weight decay 1e-4), 8 epochs, as the
demo. `baseline`: step decay ×0.1 at epoch 6 (`--lr-step-epochs`). `tricks`: 1 warmup
epoch, cosine decay, zero-γ (`zero_init_last`), no bias decay, label smoothing 0.1 (the
paper's ε/(K − 1) off the true class), mixup α = 0.2 (each batch with its mirror).
Schedules per update, as tricks. Transforms: `RandomResizedCrop(64)` (area 0.08-1, ratio
3/4-4/3), flip, `ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)` with PCA
lighting 0.1 (GluonCV's `train_imagenet.py`, the `gluoncv` colour jitter of tricks;
`--no-color` turns both off on this side, `--jitter 0 --lighting-std 0` on ours), ImageNet
normalisation; validation: shorter side to 73, centre crop 64. Prints each seed's top-1 and
top-5 of the last epoch and the mean ± sample standard deviation.
"""
import argparse
import math
import statistics

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torchvision.datasets import ImageFolder

EIGVAL = torch.tensor([55.46, 4.794, 1.148]) / 255.0
EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


class Lighting:
    """AlexNet's PCA lighting noise on a [0, 1] tensor image (GluonCV's `RandomLighting`)."""

    def __init__(self, std):
        self.std = std

    def __call__(self, img):
        alpha = torch.randn(3) * self.std
        return img + (EIGVEC @ (alpha * EIGVAL)).view(3, 1, 1)


def tiny(classes, zero_gamma):
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(block=BasicBlock, layers=[1, 1, 1, 1], channels=(32, 64, 128, 256), stem_width=16,
                  stem_type="deep", avg_down=True, num_classes=classes, zero_init_last=zero_gamma)


def lr_at(update, base, warmup, total, schedule, per_epoch, steps):
    if update < warmup:
        return base * update / warmup
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (update - warmup) / max(total - warmup, 1))) * base
    return base * 0.1 ** sum(1 for e in steps if update // per_epoch >= e)


def run(a, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tricks = a.recipe == "tricks"
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    colour = [] if a.no_color else [T.ColorJitter(0.4, 0.4, 0.4)]
    light = [] if a.no_color else [Lighting(0.1)]
    train = ImageFolder(f"{a.data}/train", T.Compose(
        [T.RandomResizedCrop(a.size), T.RandomHorizontalFlip(), *colour, T.ToTensor(), *light, T.Normalize(mean, std)]))
    val = ImageFolder(f"{a.data}/val", T.Compose(
        [T.Resize(round(a.size / 0.875)), T.CenterCrop(a.size), T.ToTensor(), T.Normalize(mean, std)]))
    train_loader = torch.utils.data.DataLoader(train, batch_size=a.batch, shuffle=True, drop_last=True,
                                               num_workers=1)
    val_loader = torch.utils.data.DataLoader(val, batch_size=64, num_workers=1)
    classes = len(train.classes)
    model = tiny(classes, zero_gamma=tricks)
    params = list(model.parameters())
    groups = ([{"params": [p for p in params if p.ndim > 1], "weight_decay": 1e-4},
               {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}] if tricks
              else [{"params": params, "weight_decay": 1e-4}])
    opt = torch.optim.SGD(groups, lr=a.lr, momentum=0.9, nesterov=True)
    per_epoch = len(train_loader)
    total, warmup = a.epochs * per_epoch, (per_epoch if tricks else 0)
    eps = 0.1 if tricks else 0.0
    update = 0
    for _ in range(a.epochs):
        model.train()
        for x, y in train_loader:
            q = torch.full((len(y), classes), eps / (classes - 1))
            q[torch.arange(len(y)), y] = 1 - eps
            if tricks:
                lam = float(rng.beta(0.2, 0.2))
                x = lam * x + (1 - lam) * x.flip(0)
                q = lam * q + (1 - lam) * q.flip(0)
            for g in opt.param_groups:
                g["lr"] = lr_at(update, a.lr, warmup, total, "cosine" if tricks else "step", per_epoch,
                                a.lr_step_epochs)
            loss = -(q * F.log_softmax(model(x), 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            update += 1
    model.eval()
    top1 = top5 = n = 0
    with torch.no_grad():
        for x, y in val_loader:
            best = model(x).topk(5, 1).indices
            top1 += (best[:, 0] == y).sum().item()
            top5 += (best == y[:, None]).any(1).sum().item()
            n += len(y)
    return 100 * top1 / n, 100 * top5 / n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--recipe", choices=["baseline", "tricks"], default="baseline")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.025)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--lr-step-epochs", type=lambda s: [int(v) for v in s.split(",")], default=[6])
    p.add_argument("--no-color", action="store_true")
    a = p.parse_args()
    results = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        t1, t5 = run(a, seed)
        results.append(t1)
        print(f"pytorch {torch.__version__} {a.recipe} seed {seed}: top-1 {t1:.2f}% top-5 {t5:.2f}%", flush=True)
    if len(results) > 1:
        print(f"pytorch {a.recipe}: top-1 {statistics.mean(results):.2f} ± {statistics.stdev(results):.2f} "
              f"over {len(results)} seeds")


if __name__ == "__main__":
    main()
