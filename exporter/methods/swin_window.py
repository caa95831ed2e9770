"""What the Swin forms of the methods share: reduce the tokens of each attention window of one
stage after `alpha` of its blocks, run the following blocks of that stage on the reduced
windows (window size k instead of K, shift k//2), restore every window at the end.

A method sees the backbone only through its WINDOWS capability: `stages`
(`WindowStage`: grid, window, first step, depth), the flat `blocks` and `window_block`, which
copies a block for a reduced grid and window.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import format_pair, parse_pair
from ..errors import InputError
from ..models.base import DenseModel
from .base import TokenMethod, check_int

SWIN_FLAGS = {"stage": "--stage", "window_hw": "--window-hw"}


def refuse_flags(args: dict, flags: dict, allowed: str, reason: str) -> None:
    """InputError for the first of `flags` (config key -> flag) present in args."""
    for key, flag in flags.items():
        if args.get(key) is not None:
            raise InputError(flag, args[key], allowed, reason)


def refuse_swin_flags(args: dict) -> None:
    refuse_flags(
        args, SWIN_FLAGS, "only with Swin models (swin_*)", "does not apply to a plain ViT"
    )


def default_stage(model: DenseModel) -> int:
    """The deepest stage (stage 3 of every Swin), where the papers cut."""
    depths = [st.depth for st in model.stages]
    return depths.index(max(depths)) + 1


def check_stage(model: DenseModel, value) -> int:
    """--stage as a 1-based stage index with at least 2 blocks (one before the cut, one after)."""
    n = len(model.stages)
    stage = default_stage(model) if value is None else check_int("--stage", value, 1, n)
    if model.stages[stage - 1].depth < 2:
        deep = [str(i + 1) for i, st in enumerate(model.stages) if st.depth >= 2]
        raise InputError("--stage", stage, "|".join(deep), "the stage has a single block")
    return stage


def check_window_hw(value, window: tuple[int, int], stage: int, default) -> tuple[int, int]:
    """--window-hw k_h x k_w: smaller than the stage's window K on each side."""
    hw = default if value is None else parse_pair("--window-hw", value)
    if hw[0] >= window[0] or hw[1] >= window[1]:
        raise InputError(
            "--window-hw",
            format_pair(hw),
            f"1..{window[0] - 1} x 1..{window[1] - 1}",
            f"not smaller than the stage-{stage} window {format_pair(window)}",
        )
    return hw


class WindowReduction(TokenMethod):
    """Reduce every K x K window of stage `stage` (1-based) to k x k tokens after its block
    `alpha`; steps alpha+1 .. `end` of the stage run on the reduced map with window k; the
    map is restored after step `end` (the stage's last by default).

    Subclasses implement `reduce(x [B, H, W, C]) -> (x [B, nH*k_h, nW*k_w, C], state)` and
    `restore(x, state) -> [B, H, W, C]`.
    """

    def __init__(
        self, model: DenseModel, stage: int, alpha: int, end: int, reduced_window: tuple[int, int]
    ):
        super().__init__(model.layout)
        st = model.stages[stage - 1]
        self.stage, self.alpha, self.end_in_stage = stage, alpha, end
        self.grid, self.window, self.reduced_window = st.grid, st.window, tuple(reduced_window)
        self.counts = (st.grid[0] // st.window[0], st.grid[1] // st.window[1])  # windows per side
        self.cut = st.first + alpha
        self.end = st.first + end - 1  # flat index of the last step on reduced windows
        reduced_grid = (self.counts[0] * reduced_window[0], self.counts[1] * reduced_window[1])
        self.blocks = nn.ModuleList(
            model.window_block(i, reduced_grid, self.reduced_window)
            for i in range(self.cut, self.end + 1)
        )

    def full_tokens(self):
        return self.grid[0] * self.grid[1]

    def reduced_tokens(self):
        return self.counts[0] * self.counts[1] * self.reduced_window[0] * self.reduced_window[1]

    def window_config(self) -> dict:
        return {
            "stage": self.stage,
            "alpha": self.alpha,
            "restore_after": self.end_in_stage,
            "window": format_pair(self.window),
            "window_hw": format_pair(self.reduced_window),
            "windows": format_pair(self.counts),
        }

    def run(self, model: DenseModel, images: torch.Tensor):
        x = model.embed(images)
        feats, state = [], None
        for i, step in enumerate(model.blocks):
            if i == self.cut:
                x, state = self.reduce(x)
            if state is None:
                x = step(x)
            else:
                # the copies are the method's own: they stay float32 when the model is halved
                blk = self.blocks[i - self.cut]
                x = blk(x.to(next(blk.parameters()).dtype)).to(x.dtype)
            if i == self.end:
                x, state = self.restore(x, state), None
            if i in model.taps:
                feats.append(x)
        return model.head_map(model.head_tokens(feats), images.shape[-2:])
