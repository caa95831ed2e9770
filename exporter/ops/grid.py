"""Constant index tables over token grids, built once at patch time (never per forward)."""

from __future__ import annotations

import torch


def pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """[size_out, size_in] averaging matrix equal to 1-D adaptive average pooling.

    Bin i covers [floor(i*in/out), ceil((i+1)*in/out)), as torch's adaptive pooling does,
    so non-divisible sizes (40 -> 28) pool exactly like `F.adaptive_avg_pool2d`.
    """
    m = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def cell_of(size_in: int, size_out: int) -> torch.Tensor:
    """Cell index floor(r * out / in) of every row r of a grid of `size_in` rows."""
    return torch.div(torch.arange(size_in) * size_out, size_in, rounding_mode="floor")


def window_mask(grid: tuple[int, int], cells: tuple[int, int], window: tuple[int, int]) -> torch.Tensor:
    """[H*W, h*w] bool: pixel p may interact with cluster i.

    Pixel (r, c) lies in cell (floor(r*h/H), floor(c*w/W)); it sees the window[0] x window[1]
    clusters centred on that cell (clipped at the border).
    """
    (H, W), (h, w) = grid, cells
    rh, rw = window[0] // 2, window[1] // 2
    row_ok = (cell_of(H, h)[:, None] - torch.arange(h)[None, :]).abs() <= rh  # [H, h]
    col_ok = (cell_of(W, w)[:, None] - torch.arange(w)[None, :]).abs() <= rw  # [W, w]
    return (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(H * W, h * w)


def own_cell(grid: tuple[int, int], cells: tuple[int, int]) -> torch.Tensor:
    """[H*W] flat index of each pixel's own cell."""
    (H, W), (h, w) = grid, cells
    return (cell_of(H, h)[:, None] * w + cell_of(W, w)[None, :]).reshape(-1)
