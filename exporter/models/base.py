"""The interface between models and methods: a ViT seen as embed -> blocks -> head.

A method never imports a model file. It sees only a `DenseModel`: the token sequence after
each block, the grid shape of its patch tokens, and the number of prefix tokens before them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .capabilities import CLASS_TOKEN, DECODER, TOKEN_GRID, WINDOWS
from .entry import INPUT_NAME


@dataclass(frozen=True)
class TokenLayout:
    """How the token sequence of a plain ViT is laid out."""

    grid: tuple[int, int]  # patch-token grid (rows, cols)
    num_prefix: int  # class / distillation / register tokens before the patch tokens
    dim: int
    depth: int
    num_heads: int
    patch: tuple[int, int] = (16, 16)  # pixels per patch token (rows, cols)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.grid[0] * self.patch[0], self.grid[1] * self.patch[1])

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class WindowStage:
    """One stage of a windowed hierarchical backbone (Swin): the steps first..first+depth-1
    run on a [B, H, W, C] token map with attention inside window[0] x window[1] windows."""

    grid: tuple[int, int]
    window: tuple[int, int]
    dim: int
    num_heads: int
    first: int  # flat index of the stage's first step in `blocks`
    depth: int


class DenseModel(nn.Module):
    """A dense-prediction ViT split where token-reduction methods cut it.

    Subclasses set `layout`, `taps`, expose `blocks` and implement `embed`, `head_tokens`,
    `head_map`. `forward` is the unmodified model.

    - `taps`: 0-based indices of the blocks whose outputs feed the head.
    - `per_token_head`: True when `head_tokens` maps any number of tokens to as many outputs
      (Segmenter's mask transformer), so a method may run it on reduced tokens and restore
      the per-token outputs afterwards.
    - `restore_at_output`: the default placement of restoration for such models.
    - `output_kind`: "segmentation" (per-class logits, argmax over dim 1) or "features".
    - `capabilities`: what methods and plugins may ask of the model
      (exporter.models.capabilities): a plain token grid [B, prefix + H*W, C] between blocks,
      or windowed stages (a [B, H, W, C] map per stage: the model sets `stages` and implements
      `window_block`); prefix tokens; a per-token decoder.
    - `num_classes`: classes of a segmentation model's logits, None for features.
    """

    input_name: str = INPUT_NAME
    num_classes: int | None = None

    layout: TokenLayout
    taps: tuple[int, ...]
    per_token_head: bool = False
    restore_at_output: bool = False
    output_kind: str = "features"
    output_names: tuple[str, ...] = ("output",)

    # WINDOWS models: one WindowStage per stage, in order
    stages: tuple[WindowStage, ...] = ()

    @property
    def capabilities(self) -> frozenset[str]:
        own = {WINDOWS} if self.stages else {TOKEN_GRID}
        if self.layout.num_prefix > 0:
            own.add(CLASS_TOKEN)
        if self.per_token_head:
            own.add(DECODER)
        return frozenset(own)

    def peak_elements(self, batch: int) -> tuple[int, int]:
        """Elements of the largest attention-score tensor and of the largest token tensor one
        block makes at `batch` (the memory estimate of a build reads them)."""
        lay = self.layout
        n = lay.num_patches + lay.num_prefix
        return batch * lay.num_heads * n * n, batch * n * lay.dim

    def window_block(self, index: int, grid: tuple[int, int], window: tuple[int, int]) -> nn.Module:
        """WINDOWS models: a copy of block `index` (same weights) for a stage of `grid` tokens
        in `window` windows, as a method that reduces each window runs it."""
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order (a view into the wrapped model)."""
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> tokens [B, num_prefix + H/P * W/P, C]."""
        raise NotImplementedError

    def head_tokens(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Outputs of the tapped blocks (prefix tokens included) -> per-patch outputs [B, n, D]."""
        raise NotImplementedError

    def head_map(self, tokens: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Per-patch outputs [B, H/P * W/P, D] -> the model's dense output."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)
        feats = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.taps:
                feats.append(x)
        return self.head_map(self.head_tokens(feats), images.shape[-2:])
