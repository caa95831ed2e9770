"""EoMT (Kerssies et al., CVPR 2025), the Encoder-only Mask Transformer: a plain ViT (DINOv2
style: register tokens, layer scale) whose learned queries join the tokens before its last
`num_blocks` blocks; a class head reads the queries and a mask head the dot products of the
queries with the upscaled patch tokens. The output here is EoMT's semantic inference: per-pixel
class scores at the input size (softmax over the classes without "no object", sigmoid masks,
summed over the queries).

The methods see the blocks before the queries join (`blocks`); the query blocks are part of
the head. Where a method rebuilds the full token grid (`--restore`) chooses the setting:
`backbone` (the default) rebuilds it before the queries join, so the query blocks and the mask
head see every patch token; `output` lets the queries join the reduced tokens and rebuilds the
grid after the last block, before the mask head's upscaling (docs/methods.md, "EoMT").

`eomt_large` is the paper's EoMT-L at 640 (random weights unless --checkpoint names a Hugging
Face EoMT folder's model.safetensors of that shape); any Hugging Face EoMT folder loads
through `from_hf`. No torch here: the CLI's --help reads the entries.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from ..entry import ModelEntry


class EoMTConfig(NamedTuple):
    """The shape of an EoMT: its ViT, its queries and its head."""

    dim: int
    depth: int  # all blocks, the query blocks included
    heads: int
    num_blocks: int  # the last blocks, which the queries join
    num_queries: int
    num_registers: int
    patch: int = 16
    mlp_ratio: float = 4.0
    upscale_blocks: int = 2  # each doubles the patch grid before the mask head
    layerscale: float = 1.0  # initial layer-scale value of random weights
    eps: float = 1e-6
    swiglu: bool = False


# EoMT-L: ViT-L/16 (DINOv2) with 4 registers, queries over the last 4 of its 24 blocks, 200
# queries; trained at 640x640 on COCO (133 panoptic classes)
CONFIGS = {"large": EoMTConfig(1024, 24, 16, 4, 200, 4)}
DEFAULT_IMG_SIZE = (640, 640)
DEFAULT_CLASSES = 133
# the field the errors of a Hugging Face folder name (the CLI's --model hf:DIR)
FLAG = "--model"


ENTRIES = tuple(
    ModelEntry(
        f"eomt_{size}",
        lambda spec, s=size: create_eomt(s, spec.img_size, spec.num_classes),
        f"EoMT ViT-{size[0].upper()}/16, {cfg.num_registers} registers, {cfg.num_queries} "
        f"queries over the last {cfg.num_blocks} of {cfg.depth} blocks; semantic scores",
        takes_classes=True,
        input_size=DEFAULT_IMG_SIZE,
        num_classes=DEFAULT_CLASSES,
        convert_state=lambda state, module: convert_state(state, module),
    )
    for size, cfg in CONFIGS.items()
)


def create_eomt(*args, **kwargs):
    """model.create_eomt, imported on first use (torch)."""
    from .model import create_eomt

    return create_eomt(*args, **kwargs)


def convert_state(*args, **kwargs):
    """model.convert_state, imported on first use (torch)."""
    from .model import convert_state

    return convert_state(*args, **kwargs)


def from_hf(*args, **kwargs):
    """model.from_hf, imported on first use (torch)."""
    from .model import from_hf

    return from_hf(*args, **kwargs)


def __getattr__(name: str):
    # the model code (torch) behind this declaration, imported when one of its names is used
    return getattr(importlib.import_module(".model", __name__), name)
