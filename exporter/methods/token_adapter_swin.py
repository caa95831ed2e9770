"""Token Adapter's Swin form (paper 003, Table 2: MaskDINO + Swin-L, "we reduce the tokens within
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

from ..models.base import DenseModel
from ..ops.rows_cols import RowColEjector, RowColInjector, row_col_counts
from ..ops.windows import window_merge, window_partition
from .base import check_int
from .expedite_swin import default_alpha
from .swin_window import WindowReduction, check_stage, refuse_flags


class WindowTokenAdapter(WindowReduction):
    name = "token-adapter"

    def __init__(self, model, stage, alpha, end, rows_ratio, cols_ratio, unique_ratio, eject,
                 threshold):
        st = model.stages[stage - 1]
        counts = row_col_counts(st.window, rows_ratio, cols_ratio, unique_ratio)
        super().__init__(model, stage, alpha, end, counts["kept"])
        self.rows_ratio, self.cols_ratio, self.unique_ratio = rows_ratio, cols_ratio, unique_ratio
        self.counts_per_window = counts
        self.injector = RowColInjector(st.window, rows_ratio, cols_ratio, unique_ratio)
        self.ejector = RowColEjector(eject, threshold)

    def config(self):
        c = self.counts_per_window
        return {**self.window_config(), "rows_ratio": self.rows_ratio,
                "cols_ratio": self.cols_ratio, "unique_ratio": self.unique_ratio,
                "eject": self.ejector.mode, "threshold": self.ejector.threshold,
                "normal_rows_cols": list(c["normal"]), "kept_rows_cols": list(c["kept"]),
                "unique_rows_cols": list(c["unique"])}

    def reduce(self, x):
        z = window_partition(x, self.window)  # [B*nW, K*K, C]
        merged, parts = self.injector(z)
        w = self.ejector.weights(parts["zn"], merged)
        return window_merge(merged.to(x.dtype), self.reduced_window, self.counts), w

    def restore(self, x, state, num_prefix=0):
        reduced = window_partition(x, self.reduced_window)
        return window_merge(self.ejector(reduced, state), self.window, self.counts)


def build_swin(model: DenseModel, args: dict, check_reduction) -> WindowTokenAdapter:
    """The plain form's checks on Swin's terms: --alpha and --restore-after count the blocks of
    --stage. `check_reduction` is the plain form's parser of the ratio/eject flags (passed
    in, so this module does not import it)."""
    refuse_flags(args, {"window_hw": "--window-hw"}, "--rows-ratio, --cols-ratio on Swin models",
                 "token-adapter's reduced window follows from the row and column ratios")
    stage = check_stage(model, args.get("stage"))
    depth = model.stages[stage - 1].depth
    alpha = args.get("alpha")
    alpha = default_alpha(depth) if alpha is None else check_int("--alpha", alpha, 1, depth - 1)
    end = args.get("restore_after")
    end = depth if end is None else check_int("--restore-after", end, alpha + 1, depth)
    return WindowTokenAdapter(model, stage, alpha, end, *check_reduction(args))
