"""Grid pooling and bilinear upsampling of patch tokens: the pool baseline of the Expedite paper.

Pooling is a pair of constant averaging matrices (rows, then columns) instead of
`F.adaptive_avg_pool2d`, which torch.onnx cannot export when the grid is not a multiple of
the pooled size (40 -> 28). Upsampling is `F.interpolate` (an ONNX Resize with static sizes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .grid import pool_matrix


class GridPooling(nn.Module):
    """Adaptive average pooling of [B, H*W, C] tokens to [B, h*w, C], done separably."""

    def __init__(self, grid: tuple[int, int], cells: tuple[int, int]):
        super().__init__()
        self.grid, self.cells = tuple(grid), tuple(cells)
        self.register_buffer("pool_h", pool_matrix(grid[0], cells[0]), persistent=False)
        self.register_buffer("pool_w", pool_matrix(grid[1], cells[1]), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, _, C = z.shape
        (H, W), (h, w) = self.grid, self.cells
        g = torch.matmul(self.pool_h.to(z.dtype), z.reshape(B, H, W * C))  # rows: [B, h, W*C]
        g = torch.matmul(self.pool_w.to(z.dtype), g.reshape(B * h, W, C))  # cols: [B*h, w, C]
        return g.reshape(B, h * w, C)


class GridUpsampling(nn.Module):
    """Bilinear upsampling (align_corners=False) of [B, h*w, D] tokens to [B, H*W, D]."""

    def __init__(self, cells: tuple[int, int], grid: tuple[int, int]):
        super().__init__()
        self.cells, self.grid = tuple(cells), tuple(grid)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        B, _, D = y.shape
        (h, w), (H, W) = self.cells, self.grid
        maps = y.transpose(1, 2).reshape(B, D, h, w)
        up = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)
        return up.reshape(B, D, H * W).transpose(1, 2)
