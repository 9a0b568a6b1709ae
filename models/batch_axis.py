#!/usr/bin/env python3
"""Give an ONNX detector a dynamic batch axis, so the agent can run several
cameras' frames in one inference (`detector.batch`).

    python models/batch_axis.py IN.onnx OUT.onnx [--check]

What it changes (and only that):
- the input's and every output's first dimension becomes the symbolic
  `batch`;
- every Reshape whose target shape is built from an int64 constant starting
  with 1 (NanoDet's `[1, 44, -1]` and `[1, 80, -1]`) gets 0 there instead,
  which ONNX Reshape reads as "copy this dimension from the input": the
  batch;
- intermediate shape annotations (value_info) are dropped: they were
  inferred for batch 1.

Weights and every other node are untouched. With --check it runs both files
on ONNX Runtime and asserts that batch 1 of OUT matches IN, and each item of
a batch of 3 its own batch-1 run, within 1e-4 (ONNX Runtime picks kernels
by shape, so results may differ in the last bits). Deterministic: the same IN gives a byte-identical OUT.
"""

import argparse
import hashlib
import sys


def constant_sources(graph, name, producers, inits, seen=None):
    """Initializers that feed `name` through Add/Cast/Concat/Mul chains."""
    seen = seen if seen is not None else set()
    if name in seen:
        return []
    seen.add(name)
    if name in inits:
        return [inits[name]]
    node = producers.get(name)
    if node is None or node.op_type not in ("Add", "Cast", "Concat", "Mul", "Identity"):
        return []
    found = []
    for i in node.input:
        found += constant_sources(graph, i, producers, inits, seen)
    return found


def make_dynamic(model):
    from onnx import numpy_helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    patched = []
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        for init in constant_sources(graph, node.input[1], producers, inits):
            value = numpy_helper.to_array(init)
            if value.ndim == 1 and value.size >= 2 and value.dtype.kind == "i" and value[0] == 1:
                value = value.copy()
                value[0] = 0
                init.CopyFrom(numpy_helper.from_array(value, init.name))
                patched.append(init.name)
    for value in list(graph.input[:1]) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    del graph.value_info[:]
    return sorted(set(patched))


def check(src, dst):
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    a = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(dst, opts, providers=["CPUExecutionProvider"])
    inp = a.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    rng = np.random.default_rng(7)
    frames = [rng.normal(0, 1, size=shape).astype(np.float32) for _ in range(3)]
    single = [a.run(None, {inp.name: f}) for f in frames]
    again = b.run(None, {inp.name: frames[0]})
    first = max(float(np.abs(x - y).max()) for x, y in zip(single[0], again))
    assert first < 1e-4, f"batch 1 differs from the original model by {first}"
    batch = b.run(None, {inp.name: np.concatenate(frames)})
    worst = 0.0
    for item in range(3):
        for x, y in zip(single[item], batch):
            assert y.shape[0] == 3 and y.shape[1:] == x.shape[1:], (y.shape, x.shape)
            worst = max(worst, float(np.abs(x[0] - y[item]).max()))
    assert worst < 1e-4, f"a batch item differs from its own run by {worst}"
    print(f"check: batch 1 within {first:.2e} of the original; batch 3 within {worst:.2e} of three single runs",
          file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--check", action="store_true", help="compare the two files on ONNX Runtime")
    args = parser.parse_args()

    import onnx

    model = onnx.load(args.src)
    patched = make_dynamic(model)
    if not patched:
        raise SystemExit(f"{args.src}: no Reshape shape constant starting with 1; nothing to make dynamic")
    onnx.checker.check_model(model)
    onnx.save(model, args.dst)
    with open(args.dst, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {args.dst}: reshape constants {patched} now start with 0; sha256 {digest}", file=sys.stderr)
    if args.check:
        check(args.src, args.dst)


if __name__ == "__main__":
    main()
