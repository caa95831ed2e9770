"""AiluRus's clustering as its authors' lineage computes it, written for the tests.

Follows the structure of `cluster_dpc_knn` in TCFormer's released code
(github.com/zengwang430521/TCFormer, tcformer_module/tcformer_utils.py), the DPC-kNN that the
AiluRus paper cites for its algorithm, with AiluRus's spatial weight (its Eq. 2) multiplied
onto the distances. Our own code, written from reading theirs; dense [N, N] matrices, float64,
one image at a time. AiluRus's own repository (github.com/caddyless/ailurus, named by its
paper) could not be read here, so the spatial term follows the paper's equation.

What the TCFormer function does, step by step, and how the spatial term enters:
- distance matrix: Euclidean distance between token features divided by sqrt(C);
- AiluRus: times s(i, j) = (1 - a) rank / lambda + a for the lambda spatial neighbours j of i,
  infinite for every other token (i itself included: it is not its own neighbour);
- density: exp(-mean of the squared k smallest distances of the row), plus uniform noise in
  [0, 1e-6) "so that no two tokens have the same density";
- distance indicator: the smallest distance to a token of strictly higher density; a token
  without one gets the largest distance of the image's matrix (here: the largest finite one);
- score = indicator * density; centers = the M largest scores (topk order: best first);
- assignment: every token joins the center at the smallest distance (here: the smallest
  weighted distance among its spatial neighbours; a token with no center among them joins the
  center nearest by plain distance, as the paper gives no rule for it); a center joins itself;
- merge (TCFormer's merge_tokens with unit token weights): each cluster's sum divided by its
  size plus 1e-6.
"""

import math

import torch

from tests.reference.ailurus import grid_neighbours, spatial_weight

NOISE = 1e-6  # TCFormer's density noise scale
MERGE_EPS = 1e-6  # TCFormer's merge_tokens adds this to each cluster's total weight


def weighted_distances(z, grid, count, a):
    """[N, N]: cdist / sqrt(C) times Eq. 2's weight for spatial neighbours, inf elsewhere."""
    N, C = z.shape
    dist = torch.cdist(z, z) / math.sqrt(C)
    weight = torch.full((N, N), math.inf, dtype=z.dtype)
    for i in range(N):
        for rank, j in enumerate(grid_neighbours(i, grid, count)):
            weight[i, j] = spatial_weight(rank, count, a)
    return dist * weight, dist


def dpc_knn(z, grid, clusters, count, a, knn, generator=None):
    """One image's tokens z [N, C] (float64). `generator`: draw TCFormer's density noise from
    it; None: no noise, equal densities ordered by token index instead (the lower index
    counts as denser: the export form's deterministic stand-in for the noise).

    Returns dict: density, indicator, score [N]; centers [M] token indices in topk order (best
    first); assignment [N] (position in `centers`)."""
    N = z.shape[0]
    w, plain = weighted_distances(z, grid, count, a)
    nearest = torch.topk(w, knn, dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(-1))
    if generator is not None:
        density = density + torch.rand(N, generator=generator, dtype=z.dtype) * NOISE
    denser = density[None, :] > density[:, None]
    if generator is None:
        index = torch.arange(N)
        denser |= (density[None, :] == density[:, None]) & (index[None, :] < index[:, None])
    finite = torch.isfinite(w)
    dist_max = w[finite].max()
    # TCFormer writes min(dist * mask + dist_max * (1 - mask)); with infinite entries that
    # product is nan (inf * 0), so the masked value is chosen with a where instead.
    indicator = torch.where(denser, w, dist_max).min(-1).values
    score = indicator * density
    centers = torch.topk(score, clusters).indices
    near = w[:, centers]  # [N, M]
    has_near = torch.isfinite(near).any(-1)
    assignment = torch.where(has_near, near.argmin(-1), plain[:, centers].argmin(-1))
    assignment[centers] = torch.arange(clusters)
    return {
        "density": density,
        "indicator": indicator,
        "score": score,
        "centers": centers,
        "assignment": assignment,
    }


def merge(z, assignment, clusters):
    """TCFormer's merge_tokens with unit weights: [N, C] -> ([M, C], sizes [M])."""
    total = torch.zeros(clusters, z.shape[1], dtype=z.dtype).index_add_(0, assignment, z)
    sizes = torch.zeros(clusters, dtype=z.dtype).index_add_(0, assignment, torch.ones_like(z[:, 0]))
    return total / (sizes[:, None] + MERGE_EPS), sizes
