"""The DPCSelect plugin's surgery (plugins/dpc_select/).

`use_dpc_select_plugin` replaces each AiluRus selection (`DensityPeaksSelection`: scores, the
two TopKs, ranking and assignment) by one DPCSelect node (z, neighbours, weights) ->
(centers [B, M], assignment [B, N]), both int32; a Cast restores the graph's int64 for the
consumers. The group is found by module metadata as above; its only non-constant input is z,
the rank weights are the constant of the Mul after the Sqrt, the neighbour table the constant
indices of the Gather/GatherND that picks neighbour features from z, knn and M the k of the
smallest-k and largest-k TopKs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ...errors import PluginSurgeryError
from ...ops.density_peaks import DensityPeaksSelection
from ..plugin_ops import DPC_SELECT
from .graph import (
    constant_of,
    module_node_names,
    outside_inputs,
    plugin_node,
    producer,
    swap,
)


def selection_node_names(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes exported from a DensityPeaksSelection forward (module metadata)."""
    return module_node_names(model, DensityPeaksSelection)


def _topk_k(node: gs.Node) -> int:
    k = constant_of(node.inputs[1])
    if k is None:
        raise PluginSurgeryError(f"{node.name}: the TopK's k is not constant")
    return int(np.asarray(k).reshape(-1)[0])


def _unsqueezed_constant(tensor: gs.Tensor) -> np.ndarray | None:
    """A constant, or Unsqueeze(constant, constant axes) as the exporter leaves it in larger
    graphs (the table stays one initializer instead of being folded into a second copy)."""
    value = constant_of(tensor)
    node = producer(tensor)
    if value is not None or node is None or node.op != "Unsqueeze":
        return value
    data = constant_of(node.inputs[0])
    axes = constant_of(node.inputs[1]) if len(node.inputs) > 1 else node.attrs.get("axes")
    if data is None or axes is None:
        return None
    rank = data.ndim + np.asarray(axes).size
    return np.expand_dims(data, tuple(int(a) % rank for a in np.asarray(axes).reshape(-1)))


def _neighbour_table(z: gs.Tensor, members: set[int], number: int) -> np.ndarray:
    """The [N, lambda] indices with which the group gathers neighbour features from z."""
    tables = []
    for node in z.outputs:
        if id(node) not in members:
            continue
        if node.op == "Gather" and int(node.attrs.get("axis", 0)) == 1 and node.inputs[0] is z:
            tables.append(constant_of(node.inputs[1]))
        elif node.op == "Transpose" and list(node.attrs.get("perm", [])) == [1, 0, 2]:
            for gather in node.outputs[0].outputs:
                if gather.op == "GatherND" and int(gather.attrs.get("batch_dims", 0)) == 0:
                    index = _unsqueezed_constant(gather.inputs[1])
                    if index is not None and index.ndim == 3 and index.shape[2] == 1:
                        tables.append(index[..., 0])
    tables = [t for t in tables if t is not None]
    if len(tables) != 1:
        raise PluginSurgeryError(
            f"selection group {number}: expected one constant gather of neighbour "
            f"features from z ({z.name}), found {len(tables)}"
        )
    return np.asarray(tables[0])


def _replace_selection(
    graph: gs.Graph, group: list[gs.Node], number: int, scope: set[int]
) -> gs.Node:
    members = {id(n) for n in group}
    inputs = outside_inputs(group, members)
    if len(inputs) != 1 or (inputs[0].shape is not None and len(inputs[0].shape) != 3):
        raise PluginSurgeryError(
            f"selection group {number}: expected one input z [B, N, C], "
            f"found {[(t.name, t.shape) for t in inputs]}"
        )
    z = inputs[0]

    sqrt = [n for n in group if n.op == "Sqrt"]
    muls = [c for n in sqrt for c in n.outputs[0].outputs if c.op == "Mul" and id(c) in members]
    if len(muls) != 1:
        raise PluginSurgeryError(f"selection group {number}: expected one Mul(Sqrt(.), weights)")
    weighted = muls[0]
    weights = [constant_of(t) for t in weighted.inputs if producer(t) is not sqrt[0]]
    if len(weights) != 1 or weights[0] is None or weights[0].ndim != 1:
        raise PluginSurgeryError(f"{weighted.name}: the rank weights are not a constant vector")
    weights = weights[0].astype(np.float32)

    table = _neighbour_table(z, members, number)
    N = z.shape[1] if z.shape is not None and isinstance(z.shape[1], int) else table.shape[0]
    if table.shape != (N, weights.shape[0]) or table.min() < 0 or table.max() >= N:
        raise PluginSurgeryError(
            f"selection group {number}: neighbour table {table.shape} does not fit "
            f"N = {N} tokens and lambda = {weights.shape[0]} weights"
        )

    smallest = [
        n
        for n in group
        if n.op == "TopK"
        and int(n.attrs.get("largest", 1)) == 0
        and n.inputs[0] is weighted.outputs[0]
    ]
    largest = [n for n in group if n.op == "TopK" and int(n.attrs.get("largest", 1)) == 1]
    if len(smallest) != 1 or not largest:
        raise PluginSurgeryError(
            f"selection group {number}: expected the density's smallest-k TopK "
            f"and the centers' largest-k TopK"
        )
    knn = _topk_k(smallest[0])
    clusters = {_topk_k(n) for n in largest}
    if len(clusters) != 1:
        raise PluginSurgeryError(
            f"selection group {number}: the largest-k TopKs disagree on M: {clusters}"
        )
    clusters = clusters.pop()

    outputs = [
        t
        for n in group
        for t in n.outputs
        if t in graph.outputs or any(id(c) not in members for c in t.outputs)
    ]
    roles = {}
    for t in outputs:
        if t.shape is None or len(t.shape) != 2 or t.shape[1] not in (N, clusters):
            raise PluginSurgeryError(
                f"selection output {t.name} has shape {t.shape}: expected "
                f"[B, {clusters}] (centers) or [B, {N}] (assignment)"
            )
        role = "assignment" if t.shape[1] == N else "centers"
        if role in roles:
            raise PluginSurgeryError(f"selection group {number}: two outputs look like the {role}")
        roles[role] = t
    if not roles:
        raise PluginSurgeryError(f"selection group {number}: no output is used")

    prefix = f"{DPC_SELECT.lower()}_{number}"
    plugin_outputs = []
    for role in ("centers", "assignment"):
        original = roles.get(role)
        batch = original.shape[0] if original is not None else z.shape[0]
        out = gs.Variable(
            f"{prefix}_{role}", dtype=np.int32, shape=[batch, clusters if role == "centers" else N]
        )
        plugin_outputs.append(out)
        if original is None:
            continue
        original.inputs.clear()  # detach the old producer; cleanup() drops the lowering
        if original.dtype in (np.int32, onnx.TensorProto.INT32):
            graph.nodes.append(
                gs.Node("Identity", f"{prefix}_{role}_identity", inputs=[out], outputs=[original])
            )
        else:  # TensorRT's plugin writes int32; the graph's consumers expect int64
            to = (
                onnx.helper.np_dtype_to_tensor_dtype(np.dtype(original.dtype))
                if not isinstance(original.dtype, int)
                else original.dtype
            )
            graph.nodes.append(
                gs.Node(
                    "Cast",
                    f"{prefix}_{role}_cast",
                    attrs={"to": int(to)},
                    inputs=[out],
                    outputs=[original],
                )
            )
    node = plugin_node(
        DPC_SELECT,
        number,
        {"clusters": clusters, "knn": knn},
        [
            z,
            gs.Constant(f"{prefix}_neighbours", table.astype(np.int32)),
            gs.Constant(f"{prefix}_weights", weights),
        ],
        plugin_outputs,
    )
    graph.nodes.append(node)
    return node


def use_dpc_select_plugin(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `model` with every AiluRus center selection as one DPCSelect node.

    Raises:
        PluginSurgeryError: no selection found, or one whose shape is not the expected lowering.
    """
    return swap(model, selection_node_names, DensityPeaksSelection, "ailurus", _replace_selection)
