"""Expedite's token clustering layer (the Expedite paper, Eq. 2-3) as fixed-shape tensor operations."""

from __future__ import annotations

import torch
from torch import nn

from .distance import squared_distance
from .grid import ClusterTiles, best_tile, dense_cost, own_cell, pool_matrix, tile_cost, window_mask

# Logit given to clusters outside a pixel's window: exp() of it is 0 in float32, and it is
# finite in float16, unlike 1e16 or inf.
MASKED_LOGIT = -1.0e4
# Below every score, for maxima over the allowed entries only (the clustering is float32).
LOWEST = -3.0e38
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

    def __init__(
        self,
        grid: tuple[int, int],
        cells: tuple[int, int],
        window: tuple[int, int],
        iters: int,
        tau: float,
    ):
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
    """The same clustering computed in small blocks over the windows (see `ClusterTiles`).

    Each EM step scores, per tile, its K clusters against the P pixels that may join them in
    one [P, K] product, completes each pixel's softmax over the tiles it appears in, and
    forms the tile's new sums in a second product. Both products take the tile's pixel block
    [P, C], gathered once before the steps; the clusters stay tile by tile between steps, so
    no per-step gather of feature vectors is needed (only of per-pixel scalars). The cost is
    about (tile + lambda - 1)^2 / (h w) of the dense form's.

    Layout: the pixel block is the products' large operand and the clusters their narrow one
    (scores [P, K] = block [P, C] x S^T; sums [K, C] = q^T x block), the form ONNX Runtime's
    CPU products run fastest on, with no transpose of the block (measured in
    docs/performance.md, "Token operations").

    Rewrites: -d/tau = (2 z.c - |c|^2)/tau - |z|^2/tau, and |z|^2 cancels in the softmax; a
    cluster's weighted sum S and total weight w give the next step's scores from one product
    of the block with S and per-cluster scalars, so the centers S / w are only formed at the
    end.
    """

    def __init__(self, grid, cells, window, iters: int, tau: float, tile: int | None = None):
        super().__init__(grid, cells, window, iters, tau)
        tile = best_tile(grid, cells, window) if tile is None else tile
        # windows that cover (nearly) every cluster: tiles cannot save multiply-accumulates
        saves = tile_cost(grid, cells, window, tile, columns=1) < dense_cost(grid, cells)
        self.tile = tile if saves else None
        if self.tile is None:
            return
        del self.allowed, self.own  # the dense tables are not used
        tiles = ClusterTiles(grid, cells, window, tile)
        for name in ("clusters", "pixels", "allowed", "appear", "owner", "order"):
            self.register_buffer(name, getattr(tiles, name), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.tile is None:
            return super().forward(z)
        dtype = z.dtype
        z = z.float()
        B, N, C = z.shape
        T, P = self.pixels.shape
        K = self.clusters.shape[1]
        # S: each cluster's weighted pixel sum, w its total weight (center c = S / w); the
        # initial centers are S with w = 1.
        S = self.initial_centers(z).index_select(1, self.clusters.reshape(-1))
        S = S.reshape(B * T, K, C)
        w = None
        block = z.index_select(1, self.pixels.reshape(-1)).reshape(B * T, P, C)
        low = z.new_full((B, 1), LOWEST)
        zero, one = z.new_zeros(B, 1), z.new_ones(B, 1)
        for _ in range(self.iters):
            # With c = S / max(w, floor) (for a near-empty cluster S / floor, near the origin,
            # as in the dense form): z.c = (S.z) / max(w, floor), |c|^2 = |S|^2 / max(w, floor)^2,
            # so the score 2 z.c - |c|^2 (-d plus |z|^2, which cancels in the softmax) is read
            # off S and w without forming c.
            g = torch.matmul(block, S.transpose(1, 2))  # [B*T, P, K]
            sq = S.pow(2).sum(-1).unsqueeze(1)  # [B*T, 1, K]
            # per-cluster factors first: two passes over the [P, K] scores instead of three
            if w is None:
                s = g * (2.0 / self.tau) - sq / self.tau
            else:
                inv = 1.0 / w.clamp_min(WEIGHT_FLOOR)
                s = g * (inv * (2.0 / self.tau)) - sq * (inv * inv) / self.tau
            s = s.reshape(B, T, P, K)
            # each pixel's largest allowed score over all its tiles: the softmax shift
            top = torch.where(self.allowed, s, LOWEST).amax(3).reshape(B, T * P)
            top = self._per_pixel(top, low, torch.amax)
            e = torch.where(self.allowed, torch.exp(s - self._per_slot(top, zero)), 0.0)
            mass = self._per_pixel(e.sum(3).reshape(B, T * P), zero, torch.sum)
            q = (e / self._per_slot(mass, one)).reshape(B * T, P, K)
            S = torch.matmul(q.transpose(1, 2), block)  # [B*T, K, C]
            w = q.sum(1).unsqueeze(1)  # [B*T, 1, K]
        centers = S / w.transpose(1, 2).clamp_min(WEIGHT_FLOOR)
        centers = centers.reshape(B, T * K, C).index_select(1, self.order)
        return centers.to(dtype)

    def _per_pixel(self, slots: torch.Tensor, pad: torch.Tensor, reduce) -> torch.Tensor:
        """[B, T*P] per-slot values -> [B, N], reduced over each pixel's slots."""
        B, A = slots.shape[0], self.appear.shape[1]
        picked = torch.cat([slots, pad], dim=1).index_select(1, self.appear.reshape(-1))
        return reduce(picked.reshape(B, -1, A), dim=2)

    def _per_slot(self, pixels: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """[B, N] per-pixel values -> [B, T, P, 1] at each slot (pad at padding slots)."""
        T, P = self.pixels.shape
        picked = torch.cat([pixels, pad], dim=1).index_select(1, self.owner)
        return picked.reshape(-1, T, P, 1)
