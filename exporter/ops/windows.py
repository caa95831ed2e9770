"""Non-overlapping windows of a [B, H, W, C] token map as a batch of token sequences.

Static reshapes and transposes only; the number of windows per side is a constant, the batch
may be symbolic.
"""

from __future__ import annotations

import torch


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """[B, H, W, C] -> [B * nH * nW, wh * ww, C], windows in raster order per image."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.reshape(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, C)


def window_merge(
    windows: torch.Tensor, window: tuple[int, int], counts: tuple[int, int]
) -> torch.Tensor:
    """[B * nH * nW, wh * ww, C] -> [B, nH * wh, nW * ww, C] (the inverse of window_partition)."""
    (wh, ww), (nh, nw) = window, counts
    C = windows.shape[-1]
    x = windows.reshape(-1, nh, nw, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, nh * wh, nw * ww, C)
