"""Checks an ONNX graph against the export rules (DESIGN.md section 5) and TensorRT's parser.

A finding names the op and the PyTorch module it came from (from the exporter's name scopes).
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass

import onnx
from onnx import numpy_helper

TOPK_LIMIT = 3840
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
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def lint(proto: onnx.ModelProto, allow_custom: bool = False) -> list[Finding]:
    """Return every rule violation found in `proto` (empty when it is clean)."""
    findings = []
    consts = _constants(proto.graph)

    def add(severity, node, message):
        findings.append(Finding(severity, node.op_type, node.name, module_of(node), message))

    for node in proto.graph.node:
        op = node.op_type
        if node.domain not in STANDARD_DOMAINS and not allow_custom:
            add("error", node, f"custom domain '{node.domain}' in a portable graph")
        if op in FORBIDDEN:
            add("error", node, f"forbidden op ({FORBIDDEN[op]})")
        elif op.startswith(SEQUENCE_PREFIXES):
            add("error", node, "forbidden op (sequence type)")
        elif op in ("ScatterND", "ScatterElements"):
            reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
            if reduction != "none":
                add("error", node, f"scatter with reduction '{reduction}'")
        elif op == "TopK" and len(node.input) > 1:
            k = consts.get(node.input[1])
            if k is None:
                add("error", node, "TopK with a K that is not a constant")
            elif int(k.reshape(-1)[0]) > TOPK_LIMIT:
                add("error", node, f"TopK K={int(k.reshape(-1)[0])} exceeds TensorRT's {TOPK_LIMIT}")
    return findings


def errors_of(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
