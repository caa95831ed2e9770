"""Plugin-node surgery: swap the portable lowering of a custom op for one TensorRT plugin node.

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

`use_dpc_select_plugin` replaces each AiluRus selection (`DensityPeaksSelection`: scores, the
two TopKs, ranking and assignment) by one DPCSelect node (z, neighbours, weights) ->
(centers [B, M], assignment [B, N]), both int32; a Cast restores the graph's int64 for the
consumers. The group is found by module metadata as above; its only non-constant input is z,
the rank weights are the constant of the Mul after the Sqrt, the neighbour table the constant
indices of the Gather/GatherND that picks neighbour features from z, knn and M the k of the
smallest-k and largest-k TopKs.

`use_plugins` applies every surgery whose subgraph is in the graph.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import InputError, PluginSurgeryError  # noqa: F401  (raised here, imported from here)
from ..methods import METHODS
from ..models.capabilities import TOKEN_GRID
from ..ops.density_peaks import DensityPeaksSelection
from ..ops.reconstruction import ReconstructionWeights, TokenReconstruction
from .plugin_ops import (
    DPC_SELECT,
    NORMS,
    PLUGIN_DOMAIN,
    PLUGIN_VERSION,
    TOPK_RECONSTRUCT,
    dpc_select,
    topk_masked_reconstruct,
)


def class_path(cls: type) -> str:
    """The name under which the exporter's metadata lists a module class."""
    return f"{cls.__module__}.{cls.__qualname__}"


RECONSTRUCTION_CLASS = class_path(TokenReconstruction)
WEIGHTS_CLASS = class_path(ReconstructionWeights)
SELECTION_CLASS = class_path(DensityPeaksSelection)
HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"
SCORE_SEARCH_DEPTH = 6  # nodes between the score MatMul and the TopK (Sub, Where, casts)


def _metadata(node: onnx.NodeProto, key: str) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == key:
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else []
    return []


def module_node_names(model: onnx.ModelProto, cls: type, exclude: type | None = None) -> set[str]:
    """Names of the nodes exported from a forward of module class `cls` (module metadata),
    without those of its submodule class `exclude`."""
    path, skip = class_path(cls), class_path(exclude) if exclude else None
    return {
        n.name
        for n in model.graph.node
        if path in (h := _metadata(n, HIERARCHY_KEY)) and (skip is None or skip not in h)
    }


def reconstruction_node_names(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that apply a TokenReconstruction (its gather-and-sum). The weights
    (ReconstructionWeights) are left out: several applications share them (DPT's taps), and
    they would join the applications into one group."""
    return module_node_names(model, TokenReconstruction, exclude=ReconstructionWeights)


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


def _groups_by_output(nodes: list[gs.Node], graph: gs.Graph) -> list[list[gs.Node]]:
    """One group per tensor that leaves `nodes` (one per application of the module): the
    nodes it depends on. Applications may share nodes (the exporter merges their common
    index arithmetic), so groups may overlap."""
    members = {id(n) for n in nodes}
    leaving = [
        t
        for n in nodes
        for t in n.outputs
        if t in graph.outputs or any(id(c) not in members for c in t.outputs)
    ]
    groups = []
    for out in leaving:
        group, seen, queue = [], set(), deque([out.inputs[0]])
        while queue:
            node = queue.popleft()
            if id(node) in seen:
                continue
            seen.add(id(node))
            group.append(node)
            queue.extend(
                p for t in node.inputs if (p := _producer(t)) is not None and id(p) in members
            )
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


def _unscaled(tensor: gs.Tensor, factor: float) -> gs.Tensor | None:
    """x when `tensor` is Mul(x, factor) or Mul(factor, x), else None."""
    node = _producer(tensor)
    if node is None or node.op != "Mul":
        return None
    for i in (0, 1):
        c = _constant(node.inputs[i])
        if c is not None and c.size == 1 and float(c.reshape(-1)[0]) == factor:
            return node.inputs[1 - i]
    return None


def _score_operands(score: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor]:
    """(z, centers) of the MatMul(z, Transpose(2 * centers)) the score 2 z.c - |c|^2 is built from."""
    queue, seen = deque([(score, 0)]), set()
    while queue:
        tensor, depth = queue.popleft()
        node = _producer(tensor)
        if node is None or id(node) in seen or depth > SCORE_SEARCH_DEPTH:
            continue
        seen.add(id(node))
        if node.op == "MatMul":
            transpose = _producer(node.inputs[1])
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


def _shape_derived(t: gs.Tensor, depth: int = 0) -> bool:
    """Whether `t` is computed from tensor shapes only (a dynamic batch size and the arithmetic
    on it): such inputs size the lowering and are not data the plugin needs."""
    p = _producer(t)
    if p is None or depth > SCORE_SEARCH_DEPTH:
        return False
    if p.op == "Shape":
        return True
    return all(_constant(i) is not None or _shape_derived(i, depth + 1) for i in p.inputs)


def _outside_inputs(group: list[gs.Node], members: set[int]) -> list[gs.Tensor]:
    """The data tensors a group takes from outside itself: not constants, not shape arithmetic."""
    found = []
    for node in group:
        for t in node.inputs:
            p = _producer(t)
            if (
                (p is None or id(p) not in members)
                and _constant(t) is None
                and not _shape_derived(t)
                and all(t is not o for o in found)
            ):
                found.append(t)
    return found


def _replace_group(graph: gs.Graph, group: list[gs.Node], number: int, scope: set[int]) -> gs.Node:
    """`scope`: ids of every application's nodes (a group's output leaves them all)."""
    members = {id(n) for n in group}
    outside_inputs = _outside_inputs(group, members)
    topk_index = [
        t for t in outside_inputs if _producer(t) is not None and _producer(t).op == "TopK"
    ]
    if len(topk_index) != 1:
        raise PluginSurgeryError(
            f"reconstruction group {number}: expected one input from a TopK, "
            f"found {len(topk_index)}"
        )
    topk = _producer(topk_index[0])
    if topk.outputs[1] is not topk_index[0] or int(topk.attrs.get("largest", 1)) != 1:
        raise PluginSurgeryError(f"{topk.name}: expected the indices of a largest-k TopK")
    after_topk = _downstream(list(topk.outputs), members)
    values = [t for t in outside_inputs if id(t) not in after_topk]
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

    k = int(np.asarray(_constant(topk.inputs[1])).reshape(-1)[0])
    weight_nodes = _nodes_between(topk.outputs[0], members)
    exp_inputs = [_producer(n.inputs[0]) for n in weight_nodes if n.op == "Exp"]
    if (
        len(exp_inputs) != 1
        or exp_inputs[0] is None
        or exp_inputs[0].op != "Div"
        or _constant(exp_inputs[0].inputs[1]) is None
    ):
        raise PluginSurgeryError(f"{topk.name}: expected exp(Div(s - s_max, tau)) after the TopK")
    tau = float(np.asarray(_constant(exp_inputs[0].inputs[1])).reshape(-1)[0])
    norm = (
        NORMS.index("l2") if any(n.op == "ReduceL2" for n in weight_nodes) else NORMS.index("sum")
    )

    score, mask = topk.inputs[0], None
    where = _producer(score)
    if where is not None and where.op == "Where":
        mask = _constant(where.inputs[0])
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
    node = _plugin_node(
        TOPK_RECONSTRUCT,
        number,
        {"k": k, "tau": tau, "norm": norm, "has_mask": int(mask is not None)},
        inputs,
        [out],
    )
    graph.nodes.append(node)
    return node


def _plugin_node(op: str, number: int, attrs: dict, inputs, outputs) -> gs.Node:
    """Plugin node `number` of type `op`, with the version/namespace attributes TensorRT reads."""
    attrs = {**attrs, "plugin_version": PLUGIN_VERSION, "plugin_namespace": ""}
    return gs.Node(
        op=op,
        name=f"{op}_{number}",
        domain=PLUGIN_DOMAIN,
        attrs=attrs,
        inputs=inputs,
        outputs=outputs,
    )


def _export_with_plugin_domain(graph: gs.Graph, model: onnx.ModelProto) -> onnx.ModelProto:
    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    result.ir_version = model.ir_version  # gs/onnx would write a newer IR than ONNX Runtime reads
    del result.opset_import[:]
    result.opset_import.extend([o for o in model.opset_import if o.domain != PLUGIN_DOMAIN])
    result.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return result


def _replace_groups(
    model: onnx.ModelProto, names: set[str], replace, by_output: bool = False
) -> onnx.ModelProto:
    """A copy of `model` where each group of the `names` nodes (one per call of the module:
    connected components, or with `by_output` the nodes behind each output) is replaced by
    `replace(graph, group, number)`."""
    graph = gs.import_onnx(model)
    nodes = [n for n in graph.nodes if n.name in names]
    groups = _groups_by_output(nodes, graph) if by_output else _groups(nodes)
    scope = {id(n) for n in nodes}
    for number, group in enumerate(groups):
        replace(graph, group, number, scope)
    return _export_with_plugin_domain(graph, model)


def _swap(
    model: onnx.ModelProto, find, cls: type, method: str, replace, by_output: bool = False
) -> onnx.ModelProto:
    """`model` with every group of the nodes `find` names (those of module class `cls`)
    replaced by `replace` (one plugin node each)."""
    names = find(model)
    if not names:
        raise PluginSurgeryError(
            f"no node of {class_path(cls)} in the graph (was it exported "
            f"with --method {method}, and the metadata kept?)"
        )
    return _replace_groups(model, names, replace, by_output)


def use_topk_reconstruct_plugin(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `model` with every Expedite reconstruction as one TopKMaskedReconstruct node.

    Raises:
        PluginSurgeryError: no reconstruction found, or one whose shape is not the expected lowering.
    """
    return _swap(
        model,
        reconstruction_node_names,
        TokenReconstruction,
        "expedite",
        _replace_group,
        by_output=True,
    )


# ---- DPCSelect -------------------------------------------------------------------------------------


def selection_node_names(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes exported from a DensityPeaksSelection forward (module metadata)."""
    return module_node_names(model, DensityPeaksSelection)


def _topk_k(node: gs.Node) -> int:
    k = _constant(node.inputs[1])
    if k is None:
        raise PluginSurgeryError(f"{node.name}: the TopK's k is not constant")
    return int(np.asarray(k).reshape(-1)[0])


def _unsqueezed_constant(tensor: gs.Tensor) -> np.ndarray | None:
    """A constant, or Unsqueeze(constant, constant axes) as the exporter leaves it in larger
    graphs (the table stays one initializer instead of being folded into a second copy)."""
    value = _constant(tensor)
    node = _producer(tensor)
    if value is not None or node is None or node.op != "Unsqueeze":
        return value
    data = _constant(node.inputs[0])
    axes = _constant(node.inputs[1]) if len(node.inputs) > 1 else node.attrs.get("axes")
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
            tables.append(_constant(node.inputs[1]))
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
    inputs = _outside_inputs(group, members)
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
    weights = [_constant(t) for t in weighted.inputs if _producer(t) is not sqrt[0]]
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
    node = _plugin_node(
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
    return _swap(model, selection_node_names, DensityPeaksSelection, "ailurus", _replace_selection)


@dataclass(frozen=True)
class Plugin:
    """Everything the Python side knows of one TensorRT plugin."""

    name: str  # op_type of the node (and the plugin creator's name)
    attributes: tuple[str, ...]  # node attributes besides plugin_version/plugin_namespace
    cpu: Callable  # its CPU implementation (plugin_ops), run by ONNX Runtime or the evaluator
    module: type  # the PyTorch module whose exported subgraph the node replaces
    find: Callable[[onnx.ModelProto], set[str]]  # names of that subgraph's nodes
    surgery: Callable[[onnx.ModelProto], onnx.ModelProto]  # the graph with the node in its place
    hidden: tuple[str, ...] = ()  # decisions (ops.decisions names) made inside the node
    # the model capability whose lowering the surgery knows (Swin's windowed reconstruction
    # works on rank-6 window tensors, not the plugin's [B, N, C])
    needs: str = TOKEN_GRID

    @property
    def methods(self) -> tuple[str, ...]:
        """The --method values whose graphs hold the module (their `MethodSpec.plugin`)."""
        return tuple(name for name, spec in METHODS.items() if spec.plugin == self.name)


# In the order they are applied.
PLUGINS = (
    Plugin(
        TOPK_RECONSTRUCT,
        ("k", "tau", "norm", "has_mask"),
        topk_masked_reconstruct,
        TokenReconstruction,
        reconstruction_node_names,
        use_topk_reconstruct_plugin,
        ReconstructionWeights.decision_names,
    ),
    Plugin(
        DPC_SELECT,
        ("clusters", "knn"),
        dpc_select,
        DensityPeaksSelection,
        selection_node_names,
        use_dpc_select_plugin,
    ),
)
PLUGIN_SURGERIES = tuple((p.find, p.surgery) for p in PLUGINS)


def plugin_names() -> tuple[str, ...]:
    """op_types a plugin graph may hold (the lint's allowed custom ops)."""
    return tuple(p.name for p in PLUGINS)


def hidden_decisions(model: onnx.ModelProto) -> set[str]:
    """Decisions that the plugin nodes of `model` make inside themselves (not observable)."""
    ops = {n.op_type for n in model.graph.node if n.domain == PLUGIN_DOMAIN}
    return {d for p in PLUGINS if p.name in ops for d in p.hidden}


def plugin_methods() -> tuple[str, ...]:
    """The methods whose graphs have a subgraph that a plugin replaces (`--plugins`)."""
    return tuple(m for p in PLUGINS for m in p.methods)


PLUGIN_METHODS = plugin_methods()


def check_family(method: str, capabilities) -> None:
    """Refuse `--plugins` for a model whose capabilities `method`'s plugin does not cover."""
    for plugin in PLUGINS:
        if method in plugin.methods and plugin.needs not in capabilities:
            raise InputError(
                "--plugins",
                "",
                f"models with {plugin.needs}",
                f"the {plugin.name} plugin has no form for models with "
                f"{', '.join(sorted(capabilities))} (build without --plugins)",
            )


def use_plugins(model: onnx.ModelProto, method: str | None = None) -> onnx.ModelProto:
    """Apply every plugin surgery whose subgraph is in `model`.

    Raises:
        PluginSurgeryError: none of the plugins' subgraphs is in the graph (`method` is named).
    """
    applied = False
    for plugin in PLUGINS:
        if plugin.find(model):
            model = plugin.surgery(model)
            applied = True
    if not applied:
        raise PluginSurgeryError(
            f"no subgraph that a TensorRT plugin replaces in the graph"
            f"{f' of --method {method}' if method else ''}"
        )
    return model
