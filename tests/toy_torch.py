"""The torch side of tests/toy.py: the toy method's form for a plain token grid and the toy
model family (a 4x6 patch grid, one class token, 4 timm blocks, a 1x1 head)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from exporter.methods.base import TokenMethod
from exporter.methods.checks import check_int
from exporter.models.base import DenseModel, TokenLayout

from .toy import ToyConfig


class ToyStride(TokenMethod):
    name = "toy"

    def __init__(self, layout: TokenLayout, cfg: ToyConfig):
        super().__init__(layout)
        self.cfg, self.cut = cfg, 1
        self.keep = torch.arange(0, layout.num_patches, cfg.toy_stride)

    def config(self):
        return {"toy_stride": self.cfg.toy_stride}

    def reduced_tokens(self):
        return len(self.keep)

    def reduce(self, x):
        p = self.layout.num_prefix
        return torch.cat([x[:, :p], x[:, p:][:, self.keep]], dim=1), ()

    def restore(self, x, state, num_prefix):
        n, s = self.layout.num_patches, self.cfg.toy_stride
        patches = x[:, num_prefix:].repeat_interleave(s, dim=1)[:, :n]
        return torch.cat([x[:, :num_prefix], patches], dim=1)


def build_method(model: DenseModel, args: dict) -> ToyStride:
    stride = check_int("--toy-stride", args.get("toy_stride", 2), 1, model.layout.num_patches)
    return ToyStride(model.layout, ToyConfig(stride))


class ToyGrid(DenseModel):
    """A plain token grid: what a model family provides and nothing else."""

    output_kind = "segmentation"
    output_names = ("logits",)
    num_classes = 3

    def __init__(self, img_size, patch: int = 4, dim: int = 32):
        super().__init__()
        grid = (img_size[0] // patch, img_size[1] // patch)
        self.layout = TokenLayout(grid, 1, dim, 4, 2, (patch, patch))
        self.taps = (3,)
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid[0] * grid[1], dim) * 0.02)
        self.layers = nn.ModuleList(Block(dim, 2) for _ in range(4))
        self.head = nn.Linear(dim, self.num_classes)

    @property
    def blocks(self):
        return self.layers

    def embed(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed

    def head_tokens(self, feats):
        return self.head(feats[-1][:, 1:])

    def head_map(self, tokens, image_size):
        B, _, C = tokens.shape
        logits = tokens.transpose(1, 2).reshape(B, C, *self.layout.grid)
        return nn.functional.interpolate(logits, size=tuple(image_size), mode="nearest")
