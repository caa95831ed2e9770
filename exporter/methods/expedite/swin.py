"""Expedite's Swin form (the Expedite paper, "Extension to Swin Transformer", Figure 3): the window token
clustering layer and the window token reconstruction layer.

Inside each K x K attention window of one stage, after `alpha` of its blocks, the tokens are
clustered into k x k (the clustering of the plain form on the window's grid: adaptive-pool
initial centers, lambda x lambda neighbourhood, kappa EM steps); the remaining blocks of the
stage run with window k on the clustered map (bias table resized bilinearly, shift k//2); at
the end of the stage each window is reconstructed from its own k x k refined tokens (Eq. 4,
weights from the features before clustering and the centers at clustering time). All windows
of a batch are clustered as one batch of [K*K, C] sequences.

Defaults: Table 2 of the supplementary (Mask2Former + Swin-L, ADE20K): clustering after block 4
of the 18 of stage 3 (the paper's alpha = 8 counts the 4 blocks of stages 1-2), 12x12 -> 8x8,
lambda 5x5, kappa 5, tau 100, k 10; alpha and k x k scale with the stage's depth and window.
"""

from __future__ import annotations

from ...config import format_pair
from ...models.base import DenseModel
from ...ops import TokenReconstruction
from ...ops.windows import window_merge, window_partition
from ..base import check_alpha, entries
from ..swin_window import WindowReduction, check_stage, check_window_hw, refuse_flags
from .config import SWIN_DEFAULTS, ExpediteConfig, check_lambda, check_steps
from .vit import clustering_op

VIT_ONLY = {"hw": "--hw", "restore": "--restore"}


def default_alpha(depth: int) -> int:
    """4 of the 18 blocks of Swin-L's stage 3, scaled to the stage's depth."""
    return max(1, min(depth - 1, round(depth * 4 / 18)))


def default_window_hw(window: tuple[int, int]) -> tuple[int, int]:
    """12x12 -> 8x8 (two thirds per side), at least 1 and below K."""
    return tuple(max(1, min(w - 1, round(w * 2 / 3))) for w in window)


class WindowExpedite(WindowReduction):
    name = "expedite"

    def __init__(self, model, cfg: ExpediteConfig):
        st = model.stages[cfg.stage - 1]
        super().__init__(model, cfg.stage, cfg.alpha, st.depth, cfg.window_hw)
        self.cfg = cfg
        self.clustering = clustering_op(cfg.clustering)(
            st.window, cfg.window_hw, cfg.window, cfg.iters, cfg.tau
        )
        self.reconstruction = TokenReconstruction.for_grid(
            cfg.k, cfg.tau, cfg.norm, cfg.neighbours, st.window, cfg.window_hw, cfg.window
        )

    def config(self):
        # the report's "window" is the stage's attention window; --window is lambda here
        steps = entries(self.cfg, "iters", "tau", "k", "norm", "neighbours", "clustering")
        return {**self.window_config(), "lambda": format_pair(self.cfg.window), **steps}

    def reduce(self, x):
        z = window_partition(x, self.window)  # [B*nW, K*K, C]
        centers = self.clustering(z)  # [B*nW, k*k, C]
        index, w = self.reconstruction.weights(z, centers)
        return window_merge(centers, self.reduced_window, self.counts), (index, w)

    def restore(self, x, state, num_prefix=0):
        refined = window_partition(x, self.reduced_window)
        return window_merge(self.reconstruction(refined, *state), self.window, self.counts)


def build_swin(model: DenseModel, args: dict) -> WindowExpedite:
    refuse_flags(
        args,
        VIT_ONLY,
        "--stage, --alpha, --window-hw on Swin models",
        "the Swin form clusters per window and reconstructs at the end of the stage",
    )
    stage = check_stage(model, args.get("stage"))
    st = model.stages[stage - 1]
    alpha = check_alpha(args, st.depth, default_alpha)
    hw = check_window_hw(args.get("window_hw"), st.window, stage, default_window_hw(st.window))
    lam = check_lambda(args, SWIN_DEFAULTS.window)
    steps = check_steps(args, SWIN_DEFAULTS, hw[0] * hw[1], lam)
    return WindowExpedite(
        model, ExpediteConfig(alpha, window=lam, stage=stage, window_hw=hw, **steps)
    )
