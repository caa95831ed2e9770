"""Token Adapter's Swin form (the Token Adapter paper, Table 2: MaskDINO + Swin-L, "we reduce the tokens within
each window instead of the entire token sequence").

Inside each K x K attention window of one stage, after `alpha` of its blocks, the injector
merges the window's least important rows and columns (importance, unique / representative /
normal tokens, cosine matching and group average exactly as the plain form, on the window's
grid), leaving a K_h x K_w window of tokens; the following blocks of the stage run with window
K_h x K_w (bias table resized bilinearly, shift K_h//2); after block `--restore-after` of the
stage (its last by default) the ejector rebuilds each window from its own reduced tokens. All
windows of a batch are one batch of [K*K, C] sequences, so the counts stay static.

Default alpha: the Expedite Swin default (the paper compares the two at the same places).
"""

from __future__ import annotations

from ...models.base import DenseModel
from ...ops.rows_cols import RowColEjector, RowColInjector, row_col_counts
from ...ops.windows import window_merge, window_partition
from ..base import check_alpha, check_int, entries
from ..expedite.swin import default_alpha
from ..swin_window import WindowReduction, check_stage, refuse_flags
from .config import TokenAdapterConfig, check_reduction, counts_entries


class WindowTokenAdapter(WindowReduction):
    name = "token-adapter"

    def __init__(self, model, cfg: TokenAdapterConfig):
        st = model.stages[cfg.stage - 1]
        counts = row_col_counts(st.window, cfg.rows_ratio, cfg.cols_ratio, cfg.unique_ratio)
        super().__init__(model, cfg.stage, cfg.alpha, cfg.restore_after, counts["kept"])
        self.cfg = cfg
        self.counts_per_window = counts
        self.injector = RowColInjector(st.window, cfg.rows_ratio, cfg.cols_ratio, cfg.unique_ratio)
        self.ejector = RowColEjector(cfg.eject, cfg.threshold)

    def config(self):
        ratios = entries(self.cfg, "rows_ratio", "cols_ratio", "unique_ratio", "eject", "threshold")
        return {**self.window_config(), **ratios, **counts_entries(self.counts_per_window)}

    def reduce(self, x):
        z = window_partition(x, self.window)  # [B*nW, K*K, C]
        merged, parts = self.injector(z)
        w = self.ejector.weights(parts["zn"], merged)
        return window_merge(merged.to(x.dtype), self.reduced_window, self.counts), w

    def restore(self, x, state, num_prefix=0):
        reduced = window_partition(x, self.reduced_window)
        return window_merge(self.ejector(reduced, state), self.window, self.counts)


def build_swin(model: DenseModel, args: dict) -> WindowTokenAdapter:
    """The plain form's checks on Swin's terms: --alpha and --restore-after count the blocks of
    --stage."""
    refuse_flags(
        args,
        {"window_hw": "--window-hw"},
        "--rows-ratio, --cols-ratio on Swin models",
        "token-adapter's reduced window follows from the row and column ratios",
    )
    stage = check_stage(model, args.get("stage"))
    depth = model.stages[stage - 1].depth
    alpha = check_alpha(args, depth, default_alpha)
    end = args.get("restore_after")
    end = depth if end is None else check_int("--restore-after", end, alpha + 1, depth)
    cfg = TokenAdapterConfig(alpha, end, stage=stage, **check_reduction(args))
    return WindowTokenAdapter(model, cfg)
