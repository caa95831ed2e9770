"""Model adapters and their registry: a name maps to a builder of a `DenseModel`."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from ..config import ModelSpec
from ..errors import InputError
from . import digits
from .base import INPUT_NAME, DenseModel, TokenLayout, WindowStage
from .checkpoint import load_into
from .dpt import CONFIGS as DPT_CONFIGS
from .dpt import create_dpt
from .entry import EvalData, ModelEntry
from .segmenter import DEFAULT_CLASSES, DEFAULT_IMG_SIZE, SIZES, create_segmenter
from .swin import convert_state as swin_convert_state
from .swin import create_swin, is_timm_swin
from .vit import create_timm_vit


MODELS: dict[str, ModelEntry] = {}


def method_defaults(model: str, method: str) -> dict:
    """The flags `model`'s entry tunes for `method` ({} for models without tuned defaults)."""
    entry = MODELS.get(model)
    return dict(entry.method_defaults.get(method, {})) if entry else {}


def register(entry: ModelEntry) -> None:
    MODELS[entry.name] = entry


for _size, (_dim, _depth, _heads) in SIZES.items():
    register(
        ModelEntry(
            f"segmenter_{_size}",
            lambda spec, s=_size: create_segmenter(s, spec.img_size, spec.num_classes),
            f"Segmenter ViT-{_size[0].upper()}/16 ({_depth} blocks, dim {_dim}) + mask transformer",
            pos_embed_key="encoder.pos_embed",
            takes_classes=True,
            input_size=DEFAULT_IMG_SIZE,
            num_classes=DEFAULT_CLASSES,
        )
    )


register(digits.ENTRY)

_DPT_BACKBONES = {"base": "ViT-B/16", "large": "ViT-L/16", "hybrid": "ResNet-50 stem + ViT-B/16"}
for _size, _cfg in DPT_CONFIGS.items():
    # The position embedding keeps the checkpoint's 24x24 grid and is resized in the forward,
    # so no resize at load time.
    register(
        ModelEntry(
            f"dpt_{_size}",
            lambda spec, s=_size: create_dpt(s, spec.img_size),
            f"DPT {_DPT_BACKBONES[_size]} (taps {list(_cfg.taps)}) + reassemble/fusion depth head",
        )
    )


def _is_timm_vit(name: str) -> bool:
    return name in timm.list_models("vit_*") or name in timm.list_models("deit*")


def weights_of(spec: ModelSpec) -> str:
    """What a build of `spec` loads: the --checkpoint, the model's shipped weights, or "random"."""
    entry = MODELS.get(spec.name)
    if spec.checkpoint:
        return spec.checkpoint
    if entry is not None and entry.default_weights is not None:
        # the file name, not this install's path: reports and docs read the same everywhere
        return f"{Path(entry.default_weights()).name} (shipped)"
    return "random"


def entry_of(name: str) -> ModelEntry:
    """The entry of a built-in model, or of a timm ViT or Swin name."""
    entry = MODELS.get(name)
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
            ", ".join(MODELS) + ", a timm ViT name (vit_*, deit*) or a timm Swin name (swin_*)"
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
    entry = entry_of(spec.name)
    if spec.num_classes is not None and not entry.takes_classes:
        with torch.device("meta"):  # shapes only: how many classes its head has
            fixed = getattr(
                entry.build(ModelSpec(spec.name, None, spec.img_size)), "num_classes", None
            )
        raise InputError(
            "--num-classes",
            spec.num_classes,
            "only with segmenter_tiny/small/base/large",
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


__all__ = [
    "DenseModel",
    "EvalData",
    "INPUT_NAME",
    "TokenLayout",
    "WindowStage",
    "MODELS",
    "create_model",
    "entry_of",
    "ModelEntry",
    "register",
    "weights_of",
]
