"""Swin blocks and the window forms of Expedite and Token Adapter written out literally: one
image, one window, one attention head at a time, float64. Used to hold the export forms equal.

Swin (Liu et al. 2021): a block attends inside K x K windows with a learned bias indexed by the
relative position of the two tokens; every other block first rolls the map by K//2 up and left,
and tokens that the roll brought together from different image regions do not attend to each
other (logit -100, as the official code). Windows as large as the map are neither shifted nor
masked. Expedite's Swin variant (the Expedite paper, Figure 3) runs the blocks after the cut with window
k x k and the bias table bilinearly resized from (2K-1)^2 to (2k-1)^2 entries.
"""

import math

import torch

from tests.reference import expedite as expedite_ref
from tests.reference import token_adapter as adapter_ref

MASKED = -100.0


def bilinear_table(table, old, new):
    """[(2*old-1)^2, heads] -> [(2*new-1)^2, heads]: bilinear, half-pixel centres, edges clamped
    (what image resizing with align_corners=False does)."""
    src = (2 * old[0] - 1, 2 * old[1] - 1)
    dst = (2 * new[0] - 1, 2 * new[1] - 1)
    grid = table.reshape(src[0], src[1], -1)
    out = torch.zeros(dst[0], dst[1], table.shape[1], dtype=table.dtype)

    def taps(i, n_src, n_dst):
        pos = max((i + 0.5) * n_src / n_dst - 0.5, 0.0)
        lo = min(int(math.floor(pos)), n_src - 1)
        hi = min(lo + 1, n_src - 1)
        return lo, hi, pos - lo

    for i in range(dst[0]):
        r0, r1, fr = taps(i, src[0], dst[0])
        for j in range(dst[1]):
            c0, c1, fc = taps(j, src[1], dst[1])
            out[i, j] = (
                (1 - fr) * (1 - fc) * grid[r0, c0]
                + (1 - fr) * fc * grid[r0, c1]
                + fr * (1 - fc) * grid[r1, c0]
                + fr * fc * grid[r1, c1]
            )
    return out.reshape(-1, table.shape[1])


def region(i, size, window, shift):
    """Which of the three bands (of the rolled map) position i lies in."""
    if i < size - window:
        return 0
    return 1 if i < size - shift else 2


def relative_bias(table, window, head):
    """[K*K, K*K] bias of window tokens a, b: the table entry of their offset (dy, dx)."""
    wh, ww = window
    cells = [(i, j) for i in range(wh) for j in range(ww)]
    bias = torch.zeros(len(cells), len(cells), dtype=table.dtype)
    for a, (ra, ca) in enumerate(cells):
        for b, (rb, cb) in enumerate(cells):
            bias[a, b] = table[(ra - rb + wh - 1) * (2 * ww - 1) + (ca - cb + ww - 1), head]
    return bias


def shift_mask(cells, size, window, shift, dtype):
    """-100 between tokens of a window that the roll brought from different regions."""
    mask = torch.zeros(len(cells), len(cells), dtype=dtype)
    for a, (ra, ca) in enumerate(cells):
        for b, (rb, cb) in enumerate(cells):
            if region(ra, size[0], window[0], shift[0]) != region(
                rb, size[0], window[0], shift[0]
            ) or region(ca, size[1], window[1], shift[1]) != region(
                cb, size[1], window[1], shift[1]
            ):
                mask[a, b] = MASKED
    return mask


def block(blk, x, window, shift, table):
    """One Swin block on x [H, W, C]; `blk` supplies the weights (norms, qkv, proj, mlp)."""
    H, W, C = x.shape
    attn = blk.attn
    heads = attn.num_heads
    hd = attn.qkv.weight.shape[0] // 3 // heads
    bias = [relative_bias(table, window, n) for n in range(heads)]
    h = blk.norm1(x)
    rolled = torch.roll(h, shifts=(-shift[0], -shift[1]), dims=(0, 1))
    out = torch.zeros_like(rolled)
    wh, ww = window
    for r0 in range(0, H, wh):
        for c0 in range(0, W, ww):
            cells = [(r0 + i, c0 + j) for i in range(wh) for j in range(ww)]
            mask = shift_mask(cells, (H, W), window, shift, x.dtype) if any(shift) else 0.0
            t = torch.stack([rolled[r, c] for r, c in cells])
            qkv = attn.qkv(t).reshape(len(cells), 3, heads, hd)
            y = torch.zeros(len(cells), heads, hd, dtype=x.dtype)
            for n in range(heads):
                q, k, v = qkv[:, 0, n], qkv[:, 1, n], qkv[:, 2, n]
                logits = q @ k.T / math.sqrt(hd) + bias[n] + mask
                y[:, n] = torch.softmax(logits, dim=1) @ v
            y = attn.proj(y.reshape(len(cells), heads * hd))
            for a, (r, c) in enumerate(cells):
                out[r, c] = y[a]
    x = x + torch.roll(out, shifts=shift, dims=(0, 1))
    return x + blk.mlp(blk.norm2(x))


def shift_of(index_in_stage, grid, window):
    """Odd blocks of a stage shift by half a window, unless one window covers the map."""
    if index_in_stage % 2 == 0 or (grid[0] <= window[0] and grid[1] <= window[1]):
        return (0, 0)
    return (window[0] // 2, window[1] // 2)


def windows_of(x, window):
    """[H, W, C] -> list of [wh*ww, C] windows in raster order."""
    H, W, C = x.shape
    return [
        x[r : r + window[0], c : c + window[1]].reshape(-1, C)
        for r in range(0, H, window[0])
        for c in range(0, W, window[1])
    ]


def from_windows(wins, window, counts):
    rows = []
    for i in range(counts[0]):
        row = [wins[i * counts[1] + j].reshape(window[0], window[1], -1) for j in range(counts[1])]
        rows.append(torch.cat(row, dim=1))
    return torch.cat(rows, dim=0)


def stage_blocks(swin):
    return [list(layer.blocks) for layer in swin.layers]


def run(swin, image, stage, alpha, end, reduced_window, reduce, restore):
    """The backbone on one image [3, H, W] with the window method on `stage` (1-based).

    reduce(window tokens [K*K, C]) -> (reduced [k_h*k_w, C], state); restore(refined, state).
    Returns the four stage maps [C, H_s, W_s] (the last after the final norm)."""
    x = swin.patch_embed(image.unsqueeze(0))[0]
    feats = []
    for s, (layer, blocks) in enumerate(zip(swin.layers, stage_blocks(swin))):
        x = layer.downsample(x.unsqueeze(0))[0]
        grid = tuple(x.shape[:2])
        K = tuple(min(w, g) for w, g in zip(blocks[0].attn.window_size, grid))
        for i, blk in enumerate(blocks):
            table = blk.attn.relative_position_bias_table
            if s == stage - 1 and i == alpha:
                counts = (grid[0] // K[0], grid[1] // K[1])
                pairs = [reduce(w) for w in windows_of(x, K)]
                x = from_windows([p[0] for p in pairs], reduced_window, counts)
            if s == stage - 1 and alpha <= i < end:
                rgrid = tuple(x.shape[:2])
                x = block(
                    blk,
                    x,
                    reduced_window,
                    shift_of(i, rgrid, reduced_window),
                    bilinear_table(table, K, reduced_window),
                )
            else:
                x = block(blk, x, K, shift_of(i, grid, K), table)
            if s == stage - 1 and i == end - 1:
                refined = windows_of(x, reduced_window)
                x = from_windows([restore(r, p[1]) for r, p in zip(refined, pairs)], K, counts)
        feats.append(x)
    feats[-1] = swin.norm(feats[-1])
    return [f.permute(2, 0, 1) for f in feats]


def expedite_window(window, reduced_window, lam, iters, tau, k, norm):
    """Expedite's per-window clustering and reconstruction (tests/reference/expedite.py)."""

    def reduce(z):
        centers = expedite_ref.cluster(z, window, reduced_window, lam, iters, tau)
        return centers, (z, centers)

    def restore(refined, state):
        z, centers = state
        return expedite_ref.reconstruct(z, centers, refined, k, tau, norm)

    return reduce, restore


def adapter_window(window, r_h, r_w, unique, mode, threshold):
    """Token Adapter's injector and ejector on one window (tests/reference/token_adapter.py)."""

    def reduce(z):
        merged, _ = adapter_ref.inject(z, window, r_h, r_w, unique)
        return merged, (z, merged)

    def restore(refined, state):
        z, merged = state
        return adapter_ref.eject(z, merged, refined, mode, threshold)

    return reduce, restore
