"""The pool baseline's plain-token-grid form (see the package for the method)."""

from __future__ import annotations

import torch

from ...models.base import DenseModel
from ...ops.grid import own_cell
from ...ops.pooling import GridPooling, GridUpsampling
from ..base import (
    TokenMethod,
    check_alpha,
    check_hw,
    check_restore,
    entries,
    split_prefix,
)
from ..expedite.config import default_alpha, default_hw
from . import PoolConfig


class GridPool(TokenMethod):
    name = "pool"

    def __init__(self, layout, cfg: PoolConfig):
        super().__init__(layout)
        self.cfg = cfg
        self.cut, self.hw, self.restore_at_output = cfg.alpha, cfg.hw, cfg.restore == "output"
        self.pooling = GridPooling(layout.grid, cfg.hw)
        self.upsampling = GridUpsampling(cfg.hw, layout.grid)

    def config(self):
        return entries(self.cfg, "alpha", "hw", "restore")

    def reduced_tokens(self):
        return self.hw[0] * self.hw[1]

    def reduce(self, x):
        prefix, z = split_prefix(x, self.layout.num_prefix)
        # The state is empty but not None: the base loop reads None as "not reduced yet".
        return torch.cat([prefix, self.pooling(z)], dim=1), ()

    def restore(self, x, state, num_prefix):
        prefix, pooled = split_prefix(x, num_prefix)
        return torch.cat([prefix, self.upsampling(pooled)], dim=1)

    def assign(self, x):
        # the pooled cell whose bin starts at or before each token (bins may overlap)
        cells = own_cell(self.layout.grid, self.hw).to(x.device)
        return cells.view(1, -1).expand(x.shape[0], -1)


def build(model: DenseModel, args: dict) -> GridPool:
    lay = model.layout
    alpha = check_alpha(args, lay.depth, default_alpha)
    hw = default_hw(lay.grid) if args.get("hw") is None else check_hw(args["hw"], lay.grid)
    return GridPool(lay, PoolConfig(alpha, tuple(hw), check_restore(args.get("restore"), model)))
