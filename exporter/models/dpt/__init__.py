"""DPT (Ranftl et al., ICCV 2021): a ViT whose tapped blocks are reassembled into four scales,
fused by RefineNet-style blocks and decoded into a dense depth map.

State-dict keys follow the official release (isl-org/DPT) so its checkpoints load as they are:
`pretrained.model.*` is the timm ViT (or R50+ViT hybrid), `pretrained.act_postprocess1..4`
the reassemble stages, `scratch.layer1_rn..layer4_rn` the 3x3 projections to the fusion width,
`scratch.refinenet1..4` the fusion blocks and `scratch.output_conv` the depth head.

The position embedding keeps the checkpoint's 24x24 grid (384x384 training size) and is
resized to the input's grid in every forward, as the official model does; so any input whose
sides are multiples of 16 (e.g. KITTI's 1216x352) runs with an unchanged checkpoint.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from ..entry import ModelEntry


class DPTConfig(NamedTuple):
    dim: int
    depth: int
    heads: int
    taps: tuple[int, ...]  # 0-based blocks feeding the reassemble stages
    widths: tuple[int, int, int, int]  # channels of the four reassembled scales
    hybrid: bool = False  # ResNet-50 stem; its stages 0 and 1 are the first two scales


# From the official backbones: ViT-B/16 hooks [2, 5, 8, 11], ViT-L/16 [5, 11, 17, 23],
# R50+ViT-B/16 ResNet stages 0 and 1 then ViT blocks [8, 11].
CONFIGS = {
    "base": DPTConfig(768, 12, 12, (2, 5, 8, 11), (96, 192, 384, 768)),
    "large": DPTConfig(1024, 24, 16, (5, 11, 17, 23), (256, 512, 1024, 1024)),
    "hybrid": DPTConfig(768, 12, 12, (8, 11), (256, 512, 768, 768), hybrid=True),
}


BACKBONES = {"base": "ViT-B/16", "large": "ViT-L/16", "hybrid": "ResNet-50 stem + ViT-B/16"}
# The position embedding keeps the checkpoint's 24x24 grid and is resized in the forward,
# so no resize at load time.
ENTRIES = tuple(
    ModelEntry(
        f"dpt_{size}",
        lambda spec, s=size: create_dpt(s, spec.img_size),
        f"DPT {BACKBONES[size]} (taps {list(cfg.taps)}) + reassemble/fusion depth head",
    )
    for size, cfg in CONFIGS.items()
)


def create_dpt(*args, **kwargs):
    """model.create_dpt, imported on first use (torch)."""
    from .model import create_dpt

    return create_dpt(*args, **kwargs)


def __getattr__(name: str):
    # the model code (torch) behind this declaration, imported when one of its names is used
    return getattr(importlib.import_module(".model", __name__), name)
