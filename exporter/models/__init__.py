"""Model adapters and their registry: a name maps to a builder of a `DenseModel`.

A model family with built-in names is a subpackage here whose `__init__` declares `ENTRIES`
(`ModelEntry`s) without importing torch (the CLI's --help and `vitexport models` read them);
its model code is imported when a model is built. Any timm ViT or Swin name works too
(`entry_of`).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ModelSpec
from ..errors import InputError
from .entry import INPUT_NAME, EvalData, ModelEntry
from .hf import entry_for as hf_entry
from .hf import label_of

if TYPE_CHECKING:
    from .base import DenseModel

MODELS: dict[str, ModelEntry] = {}
# `vitexport models` and --model's help list the built-in names in this order of families,
# then any other family's
ORDER = ("segmenter", "digits", "dpt")


def method_defaults(model: str, method: str) -> dict:
    """The flags `model`'s entry tunes for `method` ({} for models without tuned defaults)."""
    entry = MODELS.get(model)
    return dict(entry.method_defaults.get(method, {})) if entry else {}


def register(entry: ModelEntry) -> None:
    MODELS[entry.name] = entry


def _discover() -> None:
    order = {n: i for i, n in enumerate(ORDER)}
    found = [m.name for m in pkgutil.iter_modules(__path__) if m.ispkg]
    for name in sorted(found, key=lambda n: (order.get(n, len(order)), n)):
        for entry in getattr(importlib.import_module(f"{__name__}.{name}"), "ENTRIES", ()):
            register(entry)


_discover()

# The model the CLI builds when no --model is given
DEFAULT_MODEL = ModelSpec().name


def model_names_help() -> str:
    """The built-in names as --model's help lists them: one group per prefix, the default
    model first, e.g. "segmenter_digits|tiny|small|base|large, dpt_base|large|hybrid"."""
    groups: dict[str, list[str]] = {}
    for name in sorted(MODELS, key=lambda n: n != DEFAULT_MODEL):
        prefix, _, rest = name.partition("_")
        groups.setdefault(prefix, []).append(rest)
    return ", ".join(f"{p}_{'|'.join(rest)}" for p, rest in groups.items())


def _is_timm_vit(name: str) -> bool:
    import timm  # deferred: a long import that only an unknown name needs

    return name in timm.list_models("vit_*") or name in timm.list_models("deit*")


def weights_of(spec: ModelSpec) -> str:
    """What a build of `spec` loads: the --checkpoint, the model's shipped weights, or "random"."""
    if spec.checkpoint:
        return spec.checkpoint
    entry = MODELS.get(spec.name) or hf_entry(spec.name)
    if entry is not None and entry.weights_text is not None:
        return entry.weights_text
    if entry is not None and entry.default_weights is not None:
        # the file name, not this install's path: reports and docs read the same everywhere
        return f"{Path(entry.default_weights()).name} (shipped)"
    return "random"


def entry_of(name: str) -> ModelEntry:
    """The entry of a built-in model, or of a timm ViT or Swin name."""
    from .swin import convert_state as swin_convert_state
    from .swin import create_swin, is_timm_swin
    from .vit import create_timm_vit

    entry = MODELS.get(name)
    if entry is None:
        entry = hf_entry(name)  # a transformers model folder
    if entry is None and is_timm_swin(name):
        entry = ModelEntry(
            name,
            lambda s: create_swin(s.name, s.img_size),
            "timm Swin",
            weights_root="swin",
            convert_state=swin_convert_state,
        )
    if entry is None and not _is_timm_vit(name):
        allowed = (
            ", ".join(MODELS) + ", a timm ViT name (vit_*, deit*), a timm Swin name (swin_*) "
            "or hf:FOLDER (a transformers model folder)"
        )
        raise InputError("--model", name, allowed, "unknown model")
    if entry is None:
        entry = ModelEntry(
            name,
            lambda s: create_timm_vit(s.name, s.img_size),
            "timm ViT",
            pos_embed_key="pos_embed",
            weights_root="vit",
        )
    return entry


def create_model(spec: ModelSpec, seed: int = 0) -> DenseModel:
    """Build the model named by `spec` (random weights seeded by `seed`, or the checkpoint)."""
    import torch

    from .checkpoint import load_into

    entry = entry_of(spec.name)
    if spec.num_classes is not None and not entry.takes_classes:
        with torch.device("meta"):  # shapes only: how many classes its head has
            fixed = getattr(
                entry.build(ModelSpec(spec.name, None, spec.img_size)), "num_classes", None
            )
        raise InputError(
            "--num-classes",
            spec.num_classes,
            f"only with {', '.join(n for n, e in MODELS.items() if e.takes_classes)} "
            "or hf:FOLDER of a ViT or DINOv2 backbone",
            f"{spec.name} has {fixed} fixed classes" if fixed else f"{spec.name} has no classes",
        )
    if spec.num_classes is not None and spec.num_classes <= 0:
        raise InputError("--num-classes", spec.num_classes, "a positive integer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.build(spec)
    checkpoint = spec.checkpoint or (entry.default_weights() if entry.default_weights else None)
    # a model built on the meta device (shapes only: GFLOPs, memory estimates) takes no weights
    if checkpoint and next(model.parameters()).device.type != "meta":
        target = model.get_submodule(entry.weights_root) if entry.weights_root else model
        load_into(target, checkpoint, model.layout, entry.pos_embed_key, entry.convert_state)
    return model.eval()


def __getattr__(name: str):
    # the torch-side interface names, imported when first used
    if name in ("DenseModel", "TokenLayout", "WindowStage"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL",
    "DenseModel",
    "EvalData",
    "INPUT_NAME",
    "TokenLayout",
    "WindowStage",
    "MODELS",
    "create_model",
    "entry_of",
    "label_of",
    "ModelEntry",
    "register",
    "weights_of",
]
