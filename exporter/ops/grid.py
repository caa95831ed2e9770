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


def _axis_tiles(size_in: int, size_out: int, radius: int, tile: int):
    """Per tile of `tile` cells along one axis: its pixels and the clusters they may see."""
    cell = cell_of(size_in, size_out)
    out = []
    for lo in range(0, size_out, tile):
        hi = min(size_out, lo + tile)
        pixels = ((cell >= lo) & (cell < hi)).nonzero().flatten()
        clusters = torch.arange(max(0, lo - radius), min(size_out, hi + radius))
        out.append((pixels, clusters))
    return out


def _shape(grid, cells, window, tile):
    rows = _axis_tiles(grid[0], cells[0], window[0] // 2, tile)
    cols = _axis_tiles(grid[1], cells[1], window[1] // 2, tile)
    P = max(len(p) for p, _ in rows) * max(len(p) for p, _ in cols)
    # one slot more than the largest cluster window: the last slot of every tile stays empty,
    # so that it can stand for "no slot" in the gather table
    Q = max(len(c) for _, c in rows) * max(len(c) for _, c in cols) + 1
    # tiles a cluster row (column) falls in: its clusters list spans tile + 2 * radius cells
    A = max(sum(1 for _, c in rows if i in c) for i in range(cells[0])) * \
        max(sum(1 for _, c in cols if j in c) for j in range(cells[1]))
    return rows, cols, P, Q, A


def tile_cost(grid, cells, window, tile: int) -> int:
    """Elements touched per channel by one tiled EM step: two [P, Q] matmuls per tile, the
    gather of each tile's centers and the gather of each cluster's partial sums."""
    rows, cols, P, Q, A = _shape(grid, cells, window, tile)
    T = len(rows) * len(cols)
    return T * Q * (2 * P + 1) + cells[0] * cells[1] * A


def best_tile(grid, cells, window) -> int:
    """Tile side (in cells) with the lowest tiled cost; ties go to the larger tile."""
    sides = range(1, max(cells) + 1)
    return min(sides, key=lambda t: (tile_cost(grid, cells, window, t), -t))


class WindowTiles:
    """Static tables that cut windowed clustering into dense tiles.

    The h x w cells are grouped into tiles of `tile` x `tile` cells. A tile holds the pixels
    whose own cell lies in it (P slots) and every cluster those pixels may see (Q slots,
    (tile + lambda - 1)^2 at most), so each pixel meets its lambda x lambda clusters inside a
    small [P, Q] block instead of a row of all h*w clusters. Short tiles are padded; padding
    is never `allowed`, and the last cluster slot of every tile is always padding.

    pixels  [T, P]    flat pixel index of each slot (0 for padding)
    valid   [T, P]    slot holds a real pixel
    clusters[T, Q]    flat cluster index of each slot (0 for padding)
    allowed [T, P, Q] pixel may join cluster (inside its window, both real)
    own     [T, P]    slot in `clusters` of the pixel's own cell
    gather  [M, A]    for cluster m, its slots in the flattened [T*Q] list; Q-1 means none
    """

    def __init__(self, grid, cells, window, tile: int | None = None):
        (H, W), (h, w) = grid, cells
        tile = best_tile(grid, cells, window) if tile is None else tile
        rh, rw = window[0] // 2, window[1] // 2
        rows, cols, P, Q, A = _shape(grid, cells, window, tile)
        cell_r, cell_c = cell_of(H, h), cell_of(W, w)
        T = len(rows) * len(cols)
        self.tile, self.P, self.Q, self.T = tile, P, Q, T
        self.pixels = torch.zeros(T, P, dtype=torch.long)
        self.valid = torch.zeros(T, P, dtype=torch.bool)
        self.clusters = torch.zeros(T, Q, dtype=torch.long)
        self.allowed = torch.zeros(T, P, Q, dtype=torch.bool)
        self.own = torch.zeros(T, P, dtype=torch.long)
        self.gather = torch.full((h * w, A), Q - 1, dtype=torch.long)
        filled = torch.zeros(h * w, dtype=torch.long)
        t = 0
        for pr, cr in rows:
            for pc, cc in cols:
                ci, cj = cr.repeat_interleave(len(cc)), cc.repeat(len(cr))  # tile's clusters
                ri, rj = pr.repeat_interleave(len(pc)), pc.repeat(len(pr))  # tile's pixels
                n, q = len(ri), len(ci)
                flat = ci * w + cj
                self.clusters[t, :q] = flat
                self.gather[flat, filled[flat]] = t * Q + torch.arange(q)
                filled[flat] += 1
                self.pixels[t, :n] = ri * W + rj
                self.valid[t, :n] = True
                dr = cell_r[ri][:, None] - ci[None, :]
                dc = cell_c[rj][:, None] - cj[None, :]
                self.allowed[t, :n, :q] = (dr.abs() <= rh) & (dc.abs() <= rw)
                self.own[t, :n] = ((dr == 0) & (dc == 0)).long().argmax(1)
                t += 1
