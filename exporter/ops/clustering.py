"""Expedite's token clustering layer (paper 001, Eq. 2-3) as fixed-shape tensor operations."""

from __future__ import annotations

import torch
from torch import nn

from .distance import squared_distance
from .grid import own_cell, pool_matrix, window_mask

# Logit given to clusters outside a pixel's window: exp() of it is 0 in float32, and it is
# finite in float16, unlike 1e16 or inf.
MASKED_LOGIT = -1.0e4
# Floor of a cluster's total weight before dividing (as in the authors' release).
WEIGHT_FLOOR = 1.0e-16


class TokenClustering(nn.Module):
    """Cluster an H x W token grid into h x w centers by local soft k-means.

    Centers start as the adaptive average pool of the grid; each of `iters` EM steps computes,
    per pixel, softmax(-d/tau) over the clusters of its window, then sets every center to the
    weighted mean of the pixels (weights normalised per cluster). Runs in float32.
    """

    def __init__(self, grid: tuple[int, int], cells: tuple[int, int], window: tuple[int, int],
                 iters: int, tau: float):
        super().__init__()
        self.grid, self.cells, self.iters, self.tau = tuple(grid), tuple(cells), iters, float(tau)
        self.register_buffer("pool_h", pool_matrix(grid[0], cells[0]), persistent=False)
        self.register_buffer("pool_w", pool_matrix(grid[1], cells[1]), persistent=False)
        self.register_buffer("allowed", window_mask(grid, cells, window), persistent=False)
        self.register_buffer("own", own_cell(grid, cells), persistent=False)

    def initial_centers(self, z: torch.Tensor) -> torch.Tensor:
        """Adaptive average pooling of [B, H*W, C] to [B, h*w, C], done separably."""
        B, _, C = z.shape
        (H, W), (h, w) = self.grid, self.cells
        g = torch.matmul(self.pool_h, z.reshape(B, H, W * C))  # rows: [B, h, W*C]
        g = torch.matmul(self.pool_w, g.reshape(B * h, W, C))  # cols: [B*h, w, C]
        return g.reshape(B, h * w, C)

    def assignment(self, z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Soft assignment Q [B, N, M]: softmax of -d/tau over each pixel's window."""
        d = squared_distance(z, centers)
        # Shift by the distance to the pixel's own cell (always in its window): softmax is
        # unchanged, and masked logits stay far below every allowed one.
        d_own = d.gather(2, self.own.view(1, -1, 1).expand(d.shape[0], -1, 1))
        logits = torch.where(self.allowed, (d_own - d) / self.tau, MASKED_LOGIT)
        return torch.softmax(logits, dim=2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[B, H*W, C] -> centers [B, h*w, C] (in z's dtype)."""
        dtype = z.dtype
        z = z.float()
        centers = self.initial_centers(z)
        for _ in range(self.iters):
            q = self.assignment(z, centers)
            q = q / q.sum(dim=1, keepdim=True).clamp_min(WEIGHT_FLOOR)
            centers = torch.matmul(q.transpose(1, 2), z)
        return centers.to(dtype)
