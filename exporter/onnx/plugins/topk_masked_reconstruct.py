"""The TopKMaskedReconstruct plugin's surgery (plugins/topk_masked_reconstruct/).

`use_topk_reconstruct_plugin` replaces each Expedite reconstruction by one TopKMaskedReconstruct
node (z, centers, values[, mask]) -> [B, N, D].

Op boundary: the reconstruction's weights are computed at clustering time (scores, TopK, exp,
normalisation) but applied where the per-cluster values exist (at the backbone output, or after
the decoder for Segmenter). The plugin takes the features z and the centers (both alive from
clustering time) plus the values, and computes weights and gather in one kernel; the weights
subgraph (TopK included) then has no consumer and cleanup() removes it.

How the subgraph is found:
1. the apply part's nodes list `TokenReconstruction` in their metadata
   `pkg.torch.onnx.class_hierarchy` (and not `ReconstructionWeights`, whose nodes several
   applications share); each output leaving them is one call, its group the nodes behind it
   (applications may share index arithmetic that the exporter merged);
2. of the group's inputs, the one produced by a TopK is the index; that TopK's input is the
   (masked) score matrix 2 z.c - |c|^2 (largest = nearest), the other non-constant input
   downstream of the TopK is the weights, and the remaining one is the values;
3. k, tau, the norm and the window mask are read back from the TopK, the Div before Exp, a
   ReduceL2 (l2 norm) and the Where in front of the TopK; z and centers are the operands of the
   score MatMul(z, Transpose(2 * centers)).
Every step checks what it expects and raises PluginSurgeryError naming what it did not find.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ...errors import PluginSurgeryError
from ...ops.reconstruction import ReconstructionWeights, TokenReconstruction
from ..plugin_ops import NORMS, TOPK_RECONSTRUCT
from .graph import (
    outside_inputs,
    SCORE_SEARCH_DEPTH,
    constant_of,
    downstream,
    module_node_names,
    nodes_between,
    plugin_node,
    producer,
    swap,
)


def reconstruction_node_names(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that apply a TokenReconstruction (its gather-and-sum). The weights
    (ReconstructionWeights) are left out: several applications share them (DPT's taps), and
    they would join the applications into one group."""
    return module_node_names(model, TokenReconstruction, exclude=ReconstructionWeights)


def _unscaled(tensor: gs.Tensor, factor: float) -> gs.Tensor | None:
    """x when `tensor` is Mul(x, factor) or Mul(factor, x), else None."""
    node = producer(tensor)
    if node is None or node.op != "Mul":
        return None
    for i in (0, 1):
        c = constant_of(node.inputs[i])
        if c is not None and c.size == 1 and float(c.reshape(-1)[0]) == factor:
            return node.inputs[1 - i]
    return None


def _score_operands(score: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor]:
    """(z, centers) of the MatMul(z, Transpose(2 * centers)) the score 2 z.c - |c|^2 is built from."""
    queue, seen = deque([(score, 0)]), set()
    while queue:
        tensor, depth = queue.popleft()
        node = producer(tensor)
        if node is None or id(node) in seen or depth > SCORE_SEARCH_DEPTH:
            continue
        seen.add(id(node))
        if node.op == "MatMul":
            transpose = producer(node.inputs[1])
            if (
                transpose is not None
                and transpose.op == "Transpose"
                and list(transpose.attrs.get("perm", [])) == [0, 2, 1]
            ):
                centers = _unscaled(transpose.inputs[0], 2.0)
                if centers is not None:
                    return node.inputs[0], centers
            continue
        queue.extend((t, depth + 1) for t in node.inputs)
    raise PluginSurgeryError(
        f"no MatMul(z, Transpose(2 * centers)) within {SCORE_SEARCH_DEPTH} "
        f"nodes before the reconstruction TopK (input {score.name})"
    )


def _replace_group(graph: gs.Graph, group: list[gs.Node], number: int, scope: set[int]) -> gs.Node:
    """`scope`: ids of every application's nodes (a group's output leaves them all)."""
    members = {id(n) for n in group}
    inputs = outside_inputs(group, members)
    topk_index = [t for t in inputs if producer(t) is not None and producer(t).op == "TopK"]
    if len(topk_index) != 1:
        raise PluginSurgeryError(
            f"reconstruction group {number}: expected one input from a TopK, "
            f"found {len(topk_index)}"
        )
    topk = producer(topk_index[0])
    if topk.outputs[1] is not topk_index[0] or int(topk.attrs.get("largest", 1)) != 1:
        raise PluginSurgeryError(f"{topk.name}: expected the indices of a largest-k TopK")
    after_topk = downstream(list(topk.outputs), members)
    values = [t for t in inputs if id(t) not in after_topk]
    if len(values) != 1:
        raise PluginSurgeryError(
            f"reconstruction group {number}: expected one values input, "
            f"found {[t.name for t in values]}"
        )
    values = values[0]
    outputs = [
        t
        for n in group
        for t in n.outputs
        if t in graph.outputs or any(id(c) not in scope for c in t.outputs)
    ]
    if len(outputs) != 1:
        raise PluginSurgeryError(
            f"reconstruction group {number}: expected one output, found {[t.name for t in outputs]}"
        )
    out = outputs[0]

    k = int(np.asarray(constant_of(topk.inputs[1])).reshape(-1)[0])
    weight_nodes = nodes_between(topk.outputs[0], members)
    exp_inputs = [producer(n.inputs[0]) for n in weight_nodes if n.op == "Exp"]
    if (
        len(exp_inputs) != 1
        or exp_inputs[0] is None
        or exp_inputs[0].op != "Div"
        or constant_of(exp_inputs[0].inputs[1]) is None
    ):
        raise PluginSurgeryError(f"{topk.name}: expected exp(Div(s - s_max, tau)) after the TopK")
    tau = float(np.asarray(constant_of(exp_inputs[0].inputs[1])).reshape(-1)[0])
    norm = (
        NORMS.index("l2") if any(n.op == "ReduceL2" for n in weight_nodes) else NORMS.index("sum")
    )

    score, mask = topk.inputs[0], None
    where = producer(score)
    if where is not None and where.op == "Where":
        mask = constant_of(where.inputs[0])
        if mask is None:
            raise PluginSurgeryError(
                f"{where.name}: the window mask before the TopK is not constant"
            )
        score = where.inputs[1]
    z, centers = _score_operands(score)

    for t, rank, what in (
        (z, 3, "z"),
        (centers, 3, "centers"),
        (values, 3, "values"),
        (out, 3, "output"),
    ):
        if t.shape is not None and len(t.shape) != rank:
            raise PluginSurgeryError(f"{what} ({t.name}) has shape {t.shape}, expected rank {rank}")

    inputs = [z, centers, values]
    if mask is not None:
        inputs.append(gs.Constant(f"{TOPK_RECONSTRUCT.lower()}_{number}_mask", mask.astype(bool)))
    out.inputs.clear()  # detach the old producer; cleanup() then drops the whole lowering
    node = plugin_node(
        TOPK_RECONSTRUCT,
        number,
        {"k": k, "tau": tau, "norm": norm, "has_mask": int(mask is not None)},
        inputs,
        [out],
    )
    graph.nodes.append(node)
    return node


def use_topk_reconstruct_plugin(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `model` with every Expedite reconstruction as one TopKMaskedReconstruct node.

    Raises:
        PluginSurgeryError: no reconstruction found, or one whose shape is not the expected lowering.
    """
    return swap(
        model,
        reconstruction_node_names,
        TokenReconstruction,
        "expedite",
        _replace_group,
        by_output=True,
    )
