"""Segmenter (Strudel et al., 2021): ViT encoder + mask-transformer decoder.

State-dict keys follow the official release (`encoder.*`, `decoder.*`), so its checkpoints
load as they are. The encoder is timm's VisionTransformer, whose parameter names already
match; the decoder is written here with the official names.
"""

from __future__ import annotations

import importlib

from ..entry import ModelEntry

# name -> (embed dim, depth, heads); all use patch 16 and a 2-layer mask transformer.
SIZES = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
DEFAULT_IMG_SIZE = (512, 512)
DEFAULT_CLASSES = 150  # ADE20K
PATCH = 16


ENTRIES = tuple(
    ModelEntry(
        f"segmenter_{size}",
        lambda spec, s=size: create_segmenter(s, spec.img_size, spec.num_classes),
        f"Segmenter ViT-{size[0].upper()}/16 ({depth} blocks, dim {dim}) + mask transformer",
        pos_embed_key="encoder.pos_embed",
        takes_classes=True,
        input_size=DEFAULT_IMG_SIZE,
        num_classes=DEFAULT_CLASSES,
    )
    for size, (dim, depth, heads) in SIZES.items()
)


def create_segmenter(*args, **kwargs):
    """model.create_segmenter, imported on first use (torch)."""
    from .model import create_segmenter

    return create_segmenter(*args, **kwargs)


def __getattr__(name: str):
    # the modules (torch) behind this declaration, imported when one of their names is used
    return getattr(importlib.import_module(".model", __name__), name)
