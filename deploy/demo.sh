#!/usr/bin/env bash
# The demo on a fresh Debian/Ubuntu box (the README's first command):
# install what is missing, build, and run `edge-agent demo`, which serves a
# clip over an in-process RTSP server, starts a private mosquitto, runs the
# agent against both and prints every alert as it arrives.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/deploy/setup.sh"
cd "$ROOT"
export ORT_DYLIB_PATH="$ROOT/.deps/onnxruntime/libonnxruntime.so.1.31.1"
cargo build --quiet -p edge-agent --bin edge-agent
exec "$ROOT/target/debug/edge-agent" demo "$@"
