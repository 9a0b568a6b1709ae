#!/usr/bin/env python3
"""Fine-tunes alleywatch's fire/smoke model end to end, deeper than its head.

Why: models/train_fire.py trains a small head on *frozen* detector features
(cached once, trained in NumPy). That is cheap and reproducible, but its
ceiling showed on the check split (fire P 0.867 at R 0.810) and on small,
low-resolution flames far down a lane, which the frozen COCO features do not
separate from warm lights. This step takes that model (the detector's
backbone + FPN + the trained head, one ONNX graph), brings it into PyTorch
with onnx2torch, and trains the backbone's last stages, the FPN and the head
together with the same two losses as the head (per-cell BCE, and per-crop BCE
on the mean of the top-k cells: the decision the agent makes).

Why write the weights back into the original graph instead of exporting:
onnx2torch keeps one module per ONNX node, named after it, so every trained
Conv maps back to its node's initializers. The shipped graph keeps its exact
structure, names and dynamic input size; only numbers change. The result is
checked against PyTorch on a check image before it is written.

Data and split: exactly train_fire.py's (same items, same by-source split,
same views and augmentations), plus "tiny" copy-paste views (fire and smoke
at 0.2-2 % of the frame on CCTV negatives) for the distant fires the head
missed. Views are rendered once into a uint8 memmap (WORK/render, reused
while the plan is unchanged); training crops 320×320 windows (40×40 cells)
of the 416 views, centred on a positive cell most of the time, and
oversamples training negatives that scored high earlier in training (hard
negatives, mined online from the loss itself at no extra cost).

Result (2026-12-02), and why the shipped model is still the head-only one:
on the check split (held out by source, same sources' style) it is much
better: at 640 fire P 0.934 R 0.927 at min_score 0.85 with no hospital
false positive (the head: P 0.867 R 0.810), smoke P 0.937 R 0.967 with 3
per 500. On footage from elsewhere it is much worse, run on the
development clips (hottest cell, one frame a second at 640): a neon sign
scores fire 0.92-1.00 on every frame (head: 0.33-0.95), a room with a
person vaping scores smoke 0.99-1.00 on every frame (head: 0.48-0.97), and
the outdoor fire and the burning house lose what fire score they had. A
gentler run (backbone frozen to Conv_69, lr 5e-5, 2 epochs, L2-SP 0.01
toward the start) did the same. ~1,000 source images teach the whole
network the look of their own sources; the frozen detector features are
what kept the head general. This script stays as the tool for the day
there is more (and more varied) data: run it, then `edge-agent eval` on
clips from outside the training data before shipping anything.

Cost on 2 CPU cores (AMD EPYC, torch 2.15): about 80 ms a view for forward
and backward at 320, so an epoch of ~7,000 views is ~10 minutes; rendering
~6 minutes once. Checkpoints after every epoch (WORK/ckpt-N.pt) and resumes.

Usage (not part of models/train_fire.sh; after it, with torch and onnx2torch
from PyPI: `pip install torch==2.15.0 onnx2torch==1.5.15`):
    python models/finetune_fire.py --data ../shared/firedata \
        --hospital ../shared/datasets/hospital_cctv --init models/fire.onnx \
        --out models/fire.onnx --work WORK
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_fire as tf  # noqa: E402  (the data, split, views and evaluation live there)

SIZE, GRID, CELL = tf.SIZE, tf.GRID, tf.CELL
CROP = 40  # cells (320 px): training window of a 416 view
TOPK = 6
SEED = tf.SEED + 7


def plan(items):
    """train_fire's views (training side only) plus tiny pastes on negatives."""
    views = []
    for section in tf.plan_views(items):
        views += [(i, op) for i, op in section if not items[i]["heldout"]]
    for i, it in enumerate(items):
        if it["heldout"] or it["boxes"]:
            continue
        r = np.random.default_rng([SEED, i]).random(2)
        if r[0] < (0.25 if it["source"].startswith("hosp:") else 0.6):
            views.append((i, "tiny"))
        if r[1] < 0.15:
            views.append((i, "a640+tiny"))
    return views


_CTX: dict = {}


def _init(items, pool):
    _CTX["items"], _CTX["pool"] = items, pool


def _render_one(spec):
    i, op = spec
    img, boxes = tf.render(_CTX["items"], i, op, _CTX["pool"])
    h, w = img.shape[:2]
    lb, s = tf.letterbox(img)
    return lb, tf.cell_targets(boxes, w, h, s).astype(np.uint8)


def render_all(items, views, pool, work: Path, procs: int):
    """Images [V, 416, 416, 3] u8 and cell targets [V, 2, 52, 52] u8, as memmaps."""
    key = hashlib.sha1(repr([(items[i]["path"].name, op) for i, op in views]).encode()).hexdigest()[:10]
    ip, tp = work / f"render-{key}-img.u8", work / f"render-{key}-tgt.u8"
    shape_i, shape_t = (len(views), SIZE, SIZE, 3), (len(views), 2, GRID, GRID)
    if not tp.exists():
        t0 = time.time()
        imgs = np.lib.format.open_memmap(str(ip) + ".tmp.npy", "w+", np.uint8, shape_i)
        tgts = np.zeros(shape_t, np.uint8)
        with Pool(procs, _init, (items, pool)) as p:
            for k, (lb, t) in enumerate(p.imap(_render_one, views, chunksize=16)):
                imgs[k], tgts[k] = lb, t
                if (k + 1) % 1000 == 0:
                    print(f"  rendered {k + 1}/{len(views)} views ({time.time() - t0:.0f} s)", flush=True)
        imgs.flush()
        del imgs
        Path(str(ip) + ".tmp.npy").rename(ip)
        np.save(str(tp) + ".npy", tgts)
        Path(str(tp) + ".npy").rename(tp)
    imgs = np.load(ip, mmap_mode="r")
    tgts = np.load(tp)
    return imgs, tgts


def load_torch(path: Path):
    """The ONNX model as a torch module, with every node named (onnx2torch needs names)."""
    from onnx2torch import convert

    m = onnx.load(str(path))
    for k, n in enumerate(m.graph.node):
        if not n.name:
            n.name = f"n{k}_{n.op_type}"
    return m, convert(m)


def write_back(m: onnx.ModelProto, net, out: Path) -> None:
    """Trained Conv weights into the original graph's initializers, by node."""
    inits = {i.name: i for i in m.graph.initializer}
    convs = {name: mod for name, mod in net.named_modules() if isinstance(mod, torch.nn.Conv2d)}
    for node in m.graph.node:
        if node.op_type != "Conv" or node.name not in convs:
            continue
        mod = convs[node.name]
        for tensor_name, value in zip(node.input[1:], (mod.weight, mod.bias)):
            if value is None:
                continue
            if tensor_name not in inits:
                sys.exit(f"conv {node.name}: weight {tensor_name} is not an initializer")
            old = inits[tensor_name]
            new = numpy_helper.from_array(value.detach().numpy().astype(np.float32), tensor_name)
            if tuple(new.dims) != tuple(old.dims):
                sys.exit(f"conv {node.name}: shape {tuple(new.dims)} != {tuple(old.dims)}")
            old.CopyFrom(new)
    for k, n in enumerate(m.graph.node):  # the names were only for onnx2torch
        if n.name == f"n{k}_{n.op_type}":
            n.name = ""
    m.producer_name, m.producer_version = "alleywatch models/finetune_fire.py", "1"
    onnx.checker.check_model(m)
    tmp = out.with_suffix(".tmp.onnx")
    tmp.write_bytes(m.SerializeToString())
    tmp.rename(out)


def losses(prob, y, mask):
    """Per-cell BCE and per-crop BCE on the mean of the top-k cells (both per kind)."""
    p = prob.clamp(1e-6, 1 - 1e-6)
    mk = mask[:, :, None, None]
    cell = (mk * F.binary_cross_entropy(p, y, reduction="none")).mean()
    logit = torch.log(p) - torch.log1p(-p)
    top = logit.flatten(2).topk(TOPK, dim=2).values.mean(dim=2)
    yi = y.flatten(2).amax(dim=2)
    crop = (mask * F.binary_cross_entropy_with_logits(top, yi, reduction="none")).mean()
    return cell, crop, torch.sigmoid(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--hospital", type=Path, required=True)
    ap.add_argument("--init", type=Path, default=Path("models/fire.onnx"), help="the head-trained model to start from")
    ap.add_argument("--out", type=Path, default=Path("models/fire.onnx"))
    ap.add_argument("--work", type=Path, required=True, help="render cache and checkpoints (resumable)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--freeze-until", default="Conv_47", help="last frozen conv (stem and early stages)")
    ap.add_argument("--l2sp", type=float, default=0.0, help="pull toward the starting weights (L2-SP): keeps what the base knew")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval", action="store_true", help="evaluate the result on the check split (640 and 416)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    args.work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    items = tf.load_items(args.data, args.hospital)
    tf.split(items)
    pool = [(i, b) for i, it in enumerate(items) if not it["heldout"] for b in it["boxes"]]
    views = plan(items)
    print(f"{len(views)} training views ({sum(op.endswith('tiny') for _, op in views)} tiny pastes)", flush=True)
    imgs, tgts = render_all(items, views, pool, args.work, args.threads)
    print(f"views ready ({time.time() - t_start:.0f} s)", flush=True)

    m, net = load_torch(args.init)
    frozen = True
    for name, mod in net.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            for prm in mod.parameters():
                prm.requires_grad = not frozen
            if name == args.freeze_until:
                frozen = False
    params = [p for p in net.parameters() if p.requires_grad]
    print(f"training {sum(p.numel() for p in params)} of {sum(p.numel() for p in net.parameters())} weights", flush=True)

    mask = np.ones((len(views), 2), np.float32)  # fire but no smoke box: says nothing of smoke
    has = tgts.reshape(len(views), 2, -1).max(axis=2) > 0
    mask[has[:, 0] & ~has[:, 1], 1] = 0.0
    pos_cells = [np.argwhere(tgts[v].max(axis=0) > 0) for v in range(len(views))]
    neg_score = np.zeros(len(views), np.float32)  # online hard-negative mining
    mean = torch.tensor(tf.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(tf.STD).view(1, 3, 1, 1)

    start = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0 if args.l2sp else 1e-4)
    steps = len(views) // args.batch
    total = steps * args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=total, pct_start=0.05)
    start_epoch = 0
    for e in range(args.epochs, 0, -1):
        ck = args.work / f"ckpt-{e}.pt"
        if ck.exists():
            st = torch.load(ck, weights_only=False)
            net.load_state_dict(st["net"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            neg_score = st["neg"]
            start_epoch = e
            print(f"resumed from {ck}", flush=True)
            break
    rng = np.random.default_rng([SEED, start_epoch])
    net.train()
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        sums = np.zeros(2)
        for step in range(steps):
            w = 1.0 + 4.0 * (neg_score > 0.2) + 4.0 * (neg_score > 0.5)
            b = rng.choice(len(views), args.batch, p=w / w.sum())
            xs, ys = [], []
            for v in b:
                if len(pos_cells[v]) and rng.random() < 0.8:
                    cy, cx = pos_cells[v][rng.integers(len(pos_cells[v]))] + rng.integers(-12, 13, 2)
                else:
                    cy, cx = rng.integers(0, GRID, 2)
                r0 = int(np.clip(cy - CROP // 2, 0, GRID - CROP))
                c0 = int(np.clip(cx - CROP // 2, 0, GRID - CROP))
                x = imgs[v, r0 * CELL : (r0 + CROP) * CELL, c0 * CELL : (c0 + CROP) * CELL]
                y = tgts[v, :, r0 : r0 + CROP, c0 : c0 + CROP]
                if rng.random() < 0.5:
                    x, y = x[:, ::-1], y[:, :, ::-1]
                xs.append(np.ascontiguousarray(x))
                ys.append(np.ascontiguousarray(y))
            x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float()
            x = (x - mean) / std
            y = torch.from_numpy(np.stack(ys)).float()
            mk = torch.from_numpy(mask[b])
            prob = net(x)
            cell, crop, pimg = losses(prob, y, mk)
            loss = cell + crop
            if args.l2sp:
                loss = loss + args.l2sp * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sums += (cell.item(), crop.item())
            with torch.no_grad():  # a negative crop's score: the next epoch oversamples hot ones
                neg = (y.flatten(2).amax(dim=2) == 0) & (mk > 0)
                sc = torch.where(neg, pimg, torch.zeros_like(pimg)).amax(dim=1).numpy()
            for v, s in zip(b, sc):
                neg_score[v] = max(0.7 * neg_score[v], float(s)) if not len(pos_cells[v]) else 0.0
            if (step + 1) % 100 == 0:
                print(f"  epoch {epoch + 1} step {step + 1}/{steps}: cell {sums[0] / (step + 1):.4f} "
                      f"crop {sums[1] / (step + 1):.4f} ({time.time() - t0:.0f} s)", flush=True)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "neg": neg_score},
                   args.work / f"ckpt-{epoch + 1}.pt")
        print(f"epoch {epoch + 1}/{args.epochs}: cell {sums[0] / steps:.4f} crop {sums[1] / steps:.4f}; "
              f"{int((neg_score > 0.5).sum())} hot negatives ({time.time() - t0:.0f} s)", flush=True)

    net.eval()
    write_back(m, net, args.out)
    held = [it for it in items if it["heldout"]]
    lb, _ = tf.letterbox(tf.read(held[0]["path"]), 640)
    sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: tf.to_tensor(lb)})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(tf.to_tensor(lb))).numpy()
    err = float(np.abs(got - want).max())
    print(f"graph check: max abs error {err:.2e} between the written graph and PyTorch", flush=True)
    if err > 1e-3:
        sys.exit(f"written model disagrees with PyTorch by {err}")
    print(f"wrote {args.out} (sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}) "
          f"({time.time() - t_start:.0f} s)", flush=True)
    if args.eval:
        tf.evaluate(args.out, held, args.threads)


if __name__ == "__main__":
    main()
