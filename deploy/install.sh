#!/usr/bin/env bash
# Install the alleywatch edge agent as a systemd service on a bare Debian 12
# or Ubuntu 22.04+ box (amd64 or arm64). Run it from a checkout, as root:
#
#   sudo deploy/install.sh [--binary PATH] [--start]
#
# What it does, each step only when needed (a second run changes nothing and
# says so, step by step):
#   1. apt: the GStreamer runtime packages that are missing
#   2. the system user and group `alleywatch`
#   3. ONNX Runtime 1.31.1 -> /opt/alleywatch/lib/libonnxruntime.so.1.31.1,
#      taken from the `onnxruntime` wheel on PyPI (pip picks the platform);
#      skipped when the file is there
#   4. the agent -> /usr/local/bin/edge-agent, from --binary PATH, else from
#      target/release/edge-agent, else built here with cargo (after the
#      build packages are installed)
#   5. models/*.onnx and models.toml -> /opt/alleywatch/models
#   6. /etc/alleywatch/alleywatch.toml from deploy/alleywatch.example.toml,
#      ONLY if there is none (model paths and ort_library point at /opt);
#      the example itself always goes to /opt/alleywatch/alleywatch.example.toml
#   7. /var/lib/alleywatch (alert spool, overlay), owned by alleywatch
#   8. the unit -> /etc/systemd/system/alleywatch.service, daemon-reload,
#      enable; with --start also start (or restart after a change)
#   9. `edge-agent check-config` on the installed config
#
# Options:
#   --binary PATH   install this edge-agent binary instead of building one
#   --start         start the service now (restart it if anything changed)
#   -h, --help      this text
#
# Environment:
#   ALLEYWATCH_ROOT=DIR      stage into DIR (DIR/usr/local/bin/..., DIR/etc/...)
#                            for tests and image builds: apt, useradd, chown,
#                            systemctl and check-config are skipped (and said so)
#   ALLEYWATCH_ORT_LIB=FILE  copy this libonnxruntime.so.1.31.1 instead of
#                            downloading the wheel
#
# Nothing is downloaded from anywhere but the package registries (apt, PyPI).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ORT_VERSION=1.31.1
ORT_NAME="libonnxruntime.so.$ORT_VERSION"
SERVICE=alleywatch
USER_NAME=alleywatch

RUNTIME_PACKAGES=(
  ca-certificates
  libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 libgstrtspserver-1.0-0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
)
BUILD_PACKAGES=(
  pkg-config build-essential
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

BINARY=""
START=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || { echo "install: --binary needs a path" >&2; exit 2; }; BINARY=$2; shift 2 ;;
    --binary=*) BINARY=${1#--binary=}; shift ;;
    --start) START=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

# --- where things go --------------------------------------------------------
STAGE=${ALLEYWATCH_ROOT:-}
STAGE=${STAGE%/}
if [ -n "$STAGE" ]; then
  mkdir -p "$STAGE"
  STAGE=$(cd "$STAGE" && pwd)
fi
BIN_DIR=$STAGE/usr/local/bin
OPT_DIR=$STAGE/opt/alleywatch
LIB_DIR=$OPT_DIR/lib
MODEL_DIR=$OPT_DIR/models
ETC_DIR=$STAGE/etc/alleywatch
CONFIG=$ETC_DIR/alleywatch.toml
STATE_DIR=$STAGE/var/lib/alleywatch
UNIT_DIR=$STAGE/etc/systemd/system
UNIT=$UNIT_DIR/$SERVICE.service

CHANGES=0
CHANGED=0 # whether the last install_file/ensure_dir changed anything

staging() { [ -n "$STAGE" ]; }
# systemctl works only where systemd is PID 1 (not in most containers).
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

if staging; then
  say "staging into $STAGE: skipping apt, useradd, chown, systemctl and check-config"
elif [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo $0 ...), or set ALLEYWATCH_ROOT to stage into a folder"
fi

# fix_mode_owner PATH MODE [OWNER:GROUP]: sets CHANGED=1 when it had to
# change the mode or (not when staging) the owner.
fix_mode_owner() {
  local path=$1 mode=$2 owner=${3:-}
  if [ "$(stat -c %a "$path")" != "${mode#0}" ]; then
    chmod "$mode" "$path"
    CHANGED=1
  fi
  if [ -n "$owner" ] && ! staging && [ "$(stat -c %U:%G "$path")" != "$owner" ]; then
    chown "$owner" "$path"
    CHANGED=1
  fi
}

# ensure_dir DIR MODE [OWNER:GROUP]
ensure_dir() {
  local dir=$1 mode=$2 owner=${3:-}
  CHANGED=0
  if [ ! -d "$dir" ]; then
    install -d -m "$mode" "$dir"
    CHANGED=1
  fi
  fix_mode_owner "$dir" "$mode" "$owner"
  if [ $CHANGED -eq 1 ]; then
    say "  created or fixed $dir"
    CHANGES=$((CHANGES + 1))
  fi
}

# install_file SRC DEST MODE [OWNER:GROUP]: copy when the content, mode or
# owner differ; atomic (a running binary or a watched config never shows half
# a file); an unchanged file is not touched at all (same mtime).
install_file() {
  local src=$1 dest=$2 mode=$3 owner=${4:-}
  CHANGED=0
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    fix_mode_owner "$dest" "$mode" "$owner"
    if [ $CHANGED -eq 1 ]; then
      say "  fixed mode/owner of $dest"
      CHANGES=$((CHANGES + 1))
    else
      say "  unchanged $dest"
    fi
    return 0
  fi
  local verb=installed
  [ -e "$dest" ] && verb=updated
  install -d -m 0755 "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.new"
  if [ -n "$owner" ] && ! staging; then
    chown "$owner" "$dest.new"
  fi
  mv -f "$dest.new" "$dest"
  say "  $verb $dest"
  CHANGED=1
  CHANGES=$((CHANGES + 1))
}

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf '%s\n' "$p"
  done
}

APT_UPDATED=0
apt_install() {
  local missing
  mapfile -t missing < <(missing_packages "$@")
  if [ ${#missing[@]} -eq 0 ]; then
    say "  all present: $*"
    return 0
  fi
  say "  installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ $APT_UPDATED -eq 0 ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  CHANGES=$((CHANGES + 1))
}

# --- 1. apt packages --------------------------------------------------------
say "1/9 runtime packages"
if staging; then
  say "  skipped (staging)"
else
  command -v dpkg-query >/dev/null 2>&1 || die "this installer needs Debian or Ubuntu (dpkg/apt)"
  arch=$(dpkg --print-architecture)
  case "$arch" in
    amd64 | arm64) ;;
    *) say "  warning: untested architecture $arch (amd64 and arm64 are supported)" ;;
  esac
  apt_install "${RUNTIME_PACKAGES[@]}"
fi

# --- 2. system user ---------------------------------------------------------
say "2/9 system user $USER_NAME"
if staging; then
  say "  skipped (staging)"
elif getent passwd "$USER_NAME" >/dev/null; then
  say "  exists"
else
  # Home is the state directory: nothing else of the service's lives anywhere.
  useradd --system --user-group --home-dir /var/lib/alleywatch --no-create-home \
    --shell /usr/sbin/nologin --comment "alleywatch edge agent" "$USER_NAME"
  say "  created"
  CHANGES=$((CHANGES + 1))
fi
OWNER_ROOT=root:root
OWNER_CONFIG=root:$USER_NAME
OWNER_STATE=$USER_NAME:$USER_NAME

# --- 3. ONNX Runtime ----------------------------------------------------------
say "3/9 ONNX Runtime $ORT_VERSION"
ensure_dir "$OPT_DIR" 0755 "$OWNER_ROOT"
ensure_dir "$LIB_DIR" 0755 "$OWNER_ROOT"
if [ -n "${ALLEYWATCH_ORT_LIB:-}" ]; then
  [ -f "$ALLEYWATCH_ORT_LIB" ] || die "ALLEYWATCH_ORT_LIB=$ALLEYWATCH_ORT_LIB: no such file"
  install_file "$ALLEYWATCH_ORT_LIB" "$LIB_DIR/$ORT_NAME" 0644 "$OWNER_ROOT"
elif [ -f "$LIB_DIR/$ORT_NAME" ]; then
  say "  present: $LIB_DIR/$ORT_NAME"
else
  # The library inside the `onnxruntime` wheel is the official CPU build; pip
  # picks the wheel for this machine's architecture.
  if ! python3 -m pip --version >/dev/null 2>&1 && ! command -v pip3 >/dev/null 2>&1; then
    staging && die "pip is needed to fetch ONNX Runtime (or set ALLEYWATCH_ORT_LIB)"
    apt_install python3 python3-pip
  fi
  PIP=(python3 -m pip)
  "${PIP[@]}" --version >/dev/null 2>&1 || PIP=(pip3)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  say "  downloading onnxruntime==$ORT_VERSION from PyPI"
  if ! "${PIP[@]}" download --quiet --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$ORT_VERSION"; then
    # This Python may be older or newer than the wheels on PyPI; the shared
    # library inside does not depend on the Python version, so take the
    # CPython 3.12 wheel for this architecture instead.
    m=$(uname -m)
    say "  no wheel for this Python; trying the CPython 3.12 wheel for $m"
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: -d "$tmp" \
      --implementation cp --python-version 3.12 \
      --platform "manylinux_2_28_$m" --platform "manylinux_2_27_$m" --platform "manylinux_2_17_$m" \
      "onnxruntime==$ORT_VERSION"
  fi
  python3 - "$tmp" "$ORT_NAME" <<'PY'
import glob, os, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))
if not wheels:
    sys.exit("install: no onnxruntime wheel was downloaded")
with zipfile.ZipFile(wheels[0]) as z:
    member = "onnxruntime/capi/" + name
    if member not in z.namelist():
        sys.exit(f"install: {member} is not in {os.path.basename(wheels[0])}")
    with z.open(member) as src, open(os.path.join(tmp, name), "wb") as dst:
        dst.write(src.read())
PY
  install_file "$tmp/$ORT_NAME" "$LIB_DIR/$ORT_NAME" 0644 "$OWNER_ROOT"
fi

# --- 4. the agent -------------------------------------------------------------
say "4/9 edge-agent binary"
if [ -n "$BINARY" ]; then
  [ -f "$BINARY" ] || die "--binary $BINARY: no such file"
  say "  from --binary $BINARY"
elif [ -x "$REPO/target/release/edge-agent" ]; then
  BINARY=$REPO/target/release/edge-agent
  say "  from $BINARY (built earlier)"
else
  say "  no binary given and none in target/release: building it with cargo"
  if staging; then
    say "  build packages: skipped (staging)"
  else
    apt_install "${BUILD_PACKAGES[@]}"
  fi
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust with rustup (https://rustup.rs), or pass --binary PATH"
  say "  running: cargo build --release --locked -p edge-agent (in $REPO)"
  (cd "$REPO" && cargo build --release --locked -p edge-agent)
  BINARY=$REPO/target/release/edge-agent
fi
ensure_dir "$BIN_DIR" 0755 "$OWNER_ROOT"
install_file "$BINARY" "$BIN_DIR/edge-agent" 0755 "$OWNER_ROOT"

# --- 5. models ----------------------------------------------------------------
say "5/9 models -> $MODEL_DIR"
ensure_dir "$MODEL_DIR" 0755 "$OWNER_ROOT"
# models.toml must sit beside the models: the agent checks each file's sha256
# against it.
for f in "$REPO"/models/*.onnx "$REPO/models/models.toml"; do
  [ -f "$f" ] || continue
  install_file "$f" "$MODEL_DIR/$(basename "$f")" 0644 "$OWNER_ROOT"
done

# --- 6. configuration ---------------------------------------------------------
say "6/9 configuration"
ensure_dir "$ETC_DIR" 0755 "$OWNER_ROOT"
install_file "$REPO/deploy/alleywatch.example.toml" "$OPT_DIR/alleywatch.example.toml" 0644 "$OWNER_ROOT"
if [ -e "$CONFIG" ]; then
  say "  kept $CONFIG (never overwritten; compare with $OPT_DIR/alleywatch.example.toml after upgrades)"
else
  rendered=$(mktemp)
  # Relative model paths in the example point into the checkout; installed,
  # the models live in /opt/alleywatch/models and ONNX Runtime in /opt/alleywatch/lib.
  sed -e 's#"\.\./models/#"/opt/alleywatch/models/#' \
    -e "s#^\# *ort_library = .*#ort_library = \"/opt/alleywatch/lib/$ORT_NAME\"#" \
    "$REPO/deploy/alleywatch.example.toml" >"$rendered"
  grep -q '^ort_library = ' "$rendered" || die "could not set ort_library in the example config"
  if grep -q '"\.\./' "$rendered"; then die "a relative path is left in the rendered config"; fi
  # 0640 root:alleywatch: the agent reads it, and it may hold the broker password.
  install_file "$rendered" "$CONFIG" 0640 "$OWNER_CONFIG"
  rm -f "$rendered"
  say "  written from the example: edit agent_id, [site], [broker] and [[cameras]] before starting"
fi

# --- 7. state directory ---------------------------------------------------------
say "7/9 state directory $STATE_DIR"
ensure_dir "$STATE_DIR" 0750 "$OWNER_STATE"
if ! staging && [ -n "$(find "$STATE_DIR" -mindepth 1 \( ! -user "$USER_NAME" -o ! -group "$USER_NAME" \) -print -quit)" ]; then
  # Files left by an earlier run as another user (a spool made by hand as
  # root): systemd only fixes ownership when the folder itself is wrong.
  chown -R "$OWNER_STATE" "$STATE_DIR"
  say "  gave everything in $STATE_DIR to $OWNER_STATE"
  CHANGED=1
  CHANGES=$((CHANGES + 1))
fi
if [ $CHANGED -eq 0 ]; then say "  unchanged"; fi

# --- 8. systemd unit ------------------------------------------------------------
say "8/9 systemd unit"
ensure_dir "$UNIT_DIR" 0755 "$OWNER_ROOT"
install_file "$REPO/deploy/systemd/$SERVICE.service" "$UNIT" 0644 "$OWNER_ROOT"
if staging; then
  say "  systemctl daemon-reload/enable: skipped (staging)"
elif ! have_systemd; then
  say "  warning: systemd is not running here; skipping daemon-reload and enable"
else
  if [ $CHANGED -eq 1 ]; then
    systemctl daemon-reload
    say "  daemon-reload done"
  fi
  if systemctl is-enabled --quiet "$SERVICE"; then
    say "  already enabled"
  elif grep -Eq '^[[:space:]]*host[[:space:]]*=[[:space:]]*"broker\.district\.example"' "$CONFIG"; then
    # Enabled with the example's broker, it would restart every 5 s at boot.
    say "  not enabled yet: set broker.host in $CONFIG, then rerun this script"
  else
    systemctl enable --quiet "$SERVICE"
    say "  enabled (starts at boot)"
    CHANGES=$((CHANGES + 1))
  fi
fi

# --- 9. check the config, start -------------------------------------------------
say "9/9 check-config"
PLACEHOLDER=0
if grep -Eq '^[[:space:]]*host[[:space:]]*=[[:space:]]*"broker\.district\.example"' "$CONFIG"; then
  PLACEHOLDER=1
fi
if staging; then
  say "  skipped (staging)"
else
  ORT_DYLIB_PATH=$LIB_DIR/$ORT_NAME "$BIN_DIR/edge-agent" check-config "$CONFIG" ||
    die "$CONFIG does not pass check-config (see above); fix it, then rerun or: systemctl restart $SERVICE"
fi
if [ $PLACEHOLDER -eq 1 ]; then
  say "  warning: $CONFIG still has the example's broker host (broker.district.example)"
  say "  warning: set [broker], agent_id, [site] and [[cameras]], then: systemctl restart $SERVICE"
fi

if [ $START -eq 1 ]; then
  if staging || ! have_systemd; then
    say "start: skipped (staging or no systemd)"
  elif [ $PLACEHOLDER -eq 1 ]; then
    say "start: not starting with the example's placeholder broker; edit $CONFIG first"
  elif ! systemctl is-active --quiet "$SERVICE"; then
    systemctl start "$SERVICE"
    say "start: started $SERVICE"
  elif [ $CHANGES -gt 0 ]; then
    systemctl restart "$SERVICE"
    say "start: restarted $SERVICE (something changed)"
  else
    say "start: $SERVICE is running and nothing changed"
  fi
fi

if [ $CHANGES -eq 0 ]; then
  say "done: nothing changed"
else
  say "done: $CHANGES change(s)"
fi
