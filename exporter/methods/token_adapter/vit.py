"""Token Adapter (Su, Fei, Luo, 2024): merge whole rows and columns of tokens, restore by matching.

After block alpha the injector ranks rows and columns of the patch-token grid by importance
(max over channels, then over the line), merges the tokens of the r_h / r_w least important
rows / columns ("normal" tokens) into their most similar "representative" token (cosine
similarity, group average) and keeps the "unique" tokens (the unique_ratio most important kept
rows / columns) intact. The blocks alpha+1 .. restore_after run on [prefix; K_h x K_w tokens];
then the ejector rebuilds the H x W grid from the similarity between the original tokens and
the merged, not yet refined, reduced tokens (X_r^m, Table 4c). Prefix tokens (class, register)
are never merged; they run through every block and come out as they are.

Placement of the ejector: it needs backbone tokens (its similarities are between backbone
features), so it always runs inside the backbone, after block `--restore-after`, also for
models whose default is to restore at the output (Segmenter): their head then runs on the full
token grid. With --restore-after < depth the last blocks run at full resolution again.

Default alpha, from Table 1 (Segmenter ViT-L/16, ADE20K, 640x640: 52.02 mIoU, 273.0 GFLOPs vs
658.98), counted in multiply-accumulates (C = 1024, 24 blocks, 150 classes, 1 class token):
    block(n)      = n*12*C^2 + 2*n^2*C      -> block(1601) = 25.39 G, block(785) = 11.14 G
    patch embed   = 1600 * 768 * C          = 1.26 G
    decoder(n)    = 2*n*C^2 (proj_dec, proj_patch) + 2*block(n + 150) + 150*C^2 + n*150*C
                    decoder(1600) = 60.34 G
    baseline      = 1.26 + 24*25.39 + 60.34 = 671.1 G   (paper: 658.98, within 2 %)
    r_h = r_w = 0.3 keeps 28 x 28 = 784 tokens; the adapter's own matmuls (two N x 784 x C
    similarities, the one-hot merge and the m-threshold average) add 4*1600*784*C = 5.1 G:
    total(alpha)  = 1.26 + alpha*25.39 + (24 - alpha)*11.14 + 60.34 + 5.1
                  = 334.1 + 14.25*alpha G   -> alpha = 1: 348.3 G, alpha = 2: 362.6 G
273 G is below even alpha = 0 under this count (the decoder alone costs 60 G on the full
grid; running it on the reduced grid instead would still give 297.6 + 14.25*alpha G), so the
paper's counter must omit part of this cost. What the number does imply is the earliest
injector; alpha = 1 of 24 is the nearest reachable point (348 G, 52 % of the baseline), and the
default keeps that fraction of the depth: alpha = max(1, round(depth / 24)).
"""

from __future__ import annotations

import torch

from ...models.base import DenseModel
from ...ops.rows_cols import RowColEjector, RowColInjector, row_col_counts
from ..base import TokenMethod, check_alpha, check_int, entries, split_prefix
from ..swin_window import refuse_flags
from .config import TokenAdapterConfig, check_reduction, counts_entries

REPORTED = (
    "alpha",
    "restore_after",
    "rows_ratio",
    "cols_ratio",
    "unique_ratio",
    "eject",
    "threshold",
)


def default_alpha(depth: int) -> int:
    """alpha = 1 of 24 blocks for Segmenter ViT-L/16 (see the module docstring), scaled to depth."""
    return max(1, min(depth - 1, round(depth / 24)))


class TokenAdapter(TokenMethod):
    name = "token-adapter"
    restore_at_output = False  # the ejector needs backbone tokens (module docstring)

    def __init__(self, layout, cfg: TokenAdapterConfig):
        super().__init__(layout)
        self.cfg = cfg
        self.cut, self.restore_after = cfg.alpha, cfg.restore_after
        self.rows_ratio, self.cols_ratio = cfg.rows_ratio, cfg.cols_ratio
        self.unique_ratio = cfg.unique_ratio
        self.injector = RowColInjector(
            layout.grid, cfg.rows_ratio, cfg.cols_ratio, cfg.unique_ratio
        )
        self.ejector = RowColEjector(cfg.eject, cfg.threshold)

    def config(self):
        counts = row_col_counts(
            self.layout.grid, self.rows_ratio, self.cols_ratio, self.unique_ratio
        )
        return {**entries(self.cfg, *REPORTED), **counts_entries(counts)}

    def reduced_tokens(self):
        return self.injector.num_reduced

    def reduce(self, x):
        prefix, z = split_prefix(x, self.layout.num_prefix)
        merged, parts = self.injector(z)
        w = self.ejector.weights(parts["zn"], merged)
        return torch.cat([prefix, merged.to(x.dtype)], dim=1), w

    def restore(self, x, state, num_prefix):
        prefix, reduced = split_prefix(x, num_prefix)
        return torch.cat([prefix, self.ejector(reduced, state)], dim=1)

    def assign(self, x):
        # slot of the kept grid each token was merged into
        return self.injector(split_prefix(x, self.layout.num_prefix)[1])[1]["target"]

    def run(self, model: DenseModel, images: torch.Tensor) -> torch.Tensor:
        x = model.embed(images)
        feats, state, P = [], None, self.layout.num_prefix
        for i, blk in enumerate(model.blocks):
            if i == self.cut:
                x, state = self.reduce(x)
            x = blk(x)
            if i == self.restore_after - 1:
                x, state = self.restore(x, state, P), None
            if i in model.taps:
                # a tap inside the reduced span sees the restored grid; the span goes on reduced
                feats.append(x if state is None else self.restore(x, state, P))
        return model.head_map(model.head_tokens(feats), images.shape[-2:])


def build(model: DenseModel, args: dict) -> TokenAdapter:
    """The plain-ViT form (the Swin form is `swin.build_swin`)."""
    refuse_flags(
        args,
        {"stage": "--stage"},
        "only with Swin models (swin_*)",
        "does not apply to a plain ViT",
    )
    lay = model.layout
    depth = lay.depth
    alpha = check_alpha(args, depth, default_alpha)
    end = args.get("restore_after")
    restore_after = depth if end is None else check_int("--restore-after", end, alpha + 1, depth)
    return TokenAdapter(lay, TokenAdapterConfig(alpha, restore_after, **check_reduction(args)))
