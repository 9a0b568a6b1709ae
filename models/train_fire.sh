#!/usr/bin/env bash
# Retrain models/fire.onnx from ../shared/firedata (or DATA) with pinned
# packages from PyPI, then print its sha256 and held-out figures.
#
#   models/train_fire.sh [DATA_DIR]     # default: ../shared/firedata beside the project
#
# About 4 minutes of feature extraction and 10 of training on 2 CPU cores;
# no GPU, no deep learning framework. The data is never committed (see
# models/models.toml, entry "fire", for its sources and licences). The result
# goes to models/fire.onnx and the held-out report to models/fire-heldout.json;
# update the sha256 in models/models.toml if you keep it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="${1:-$HERE/../../shared/firedata}"
WORK_DIR="${WORK_DIR:-$(mktemp -d -t alleywatch-fire.XXXXXX)}"
PYTHON="${PYTHON:-python3}"
PIP_PINS=(onnxruntime==1.31.1 onnx==1.17.0 numpy==1.26.4 opencv-python-headless==4.11.0.86)

[ -d "$DATA/YOLOv8-Fire-and-Smoke-Detection" ] || { echo "no training data at $DATA (expected YOLOv8-Fire-and-Smoke-Detection/ and ECE176_Final_Project/)" >&2; exit 1; }
if [ ! -x "$WORK_DIR/venv/bin/python" ]; then
  "$PYTHON" -m venv "$WORK_DIR/venv"
  "$WORK_DIR/venv/bin/pip" install --quiet "${PIP_PINS[@]}"
fi
"$WORK_DIR/venv/bin/python" "$HERE/train_fire.py" --data "$DATA" --base "$HERE/nanodet.onnx" \
  --out "$HERE/fire.onnx" --report "$HERE/fire-heldout.json"
sha256sum "$HERE/fire.onnx"
