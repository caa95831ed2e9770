"""Expedite's token clustering layer (paper 001, Eq. 2-3) as fixed-shape tensor operations."""

from __future__ import annotations

import torch
from torch import nn

from .distance import squared_distance
from .grid import WindowTiles, best_tile, own_cell, pool_matrix, tile_cost, window_mask

# Logit given to clusters outside a pixel's window: exp() of it is 0 in float32, and it is
# finite in float16, unlike 1e16 or inf.
MASKED_LOGIT = -1.0e4
# Floor of a cluster's total weight before dividing (as in the authors' release).
WEIGHT_FLOOR = 1.0e-16


class DenseClustering(nn.Module):
    """Cluster an H x W token grid into h x w centers by local soft k-means (dense form).

    Centers start as the adaptive average pool of the grid; each of `iters` EM steps computes,
    per pixel, softmax(-d/tau) over the clusters of its window, then sets every center to the
    weighted mean of the pixels (weights normalised per cluster). Runs in float32.

    This is the authors' formulation: a [N, h*w] distance matrix per step, most of it masked
    away. `TokenClustering` computes the same thing on the windows only; this form is kept as
    the benchmark's point of comparison.
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


class TokenClustering(DenseClustering):
    """The same clustering computed tile by tile (see `WindowTiles`).

    Each EM step gathers, for every tile, the centers its pixels may see, and computes the
    soft assignments in a [P, Q] block (Q = (tile + lambda - 1)^2 + 1). Each cluster's new
    center is the sum of its partial sums over the few tiles that see it, divided by the sum
    of its weights: the same weighted mean as the dense form, at about
    (tile + lambda - 1)^2 / (h w) of its multiply-accumulates.

    Two rewrites keep it to one matrix product each way:
    - logits: -(d - d_own)/tau with d = |z|^2 + |c|^2 - 2 z.c; |z|^2 cancels, so the logit is
      [z, 1] . [2c/tau, -|c|^2/tau] minus the same at the own cell;
    - update: [z, 1] weighted by the assignment gives the weighted sum and the weight at once.
    Padded pixel slots hold zeros (also in the 1 column), so they add nothing.
    """

    def __init__(self, grid, cells, window, iters: int, tau: float, tile: int | None = None):
        super().__init__(grid, cells, window, iters, tau)
        tile = best_tile(grid, cells, window) if tile is None else tile
        dense_cost = 2 * grid[0] * grid[1] * cells[0] * cells[1]
        self.tile = tile if tile_cost(grid, cells, window, tile) < dense_cost else None
        if self.tile is None:  # windows that cover (nearly) every cluster: tiles cannot save
            return
        del self.allowed, self.own  # the dense tables are not used
        tiles = WindowTiles(grid, cells, window, tile)
        for name in ("pixels", "valid", "clusters", "allowed", "own", "gather"):
            self.register_buffer(name, getattr(tiles, name), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.tile is None:
            return super().forward(z)
        dtype = z.dtype
        z = z.float()
        B, _, C = z.shape
        T, P = self.pixels.shape
        Q = self.clusters.shape[1]
        centers = self.initial_centers(z)
        ones = z.new_ones(B, z.shape[1], 1)
        zt = torch.cat([z, ones], dim=2).index_select(1, self.pixels.reshape(-1))
        zt = (zt.reshape(B, T, P, C + 1) * self.valid.to(z.dtype).unsqueeze(-1))
        zt = zt.reshape(B * T, P, C + 1)
        own = self.own.view(1, T, P, 1).expand(B, T, P, 1)
        for _ in range(self.iters):
            cc = (centers * centers).sum(-1, keepdim=True)
            ct = torch.cat([centers * (2.0 / self.tau), cc * (-1.0 / self.tau)], dim=2)
            ct = ct.index_select(1, self.clusters.reshape(-1)).reshape(B * T, Q, C + 1)
            s = torch.matmul(zt, ct.transpose(1, 2)).reshape(B, T, P, Q)
            logits = torch.where(self.allowed, s - s.gather(3, own), MASKED_LOGIT)
            q = torch.softmax(logits, dim=3).reshape(B * T, P, Q)
            part = torch.matmul(q.transpose(1, 2), zt).reshape(B, T * Q, C + 1)
            total = part.index_select(1, self.gather.reshape(-1))
            total = total.reshape(B, -1, self.gather.shape[1], C + 1).sum(2)  # [B, M, C+1]
            centers = total[..., :C] / total[..., C:].clamp_min(WEIGHT_FLOOR)
        return centers.to(dtype)
