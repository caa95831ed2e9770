"""What the plugin surgeries share: finding the nodes an exported module left (by the module
class the exporter's metadata lists), grouping them into calls, reading constants back, and
replacing a group by one plugin node in the plugin domain. Every step checks what it expects
and raises PluginSurgeryError naming what it did not find."""

from __future__ import annotations

import ast
from collections import deque

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ...errors import PluginSurgeryError
from ..plugin_ops import PLUGIN_DOMAIN, PLUGIN_VERSION


def class_path(cls: type) -> str:
    """The name under which the exporter's metadata lists a module class."""
    return f"{cls.__module__}.{cls.__qualname__}"


HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"


SCORE_SEARCH_DEPTH = 6  # nodes between the score MatMul and the TopK (Sub, Where, casts)


def metadata_list(node: onnx.NodeProto, key: str) -> list[str]:
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
        if path in (h := metadata_list(n, HIERARCHY_KEY)) and (skip is None or skip not in h)
    }


def call_groups(nodes: list[gs.Node]) -> list[list[gs.Node]]:
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


def call_groups_by_output(nodes: list[gs.Node], graph: gs.Graph) -> list[list[gs.Node]]:
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
                p for t in node.inputs if (p := producer(t)) is not None and id(p) in members
            )
        groups.append(group)
    return groups


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def constant_of(tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        return np.asarray(node.attrs["value"].values)
    return None


def downstream(tensors: list[gs.Tensor], limit: set[int]) -> set[int]:
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


def nodes_between(start: gs.Tensor, stop: set[int]) -> list[gs.Node]:
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


def shape_derived(t: gs.Tensor, depth: int = 0) -> bool:
    """Whether `t` is computed from tensor shapes only (a dynamic batch size and the arithmetic
    on it): such inputs size the lowering and are not data the plugin needs."""
    p = producer(t)
    if p is None or depth > SCORE_SEARCH_DEPTH:
        return False
    if p.op == "Shape":
        return True
    return all(constant_of(i) is not None or shape_derived(i, depth + 1) for i in p.inputs)


def outside_inputs(group: list[gs.Node], members: set[int]) -> list[gs.Tensor]:
    """The data tensors a group takes from outside itself: not constants, not shape arithmetic."""
    found = []
    for node in group:
        for t in node.inputs:
            p = producer(t)
            if (
                (p is None or id(p) not in members)
                and constant_of(t) is None
                and not shape_derived(t)
                and all(t is not o for o in found)
            ):
                found.append(t)
    return found


def plugin_node(op: str, number: int, attrs: dict, inputs, outputs) -> gs.Node:
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


def export_with_plugin_domain(graph: gs.Graph, model: onnx.ModelProto) -> onnx.ModelProto:
    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    result.ir_version = model.ir_version  # gs/onnx would write a newer IR than ONNX Runtime reads
    del result.opset_import[:]
    result.opset_import.extend([o for o in model.opset_import if o.domain != PLUGIN_DOMAIN])
    result.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return result


def replace_groups(
    model: onnx.ModelProto, names: set[str], replace, by_output: bool = False
) -> onnx.ModelProto:
    """A copy of `model` where each group of the `names` nodes (one per call of the module:
    connected components, or with `by_output` the nodes behind each output) is replaced by
    `replace(graph, group, number)`."""
    graph = gs.import_onnx(model)
    nodes = [n for n in graph.nodes if n.name in names]
    groups = call_groups_by_output(nodes, graph) if by_output else call_groups(nodes)
    scope = {id(n) for n in nodes}
    for number, group in enumerate(groups):
        replace(graph, group, number, scope)
    return export_with_plugin_domain(graph, model)


def swap(
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
    return replace_groups(model, names, replace, by_output)
