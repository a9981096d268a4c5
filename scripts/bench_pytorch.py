#!/usr/bin/env python3
"""The PyTorch side of `tricks bench`: the same workload in timm, for a ratio in one run.

    pip install torch==2.5.1 timm==1.0.15
    python3 scripts/bench_pytorch.py --model resnet50d --batch 2 --size 224 --train

Prints the same line format as `tricks bench`. Uses every core (torch's default), like ours.
`seconds_per_iter`, `timed` and `workload_args` are shared with scripts/bench_compare.py,
which imports this module without needing torch.
"""
import argparse
import time


def workload_args():
    """The command line of a benchmark workload: model, batch, size, inference or training."""
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet50d")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--train", action="store_true")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (tricks needs --features cuda)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of all frameworks in turn; the median of each is reported")
    return p.parse_args()


def timed(fn, iters, sync=lambda: None):
    """Seconds per call of `fn`, after one untimed warm-up call; `sync` waits for queued
    device work before each clock read."""
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - start) / iters


def median_seconds(fn, iters):
    """Median seconds of `iters` calls of `fn` after one untimed warm-up call."""
    import statistics

    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(title, ours, theirs, repeat, reference, unit):
    """Calls `ours()` and `theirs()` (seconds per iteration) in turn `repeat` times, so that
    a slow spell of a shared machine hits both, and prints the medians, their ranges and the
    throughput ratio under `title`."""
    import statistics

    mine, ref = [], []
    for _ in range(repeat):
        mine.append(ours())
        ref.append(theirs())
    print(f"{title}:")
    for name, t in [("tricks", mine), (reference, ref)]:
        print(f"  {name:<28} {statistics.median(t):.3f} s/{unit} (range {min(t):.3f}-{max(t):.3f})")
    print(f"  tricks / {reference.split()[0]} throughput: {statistics.median(ref) / statistics.median(mine):.2f}x")


def seconds_per_iter(model_name, batch, size, train, iters, device="cpu"):
    """Seconds per inference (no grad) or training step (forward, cross-entropy backward,
    Nesterov SGD with weight decay), after one untimed warm-up. On a GPU, TF32 is turned off
    so that PyTorch computes in f32 as tricks does."""
    import timm
    import torch

    torch.manual_seed(0)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = timm.create_model(model_name, pretrained=False).to(device)
    images = (torch.rand(batch, 3, size, size) * 2 - 1).to(device)
    labels = (torch.arange(batch) % 1000).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)

    def once():
        if train:
            model.train()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                model(images)

    return timed(once, iters, sync)


def main():
    import torch

    a = workload_args()
    per_iter = seconds_per_iter(a.model, a.batch, a.size, a.train, a.iters, a.device)
    kind = "training step" if a.train else "inference"
    print(f"pytorch {torch.__version__} {a.model} {kind} batch {a.batch} at {a.size}x{a.size}: "
          f"{per_iter:.3f} s/iter, {a.batch / per_iter:.2f} img/s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
