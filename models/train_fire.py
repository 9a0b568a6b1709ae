#!/usr/bin/env python3
"""Trains alleywatch's fire/smoke model and writes it as one ONNX graph.

Why this design: about 900 labelled images is far too little to train a
detector from scratch, but enough for a small head on features that already
know the world. So the model is the project's own COCO detector (NanoDet,
models/nanodet.onnx) cut at its three FPN feature maps, plus a per-cell head
trained here:

    frame ─▶ NanoDet backbone + PAN ─┬─ stride 8 ─────────────────┐
                                     ├─ stride 16 ─ 2× upsample ──┼─ concat (384) ─ 1×1 conv ─ ReLU ─ 1×1 conv ─ sigmoid
                                     └─ stride 32 ─ 4× upsample ──┘
                                                                   ─▶ heat-map [1, 2, H/8, W/8]: channel 0 fire, 1 smoke

Each output cell covers 8×8 input pixels, so a fire a few metres away on a
street camera still fills a cell or two; the agent turns connected hot
cells into regions (edge-agent/src/infer/fire.rs). Training needs no deep
learning framework: the backbone runs in ONNX Runtime once per image view,
and the head (a two-layer MLP per cell) trains in NumPy in a minute or two
on two CPU cores.

Data (never committed; see ../shared/firedata/SOURCES.md): the Roboflow
"fire-wrpgm" v8 export (CC BY 4.0; classes Fire, default = neutral frame,
smoke) and a D-Fire sample (CC0; classes smoke, fire; mostly negatives). The
supplied splits leak frames of the same video across train and test, so this
script re-splits by *source*: a video's frames (`name_mp4-NN`) or an image's
Roboflow copies (`name_jpg.rf.*`) all land on one side. One source in four of
every kind (fire, smoke, both, neutral, D-Fire) is held out.

Usage (all steps: models/train_fire.sh):
    python models/train_fire.py --data ../shared/firedata --base models/nanodet.onnx \
        --out models/fire.onnx --report models/fire-heldout.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SIZE = 416
CELL = 8
GRID = SIZE // CELL
MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # B, G, R: NanoDet's
STD = np.array([57.375, 57.12, 58.395], np.float32)
# NanoDet's FPN outputs (names from models/convert.py's graph).
FEATURES = {"s8": "Add_101:0", "s16": "Add_104:0", "s32": "Add_109:0"}
KINDS = ("fire", "smoke")
HIDDEN = 48
SEED = 20261126


def source_key(name: str) -> str:
    """The video or image a file was made from: what must not straddle the split."""
    stem = name.split("_jpg.rf.")[0] if "_jpg.rf." in name else Path(name).stem
    m = re.match(r"(.+_mp4)-\d+$", stem)
    return m.group(1) if m else stem


def load_items(data: Path) -> list[dict]:
    """Every image with its boxes as (kind, cx, cy, w, h), normalised."""
    items = []
    roboflow = data / "YOLOv8-Fire-and-Smoke-Detection"
    for img in sorted(roboflow.glob("*/images/*.jpg")):
        boxes = []
        for line in (img.parent.parent / "labels" / (img.stem + ".txt")).read_text().split("\n"):
            f = line.split()
            if len(f) == 5 and f[0] in ("0", "2"):  # 0 Fire, 1 default (neutral frame), 2 smoke
                boxes.append(("fire" if f[0] == "0" else "smoke", *map(float, f[1:])))
        items.append({"path": img, "source": "rf:" + source_key(img.name), "boxes": boxes})
    dfire = data / "ECE176_Final_Project" / "train"
    for img in sorted(dfire.glob("images/*.jpg")):
        label = dfire / "labels" / (img.stem + ".txt")
        boxes = []
        for line in (label.read_text().split("\n") if label.exists() else []):
            f = line.split()
            if len(f) == 5:  # D-Fire order: 0 smoke, 1 fire
                boxes.append(("smoke" if f[0] == "0" else "fire", *map(float, f[1:])))
        items.append({"path": img, "source": "dfire:" + img.stem, "boxes": boxes})
    return items


def split(items: list[dict]) -> None:
    """Marks `heldout` on every item: one source in four per kind of source."""
    sources: dict[str, set] = {}
    for it in items:
        sources.setdefault(it["source"], set()).update(b[0] for b in it["boxes"])
    groups: dict[str, list[str]] = {}
    for src, kinds in sources.items():
        kind = "dfire" if src.startswith("dfire:") else "+".join(sorted(kinds)) or "neutral"
        video = src.endswith("_mp4")
        groups.setdefault(f"{kind}/{'video' if video else 'image'}", []).append(src)
    held = set()
    for members in groups.values():
        members.sort(key=lambda s: hashlib.sha1(s.encode()).hexdigest())
        held.update(members[i] for i in range(0, len(members), 4))
    for it in items:
        it["heldout"] = it["source"] in held


def letterbox(bgr: np.ndarray) -> tuple[np.ndarray, float]:
    """Exactly the agent's preprocessing: long side to SIZE, top-left, pad 114."""
    h, w = bgr.shape[:2]
    s = SIZE / max(w, h)
    nw, nh = round(w * s), round(h * s)
    out = np.full((SIZE, SIZE, 3), 114, np.uint8)
    out[:nh, :nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, s


def to_tensor(img: np.ndarray) -> np.ndarray:
    return ((img.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)[None]


def cell_targets(boxes, w: int, h: int, s: float, flip: bool) -> np.ndarray:
    """[2, GRID, GRID] 0/1: a cell is positive when its centre is inside a box
    of that kind (or, for a box too small to hold a centre, the box's own cell)."""
    t = np.zeros((2, GRID, GRID), np.float32)
    centres = (np.arange(GRID) + 0.5) * CELL
    for kind, cx, cy, bw, bh in boxes:
        k = KINDS.index(kind)
        if flip:
            cx = 1.0 - cx
        x1, x2 = (cx - bw / 2) * w * s, (cx + bw / 2) * w * s
        y1, y2 = (cy - bh / 2) * h * s, (cy + bh / 2) * h * s
        xs = (centres >= x1) & (centres <= x2)
        ys = (centres >= y1) & (centres <= y2)
        t[k][np.ix_(ys, xs)] = 1.0
        ci = min(GRID - 1, max(0, int(cy * h * s / CELL)))
        cj = min(GRID - 1, max(0, int(cx * w * s / CELL)))
        t[k, ci, cj] = 1.0
    return t


def feature_session(base: Path, threads: int) -> ort.InferenceSession:
    """NanoDet with its FPN maps exposed as outputs."""
    m = onnx.load(str(base))
    del m.graph.output[:]
    for name in FEATURES.values():
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def cell_features(sess: ort.InferenceSession, img: np.ndarray) -> np.ndarray:
    """[GRID*GRID, 384] features, in the same order the grafted graph builds them."""
    s8, s16, s32 = sess.run(list(FEATURES.values()), {sess.get_inputs()[0].name: to_tensor(img)})
    s16 = s16.repeat(2, axis=2).repeat(2, axis=3)
    s32 = s32.repeat(4, axis=2).repeat(4, axis=3)
    f = np.concatenate([s8, s16, s32], axis=1)[0]
    return f.reshape(f.shape[0], -1).T.astype(np.float16)  # half the memory; the head trains in float32


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and a little colour cast: cameras differ in all three."""
    a = rng.uniform(0.7, 1.3)
    b = rng.uniform(-25, 25)
    cast = rng.uniform(-10, 10, 3)
    return np.clip(img.astype(np.float32) * a + b + cast, 0, 255).astype(np.uint8)


def extract(items, sess, rng, train: bool):
    """Per view: (features [cells, 384], targets [cells, 2])."""
    views = []
    for n, it in enumerate(items):
        bgr = cv2.imread(str(it["path"]))
        if bgr is None:
            sys.exit(f"cannot read image {it['path']}")
        h, w = bgr.shape[:2]
        variants = [(bgr, False)]
        if train:
            flipped = cv2.flip(bgr, 1)
            variants += [(flipped, True), (jitter(bgr if n % 2 else flipped, rng), n % 2 == 0)]
        for img, flip in variants:
            lb, s = letterbox(img)
            t = cell_targets(it["boxes"], w, h, s, flip)
            views.append((cell_features(sess, lb), t.reshape(2, -1).T.copy()))
        if train:
            # Half size, top-left, grey padding: a far camera's small fire
            # (most training fires fill a quarter of the frame).
            lb, s = letterbox(bgr)
            small = np.full_like(lb, 114)
            small[: SIZE // 2, : SIZE // 2] = cv2.resize(lb, (SIZE // 2, SIZE // 2), interpolation=cv2.INTER_AREA)
            t = cell_targets(it["boxes"], w, h, s / 2, False)
            views.append((cell_features(sess, small), t.reshape(2, -1).T.copy()))
        if (n + 1) % 100 == 0:
            print(f"  {n + 1}/{len(items)} images", flush=True)
    return views


def train_head(views, rng, epochs: int = 10, lr: float = 2e-3, decay: float = 1e-4, topk: int = 8):
    """A two-layer MLP per cell, trained in NumPy with Adam on two losses:

    - per cell, BCE against the box-derived cell labels (where things are);
    - per image and kind, BCE on the mean of the top-`topk` cell logits
      against the image label (whether the frame has it at all). This is the
      decision the agent makes, and it is what teaches the head that a
      bright sign or a foggy room is not fire: the cell loss alone learnt
      "indoor room = smoke" from the fogger demos, whose boxes cover the
      whole frame.

    Fire frames often show smoke nobody boxed, so an image counts as a smoke
    negative only when it has no fire box either.
    """
    f = np.stack([v[0] for v in views])
    t = np.stack([v[1] for v in views])
    sub = f[:: max(1, len(f) // 100)].reshape(-1, f.shape[-1]).astype(np.float32)
    mu = sub.mean(axis=0)
    sd = sub.std(axis=0) + 1e-3
    img = t.max(axis=1)  # [V, 2] image labels
    img_mask = np.ones_like(img)
    img_mask[:, 1] = np.where((img[:, 1] == 0) & (img[:, 0] > 0), 0.0, 1.0)
    d = f.shape[-1]
    params = {
        "w1": rng.normal(0, np.sqrt(2 / d), (d, HIDDEN)).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, 2)).astype(np.float32),
        "b2": np.full(2, -2.0, np.float32),
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    step = 0
    batch = 8
    cells = f.shape[1]
    for epoch in range(epochs):
        order = rng.permutation(len(f))
        total_cell = total_img = 0.0
        for i in range(0, len(order), batch):
            b = order[i : i + batch]
            n = len(b)
            xb = ((f[b].astype(np.float32) - mu) / sd).reshape(n * cells, d)
            yb = t[b].reshape(n * cells, 2)
            h1 = xb @ params["w1"] + params["b1"]
            a1 = np.maximum(h1, 0)
            z = a1 @ params["w2"] + params["b2"]
            p = 1 / (1 + np.exp(-z))
            total_cell += float(-(yb * np.log(p + 1e-7) + (1 - yb) * np.log(1 - p + 1e-7)).sum())
            gz = 0.5 * (p - yb) / (n * cells)
            # Image level: mean of the top-k logits per view and kind.
            zi = z.reshape(n, cells, 2)
            top = np.argpartition(-zi, topk, axis=1)[:, :topk, :]
            s_img = np.take_along_axis(zi, top, axis=1).mean(axis=1)
            p_img = 1 / (1 + np.exp(-s_img))
            yi, mi = img[b], img_mask[b]
            total_img += float(-(mi * (yi * np.log(p_img + 1e-7) + (1 - yi) * np.log(1 - p_img + 1e-7))).sum())
            g_img = mi * (p_img - yi) / n / topk
            gzi = gz.reshape(n, cells, 2)
            for kk in range(topk):
                idx = top[:, kk, :]
                cur = np.take_along_axis(gzi, idx[:, None, :], axis=1)[:, 0, :]
                np.put_along_axis(gzi, idx[:, None, :], (cur + g_img)[:, None, :], axis=1)
            gz = gzi.reshape(n * cells, 2)
            grads = {"w2": a1.T @ gz, "b2": gz.sum(axis=0)}
            ga = gz @ params["w2"].T * (h1 > 0)
            grads["w1"] = xb.T @ ga
            grads["b1"] = ga.sum(axis=0)
            step += 1
            rate = lr * (0.5 * (1 + np.cos(np.pi * epoch / epochs)))
            for k in params:
                g = grads[k] + (decay * params[k] if k.startswith("w") else 0)
                m[k] = 0.9 * m[k] + 0.1 * g
                v2[k] = 0.999 * v2[k] + 0.001 * g * g
                mh = m[k] / (1 - 0.9**step)
                vh = v2[k] / (1 - 0.999**step)
                params[k] -= (rate * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        print(f"  epoch {epoch + 1}/{epochs}: cell loss {total_cell / (len(f) * cells):.4f}, "
              f"image loss {total_img / len(f):.4f}", flush=True)
    # Fold the input normalisation into the first layer.
    w1 = params["w1"] / sd[:, None]
    b1 = params["b1"] - (mu / sd) @ params["w1"]
    return w1.astype(np.float32), b1.astype(np.float32), params["w2"], params["b2"]


def heat(f: np.ndarray, head) -> np.ndarray:
    w1, b1, w2, b2 = head
    f = f.astype(np.float32)
    return 1 / (1 + np.exp(-(np.maximum(f @ w1 + b1, 0) @ w2 + b2)))


def image_scores(views, head):
    """Per view: (max fire, max smoke) over cells, and whether each is present."""
    scores = np.array([heat(f, head).max(axis=0) for f, _ in views])
    truth = np.array([t.max(axis=0) > 0 for _, t in views])
    return scores, truth


def precision_recall(scores, truth, thr):
    pred = scores >= thr
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return {
        "threshold": thr,
        "precision": round(tp / max(tp + fp, 1), 3),
        "recall": round(tp / max(tp + fn, 1), 3),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def graft(base: Path, head, out: Path) -> None:
    """NanoDet cut at its FPN maps + the trained head, as one ONNX graph."""
    m = onnx.load(str(base))
    g = m.graph
    w1, b1, w2, b2 = head
    inits = [
        numpy_helper.from_array(w1.T.reshape(HIDDEN, -1, 1, 1).copy(), "fire_w1"),
        numpy_helper.from_array(b1, "fire_b1"),
        numpy_helper.from_array(w2.T.reshape(2, HIDDEN, 1, 1).copy(), "fire_w2"),
        numpy_helper.from_array(b2.astype(np.float32), "fire_b2"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "fire_up2"),
        numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "fire_up4"),
    ]
    nodes = [
        helper.make_node("Resize", [FEATURES["s16"], "", "fire_up2"], ["fire_s16"], mode="nearest"),
        helper.make_node("Resize", [FEATURES["s32"], "", "fire_up4"], ["fire_s32"], mode="nearest"),
        helper.make_node("Concat", [FEATURES["s8"], "fire_s16", "fire_s32"], ["fire_feat"], axis=1),
        helper.make_node("Conv", ["fire_feat", "fire_w1", "fire_b1"], ["fire_h"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["fire_h"], ["fire_a"]),
        helper.make_node("Conv", ["fire_a", "fire_w2", "fire_b2"], ["fire_z"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["fire_z"], ["heatmap"]),
    ]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [1, 2, "h", "w"]))
    # Any input size that is a multiple of 32 works (the backbone is fully
    # convolutional and its Resizes use scales): the agent runs it at 640 to
    # see small, distant fires, though it was trained at 416.
    dims = g.input[0].type.tensor_type.shape.dim
    for d, name in ((dims[2], "H"), (dims[3], "W")):
        d.ClearField("dim_value")
        d.dim_param = name
    # Drop NanoDet's detection heads: keep only what reaches the heat-map.
    needed, frontier = set(), ["heatmap"]
    producers = {o: n for n in g.node for o in n.output}
    while frontier:
        name = frontier.pop()
        n = producers.get(name)
        if n is None or id(n) in needed:
            continue
        needed.add(id(n))
        frontier.extend(i for i in n.input if i)
    keep = [n for n in g.node if id(n) in needed]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    del g.value_info[:]
    g.name = "alleywatch-fire-heatmap"
    m.producer_name = "alleywatch models/train_fire.py"
    m.producer_version = "1"
    del m.metadata_props[:]
    onnx.checker.check_model(m)
    out.write_bytes(m.SerializeToString())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the firedata folder (see SOURCES.md)")
    ap.add_argument("--base", type=Path, default=Path("models/nanodet.onnx"))
    ap.add_argument("--out", type=Path, default=Path("models/fire.onnx"))
    ap.add_argument("--report", type=Path, default=Path("models/fire-heldout.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="keep extracted features here between runs (development)")
    ap.add_argument("--threshold", type=float, default=0.5, help="image-level threshold for the report")
    args = ap.parse_args()

    rng = np.random.default_rng(SEED)
    items = load_items(args.data)
    if not items:
        sys.exit(f"no images under {args.data}: expected the layout SOURCES.md describes")
    split(items)
    train = [it for it in items if not it["heldout"]]
    held = [it for it in items if it["heldout"]]
    print(f"{len(items)} images from {len({it['source'] for it in items})} sources: "
          f"{len(train)} train, {len(held)} held out (by source)")

    sess = feature_session(args.base, args.threads)
    cache = args.cache / "views.npz" if args.cache else None
    if cache and cache.exists():
        z = np.load(cache)
        train_views = list(zip(z["tf"], z["tt"]))
        held_views = list(zip(z["hf"], z["ht"]))
    else:
        print("features: training views")
        train_views = extract(train, sess, rng, train=True)
        print("features: held-out images")
        held_views = extract(held, sess, rng, train=False)
        if cache:
            args.cache.mkdir(parents=True, exist_ok=True)
            np.savez(cache, tf=np.stack([f for f, _ in train_views]), tt=np.stack([t for _, t in train_views]),
                     hf=np.stack([f for f, _ in held_views]), ht=np.stack([t for _, t in held_views]))

    rng = np.random.default_rng(SEED + 1)  # the same draws with or without --cache
    print(f"training the head on {len(train_views)} views of {GRID * GRID} cells")
    head = train_head(train_views, rng)

    scores, truth = image_scores(held_views, head)
    report = {
        "split": "by source video/image, 1 in 4 per kind held out",
        "train_images": len(train),
        "heldout_images": len(held),
        "heldout_sources": len({it["source"] for it in held}),
        "image_level": {},
    }
    for k, kind in enumerate(KINDS):
        s, t = scores[:, k], truth[:, k]
        curve = [precision_recall(s, t, thr) for thr in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
        report["image_level"][kind] = {
            "positives": int(t.sum()),
            "negatives": int((~t).sum()),
            "at_threshold": precision_recall(s, t, args.threshold),
            "curve": curve,
        }
        r = report["image_level"][kind]["at_threshold"]
        print(f"held-out {kind}: precision {r['precision']} recall {r['recall']} "
              f"(tp {r['tp']} fp {r['fp']} fn {r['fn']}) at {args.threshold}")

    graft(args.base, head, args.out)
    # The grafted graph must agree with the NumPy head on a held-out image.
    check = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    img, _ = letterbox(cv2.imread(str(held[0]["path"])))
    got = check.run(None, {check.get_inputs()[0].name: to_tensor(img)})[0].reshape(2, -1).T
    want = heat(cell_features(sess, img), head)
    err = float(np.abs(got - want).max())
    if err > 1e-3:
        sys.exit(f"grafted model disagrees with the trained head by {err}")
    report["sha256"] = hashlib.sha256(args.out.read_bytes()).hexdigest()
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} (sha256 {report['sha256']}) and {args.report}; graph check max error {err:.2e}")


if __name__ == "__main__":
    main()
