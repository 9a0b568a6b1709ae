#!/usr/bin/env bash
# The whole test suite on a fresh Debian/Ubuntu box (the README's test
# command, and what CI runs): install what is missing, then run every test,
# the end-to-end ones included (in-process RTSP server, real mosquitto on a
# free loopback port, real ONNX model, real H.264).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/deploy/setup.sh" --test
cd "$ROOT"
export ORT_DYLIB_PATH="$ROOT/.deps/onnxruntime/libonnxruntime.so.1.31.1"
cargo test --workspace "$@"
