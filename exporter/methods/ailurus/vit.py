"""AiluRus's plain-token-grid form (see the package for the method)."""

from __future__ import annotations


import torch

from ...errors import InputError
from ...models.base import DenseModel
from ...ops import run_block
from ...ops.density_peaks import TOPK_LIMIT, DensityPeaksSelection, merge_clusters, unfold_clusters
from ..base import TokenMethod, check_alpha, check_int, entries, split_prefix
from . import AiluRusConfig

PAPER_ALPHA = 2  # the block after which the paper clusters
CLUSTER_SHARE = 0.25  # M = N/4
SPATIAL_NEIGHBOURS = 50  # lambda


def default_alpha(depth: int) -> int:
    """Block 2, where the paper clusters for both ViT-L (24 blocks) and ViT-B (12 blocks)."""
    return max(1, min(depth - 1, PAPER_ALPHA))


def default_clusters(num_patches: int) -> int:
    """N/4: 400 of 1600 tokens, the paper's running example (its Figure 2 and 4)."""
    high = min(num_patches - 1, TOPK_LIMIT)
    return max(1, min(high, round(num_patches * CLUSTER_SHARE)))


class AiluRus(TokenMethod):
    name = "ailurus"

    def __init__(self, layout, cfg: AiluRusConfig, restore_at_output: bool):
        super().__init__(layout)
        self.cfg = cfg
        self.cut, self.clusters = cfg.alpha, cfg.clusters
        self.restore_at_output = restore_at_output
        self.selection = DensityPeaksSelection(
            layout.grid,
            cfg.clusters,
            cfg.spatial_neighbours,
            cfg.spatial_alpha,
            cfg.knn,
            layout.dim,
        )

    def config(self):
        fields = ("alpha", "clusters", "spatial_alpha", "spatial_neighbours", "knn")
        return {
            **entries(self.cfg, *fields),
            "restore": "output" if self.restore_at_output else "backbone",
        }

    def reduced_tokens(self):
        return self.clusters

    def reduce(self, x):
        """[B, P + N, C] -> ([B, P + M, C], (sizes [B, P + M], assignment [B, N]))."""
        prefix, z = split_prefix(x, self.layout.num_prefix)
        _, assignment = self.selection(z)
        merged, sizes = merge_clusters(z, assignment, self.clusters)
        sizes = torch.cat([sizes.new_ones(sizes.shape[0], prefix.shape[1]), sizes], dim=1)
        return torch.cat([prefix, merged], dim=1), (sizes, assignment)

    def restore(self, x, state, num_prefix):
        prefix, clusters = split_prefix(x, num_prefix)
        return torch.cat([prefix, unfold_clusters(clusters, state[1])], dim=1)

    def assign(self, x):
        return self.selection(split_prefix(x, self.layout.num_prefix)[1])[1]

    def block_forward(self, block, x, state):
        # Size-aware attention (Eq. 5) in every block after the merge.
        return run_block(block, x, None if state is None else state[0])


def check_spatial_alpha(value) -> float:
    try:
        a = float(value)
    except (TypeError, ValueError):
        a = float("nan")
    if not 0.0 < a <= 1.0:  # also refuses nan
        raise InputError("--spatial-alpha", value, "a number in (0, 1]")
    return a


def build(model: DenseModel, args: dict) -> AiluRus:
    lay = model.layout
    depth, N = lay.depth, lay.num_patches
    if N < 2:
        raise InputError(
            "--img-size",
            f"{lay.image_size[0]}x{lay.image_size[1]}",
            "an image of at least 2 patches",
            "AiluRus needs tokens to merge",
        )
    alpha = check_alpha(args, depth, default_alpha)
    clusters = args.get("clusters")
    if clusters is None:
        clusters = default_clusters(N)
    else:
        clusters = check_int("--clusters", clusters, 1, N - 1)
        if clusters > TOPK_LIMIT:
            raise InputError(
                "--clusters",
                clusters,
                f"1..{TOPK_LIMIT}",
                f"TensorRT's TopK takes at most {TOPK_LIMIT}",
            )
    spatial_alpha = check_spatial_alpha(args.get("spatial_alpha", AiluRusConfig.spatial_alpha))
    neighbours = args.get("spatial_neighbours")
    if neighbours is None:
        # The paper's 50 assumes ~1000+ tokens; small grids have fewer other tokens.
        neighbours = min(SPATIAL_NEIGHBOURS, N - 1)
    else:
        neighbours = check_int("--spatial-neighbours", neighbours, 1, N - 1)
    knn_max = min(neighbours, TOPK_LIMIT)
    knn = check_int("--knn", args.get("knn", AiluRusConfig.knn), 1, knn_max)
    at_output = model.restore_at_output and model.per_token_head
    cfg = AiluRusConfig(alpha, clusters, spatial_alpha, neighbours, knn)
    return AiluRus(lay, cfg, at_output)
