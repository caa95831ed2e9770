"""Checks an ONNX graph against the export rules (docs/export-rules.md) and TensorRT's parser.

A finding names the op and the PyTorch module it came from (from the exporter's name scopes).
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from ..ops.density_peaks import TOPK_LIMIT
from .plugins import plugin_names

FORBIDDEN = {
    "NonZero": "data-dependent output shape",
    "Unique": "data-dependent output shape",
    "Loop": "control flow",
    "If": "control flow",
    "Scan": "control flow",
    "RandomNormal": "random op",
    "RandomNormalLike": "random op",
    "RandomUniform": "random op",
    "RandomUniformLike": "random op",
    "Multinomial": "random op",
    "Bernoulli": "random op",
}
SEQUENCE_PREFIXES = ("Sequence", "SplitToSequence", "ConcatFromSequence")
STANDARD_DOMAINS = ("", "ai.onnx")
PLUGIN_ATTRIBUTE_TYPES = (
    onnx.AttributeProto.INT,
    onnx.AttributeProto.FLOAT,
    onnx.AttributeProto.STRING,
)


@dataclass
class Finding:
    severity: str  # "error" or "warning"
    op: str
    node: str
    module: str
    message: str

    def __str__(self) -> str:
        return f"{self.op} in module '{self.module}' (node {self.node}): {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def module_of(node: onnx.NodeProto) -> str:
    """The PyTorch module path a node was traced from, or '?' when unknown."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            scopes = [s for s in scopes[:-1] if s]  # the last entry is the op itself
            return scopes[-1] if scopes else "<top>"
    return "?"


def _constants(graph: onnx.GraphProto) -> dict:
    # Weights moved to external data (models past 2 GB) are not read: the rules look at small
    # index constants (TopK's K, shapes), which stay inside the proto.
    values = {
        t.name: numpy_helper.to_array(t) for t in graph.initializer if not uses_external_data(t)
    }
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


# Domains an artifact made for one runtime may use: the optimised ONNX Runtime graph
# (`--optimize`) holds that runtime's own fused ops; it is not meant for TensorRT.
RUNTIME_DOMAINS = {"onnx_optimized": ("com.microsoft",)}


def lint(
    proto: onnx.ModelProto, plugins: tuple[str, ...] = (), domains: tuple[str, ...] = ()
) -> list[Finding]:
    """Return every rule violation found in `proto` (empty when it is clean).

    `plugins`: op types of the TensorRT plugins this graph may hold (custom-domain nodes of
    other types are errors: the parser would find no plugin for them). `domains`: further op
    domains the graph may use (a runtime's own ops); the other rules still apply to them.
    """
    findings = []
    consts = _constants(proto.graph)

    def add(severity, node, message):
        findings.append(Finding(severity, node.op_type, node.name, module_of(node), message))

    for node in proto.graph.node:
        op = node.op_type
        if node.domain not in STANDARD_DOMAINS and node.domain not in domains:
            if op not in plugins:
                add("error", node, f"custom op in domain '{node.domain}' with no vitexport plugin")
            for attr in node.attribute:
                if attr.type not in PLUGIN_ATTRIBUTE_TYPES:
                    add(
                        "error",
                        node,
                        f"plugin attribute '{attr.name}' of type "
                        f"{onnx.AttributeProto.AttributeType.Name(attr.type)}: the TensorRT "
                        "parser turns only scalar INT/FLOAT and STRING into plugin fields",
                    )
            if onnx.defs.has(op):
                add(
                    "error",
                    node,
                    "plugin name equals a standard ONNX op: the parser looks "
                    "plugins up by op_type alone",
                )
            continue
        if op in FORBIDDEN:
            add("error", node, f"forbidden op ({FORBIDDEN[op]})")
        elif op.startswith(SEQUENCE_PREFIXES):
            add("error", node, "forbidden op (sequence type)")
        elif op in ("ScatterND", "ScatterElements"):
            reduction = next(
                (a.s.decode() for a in node.attribute if a.name == "reduction"), "none"
            )
            if reduction != "none":
                add("error", node, f"scatter with reduction '{reduction}'")
        elif op == "TopK" and len(node.input) > 1:
            if any(a.name == "sorted" and a.i == 0 for a in node.attribute):
                add("error", node, "TopK with sorted=0 (TensorRT returns sorted results only)")
            k = consts.get(node.input[1])
            if k is None:
                add("error", node, "TopK with a K that is not a constant")
            elif int(k.reshape(-1)[0]) > TOPK_LIMIT:
                add(
                    "error", node, f"TopK K={int(k.reshape(-1)[0])} exceeds TensorRT's {TOPK_LIMIT}"
                )
    return findings


def errors_of(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def lint_folder(folder, graphs) -> dict[str, list[Finding]]:
    """Findings for ONNX artifacts `graphs` (record.Artifact: file, plugins) of an output
    folder, keyed by file name; plugin nodes are allowed in graphs that hold them."""
    out = {}
    for art in graphs:
        proto = onnx.load(str(Path(folder) / art.file), load_external_data=False)
        plugins = plugin_names() if art.plugins else ()
        out[art.file] = lint(proto, plugins, RUNTIME_DOMAINS.get(art.kind, ()))
    return out
