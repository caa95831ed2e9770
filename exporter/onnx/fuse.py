"""Attention fused for ONNX Runtime: the best deployable form of an exported ViT on that runtime.

The dynamo exporter writes timm's attention as about twenty standard nodes (the qkv product,
Reshape/Transpose to heads, Slice/Squeeze per q, k, v, a scale on each side, MatMul, Softmax,
MatMul, Transpose/Reshape back). ONNX Runtime's transformers optimizer recognises none of it,
so this pass rewrites each such subgraph into one `com.microsoft.MultiHeadAttention` node
(q, k and v split off the qkv product, the qkv bias passed as the node's bias), which ONNX
Runtime runs as one kernel without materialising the heads' layout changes. The opset 23
`Attention` op is not used: ONNX Runtime's CPU kernel for it measured slower than the plain
graph here.

A subgraph is rewritten only when every step of the pattern is found with the expected
permutations and constant scales; anything else is left as exported (the count of rewritten
blocks tells the caller whether the graph was fusable).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from .export import save_onnx

MS_DOMAIN = "com.microsoft"
HEADS_PERM = [2, 0, 3, 1, 4]  # [B, N, 3, H, d] -> [3, B, H, N, d]
BACK_PERM = [0, 2, 1, 3]  # [B, H, N, d] -> [B, N, H, d]


def _producer(tensor, op: str):
    """The node of type `op` that writes `tensor`, or None."""
    if not isinstance(tensor, gs.Variable) or len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    return node if node.op == op else None


def _constant(tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = _producer(tensor, "Constant")
    if node is not None and "value" in node.attrs:
        return np.asarray(node.attrs["value"].values)
    return None


def _unscaled(tensor):
    """(tensor before a multiplication by a constant scalar, that scalar); (tensor, 1.0) when
    there is none."""
    node = _producer(tensor, "Mul")
    if node is None:
        return tensor, 1.0
    for i in (0, 1):
        c = _constant(node.inputs[i])
        if c is not None and c.size == 1:
            return node.inputs[1 - i], float(c.reshape(-1)[0])
    return tensor, 1.0


def _head(tensor):
    """(heads tensor [3, B, H, N, d], index 0/1/2) of q, k or v cut out of it, or None."""
    node = _producer(tensor, "Squeeze")
    if node is not None:
        sl = _producer(node.inputs[0], "Slice")
        if sl is None or len(sl.inputs) < 4:
            return None
        start, axes = _constant(sl.inputs[1]), _constant(sl.inputs[3])
        if start is None or axes is None or axes.reshape(-1).tolist() != [0]:
            return None
        return sl.inputs[0], int(start.reshape(-1)[0])
    node = _producer(tensor, "Gather")
    if node is not None and node.attrs.get("axis", 0) == 0:
        idx = _constant(node.inputs[1])
        if idx is not None and idx.size == 1:
            return node.inputs[0], int(idx.reshape(-1)[0])
    return None


def _untransposed_key(tensor):
    """k [B, H, N, d] when `tensor` is its transpose [B, H, d, N] (Transpose of the last two
    axes, or Reshape -> Transpose(0, 2, 1) -> Reshape over B*H), else None."""
    node = _producer(tensor, "Transpose")
    if node is not None and list(node.attrs.get("perm", [])) == [0, 1, 3, 2]:
        return node.inputs[0]
    outer = _producer(tensor, "Reshape")
    mid = _producer(outer.inputs[0], "Transpose") if outer is not None else None
    inner = _producer(mid.inputs[0], "Reshape") if mid is not None else None
    if inner is None or list(mid.attrs.get("perm", [])) != [0, 2, 1]:
        return None
    return inner.inputs[0]


def _match(softmax: gs.Node):
    """The pieces of one attention around `softmax`, or None when the pattern differs."""
    if softmax.attrs.get("axis", -1) not in (-1, 3):
        return None
    scores = _producer(softmax.inputs[0], "MatMul")
    users = softmax.outputs[0].outputs
    if scores is None or len(users) != 1 or users[0].op != "MatMul":
        return None
    mix = users[0]
    if mix.inputs[0] is not softmax.outputs[0]:
        return None
    q, q_scale = _unscaled(scores.inputs[0])
    kt, k_scale = _unscaled(scores.inputs[1])
    k = _untransposed_key(kt)
    parts = [_head(t) for t in (q, k, mix.inputs[1])]
    if k is None or any(p is None for p in parts) or [p[1] for p in parts] != [0, 1, 2]:
        return None
    heads = parts[0][0]
    if any(p[0] is not heads for p in parts):
        return None
    perm = _producer(heads, "Transpose")
    split = _producer(perm.inputs[0], "Reshape") if perm is not None else None
    if split is None or list(perm.attrs.get("perm", [])) != HEADS_PERM:
        return None
    shape = _constant(split.inputs[1])
    if shape is None or shape.size != 5 or int(shape[2]) != 3:
        return None
    num_heads, head_dim = int(shape[3]), int(shape[4])
    # After the mix: [B, H, N, d] -> [B, N, H, d] -> [B, N, H*d]
    back = mix.outputs[0].outputs
    if len(back) != 1 or back[0].op != "Transpose" or list(back[0].attrs["perm"]) != BACK_PERM:
        return None
    merge = back[0].outputs[0].outputs
    if len(merge) != 1 or merge[0].op != "Reshape":
        return None
    qkv = split.inputs[0]
    bias = None
    add = _producer(qkv, "Add")
    if add is not None:
        for i in (0, 1):
            c = add.inputs[i]
            if isinstance(c, gs.Constant) and c.values.shape == (3 * num_heads * head_dim,):
                qkv, bias = add.inputs[1 - i], c
    return {
        "qkv": qkv,
        "bias": bias,
        "heads": num_heads,
        "dim": num_heads * head_dim,
        "scale": q_scale * k_scale,
        "out": merge[0].outputs[0],
        "merge": merge[0],
    }


def fuse_attention(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """`proto` with each recognised attention as one MultiHeadAttention node; the count of
    nodes made. The graph keeps its inputs, outputs and every other node."""
    graph = gs.import_onnx(proto)
    made = 0
    for softmax in [n for n in graph.nodes if n.op == "Softmax"]:
        found = _match(softmax)
        if found is None:
            continue
        name = softmax.name or f"attention_{made}"
        dim = found["dim"]
        pieces = [gs.Variable(f"{name}/{p}", dtype=np.float32) for p in "qkv"]
        sizes = gs.Constant(f"{name}/split_sizes", np.array([dim] * 3, dtype=np.int64))
        graph.nodes.append(
            gs.Node(
                "Split",
                f"{name}/split_qkv",
                {"axis": -1},
                inputs=[found["qkv"], sizes],
                outputs=pieces,
            )
        )
        out = found["out"]
        found["merge"].outputs = []  # the old tail is cut off; cleanup drops it
        inputs = [*pieces, found["bias"]] if found["bias"] is not None else pieces
        graph.nodes.append(
            gs.Node(
                "MultiHeadAttention",
                f"{name}/MultiHeadAttention",
                {"num_heads": found["heads"], "scale": found["scale"]},
                inputs=inputs,
                outputs=[out],
                domain=MS_DOMAIN,
            )
        )
        made += 1
    if not made:
        return proto, 0
    graph.cleanup().toposort()
    fused = gs.export_onnx(graph)
    if not any(op.domain == MS_DOMAIN for op in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    fused.ir_version = proto.ir_version
    # node metadata (the exporter's module scopes) is what the token-op profile and the lint
    # read: keep it on every node that survived
    scopes = {n.name: list(n.metadata_props) for n in proto.graph.node}
    for node in fused.graph.node:
        source = node.name if node.name in scopes else node.name.split("/", 1)[0]
        if source in scopes and not node.metadata_props:
            node.metadata_props.extend(scopes[source])
    return fused, made


def optimize_onnx(source: Path, path: Path) -> int:
    """Write `path`: `source` with its attention fused and ONNX Runtime's graph optimisations
    applied offline (the "extended" level: fusions that hold on every CPU; the layout changes
    of the "all" level are tied to the machine that makes them and are left to load time).
    Node names survive the runtime's rewrite; the exporter's module scopes are put back on
    them so that profiles and the lint still tell the method's nodes apart. Returns the
    number of attention nodes fused (0: the graph had no attention the pass recognised)."""
    proto = onnx.load(str(source))
    fused, made = fuse_attention(proto)
    scopes = {n.name: list(n.metadata_props) for n in fused.graph.node}
    with tempfile.TemporaryDirectory(dir=Path(path).parent, prefix=".optimize-") as tmp:
        staged = Path(tmp) / "fused.onnx"
        onnx.save_model(fused, str(staged))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(staged), options, providers=["CPUExecutionProvider"])
        out = onnx.load(options.optimized_model_filepath)
    for node in out.graph.node:
        source_name = node.name if node.name in scopes else node.name.split("/", 1)[0]
        if source_name in scopes and not node.metadata_props:
            node.metadata_props.extend(scopes[source_name])
    # only the domains the graph uses (the runtime lists every one it knows)
    used = {n.domain for n in out.graph.node}
    keep = [o for o in out.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    out.producer_version = ""
    save_onnx(out, path)
    return made


def count_fused(path: Path) -> int:
    """Number of fused attention nodes in the ONNX file at `path`."""
    proto = onnx.load(str(path), load_external_data=False)
    return sum(
        n.op_type == "MultiHeadAttention" and n.domain == MS_DOMAIN for n in proto.graph.node
    )
