"""Plugin-node surgery: swap the portable lowering of a custom op for one TensorRT plugin node.

`use_topk_reconstruct_plugin` replaces each Expedite reconstruction by one TopKMaskedReconstruct
node (z, centers, values[, mask]) -> [B, N, D].

Op boundary: the reconstruction's weights are computed at clustering time (distances, TopK, exp,
normalisation) but applied where the per-cluster values exist (at the backbone output, or after
the decoder for Segmenter). The plugin takes the features z and the centers (both alive from
clustering time) plus the values, and computes weights and gather in one kernel; the weights
subgraph (TopK included) then has no consumer and cleanup() removes it.

How the subgraph is found:
1. the apply part carries the module scope of `method.reconstruction` (node metadata
   `pkg.torch.onnx.class_hierarchy` names `TokenReconstruction`); each connected group of such
   nodes is one call;
2. of the group's inputs, the one produced by a TopK is the index; that TopK's input is the
   (masked) distance matrix, the other non-constant input downstream of the TopK is the weights,
   and the remaining one is the values;
3. k, tau, the norm and the window mask are read back from the TopK, the Div before Exp, a
   ReduceL2 (l2 norm) and the Where in front of the TopK; z and centers are the operands of the
   distance MatMul(z, Transpose(centers)).
Every step checks what it expects and raises PluginSurgeryError naming what it did not find.
"""

from __future__ import annotations

import ast
from collections import deque

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .plugin_ops import NORMS, PLUGIN_DOMAIN, PLUGIN_VERSION, TOPK_RECONSTRUCT

RECONSTRUCTION_CLASS = "exporter.ops.reconstruction.TokenReconstruction"
HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
DISTANCE_SEARCH_DEPTH = 8  # nodes between the distance MatMul and the TopK (Sub, Add, Clip, Where)


class PluginSurgeryError(Exception):
    """The graph does not have the shape the surgery expects; the message says what is missing."""


def _metadata(node: onnx.NodeProto, key: str) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == key:
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else []
    return []


def reconstruction_node_names(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes exported from a TokenReconstruction forward (module metadata)."""
    return {n.name for n in model.graph.node
            if RECONSTRUCTION_CLASS in _metadata(n, HIERARCHY_KEY)
            or any(s.endswith("method.reconstruction") for s in _metadata(n, SCOPES_KEY))}


def _groups(nodes: list[gs.Node]) -> list[list[gs.Node]]:
    """Connected components of `nodes` (one per call of the module)."""
    members = {id(n) for n in nodes}
    seen, groups = set(), []
    for start in nodes:
        if id(start) in seen:
            continue
        group, queue = [], deque([start])
        seen.add(id(start))
        while queue:
            node = queue.popleft()
            group.append(node)
            neighbours = [t.inputs[0] for t in node.inputs if t.inputs]
            neighbours += [c for t in node.outputs for c in t.outputs]
            for other in neighbours:
                if id(other) in members and id(other) not in seen:
                    seen.add(id(other))
                    queue.append(other)
        groups.append(group)
    return groups


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def _constant(tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = _producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        return np.asarray(node.attrs["value"].values)
    return None


def _downstream(tensors: list[gs.Tensor], limit: set[int]) -> set[int]:
    """ids of tensors reachable forward from `tensors` without entering nodes in `limit`."""
    seen, queue = set(), deque(tensors)
    while queue:
        t = queue.popleft()
        if id(t) in seen:
            continue
        seen.add(id(t))
        for node in t.outputs:
            if id(node) not in limit:
                queue.extend(node.outputs)
    return seen


def _nodes_between(start: gs.Tensor, stop: set[int]) -> list[gs.Node]:
    """Nodes reachable forward from `start`, stopping at nodes in `stop`."""
    nodes, seen, queue = [], set(), deque([start])
    while queue:
        for node in queue.popleft().outputs:
            if id(node) in stop or id(node) in seen:
                continue
            seen.add(id(node))
            nodes.append(node)
            queue.extend(node.outputs)
    return nodes


def _distance_operands(distance: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor]:
    """(z, centers) of the MatMul(z, Transpose(centers)) the squared distance is built from."""
    queue, seen = deque([(distance, 0)]), set()
    while queue:
        tensor, depth = queue.popleft()
        node = _producer(tensor)
        if node is None or id(node) in seen or depth > DISTANCE_SEARCH_DEPTH:
            continue
        seen.add(id(node))
        if node.op == "MatMul":
            transpose = _producer(node.inputs[1])
            if transpose is not None and transpose.op == "Transpose" \
                    and list(transpose.attrs.get("perm", [])) == [0, 2, 1]:
                return node.inputs[0], transpose.inputs[0]
            continue
        queue.extend((t, depth + 1) for t in node.inputs)
    raise PluginSurgeryError(f"no MatMul(z, Transpose(centers)) within {DISTANCE_SEARCH_DEPTH} "
                             f"nodes before the reconstruction TopK (input {distance.name})")


def _replace_group(graph: gs.Graph, group: list[gs.Node], number: int) -> gs.Node:
    members = {id(n) for n in group}
    outside_inputs = []
    for node in group:
        for t in node.inputs:
            p = _producer(t)
            if (p is None or id(p) not in members) and _constant(t) is None \
                    and all(t is not o for o in outside_inputs):
                outside_inputs.append(t)
    topk_index = [t for t in outside_inputs if _producer(t) is not None and _producer(t).op == "TopK"]
    if len(topk_index) != 1:
        raise PluginSurgeryError(f"reconstruction group {number}: expected one input from a TopK, "
                                 f"found {len(topk_index)}")
    topk = _producer(topk_index[0])
    if topk.outputs[1] is not topk_index[0] or int(topk.attrs.get("largest", 1)) != 0:
        raise PluginSurgeryError(f"{topk.name}: expected the indices of a smallest-k TopK")
    after_topk = _downstream(list(topk.outputs), members)
    values = [t for t in outside_inputs if id(t) not in after_topk]
    if len(values) != 1:
        raise PluginSurgeryError(f"reconstruction group {number}: expected one values input, "
                                 f"found {[t.name for t in values]}")
    values = values[0]
    outputs = [t for n in group for t in n.outputs
               if t in graph.outputs or any(id(c) not in members for c in t.outputs)]
    if len(outputs) != 1:
        raise PluginSurgeryError(f"reconstruction group {number}: expected one output, "
                                 f"found {[t.name for t in outputs]}")
    out = outputs[0]

    k = int(np.asarray(_constant(topk.inputs[1])).reshape(-1)[0])
    weight_nodes = _nodes_between(topk.outputs[0], members)
    exp_inputs = [_producer(n.inputs[0]) for n in weight_nodes if n.op == "Exp"]
    if len(exp_inputs) != 1 or exp_inputs[0] is None or exp_inputs[0].op != "Div" \
            or _constant(exp_inputs[0].inputs[1]) is None:
        raise PluginSurgeryError(f"{topk.name}: expected exp(Div(d_min - d, tau)) after the TopK")
    tau = float(np.asarray(_constant(exp_inputs[0].inputs[1])).reshape(-1)[0])
    norm = NORMS.index("l2") if any(n.op == "ReduceL2" for n in weight_nodes) else NORMS.index("sum")

    distance, mask = topk.inputs[0], None
    where = _producer(distance)
    if where is not None and where.op == "Where":
        mask = _constant(where.inputs[0])
        if mask is None:
            raise PluginSurgeryError(f"{where.name}: the window mask before the TopK is not constant")
        distance = where.inputs[1]
    z, centers = _distance_operands(distance)

    for t, rank, what in ((z, 3, "z"), (centers, 3, "centers"), (values, 3, "values"), (out, 3, "output")):
        if t.shape is not None and len(t.shape) != rank:
            raise PluginSurgeryError(f"{what} ({t.name}) has shape {t.shape}, expected rank {rank}")

    inputs = [z, centers, values]
    if mask is not None:
        inputs.append(gs.Constant(f"{TOPK_RECONSTRUCT.lower()}_{number}_mask", mask.astype(bool)))
    out.inputs.clear()  # detach the old producer; cleanup() then drops the whole lowering
    node = gs.Node(op=TOPK_RECONSTRUCT, name=f"{TOPK_RECONSTRUCT}_{number}", domain=PLUGIN_DOMAIN,
                   attrs={"k": k, "tau": tau, "norm": norm, "has_mask": int(mask is not None),
                          "plugin_version": PLUGIN_VERSION, "plugin_namespace": ""},
                   inputs=inputs, outputs=[out])
    graph.nodes.append(node)
    return node


def use_topk_reconstruct_plugin(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `model` with every Expedite reconstruction as one TopKMaskedReconstruct node.

    Raises:
        PluginSurgeryError: no reconstruction found, or one whose shape is not the expected lowering.
    """
    names = reconstruction_node_names(model)
    if not names:
        raise PluginSurgeryError("no node of exporter.ops.reconstruction.TokenReconstruction in the "
                                 "graph (was it exported with --method expedite, and the metadata kept?)")
    graph = gs.import_onnx(model)
    groups = _groups([n for n in graph.nodes if n.name in names])
    for number, group in enumerate(groups):
        _replace_group(graph, group, number)
    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    result.ir_version = model.ir_version  # gs/onnx would write a newer IR than ONNX Runtime reads
    del result.opset_import[:]
    result.opset_import.extend([o for o in model.opset_import if o.domain != PLUGIN_DOMAIN])
    result.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return result
