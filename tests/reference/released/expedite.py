"""Expedite's two layers as the authors' release computes them, written for the tests.

Follows Expedit-Segmenter (github.com/Expedit-LargeScale-Vision-Transformer/Expedit-Segmenter):
`TokenClusteringBlock.forward` in mmseg/ops/cluster.py and `TokenReconstructionBlock._forward`
in mmseg/ops/reconstruction.py. Our own code, written from reading theirs: batched, dense
[B, M, N] matrices, in the dtype given.

Clustering: centers start as adaptive average pooling of the [C, H, W] map to (h, w); a pixel
may join the clusters whose cell lies within window // 2 cells of its own cell (the cell of a
pixel: nearest-neighbour upsampling of the cell indices); each of the iterations takes the
squared distances |x|^2 + |c|^2 - 2 c.x, adds 1e16 outside the window, a softmax over the
clusters of -d * temperature, and sets each center to the affinity-weighted mean of the pixels
(weights divided by their sum over the pixels, floored at 1e-16). temperature = 1 / tau.

Reconstruction: weights exp(-temperature * d) from each pixel's features before clustering to
the centers; the k largest are kept (every weight >= the k-th largest, so ties are all kept);
the kept weights are divided by their L2 norm (F.normalize, eps 1e-12) and applied to the
per-cluster values.
"""

import torch
import torch.nn.functional as F

MASK = 1e16  # added to the distances outside a pixel's window


def cell_of_pixels(grid, cells):
    """[H * W]: the cluster cell of each pixel (nearest upsampling of the cell index map)."""
    h, w = cells
    labels = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w)
    return F.interpolate(labels, size=grid, mode="nearest").reshape(-1).long()


def pairwise(pixels, centers):
    """[B, M, N] squared distances, in the expanded form the release uses.
    pixels [B, C, N], centers [B, C, M]."""
    return (
        (pixels * pixels).sum(1).unsqueeze(1)
        + (centers * centers).sum(1).unsqueeze(2)
        - 2 * torch.einsum("bcm,bcn->bmn", centers, pixels)
    )


def cluster(z, grid, cells, window, iters, tau):
    """z [B, N, C] patch tokens -> centers [B, M, C]."""
    B, N, C = z.shape
    H, W = grid
    h, w = cells
    r = window // 2
    fmap = z.transpose(1, 2).reshape(B, C, H, W)
    centers = F.adaptive_avg_pool2d(fmap, (h, w)).reshape(B, C, h * w)
    own = cell_of_pixels(grid, cells)  # [N]
    number = torch.arange(h * w)[:, None]  # [M, 1]
    inside = ((own[None] % w - number % w).abs() <= r) & ((own[None] // w - number // w).abs() <= r)
    penalty = (~inside).to(z.dtype) * MASK  # [M, N]
    pixels = fmap.reshape(B, C, N)
    for _ in range(iters):
        d = pairwise(pixels, centers) + penalty
        affinity = (-d / tau).softmax(1)  # over the clusters
        centers = torch.bmm(affinity, pixels.transpose(1, 2))
        centers = centers / affinity.sum(2, keepdim=True).clamp(min=1e-16)
        centers = centers.transpose(1, 2)
    return centers.transpose(1, 2)


def reconstruct(z, centers, values, k, tau):
    """Each pixel from its k most similar centers: z [B, N, C] (before clustering), centers
    [B, M, C] (at clustering time), values [B, M, D] -> [B, N, D]."""
    d = (
        (z * z).sum(2).unsqueeze(2)
        + (centers * centers).sum(2).unsqueeze(1)
        - 2 * torch.einsum("bnc,bmc->bnm", z, centers)
    )
    weight = torch.exp(-d / tau)
    kth = torch.topk(weight, k=k, dim=2).values.min(-1, keepdim=True).values
    attention = torch.where(weight >= kth, weight, torch.zeros_like(weight))
    attention = F.normalize(attention, dim=2)
    return torch.einsum("bnm,bmc->bnc", attention, values)
