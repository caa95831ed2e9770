"""The pool baseline written out literally: float64, one image and one output cell at a time.

Pooling averages the rectangle of grid cells each output cell covers (adaptive pooling bins);
upsampling is the bilinear formula of align_corners=False with the edge clamp, term by term.
"""

import copy
import math

import torch


def bins(n_in, n_out):
    """Adaptive pooling bin i covers [floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))."""
    return [(math.floor(i * n_in / n_out), math.ceil((i + 1) * n_in / n_out)) for i in range(n_out)]


def pool(z, grid, cells):
    """z [H*W, C] -> [h*w, C]: each output cell is the mean of the tokens in its bin."""
    H, W = grid
    out = []
    for r0, r1 in bins(H, cells[0]):
        for c0, c1 in bins(W, cells[1]):
            total = torch.zeros(z.shape[1], dtype=z.dtype)
            for r in range(r0, r1):
                for c in range(c0, c1):
                    total = total + z[r * W + c]
            out.append(total / ((r1 - r0) * (c1 - c0)))
    return torch.stack(out)


def source(i, n_in, n_out):
    """Source coordinate of output index i: (i + 0.5) * in/out - 0.5, clamped at 0."""
    s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
    i0 = min(int(math.floor(s)), n_in - 1)
    i1 = min(i0 + 1, n_in - 1)
    return i0, i1, s - i0


def upsample(y, cells, grid):
    """y [h*w, D] -> [H*W, D] by bilinear interpolation between the four nearest cells."""
    h, w = cells
    out = []
    for r in range(grid[0]):
        r0, r1, fr = source(r, h, grid[0])
        for c in range(grid[1]):
            c0, c1, fc = source(c, w, grid[1])
            out.append(
                (1 - fr) * (1 - fc) * y[r0 * w + c0]
                + (1 - fr) * fc * y[r0 * w + c1]
                + fr * (1 - fc) * y[r1 * w + c0]
                + fr * fc * y[r1 * w + c1]
            )
    return torch.stack(out)


def run(model, images, alpha, hw, at_output):
    """The whole pooled model in float64: blocks 0..alpha-1 dense, then pooled tokens."""
    model = copy.deepcopy(model).double().eval()
    lay = model.layout
    P, grid = lay.num_prefix, lay.grid
    with torch.no_grad():
        x = model.embed(images.double())
        feats = []
        for i, blk in enumerate(model.blocks):
            if i == alpha:
                x = torch.stack(
                    [torch.cat([x[b, :P], pool(x[b, P:], grid, hw)]) for b in range(len(x))]
                )
            x = blk(x)
            if i in model.taps:
                if i >= alpha and not at_output:
                    feats.append(
                        torch.stack(
                            [
                                torch.cat([x[b, :P], upsample(x[b, P:], hw, grid)])
                                for b in range(len(x))
                            ]
                        )
                    )
                else:
                    feats.append(x)
        y = model.head_tokens(feats)
        if at_output:
            y = torch.stack([upsample(y[b], hw, grid) for b in range(len(y))])
        return model.head_map(y, images.shape[-2:])
