#!/usr/bin/env bash
# The demo on a fresh Debian/Ubuntu box (the README's first command):
# install what is missing, build, and run `edge-agent demo`, which serves a
# clip over an in-process RTSP server, starts a private mosquitto, runs the
# agent and the command centre (alleywatch-centre, SQLite) against both,
# prints every alert as it arrives and checks that it reached the centre's
# board. `deploy/demo.sh --stay` keeps the centre's console up afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/deploy/setup.sh"
cd "$ROOT"
export ORT_DYLIB_PATH="$ROOT/.deps/onnxruntime/libonnxruntime.so.1.31.1"
cargo build --quiet -p edge-agent --bin edge-agent -p alleywatch-centre --bin alleywatch-centre
exec "$ROOT/target/debug/edge-agent" demo --centre "$ROOT/target/debug/alleywatch-centre" "$@"
