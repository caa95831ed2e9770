"""The TensorRT plugins on the Python side: one module per plugin, mirroring plugins/<name>/,
holds its surgery (swap the portable lowering of the op for one plugin node); this registry
says, for each, its node's attributes, its CPU implementation (onnx/plugin_ops.py), the module
whose subgraph it replaces and the decisions made inside it. `use_plugins` applies every
surgery whose subgraph is in the graph. A method names its plugin in its `MethodSpec.plugin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx

from ...errors import InputError, PluginSurgeryError
from ...methods import METHODS
from ...models.capabilities import TOKEN_GRID
from ...ops.density_peaks import DensityPeaksSelection
from ...ops.reconstruction import ReconstructionWeights, TokenReconstruction

# the CPU implementations by their module: the names dpc_select and topk_masked_reconstruct
# here are this package's submodules
from .. import plugin_ops
from ..plugin_ops import DPC_SELECT, PLUGIN_DOMAIN, TOPK_RECONSTRUCT
from .dpc_select import selection_node_names, use_dpc_select_plugin
from .topk_masked_reconstruct import reconstruction_node_names, use_topk_reconstruct_plugin


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
        plugin_ops.topk_masked_reconstruct,
        TokenReconstruction,
        reconstruction_node_names,
        use_topk_reconstruct_plugin,
        ReconstructionWeights.decision_names,
    ),
    Plugin(
        DPC_SELECT,
        ("clusters", "knn"),
        plugin_ops.dpc_select,
        DensityPeaksSelection,
        selection_node_names,
        use_dpc_select_plugin,
    ),
)


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


__all__ = [
    "PLUGINS",
    "PLUGIN_METHODS",
    "Plugin",
    "PluginSurgeryError",
    "check_family",
    "hidden_decisions",
    "plugin_methods",
    "plugin_names",
    "reconstruction_node_names",
    "selection_node_names",
    "use_dpc_select_plugin",
    "use_plugins",
    "use_topk_reconstruct_plugin",
]
