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


def window_mask(
    grid: tuple[int, int], cells: tuple[int, int], window: tuple[int, int]
) -> torch.Tensor:
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
    """Per tile of `tile` cells along one axis: its cells, and the pixels that may see one."""
    cell = cell_of(size_in, size_out)
    out = []
    for lo in range(0, size_out, tile):
        hi = min(size_out, lo + tile)
        pixels = ((cell >= lo - radius) & (cell < hi + radius)).nonzero().flatten()
        out.append((torch.arange(lo, hi), pixels))
    return out


def _layout(grid, cells, window, tile):
    rows = _axis_tiles(grid[0], cells[0], window[0] // 2, tile)
    cols = _axis_tiles(grid[1], cells[1], window[1] // 2, tile)
    K = max(len(c) for c, _ in rows) * max(len(c) for c, _ in cols)
    P = max(len(p) for _, p in rows) * max(len(p) for _, p in cols)
    return rows, cols, K, P


# Cost of streaming one pixel row of a tile through a product, in multiply-accumulates: a
# rough figure, not a fit.
ROW_COST = 8
# Clusters per tile below which a tile's products run no faster: ONNX Runtime's CPU products
# (block [P, C] times the tile's K clusters) fill vector registers 16 columns at a time, so 4 or
# 9 clusters a tile cost about what 16 do. Measured on one thread (process CPU time, the
# clustering op alone, 5 EM steps): 40x40 -> 24x24 at C = 192 about 21 ms with tiles of 4 cells
# against 40-45 ms with tiles of 2; 32x32 -> 24x24 at C = 768 about 53 ms with tiles of 4 or 6
# against 60 ms with 3 (see docs/performance.md, "Token operations").
MIN_COLUMNS = 16


def tile_cost(grid, cells, window, tile: int, columns: int = MIN_COLUMNS) -> int:
    """Work per channel of one tiled EM step: two [P, K] products per tile (K counted as at
    least `columns`) and the reads of the tile's pixel block (pixels near a tile border are
    read by each tile they see). `columns` 1: the multiply-accumulates alone."""
    rows, cols, K, P = _layout(grid, cells, window, tile)
    return len(rows) * len(cols) * P * (2 * max(K, columns) + ROW_COST)


def dense_cost(grid, cells) -> int:
    """The same for the dense form: two [N, h*w] products (plus [N, h*w] elementwise work)."""
    return grid[0] * grid[1] * (cells[0] * cells[1] * 3 + ROW_COST)


def best_tile(grid, cells, window) -> int:
    """Tile side (in cells) with the lowest tiled cost; ties go to the larger tile."""
    return min(range(1, max(cells) + 1), key=lambda t: (tile_cost(grid, cells, window, t), -t))


class ClusterTiles:
    """Static tables that cut windowed clustering into small dense blocks.

    The h x w cells (clusters) are grouped into tiles of `tile` x `tile`. A tile holds its K
    clusters and the P pixels that may join at least one of them (pixels whose window reaches
    the tile), so every allowed (pixel, cluster) pair sits in exactly one [P, K] block, the
    block of the cluster's tile. A pixel near a tile border appears in several tiles; its
    softmax is completed across them through `appear`. Short tiles are padded; padding is
    never `allowed`.

    clusters [T, K]    flat cluster index of each slot (0 for padding)
    pixels   [T, P]    flat pixel index of each slot (0 for padding)
    allowed  [T, P, K] the pixel may join the cluster (inside its window, both real)
    appear   [N, A]    for each pixel, its slots in the flattened [T*P] list; T*P means none
    owner    [T*P]     pixel of each slot; N for padding
    order    [M]       slot of each cluster in the flattened [T*K] list
    """

    def __init__(self, grid, cells, window, tile: int):
        (H, W), (h, w) = grid, cells
        rh, rw = window[0] // 2, window[1] // 2
        rows, cols, K, P = _layout(grid, cells, window, tile)
        cell_r, cell_c = cell_of(H, h), cell_of(W, w)
        T = len(rows) * len(cols)
        self.tile, self.T, self.K, self.P = tile, T, K, P
        self.clusters = torch.zeros(T, K, dtype=torch.long)
        self.pixels = torch.zeros(T, P, dtype=torch.long)
        self.allowed = torch.zeros(T, P, K, dtype=torch.bool)
        self.owner = torch.full((T * P,), H * W, dtype=torch.long)
        self.order = torch.zeros(h * w, dtype=torch.long)
        slots: list[list[int]] = [[] for _ in range(H * W)]
        t = 0
        for cr, pr in rows:
            for cc, pc in cols:
                ci, cj = cr.repeat_interleave(len(cc)), cc.repeat(len(cr))  # the tile's clusters
                ri, rj = pr.repeat_interleave(len(pc)), pc.repeat(len(pr))  # pixels seeing them
                k, n = len(ci), len(ri)
                self.clusters[t, :k] = ci * w + cj
                self.order[ci * w + cj] = t * K + torch.arange(k)
                flat = ri * W + rj
                self.pixels[t, :n] = flat
                self.owner[t * P : t * P + n] = flat
                for s, p in enumerate(flat.tolist()):
                    slots[p].append(t * P + s)
                dr = cell_r[ri][:, None] - ci[None, :]
                dc = cell_c[rj][:, None] - cj[None, :]
                self.allowed[t, :n, :k] = (dr.abs() <= rh) & (dc.abs() <= rw)
                t += 1
        A = max(len(s) for s in slots)
        self.appear = torch.full((H * W, A), T * P, dtype=torch.long)
        for p, s in enumerate(slots):
            self.appear[p, : len(s)] = torch.tensor(s, dtype=torch.long)
