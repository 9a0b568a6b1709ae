#!/usr/bin/env python3
"""Trains alleywatch's "person down" cue and writes it as one ONNX graph.

What it answers: given the crop of one tracked person, is that person down
on the floor? Meant for the fall rule (edge-agent/src/analytics/fall.rs) to
ask about the people it tracks, at its own rate, as a third way into
`falling` (beside the pose and vanish paths) and as a confirmation that a
person stays down, once it is good enough (see "Result" below).

Why this design: the fall rule's geometry (box height against the standing
height) needs a standing reference and a pose model that keeps seeing the
person; in the dark, or when the body lands curled up or half hidden, it
loses them. A crop classifier looks at the person as they are now. About
600 boxes of fallen people (hospital_cctv) are far too few to train a
network from scratch that holds up in a back alley, so, as for the fire
model, the features come from the project's own COCO detector (NanoDet,
models/nanodet.onnx, frozen), which already knows what people look like in
any pose, and only a small head is trained here (NumPy, no framework):

    crop 128×128 ─▶ NanoDet backbone + FPN ─┬─ stride 8  ─ global mean ───────┐
                                            ├─ stride 16 ─ global mean ───────┼─ concat 896 ─ Gemm 64 ─ ReLU ─ Gemm 1 ─ sigmoid ─▶ down [N, 1]
                                            └─ stride 32 ─ global mean, 2×2 mean┘

The 2×2 pooled stride-32 map keeps the body's layout (head at the top or at
one side); the crop is letterboxed into the square (top-left, pad 114, like
every model input in the agent), so a wide lying body and a tall standing
one keep their shapes.

Data: ../shared/datasets/hospital_cctv (CC BY 4.0, "aiapplications,
hospital_bed (Roboflow Universe)"), 2,004 frames from raised cameras in
care rooms, day and infrared night. Down: the `fall` boxes (people on the
floor). Not down: `stand`, `sit`, `person`, `move`, `walker`, `wheelchair`
and `lie` (lying *in bed*: a body that is horizontal but not down, the
hardest negative). Left out: `danger` (kneeling or crawling beside a bed:
neither) and `patient` (any of the above, overlapping other boxes), and
`bed`. The split is by room (the name before the first `_`, `cam_<n>` for
the cam files), about a quarter of the frames held out, never at random.

Augmentation (seeded per box): the box jittered in position and size (the
agent's boxes come from the detector or the pose model, not from a
labeller), flips, grey/infrared look and low light, JPEG and blur.

Result (2026-12-02, not shipped): on the 15 held-out rooms (959 boxes, 127
down, 139 at night) the head gives P 0.737 R 0.795 at 0.5 (day P 0.752 R
0.805, night P 0.625 R 0.714); most false "down" calls are people sitting
(15 of 99) and with walkers. `--finetune 3` (PyTorch, backbone from Conv_47
on) fits the training rooms (loss 0.016) and does worse on the held-out
ones: P 0.671 R 0.85. Both are far from the 0.9/0.9 a cue that can start a
fall alert needs, so the agent does not use it yet; next: more rooms and
more varied people down (the labels mix kneeling and crawling into "fall").

Usage:
    python models/train_down.py --hospital ../shared/datasets/hospital_cctv \
        --base models/nanodet.onnx --out WORK/down.onnx --report WORK/down-heldout.json [--finetune 3]
(pins: those of models/train_fire.sh, plus torch==2.15.0 onnx2torch==1.5.15 for --finetune)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fire import adam, keep_only  # noqa: E402  (one optimiser step and graph pruner for both)

SIZE = 128  # crop input (a multiple of 32)
MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # B, G, R: NanoDet's
STD = np.array([57.375, 57.12, 58.395], np.float32)
FEATURES = {"s8": "Add_101:0", "s16": "Add_104:0", "s32": "Add_109:0"}
NAMES = ["bed", "danger", "fall", "lie", "move", "patient", "person", "sit", "stand", "walker", "wheelchair"]
DOWN = {"fall"}
UP = {"lie", "move", "person", "sit", "stand", "walker", "wheelchair"}
HIDDEN = 64
SEED = 20261202
MARGIN = 0.1  # context around a box, per side, as a fraction of its size
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)]


def room(name: str) -> str:
    m = re.match(r"(cam_\d+)_", name)
    return m.group(1) if m else name.split("_")[0]


def load(hospital: Path) -> list[dict]:
    """Every usable box: image path, room, box (cx, cy, w, h normalised), down, night."""
    out = []
    for lf in sorted((hospital / "labels").glob("*.txt")):
        img = hospital / "images" / (lf.stem + ".jpg")
        if not img.exists():
            continue
        for line in lf.read_text().split("\n"):
            f = line.split()
            if len(f) != 5:
                continue
            name = NAMES[int(f[0])]
            if name not in DOWN | UP:
                continue
            out.append({"path": img, "room": room(img.name), "box": tuple(map(float, f[1:])), "down": name in DOWN,
                        "label": name})
    return out


def split(boxes: list[dict]) -> None:
    """Rooms in hash order held out while the held share of frames is under a quarter."""
    frames: dict[str, set] = {}
    for b in boxes:
        frames.setdefault(b["room"], set()).add(b["path"].name)
    rooms = sorted(frames, key=lambda r: hashlib.sha1(r.encode()).hexdigest())
    held, seen, held_n = set(), 0, 0
    for r in rooms:
        n = len(frames[r])
        if held_n < 0.25 * (seen + n) - n / 2:
            held.add(r)
            held_n += n
        seen += n
    for b in boxes:
        b["heldout"] = b["room"] in held


def is_night(img: np.ndarray) -> bool:
    """Infrared frames are grey: the colour channels agree."""
    f = img.astype(np.int16)
    return float(np.abs(f[..., 0] - f[..., 1]).mean() + np.abs(f[..., 1] - f[..., 2]).mean()) < 4.0


def crop(img: np.ndarray, box, rng=None) -> np.ndarray:
    """The box with MARGIN of context (jittered when rng is given), letterboxed
    top-left into SIZE×SIZE with pad 114: what the agent feeds the cue."""
    h, w = img.shape[:2]
    cx, cy, bw, bh = box
    if rng is not None:
        cx += rng.uniform(-0.1, 0.1) * bw
        cy += rng.uniform(-0.1, 0.1) * bh
        bw *= rng.uniform(0.85, 1.2)
        bh *= rng.uniform(0.85, 1.2)
    x1, x2 = int(max(0, (cx - bw / 2 - MARGIN * bw) * w)), int(min(w, (cx + bw / 2 + MARGIN * bw) * w))
    y1, y2 = int(max(0, (cy - bh / 2 - MARGIN * bh) * h)), int(min(h, (cy + bh / 2 + MARGIN * bh) * h))
    c = img[y1 : max(y2, y1 + 2), x1 : max(x2, x1 + 2)]
    ch, cw = c.shape[:2]
    s = SIZE / max(ch, cw)
    nw, nh = max(1, round(cw * s)), max(1, round(ch * s))
    out = np.full((SIZE, SIZE, 3), 114, np.uint8)
    out[:nh, :nw] = cv2.resize(c, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return out


def u8(x):
    return np.clip(x, 0, 255).astype(np.uint8)


def augment(c: np.ndarray, rng) -> np.ndarray:
    """Flip, then one of: grey/IR + noise, low light, JPEG, blur, camera jitter."""
    if rng.random() < 0.5:
        c = cv2.flip(c, 1)
    op = int(rng.integers(5))
    f = c.astype(np.float32)
    if op == 0:
        g = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY).astype(np.float32)
        g = g * rng.uniform(0.5, 1.1) + rng.normal(0, rng.uniform(2, 10), g.shape)
        return cv2.cvtColor(u8(g), cv2.COLOR_GRAY2BGR)
    if op == 1:  # low light: dark, noisy, a little warm or blue
        f = f * rng.uniform(0.15, 0.45) + rng.normal(0, rng.uniform(2, 6), f.shape) + rng.uniform(-4, 4, 3)
        return u8(f)
    if op == 2:
        ok, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 50))])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if op == 3:
        k = int(rng.choice([3, 5]))
        return cv2.GaussianBlur(c, (k, k), 0)
    return u8(f * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25) + rng.uniform(-10, 10, 3))


def session(base: Path, threads: int) -> ort.InferenceSession:
    """NanoDet at SIZE×SIZE with its FPN maps as outputs."""
    m = onnx.load(str(base))
    del m.graph.output[:]
    for name in FEATURES.values():
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[0].ClearField("dim_value")
    dims[0].dim_param = "N"
    dims[2].dim_value = dims[3].dim_value = SIZE
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def to_tensor(crops: list[np.ndarray]) -> np.ndarray:
    return ((np.stack(crops).astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2)


def pooled(sess, crops: list[np.ndarray]) -> np.ndarray:
    """[N, 896]: the graph's pooling of the FPN maps, in NumPy."""
    s8, s16, s32 = sess.run(list(FEATURES.values()), {sess.get_inputs()[0].name: to_tensor(crops)})
    n, c = s32.shape[:2]
    q = s32.reshape(n, c, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(n, -1)  # 4×4 → 2×2, channel-major
    return np.concatenate([s8.mean(axis=(2, 3)), s16.mean(axis=(2, 3)), s32.mean(axis=(2, 3)), q], axis=1)


def views_by_image(boxes, views_per_box: int):
    """Per image (each read once): the crops of its boxes, `views_per_box`
    each (the first as labelled, the rest augmented, seeded per box), their
    labels, and whether the frame is infrared night."""
    by_image: dict[Path, list[int]] = {}
    for i, b in enumerate(boxes):
        by_image.setdefault(b["path"], []).append(i)
    for img_path, idx in by_image.items():
        img = cv2.imread(str(img_path))
        if img is None:
            sys.exit(f"cannot read image {img_path}")
        crops, downs = [], []
        for i in idx:
            rng = np.random.default_rng([SEED, i])
            crops.append(crop(img, boxes[i]["box"]))
            for _ in range(views_per_box - 1):
                crops.append(augment(crop(img, boxes[i]["box"], rng), rng))
            downs += [boxes[i]["down"]] * views_per_box
        yield crops, downs, is_night(img)


def features(sess, boxes, views_per_box: int, cache: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and night flags of every view (view 0 = the box as labelled)."""
    key = hashlib.sha1(repr([(b["path"].name, b["box"], views_per_box) for b in boxes]).encode()).hexdigest()[:10]
    path = cache / f"down-{key}.npz" if cache else None
    if path is not None and path.exists():
        z = np.load(path)
        return z["x"], z["y"], z["night"]
    xs, ys, nights, batch = [], [], [], []
    t0 = time.time()
    images = len({b["path"] for b in boxes})
    for done, (crops, downs, night) in enumerate(views_by_image(boxes, views_per_box), 1):
        batch += crops
        ys += downs
        nights += [night] * len(crops)
        if len(batch) >= 64:
            xs.append(pooled(sess, batch))
            batch = []
        if done % 200 == 0:
            print(f"  {done}/{images} images ({time.time() - t0:.0f} s)", flush=True)
    if batch:
        xs.append(pooled(sess, batch))
    x, y, night = np.concatenate(xs).astype(np.float32), np.array(ys), np.array(nights)
    if path is not None:
        np.savez(path, x=x, y=y, night=night)
    return x, y, night


def train(x, y, rng, epochs=60, lr=3e-3, decay=3e-4, batch=128):
    """Standardise, then a 64-unit MLP with class-balanced BCE and Adam."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-4
    z = (x - mu) / sd
    d = z.shape[1]
    p = {"w1": rng.normal(0, np.sqrt(2 / d), (d, HIDDEN)).astype(np.float32), "b1": np.zeros(HIDDEN, np.float32),
         "w2": rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, 1)).astype(np.float32), "b2": np.zeros(1, np.float32)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    wpos = 0.5 / max(y.mean(), 1e-3)
    wneg = 0.5 / max(1 - y.mean(), 1e-3)
    step = 0
    total = epochs * (len(z) // batch)
    for _ in range(epochs):
        order = rng.permutation(len(z))
        for s in range(0, len(z) - batch + 1, batch):
            b = order[s : s + batch]
            xb, yb = z[b], y[b].astype(np.float32)[:, None]
            h = xb @ p["w1"] + p["b1"]
            a = np.maximum(h, 0)
            o = a @ p["w2"] + p["b2"]
            pr = 1 / (1 + np.exp(-o))
            w = np.where(yb > 0, wpos, wneg)
            go = w * (pr - yb) / len(b)
            g = {"w2": a.T @ go, "b2": go.sum(axis=0)}
            ga = (go @ p["w2"].T) * (h > 0)
            g["w1"] = xb.T @ ga
            g["b1"] = ga.sum(axis=0)
            step += 1
            adam(p, g, m, v2, step, lr * 0.5 * (1 + np.cos(np.pi * step / total)), decay)
    return p, mu, sd


def predict(p, mu, sd, x):
    h = np.maximum(((x - mu) / sd) @ p["w1"] + p["b1"], 0)
    return (1 / (1 + np.exp(-(h @ p["w2"] + p["b2"]))))[:, 0]


def pr_at(s, y, t):
    pred = s >= t
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    return {"threshold": t, "precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3),
            "tp": tp, "fp": fp, "fn": fn}


def graft(base: Path, p, mu, sd, out: Path) -> None:
    """NanoDet cut at its FPN maps + pooling + the trained MLP, as one graph."""
    m = onnx.load(str(base))
    g = m.graph
    w1 = (p["w1"] / sd[:, None]).astype(np.float32)  # standardisation folded in
    b1 = (p["b1"] - (mu / sd) @ p["w1"]).astype(np.float32)
    g.initializer.extend([
        numpy_helper.from_array(w1, "down_w1"), numpy_helper.from_array(b1, "down_b1"),
        numpy_helper.from_array(p["w2"].astype(np.float32), "down_w2"),
        numpy_helper.from_array(p["b2"].astype(np.float32), "down_b2"),
    ])
    g.node.extend([
        helper.make_node("GlobalAveragePool", [FEATURES["s8"]], ["down_g8"]),
        helper.make_node("GlobalAveragePool", [FEATURES["s16"]], ["down_g16"]),
        helper.make_node("GlobalAveragePool", [FEATURES["s32"]], ["down_g32"]),
        helper.make_node("AveragePool", [FEATURES["s32"]], ["down_q32"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["down_g8"], ["down_f8"]),
        helper.make_node("Flatten", ["down_g16"], ["down_f16"]),
        helper.make_node("Flatten", ["down_g32"], ["down_f32"]),
        helper.make_node("Flatten", ["down_q32"], ["down_fq"]),
        helper.make_node("Concat", ["down_f8", "down_f16", "down_f32", "down_fq"], ["down_x"], axis=1),
        helper.make_node("Gemm", ["down_x", "down_w1", "down_b1"], ["down_h"]),
        helper.make_node("Relu", ["down_h"], ["down_a"]),
        helper.make_node("Gemm", ["down_a", "down_w2", "down_b2"], ["down_z"]),
        helper.make_node("Sigmoid", ["down_z"], ["down"]),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("down", TensorProto.FLOAT, ["N", 1]))
    dims = g.input[0].type.tensor_type.shape.dim
    dims[0].ClearField("dim_value")
    dims[0].dim_param = "N"
    dims[2].dim_value = dims[3].dim_value = SIZE
    keep_only(g, "down")
    g.name = "alleywatch-person-down"
    m.producer_name, m.producer_version, m.doc_string = "alleywatch models/train_down.py", "1", ""
    del m.metadata_props[:]
    onnx.checker.check_model(m)
    out.write_bytes(m.SerializeToString())


def crops_of(boxes, views_per_box: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same views as `features` (same seeds), as crops [V, SIZE, SIZE, 3] u8."""
    xs, ys, nights = [], [], []
    for crops, downs, night in views_by_image(boxes, views_per_box):
        xs += crops
        ys += downs
        nights += [night] * len(crops)
    return np.stack(xs), np.array(ys), np.array(nights)


def finetune(model: Path, tr, views: int, epochs: int, lr: float, threads: int, freeze_until: str) -> None:
    """Optional second stage: the grafted graph in PyTorch (onnx2torch), its
    backbone's later stages and the head trained end to end with balanced
    BCE, the weights written back into the same graph by node name."""
    import torch
    import torch.nn.functional as F
    from onnx2torch import convert

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    m = onnx.load(str(model))
    for k, n in enumerate(m.graph.node):
        if not n.name:
            n.name = f"n{k}_{n.op_type}"
    net = convert(m)
    frozen = True
    for name, mod in net.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            for prm in mod.parameters():
                prm.requires_grad = not frozen
            if name == freeze_until:
                frozen = False
    params = [p for p in net.parameters() if p.requires_grad]
    x, y, _ = crops_of(tr, views)
    print(f"fine-tuning {sum(p.numel() for p in params)} weights on {len(x)} crops", flush=True)
    wpos = float(0.5 / y.mean())
    wneg = float(0.5 / (1 - y.mean()))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    batch = 64
    steps = len(x) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps * epochs, pct_start=0.1)
    rng = np.random.default_rng(SEED + 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    net.train()
    for e in range(epochs):
        order = rng.permutation(len(x))
        t0, total = time.time(), 0.0
        for s in range(steps):
            b = order[s * batch : (s + 1) * batch]
            xb = x[b]
            flip = rng.random(len(b)) < 0.5
            xb[flip] = xb[flip, :, ::-1]
            xt = (torch.from_numpy(np.ascontiguousarray(xb)).permute(0, 3, 1, 2).float() - mean) / std
            yt = torch.from_numpy(y[b].astype(np.float32))[:, None]
            p = net(xt).clamp(1e-6, 1 - 1e-6)
            w = yt * wpos + (1 - yt) * wneg
            loss = (w * F.binary_cross_entropy(p, yt, reduction="none")).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        print(f"  epoch {e + 1}/{epochs}: loss {total / steps:.4f} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    inits = {i.name: i for i in m.graph.initializer}
    mods = dict(net.named_modules())
    for node in m.graph.node:
        mod = mods.get(node.name)
        if node.op_type == "Conv" and isinstance(mod, torch.nn.Conv2d):
            vals = [mod.weight, mod.bias]
        elif node.op_type == "Gemm" and isinstance(mod, torch.nn.Linear):
            vals = [mod.weight.T, mod.bias]  # Gemm without transB: B is [in, out]
        else:
            continue
        for tensor_name, v in zip(node.input[1:], vals):
            if v is None:
                continue
            new = numpy_helper.from_array(np.ascontiguousarray(v.detach().numpy(), np.float32), tensor_name)
            if tuple(new.dims) != tuple(inits[tensor_name].dims):
                sys.exit(f"{node.name}: shape {tuple(new.dims)} != {tuple(inits[tensor_name].dims)}")
            inits[tensor_name].CopyFrom(new)
    for k, n in enumerate(m.graph.node):
        if n.name == f"n{k}_{n.op_type}":
            n.name = ""
    onnx.checker.check_model(m)
    model.write_bytes(m.SerializeToString())
    probe = ((x[:8].astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: probe})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(probe)).numpy()
    err = float(np.abs(got - want).max())
    print(f"fine-tune graph check: max abs error {err:.2e}", flush=True)
    if err > 1e-3:
        sys.exit(f"written model disagrees with PyTorch by {err}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hospital", type=Path, required=True, help="hospital_cctv folder (README.md there)")
    ap.add_argument("--base", type=Path, default=Path("models/nanodet.onnx"))
    ap.add_argument("--out", type=Path, default=Path("models/down.onnx"))
    ap.add_argument("--report", type=Path, default=Path("models/down-heldout.json"))
    ap.add_argument("--cache", type=Path, help="feature cache folder (optional)")
    ap.add_argument("--views", type=int, default=6, help="views per training box (the first as labelled)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--finetune", type=int, default=0, help="epochs of end-to-end fine-tuning (PyTorch) after the head")
    ap.add_argument("--finetune-lr", type=float, default=3e-4)
    ap.add_argument("--freeze-until", default="Conv_47", help="last frozen conv when fine-tuning")
    args = ap.parse_args()
    t0 = time.time()
    boxes = load(args.hospital)
    if not boxes:
        sys.exit(f"no labelled boxes under {args.hospital}/labels (expected hospital_cctv's layout)")
    split(boxes)
    tr = [b for b in boxes if not b["heldout"]]
    ho = [b for b in boxes if b["heldout"]]
    held_rooms = sorted({b["room"] for b in ho})
    print(f"{len(boxes)} boxes ({sum(b['down'] for b in boxes)} down) from {len({b['room'] for b in boxes})} rooms; "
          f"{len(ho)} held out ({sum(b['down'] for b in ho)} down) in {len(held_rooms)} rooms", flush=True)
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    sess = session(args.base, args.threads)
    xt, yt, _ = features(sess, tr, args.views, args.cache)
    xh, yh, nh = features(sess, ho, 1, args.cache)
    print(f"features: {len(xt)} training views, {len(xh)} check crops ({time.time() - t0:.0f} s)", flush=True)
    p, mu, sd = train(xt, yt, np.random.default_rng(SEED))
    s = predict(p, mu, sd, xh)
    head_only = pr_at(s, yh, 0.5)
    graft(args.base, p, mu, sd, args.out)
    if args.finetune:
        print(f"head only, check rooms at 0.5: P {head_only['precision']} R {head_only['recall']}", flush=True)
        finetune(args.out, tr, args.views, args.finetune, args.finetune_lr, args.threads, args.freeze_until)
        fs = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
        xc, _, _ = crops_of(ho, 1)
        s = np.concatenate([fs.run(None, {fs.get_inputs()[0].name: ((xc[i : i + 64].astype(np.float32) - MEAN) / STD)
                                      .transpose(0, 3, 1, 2)})[0][:, 0] for i in range(0, len(xc), 64)])
    curve = [pr_at(s, yh, t) for t in THRESHOLDS]
    best = max(curve, key=lambda c: (2 * c["precision"] * c["recall"] / max(c["precision"] + c["recall"], 1e-9)))
    t_op = 0.5
    report = {
        "split": "hospital_cctv by room (name before the first '_', cam_<n>), rooms by hash until ~1/4 of frames held out",
        "down": sorted(DOWN), "not_down": sorted(UP), "left_out": ["danger", "patient", "bed"],
        "train_boxes": len(tr), "train_views": int(len(xt)), "heldout_boxes": len(ho), "heldout_rooms": held_rooms,
        "heldout_down": int(yh.sum()),
        "at_0.5": {"all": pr_at(s, yh, t_op), "day": pr_at(s[~nh], yh[~nh], t_op), "night": pr_at(s[nh], yh[nh], t_op)},
        "best_f1": best,
        "curve": curve,
        "by_label_at_0.5": {lab: {"n": int(sum(b["label"] == lab for b in ho)),
                                  "called_down": int(sum(1 for b, v in zip(ho, s) if b["label"] == lab and v >= t_op))}
                            for lab in sorted(DOWN | UP)},
        "night_boxes": int(nh.sum()),
        "head_only_at_0.5": head_only,
        "finetune_epochs": args.finetune,
    }
    if args.finetune:
        report["graph_check_abs_error"] = 0.0
        data = args.out.read_bytes()
        report.update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), train_seconds=round(time.time() - t0))
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        a = report["at_0.5"]
        print(f"check rooms at 0.5: P {a['all']['precision']} R {a['all']['recall']} (night P {a['night']['precision']} "
              f"R {a['night']['recall']}); best F1 at {best['threshold']}: P {best['precision']} R {best['recall']}")
        return
    check = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    img = cv2.imread(str(ho[0]["path"]))
    c = crop(img, ho[0]["box"])
    got = float(check.run(None, {check.get_inputs()[0].name: to_tensor([c])})[0][0, 0])
    want = float(predict(p, mu, sd, pooled(sess, [c]))[0])
    err = abs(got - want)
    print(f"graph check: |{got:.6f} - {want:.6f}| = {err:.2e}", flush=True)
    if err > 1e-4:
        sys.exit(f"grafted model disagrees with the trained head by {err}")
    data = args.out.read_bytes()
    report["sha256"] = hashlib.sha256(data).hexdigest()
    report["size_bytes"] = len(data)
    report["graph_check_abs_error"] = err
    report["train_seconds"] = round(time.time() - t0)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    a = report["at_0.5"]
    print(f"check rooms at 0.5: P {a['all']['precision']} R {a['all']['recall']} "
          f"(day P {a['day']['precision']} R {a['day']['recall']}; night P {a['night']['precision']} "
          f"R {a['night']['recall']}); best F1 at {best['threshold']}: P {best['precision']} R {best['recall']}")
    print(f"wrote {args.out} (sha256 {report['sha256']}) and {args.report} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
