#!/usr/bin/env bash
# Regenerates zoo/src/onnx/proto.rs (the ONNX protobuf types) from zoo/proto/onnx.proto3.
# The proto is ONNX's own (IR version 9, as candle-onnx 0.11.1 ships it). The generator is
# pure Rust (prost-build 0.14.1 + protox 0.10.0, pinned in tools/onnx-proto/Cargo.toml and
# its Cargo.lock), so neither this script nor the product's build needs protoc.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release --manifest-path tools/onnx-proto/Cargo.toml -- \
  zoo/proto/onnx.proto3 zoo/src/onnx/proto.rs
rustfmt --edition 2021 zoo/src/onnx/proto.rs
echo "wrote zoo/src/onnx/proto.rs"
