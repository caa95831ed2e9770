"""What every token-reduction method provides, and the model it produces.

A method sees a `DenseModel` only through its `TokenLayout`, its blocks and its head hooks.
The default `run` covers methods that reduce once and restore once (Expedite, pooling):
they implement `reduce` and `restore`; others override `run`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.base import DenseModel, TokenLayout
from .checks import (  # noqa: F401  (the methods' modules import them from here)
    check_alpha,
    check_choice,
    check_hw,
    check_int,
    check_positive,
    check_restore,
)
from .spec import (  # noqa: F401
    MethodSpec,
    NoConfig,
    Option,
    entries,
    flag,
    flag_of,
    options_of,
)


class TokenMethod(nn.Module):
    """A token-reduction method attached to one model layout."""

    name: str = ""
    # False for the baseline (`--method none`): nothing to compare a speed-up or retention with
    reduces: bool = True
    restore_at_output: bool = False
    # how the pictures caption the patch tokens `assignment` marks -1
    pruned_note: str = "pruned"

    def __init__(self, layout: TokenLayout):
        super().__init__()
        self.layout = layout
        self.cut: int | None = None  # 0-based index of the first block that sees reduced tokens

    def config(self) -> dict:
        """The resolved settings, as written into report.json."""
        return {}

    def reduced_tokens(self) -> int:
        """Number of patch tokens the blocks after the cut process."""
        return self.layout.num_patches

    def full_tokens(self) -> int:
        """Number of patch tokens those blocks process in the unmodified model."""
        return self.layout.num_patches

    def reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def restore(self, x: torch.Tensor, state: Any, num_prefix: int) -> torch.Tensor:
        raise NotImplementedError

    def assignment(self, model: DenseModel, images: torch.Tensor) -> torch.Tensor | None:
        """For pictures: for each patch token, the reduced token it went to, [B, N] int64 (equal
        ids = one reduced token; -1 = pruned), or None for a method without such a map.
        Runs the model up to the cut and calls `assign`; not part of the exported graph."""
        if self.cut is None:
            return None
        x = model.embed(images)
        for blk in list(model.blocks)[: self.cut]:
            x = self.block_forward(blk, x, None)
        return self.assign(x)

    def assign(self, x: torch.Tensor) -> torch.Tensor | None:
        """`assignment` from the tokens that reach the cut, x [B, P + N, C]."""
        return None

    def decisions(self) -> tuple[str, ...]:
        """Names of the discrete choices (top-k, argmax, selection indices) this method makes,
        as its token ops pass them to `ops.decisions.decide`; validation compares them
        between the reference and a runtime. By default those of the ops it holds."""
        names = (n for m in self.modules() for n in getattr(m, "decision_names", ()))
        return tuple(dict.fromkeys(names))

    def block_forward(self, block: nn.Module, x: torch.Tensor, state: Any) -> torch.Tensor:
        """One block on the current tokens (`state` is None before the cut)."""
        return block(x)

    def run(self, model: DenseModel, images: torch.Tensor) -> torch.Tensor:
        x = model.embed(images)
        feats, state = [], None
        for i, blk in enumerate(model.blocks):
            if i == self.cut:
                x, state = self.reduce(x)
            x = self.block_forward(blk, x, state)
            if i in model.taps:
                if state is not None and not self.restore_at_output:
                    feats.append(self.restore(x, state, self.layout.num_prefix))
                else:
                    feats.append(x)
        y = model.head_tokens(feats)
        if state is not None and self.restore_at_output:
            y = self.restore(y, state, 0)
        return model.head_map(y, images.shape[-2:])


class ReducedModel(nn.Module):
    """The patched model: the PyTorch reference that every artifact is compared with."""

    def __init__(self, model: DenseModel, method: TokenMethod):
        super().__init__()
        self.model, self.method = model, method
        self.output_names = model.output_names

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.run(self.model, images)


def split_prefix(x: torch.Tensor, num_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, :num_prefix], x[:, num_prefix:]
