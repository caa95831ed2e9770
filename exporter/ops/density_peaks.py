"""AiluRus's spatial-aware density peaks clustering as fixed-shape ops.

AiluRus clusters with DPC-kNN; its distance convention here is that of the released DPC-kNN
code this line of work builds on (TCFormer's `cluster_dpc_knn`), with AiluRus's spatial weight
on top. docs/methods.md lists every choice and its source. In short:

- neighbours of token i: the lambda tokens nearest on the grid (Euclidean grid distance,
  ties by token index), not i itself; rank 0 is the nearest. s = (1 - a) * rank / lambda + a.
- d(i, j) = ||z_i - z_j|| / sqrt(C) * s(i, j) on the raw residual stream: the released code
  divides feature distances by sqrt(C); without it the density term swamps the distance term
  on residual streams whose distances are in the tens. The constant input `weights` holds
  s / sqrt(C), so one multiply applies both.
- rho_i = exp(-mean of the squared k smallest d(i, j) over the neighbours) (squared, as
  released). The released code adds noise below 1e-6 to rho so that no two densities are
  equal; here equal densities are ordered by token index instead (the lower index counts as
  denser), a total order like the noise's, the same on every runtime.
- delta_i = min of d over the neighbours with higher density. A token with no denser neighbour
  gets the image's largest d (the released code's largest distance of the image).
- rho * delta is ranked in the log domain (log delta - (-log rho)): the same order, and it
  does not underflow where distances are large (exp(-200) is 0 in float32).
- centers: the M highest scores; equal scores go to the lower token index. Centers are
  returned in ascending token index, so a center's cluster slot is its rank among centers.
- assignment: a center is its own cluster; another token joins the center among its
  neighbours with the smallest d (equal values: the spatially nearer neighbour); a token with
  no center among its neighbours joins the nearest center by plain feature distance (equal
  values: the lower slot). Both are argmins, so the 1/sqrt(C) scale does not change them. The
  fallback is one [N, M] GEMM.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .decisions import decide, top_margin
from .distance import squared_distance

# TensorRT's largest TopK K.
TOPK_LIMIT = 3840
# Finite stand-in for "not a candidate" in min-reductions (float32 max is 3.4e38).
NOT_A_CANDIDATE = 3.0e38
# Rows of the grid-distance table built at once at patch time (bounds memory for big grids).
TABLE_CHUNK = 512


def spatial_neighbours(grid: tuple[int, int], count: int) -> torch.Tensor:
    """[N, count] int64: for each token, the `count` nearest other tokens on the grid,
    nearest first; equal grid distances are ordered by token index."""
    H, W = grid
    N = H * W
    if not 1 <= count <= N - 1:
        raise ValueError(f"neighbour count {count} outside 1..{N - 1} for a {H}x{W} grid")
    index = torch.arange(N)
    rows, cols = index // W, index % W
    chunks = []
    for start in range(0, N, TABLE_CHUNK):
        own = index[start : start + TABLE_CHUNK, None]
        d2 = (rows[own] - rows[None]) ** 2 + (cols[own] - cols[None]) ** 2
        # One integer key per (distance, index) pair: unique, so top-k has no ties to break.
        key = d2 * N + index[None]
        key = torch.where(own == index[None], torch.iinfo(torch.int64).max, key)
        chunks.append(torch.topk(key, count, dim=1, largest=False, sorted=True).indices)
    return torch.cat(chunks)


def rank_weights(count: int, spatial_alpha: float, channels: int = 1) -> torch.Tensor:
    """Eq. 2's s = (1 - a) * rank / lambda + a for ranks 0..lambda-1, divided by sqrt(channels)
    (the released DPC-kNN's distance scale), rounded once to float32 [lambda]."""
    rank = torch.arange(count, dtype=torch.float64)
    s = (1.0 - spatial_alpha) * rank / count + spatial_alpha
    return (s / math.sqrt(channels)).float()


def weighted_neighbour_distances(
    z: torch.Tensor, neighbours: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """d(i, j) = ||z_i - z_j|| * weights[rank of j] for the neighbour table: [B, N, C] ->
    [B, N, lambda] (weights = s / sqrt(C), see `rank_weights`)."""
    picked = z[:, neighbours]  # [B, N, lambda, C]: a Gather, O(N * lambda * C)
    sigma = (picked - z.unsqueeze(2)).pow(2).sum(-1).sqrt()
    return sigma * weights


def mean_knn_distance(w: torch.Tensor, knn: int) -> torch.Tensor:
    """-log rho: mean of the squares of the k smallest weighted distances, [B, N]."""
    return torch.topk(w, knn, dim=-1, largest=False).values.pow(2).mean(-1)


def log_center_score(
    w: torch.Tensor, neg_log_rho: torch.Tensor, neighbours: torch.Tensor, earlier: torch.Tensor
) -> torch.Tensor:
    """log(rho * delta) [B, N]; a token with no denser neighbour has delta = the image's
    largest weighted distance. `earlier` [N, lambda]: the neighbour's index is below the
    token's (it counts as denser at equal density)."""
    theirs, own = neg_log_rho[:, neighbours], neg_log_rho.unsqueeze(-1)
    denser = (theirs < own) | ((theirs == own) & earlier)  # rho_j > rho_i, ties by index
    nearest_denser = torch.where(denser, w, NOT_A_CANDIDATE).amin(-1)
    has_denser = denser.any(-1)
    delta = torch.where(has_denser, nearest_denser, w.amax(dim=(1, 2)).unsqueeze(1))
    return torch.log(delta) - neg_log_rho


def select_top(score: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` highest scores per row, equal scores to the lower index, whatever order a
    runtime's TopK returns ties in. Returns (chosen mask [B, N], indices [B, count] ascending)."""
    N = score.shape[1]
    threshold = torch.topk(score, count, dim=1).values[:, count - 1 :]
    above = score > threshold
    tied = score == threshold
    # Of the tokens tied at the threshold, keep the lowest-index ones that still fit.
    room = count - above.float().sum(1, keepdim=True)
    chosen = above | (tied & (tied.float().cumsum(1) <= room))
    # Distinct integer keys (exact in float32): chosen tokens first, lower index first.
    index = torch.arange(N, device=score.device, dtype=torch.float32)
    key = torch.where(chosen, N - index, -index)
    return chosen, torch.topk(key, count, dim=1).indices


class DensityPeaksSelection(nn.Module):
    """Select M centers among N patch tokens and assign every token to one: [B, N, C] ->
    (centers [B, M] token indices, ascending; assignment [B, N] cluster slots 0..M-1).

    `channels` is C, the width of the tokens (distances are divided by sqrt(C)). This is the
    subgraph that the `DPCSelect` TensorRT plugin replaces. Runs in float32.
    """

    output_names = ("centers", "assignment")
    decision_names = ("selection.centers", "selection.assignment")

    def __init__(
        self,
        grid: tuple[int, int],
        clusters: int,
        neighbours: int,
        spatial_alpha: float,
        knn: int,
        channels: int,
    ):
        super().__init__()
        N = grid[0] * grid[1]
        if not 1 <= clusters <= min(N - 1, TOPK_LIMIT):
            raise ValueError(f"clusters {clusters} outside 1..{min(N - 1, TOPK_LIMIT)}")
        if not 1 <= knn <= min(neighbours, TOPK_LIMIT):
            raise ValueError(f"knn {knn} outside 1..{min(neighbours, TOPK_LIMIT)}")
        if not 0.0 < spatial_alpha <= 1.0:
            raise ValueError(f"spatial_alpha {spatial_alpha} outside (0, 1]")
        self.grid, self.clusters, self.knn = tuple(grid), clusters, knn
        self.spatial_alpha = float(spatial_alpha)
        table = spatial_neighbours(grid, neighbours)
        self.register_buffer("neighbours", table, persistent=False)
        self.register_buffer("earlier", table < torch.arange(N)[:, None], persistent=False)
        if channels < 1:
            raise ValueError(f"channels {channels} must be at least 1")
        self.channels = channels
        weights = rank_weights(neighbours, spatial_alpha, channels)
        self.register_buffer("weights", weights, persistent=False)

    def scores(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weighted neighbour distances [B, N, lambda], -log rho [B, N], log(rho*delta) [B, N])."""
        z = z.float()
        if z.shape[-1] != self.channels:
            raise ValueError(
                f"tokens of width {z.shape[-1]}: this selection expects {self.channels}"
            )
        w = weighted_neighbour_distances(z, self.neighbours, self.weights)
        neg_log_rho = mean_knn_distance(w, self.knn)
        return w, neg_log_rho, log_center_score(w, neg_log_rho, self.neighbours, self.earlier)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.float()
        B, N, C = z.shape
        w, _, score = self.scores(z)
        is_center, centers = select_top(score, self.clusters)
        chosen = decide("selection.centers", centers, top_margin(score))
        if chosen is not centers:  # validation imposes the runtime's centers
            centers = chosen
            is_center = torch.zeros_like(is_center).scatter(1, centers, True)
        slot = rank = is_center.float().cumsum(1) - 1.0  # centers ascend by index: slot = rank
        # Nearest center among the spatial neighbours, under the weighted distance d.
        neighbour_is_center = is_center[:, self.neighbours]
        best = torch.where(neighbour_is_center, w, NOT_A_CANDIDATE).argmin(-1, keepdim=True)
        best_token = torch.gather(self.neighbours.expand(B, N, -1), 2, best).squeeze(2)
        via_neighbour = torch.gather(slot, 1, best_token)
        # Fallback: nearest center by plain feature distance (argmin of squared = of unsquared).
        center_feats = torch.gather(z, 1, centers.unsqueeze(-1).expand(B, self.clusters, C))
        via_any = squared_distance(z, center_feats).argmin(-1).float()
        slot = torch.where(
            is_center, slot, torch.where(neighbour_is_center.any(-1), via_neighbour, via_any)
        )

        def costs():  # [B, N, M]: what each token pays to join each cluster (inf: no candidate)
            own = torch.full((B, N, self.clusters), float("inf"), dtype=torch.float64)
            near = torch.where(neighbour_is_center, w, float("inf")).double()
            slots = rank[:, self.neighbours].long().clamp(0, self.clusters - 1)
            own = own.scatter_reduce(2, slots, near, "amin")
            plain = squared_distance(z, center_feats).double().sqrt()
            return torch.where(neighbour_is_center.any(-1, keepdim=True), own, plain)

        return centers, decide("selection.assignment", slot.long(), top_margin(costs, False))


def merge_clusters(
    z: torch.Tensor, assignment: torch.Tensor, clusters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each cluster (center included) by a one-hot matmul, and the cluster sizes.

    z [B, N, C], assignment [B, N] -> (merged [B, M, C] in z's dtype, sizes [B, M] float32).
    """
    slots = torch.arange(clusters, device=assignment.device).view(1, clusters, 1)
    members = (assignment.unsqueeze(1) == slots).float()  # [B, M, N]
    sizes = members.sum(-1)  # >= 1: every cluster holds its center
    merged = torch.matmul(members, z.float()) / sizes.unsqueeze(-1)
    return merged.to(z.dtype), sizes


def unfold_clusters(values: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """Each original position takes its cluster's value: [B, M, D], [B, N] -> [B, N, D]."""
    B, N = assignment.shape
    index = assignment.unsqueeze(-1).expand(B, N, values.shape[-1])
    return torch.gather(values, 1, index)
