"""Expedite (Liang et al., NeurIPS 2022): token clustering after block alpha, reconstruction at the end.

Prefix tokens (class, distillation, register) are carried through unclustered. Reconstruction
weights are computed once, at clustering time, from the features before clustering and the
centers the clustering produced; they are applied either to the refined tokens at the
backbone output or, for models whose head works per token (Segmenter), to the head's
per-token outputs, as the authors do.
"""

from __future__ import annotations

import torch

from ...config import format_pair, parse_pair
from ...errors import InputError
from ...models.base import DenseModel
from ...ops import TokenReconstruction
from ...ops.clustering import DenseClustering, TokenClustering
from ...ops.distance import squared_distance
from ...ops.grid import cell_of, window_mask
from ..base import TokenMethod, check_alpha, check_restore, entries, split_prefix
from ..swin_window import refuse_swin_flags
from .config import ExpediteConfig, check_lambda, check_steps, default_alpha, default_hw

REPORTED = (
    "alpha",
    "hw",
    "window",
    "iters",
    "tau",
    "k",
    "norm",
    "neighbours",
    "restore",
    "clustering",
)


def clustering_op(name: str):
    """The op of a --clustering value (config.CLUSTERING_FORMS)."""
    return {"tiled": TokenClustering, "dense": DenseClustering}[name]


class Expedite(TokenMethod):
    name = "expedite"

    def __init__(self, layout, cfg: ExpediteConfig):
        super().__init__(layout)
        self.cfg = cfg
        self.cut, self.hw, self.window = cfg.alpha, cfg.hw, cfg.window
        self.restore_at_output = cfg.restore == "output"
        self.clustering = clustering_op(cfg.clustering)(
            layout.grid, cfg.hw, cfg.window, cfg.iters, cfg.tau
        )
        self.reconstruction = TokenReconstruction.for_grid(
            cfg.k, cfg.tau, cfg.norm, cfg.neighbours, layout.grid, cfg.hw, cfg.window
        )

    def config(self):
        return entries(self.cfg, *REPORTED)

    def reduced_tokens(self):
        return self.hw[0] * self.hw[1]

    def reduce(self, x):
        prefix, z = split_prefix(x, self.layout.num_prefix)
        centers = self.clustering(z)
        index, w = self.reconstruction.weights(z, centers)
        return torch.cat([prefix, centers], dim=1), (index, w)

    def restore(self, x, state, num_prefix):
        prefix, clusters = split_prefix(x, num_prefix)
        return torch.cat([prefix, self.reconstruction(clusters, *state)], dim=1)

    def assign(self, x):
        # argmax of the soft assignment = the nearest center inside the pixel's window
        _, z = split_prefix(x, self.layout.num_prefix)
        z = z.float()
        d = squared_distance(z, self.clustering(z).float())
        allowed = window_mask(self.layout.grid, self.hw, self.window).to(d.device)
        return torch.where(allowed, d, float("inf")).argmin(dim=2)


def reachable(size: int, cells: int, window: int) -> bool:
    """Every one of `cells` cluster rows lies within window//2 of some token row's own cell."""
    own = cell_of(size, cells)
    return bool(((own[:, None] - torch.arange(cells)[None, :]).abs() <= window // 2).any(0).all())


def max_cells(size: int, window: int) -> int:
    """Most cluster rows over `size` token rows such that every cluster can receive tokens."""
    top = size
    while top < size * window and reachable(size, top + 1, window):
        top += 1
    return top


def check_cluster_hw(value, grid: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    """--hw may exceed the token grid, as in the paper's DPT KITTI setting (28 cluster rows on
    22 token rows): soft k-means then spreads each token over several clusters. What it may not
    do is leave a cluster outside every token's window (its center would be a constant)."""
    hw = parse_pair("--hw", value)
    if all(c <= g or reachable(g, c, w) for c, g, w in zip(hw, grid, window)):
        return hw
    top = (max_cells(grid[0], window[0]), max_cells(grid[1], window[1]))
    raise InputError(
        "--hw",
        format_pair(hw),
        f"1..{top[0]} x 1..{top[1]} with --window {format_pair(window)}",
        f"some clusters would be outside every token's "
        f"window on the {format_pair(grid)} token grid",
    )


def build(model: DenseModel, args: dict) -> Expedite:
    """The plain-ViT form (the Swin form is `swin.build_swin`)."""
    refuse_swin_flags(args)
    lay = model.layout
    depth, grid = lay.depth, lay.grid
    alpha = check_alpha(args, depth, default_alpha)
    window = check_lambda(args, ExpediteConfig.window)
    hw = default_hw(grid) if args.get("hw") is None else check_cluster_hw(args["hw"], grid, window)
    steps = check_steps(args, ExpediteConfig(), hw[0] * hw[1], window)
    restore = check_restore(args.get("restore"), model)
    return Expedite(lay, ExpediteConfig(alpha, hw, window, restore=restore, **steps))
