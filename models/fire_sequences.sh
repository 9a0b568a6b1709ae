#!/usr/bin/env bash
# Puts the fire data's video frames back in order as clips, with a labels
# file for `edge-agent eval`, so the fire rule's temporal check (k of n and
# the flicker check) can be measured on real fire and smoke sequences, not
# only on the one or two labelled fire clips.
#
#   models/fire_sequences.sh [DATA_DIR] [OUT_DIR]
#       DATA_DIR  default ../shared/firedata beside the project
#       OUT_DIR   default .deps/fire-sequences (git-ignored)
#   then: edge-agent eval OUT_DIR/labels.toml [--no-flicker]
#
# About 290 images of the Roboflow set are frames of 12 short videos, named
# `<video>_mp4-<frame>_jpg.rf.<hash>.jpg`. Roboflow sampled them from the
# videos at a low rate and some frames are missing, so each sequence becomes
# a clip of one image per frame at 5 frames/s (the agent's default camera
# rate): the flicker check sees changes between frames about as far apart
# as a 5 fps camera's or more, which is harder than a live camera, never
# easier. A sequence is labelled with every kind boxed on any of its
# frames, due any time within the clip. The data is never committed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="${1:-$HERE/../../shared/firedata}"
OUT="${2:-$HERE/../.deps/fire-sequences}"
FPS=5
SET="$DATA/YOLOv8-Fire-and-Smoke-Detection"
[ -d "$SET" ] || { echo "no Roboflow fire set at $SET (see models/models.toml, entry fire)" >&2; exit 1; }
command -v gst-launch-1.0 >/dev/null || { echo "gst-launch-1.0 not found: run deploy/setup.sh" >&2; exit 1; }
mkdir -p "$OUT"
labels="$OUT/labels.toml"
{
  echo "# Made by models/fire_sequences.sh from $SET: the 12 videos' frames in order, $FPS frames/s."
  echo "[defaults]"
  echo "early_s = 1.0"
  echo "late_s = 3.0"
} > "$labels"

videos=$(find "$SET" -name '*_mp4-*_jpg.rf.*.jpg' -printf '%f\n' | sed 's/_mp4-.*//' | sort -u)
for v in $videos; do
  frames="$OUT/$v.frames"
  rm -rf "$frames"
  mkdir -p "$frames"
  n=0 fire=0 smoke=0
  # One file per frame number (Roboflow copies of a frame are the same frame).
  while read -r num; do
    img=$(find "$SET" -name "${v}_mp4-${num}_jpg.rf.*.jpg" | sort | head -n1)
    label="$(dirname "$(dirname "$img")")/labels/$(basename "${img%.jpg}").txt"
    ln -s "$img" "$frames/$(printf '%04d' "$n").jpg"
    if [ -f "$label" ]; then
      grep -q '^0 ' "$label" && fire=$((fire + 1))
      grep -q '^2 ' "$label" && smoke=$((smoke + 1))
    fi
    n=$((n + 1))
  done < <(find "$SET" -name "${v}_mp4-*_jpg.rf.*.jpg" -printf '%f\n' | sed "s/^${v}_mp4-\([0-9]*\)_jpg.*/\1/" | sort -n -u)
  gst-launch-1.0 -q multifilesrc location="$frames/%04d.jpg" index=0 stop-index=$((n - 1)) \
    caps="image/jpeg,framerate=$FPS/1" ! jpegdec ! videoconvert ! video/x-raw,format=I420 \
    ! x264enc speed-preset=veryfast tune=zerolatency key-int-max=$FPS ! h264parse ! mp4mux \
    ! filesink location="$OUT/$v.mp4"
  rm -rf "$frames"
  events=()
  dur=$(awk -v n="$n" -v f="$FPS" 'BEGIN { printf "%.1f", n / f }')
  [ "$fire" -gt 0 ] && events+=("{ kind = \"fire\", at = 0.0, late_s = $dur }")
  [ "$smoke" -gt 0 ] && events+=("{ kind = \"smoke\", at = 0.0, late_s = $dur }")
  joined=$(IFS=,; echo "${events[*]:-}")
  {
    echo ""
    echo "# $n frames: fire boxed on $fire, smoke on $smoke"
    echo "[[clip]]"
    echo "file = \"$v.mp4\""
    echo "hold_last_s = 0"
    echo "events = [${joined}]"
  } >> "$labels"
  echo "$v: $n frames, fire on $fire, smoke on $smoke"
done
echo "wrote $labels"
