#!/usr/bin/env bash
# A CUDA 13.0 toolkit from PyPI's wheels, enough to build `--features cuda` on a machine
# without a GPU or a system CUDA (nvcc, cicc, headers, and the libraries the build links to),
# plus a stub libcuda.so (the driver's library, which only a GPU machine has) for the linker.
#
#     scripts/cuda_toolkit.sh DIR      # downloads about 700 MB once, prints the environment
#     eval "$(scripts/cuda_toolkit.sh DIR)"
#     cargo build --release --features cuda     # into target/cuda (other RUSTFLAGS)
#
# The binaries it builds run on a machine with an NVIDIA driver and the CUDA 13 runtime
# libraries (cuBLAS, cuRAND, NVRTC); scripts/gpu_check.sh finds those there. Compute
# capability 9.0 (Hopper) unless CUDA_COMPUTE_CAP is set.
set -euo pipefail
DIR=$(realpath -m "${1:?usage: scripts/cuda_toolkit.sh DIR}")
CUDA="$DIR/nvidia/cu13"
if [ ! -x "$CUDA/bin/nvcc" ]; then
    mkdir -p "$DIR/wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DIR/wheels" \
        "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
        "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
        "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*" >&2
    for wheel in "$DIR"/wheels/*.whl; do
        python3 -m zipfile -e "$wheel" "$DIR" >&2
    done
    chmod +x "$CUDA"/bin/* "$CUDA"/nvvm/bin/*
    # The linker wants unversioned names.
    for lib in libcudart.so.13 libnvrtc.so.13 libcurand.so.10 libcublas.so.13 libcublasLt.so.13; do
        ln -sf "$lib" "$CUDA/lib/${lib%%.so*}.so"
    done
fi
if [ ! -e "$DIR/stubs/libcuda.so" ]; then
    # Every driver entry point cudarc declares, as an empty function: enough to link; the
    # real libcuda.so.1 of the GPU machine's driver is loaded at run time.
    mkdir -p "$DIR/stubs"
    src=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
        python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')
    grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$(dirname "$src")/src/driver/sys/mod.rs" |
        awk '{print "void " $4 "(void) {}"}' | sort -u >"$DIR/stubs/cuda.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$DIR/stubs/libcuda.so" "$DIR/stubs/cuda.c"
fi
cat <<EOF
export CUDA_HOME="$CUDA"
export PATH="$CUDA/bin:\$PATH"
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH="$CUDA/lib:$DIR/stubs"
export RUSTFLAGS="-L $CUDA/lib -L $DIR/stubs"
export CARGO_TARGET_DIR="\${CARGO_TARGET_DIR:-target/cuda}"
EOF
