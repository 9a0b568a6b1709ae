#!/usr/bin/env python3
"""The script a user would write instead of alleywatch: OpenCV VideoCapture,
a numpy letterbox, the onnxruntime PyPI package and cv2.dnn.NMSBoxes, on
every frame of a clip, with a YOLOX or a NanoDet model (--format). Prints
one JSON line:
{"frames": N, "seconds": S, "fps": F}.

Run by `cargo bench --bench throughput` with the same model, clip and thread
count as the agent; its virtualenv comes from `deploy/setup.sh --bench`.
"""
import argparse
import json
import os
import time

import cv2
import numpy as np
import onnxruntime as ort


def letterbox(img, size, pad=114):
    """Aspect-kept resize into a size x size canvas, top-left aligned."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    out = np.full((size, size, 3), pad, dtype=np.uint8)
    out[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, r


def yolox_grids(size, strides=(8, 16, 32)):
    grids, expanded = [], []
    for s in strides:
        n = size // s
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        g = np.stack((xv, yv), 2).reshape(-1, 2)
        grids.append(g)
        expanded.append(np.full((g.shape[0], 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def postprocess(out, grids, strides, ratio, score_thr=0.35, nms_thr=0.45):
    """YOLOX raw output [anchors, 5 + classes] -> boxes, scores, classes."""
    xy = (out[:, :2] + grids) * strides
    wh = np.exp(out[:, 2:4]) * strides
    scores = out[:, 4:5] * out[:, 5:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    keep = best > score_thr
    if not keep.any():
        return []
    xy, wh, best, cls = xy[keep], wh[keep], best[keep], cls[keep]
    boxes = np.concatenate((xy - wh / 2, wh), 1) / ratio
    idx = cv2.dnn.NMSBoxes(boxes.tolist(), best.tolist(), score_thr, nms_thr)
    return [(boxes[i], best[i], cls[i]) for i in np.array(idx).flatten()]


NANO_MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # B, G, R
NANO_STD = np.array([57.375, 57.12, 58.395], np.float32)
NANO_BINS = 11


def nanodet_levels(sess, size, classes=80):
    """Per stride: (scores output index, boxes output index, centres), by shape."""
    levels = []
    shapes = [o.shape for o in sess.get_outputs()]
    for s in (8, 16, 32):
        n = size // s
        cells = n * n
        si = next(i for i, sh in enumerate(shapes) if sh[1] == cells and sh[2] == classes)
        bi = next(i for i, sh in enumerate(shapes) if sh[1] == cells and sh[2] == 4 * NANO_BINS)
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        centres = (np.stack((xv, yv), 2).reshape(-1, 2).astype(np.float32) + 0.5) * s
        levels.append((si, bi, centres, s))
    return levels


def nanodet_post(outs, levels, ratio, score_thr=0.35, nms_thr=0.6):
    """NanoDet GFL outputs -> boxes, scores, classes (see models/models.toml)."""
    boxes_all, scores_all, cls_all = [], [], []
    bins = np.arange(NANO_BINS, dtype=np.float32)
    for si, bi, centres, s in levels:
        scores = outs[si][0]
        cls = scores.argmax(1)
        best = scores[np.arange(len(cls)), cls]
        keep = best > score_thr
        if not keep.any():
            continue
        d = outs[bi][0][keep].reshape(-1, 4, NANO_BINS)
        d = np.exp(d - d.max(2, keepdims=True))
        d = (d / d.sum(2, keepdims=True) * bins).sum(2) * s
        c = centres[keep]
        x1y1 = c - d[:, :2]
        x2y2 = c + d[:, 2:]
        boxes_all.append(np.concatenate((x1y1, x2y2 - x1y1), 1) / ratio)
        scores_all.append(best[keep])
        cls_all.append(cls[keep])
    if not boxes_all:
        return []
    boxes, best, cls = np.concatenate(boxes_all), np.concatenate(scores_all), np.concatenate(cls_all)
    idx = cv2.dnn.NMSBoxesBatched(boxes.tolist(), best.tolist(), cls.tolist(), score_thr, nms_thr)
    return [(boxes[i], best[i], cls[i]) for i in np.array(idx).flatten()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--clip", required=True)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--format", choices=["yolox", "nanodet"], default="yolox")
    a = ap.parse_args()

    cv2.setNumThreads(a.threads)
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", f"threads;{a.threads}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    grids, strides = yolox_grids(a.size)
    levels = nanodet_levels(sess, a.size) if a.format == "nanodet" else None
    warm = np.zeros((1, 3, a.size, a.size), np.float32)
    for _ in range(5):
        sess.run(None, {name: warm})

    cap = cv2.VideoCapture(a.clip)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {a.clip}")
    frames, found = 0, 0
    t0 = time.perf_counter()
    while True:
        ok, frame = cap.read()  # BGR, as YOLOX wants
        if not ok:
            break
        img, r = letterbox(frame, a.size)
        if levels is None:
            blob = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)
            out = sess.run(None, {name: blob})[0][0]
            found += len(postprocess(out, grids, strides, r))
        else:
            norm = (img.astype(np.float32) - NANO_MEAN) / NANO_STD
            blob = np.ascontiguousarray(norm.transpose(2, 0, 1)[None])
            outs = sess.run(None, {name: blob})
            found += len(nanodet_post(outs, levels, r))
        frames += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"frames": frames, "seconds": dt, "fps": frames / dt, "detections": found}))


if __name__ == "__main__":
    main()
