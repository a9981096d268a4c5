#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU and the CUDA 13 libraries, given a
# directory BIN holding a `--features cuda` build (made elsewhere if need be, with
# scripts/cuda_toolkit.sh): `tricks`, and the test executable of tests/cuda.rs as
# `cuda-tests`.
#
#     scripts/gpu_check.sh BIN OUT
#
# 1. tests/cuda.rs: every custom op and three networks (forward, every gradient) on the GPU
#    against the CPU kernels;
# 2. `tricks train --device cuda` on a generated dataset, then resumed on the CPU;
# 3. `tricks bench --device cuda` beside PyTorch on the same GPU (scripts/bench_compare.py,
#    TF32 off in PyTorch, as tricks computes in f32) for ResNet-50-D, MobileNet v1 and
#    Inception-V3.
# Everything it prints is also written to OUT/gpu_check.log.
set -uo pipefail
BIN=$(realpath "$1")
OUT=${2:-.}
exec > >(tee "$OUT/gpu_check.log") 2>&1

# The CUDA libraries the build links to (cuBLAS, cuRAND, NVRTC, the runtime), wherever the
# machine keeps them.
for lib in libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
    dir=$(find /usr/local /opt /usr/lib -name "$lib" -printf '%h\n' 2>/dev/null | head -1)
    [ -n "$dir" ] && LD_LIBRARY_PATH="$dir:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
date -u

echo "== tests/cuda.rs"
"$BIN/cuda-tests" --test-threads 1

echo "== training on the GPU, resumed on the CPU"
export TRICKS="$BIN/tricks"
data=$(mktemp -d)
"$TRICKS" data synth --out "$data/shapes" --classes 4 --train-per-class 64 --val-per-class 16 --size 64
"$TRICKS" train --recipe tricks --model resnet18d --data "$data/shapes" --out "$data/run" \
    --epochs 4 --warmup-epochs 1 --batch-size 32 --size 64 --device cuda
# One more epoch, on the CPU, from the GPU's checkpoint.
sed -i 's/"epochs": 4,/"epochs": 5,/' "$data/run/run.json"
"$TRICKS" train --resume "$data/run" --device cpu

echo "== benchmarks (tricks vs PyTorch on the GPU)"
for run in "resnet50d 224 16" "resnet50d 224 64" "mobilenetv1_100 224 64" "inception_v3 299 64"; do
    set -- $run
    for train in "" --train; do
        python3 scripts/bench_compare.py --model "$1" --size "$2" --batch "$3" --iters 10 --device cuda $train
    done
done
