"""Expedite written straight from the paper (001 Eq. 2-4, supplementary Figure 1): dense, slow,
float64, one pixel at a time. The export form in exporter/ops must equal it."""

import math

import torch


def adaptive_pool_1d_bins(n_in, n_out):
    """Bins of adaptive average pooling: [floor(i*n/m), ceil((i+1)*n/m))."""
    return [(math.floor(i * n_in / n_out), math.ceil((i + 1) * n_in / n_out)) for i in range(n_out)]


def initial_centers(z, grid, cells):
    """Eq. 2: S = AAP(Z, h x w). z: [N, C] for one image."""
    H, W = grid
    h, w = cells
    zg = z.reshape(H, W, -1)
    out = []
    for r0, r1 in adaptive_pool_1d_bins(H, h):
        for c0, c1 in adaptive_pool_1d_bins(W, w):
            out.append(zg[r0:r1, c0:c1].reshape(-1, z.shape[1]).mean(0))
    return torch.stack(out)


def neighbours(pixel, grid, cells, window):
    """Clusters pixel p may join: the lambda x lambda cells around its own cell."""
    H, W = grid
    h, w = cells
    r, c = divmod(pixel, W)
    cr, cc = math.floor(r * h / H), math.floor(c * w / W)
    out = []
    for i in range(h):
        for j in range(w):
            if abs(i - cr) <= window[0] // 2 and abs(j - cc) <= window[1] // 2:
                out.append(i * w + j)
    return out


def neighbour_mask(grid, cells, window):
    """mask[p, i] = 1 when cluster i is one of pixel p's lambda x lambda neighbours."""
    N, M = grid[0] * grid[1], cells[0] * cells[1]
    mask = torch.zeros(N, M, dtype=torch.bool)
    for p in range(N):
        mask[p, neighbours(p, grid, cells, window)] = True
    return mask


def sq_dist(a, b):
    """||a_p - b_i||^2 by broadcasting the difference (no matrix-product shortcut)."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def cluster(z, grid, cells, window, iters, tau):
    """Eq. 3 iterated kappa times. z: [N, C] float64 -> centers [h*w, C]."""
    s = initial_centers(z, grid, cells)
    mask = neighbour_mask(grid, cells, window)
    for _ in range(iters):
        d = sq_dist(z, s)
        # E-step: Q[p, i] = exp(-d/tau) / sum over p's neighbours j of exp(-d_pj/tau).
        # Subtracting the row minimum leaves every ratio unchanged and avoids underflow.
        dmin = torch.where(mask, d, torch.inf).min(1, keepdim=True).values
        e = torch.where(mask, torch.exp(-(d - dmin) / tau), torch.zeros((), dtype=d.dtype))
        q = e / e.sum(1, keepdim=True)
        # M-step: S_i = sum_p Q[p, i] Z_p, with Q normalised per cluster.
        q = q / q.sum(0, keepdim=True).clamp_min(1e-16)
        s = torch.stack([(q[:, i : i + 1] * z).sum(0) for i in range(s.shape[0])])
    return s


def reconstruct(z, centers, refined, k, tau, norm="sum", allowed=None):
    """Eq. 4: each pixel from its k nearest centers (features before clustering vs centers at
    clustering time), weights exp(-d/tau) normalised by their sum (or L2 norm), applied to
    the refined per-cluster values. `allowed[p]`: candidate clusters (default: all)."""
    N, M = z.shape[0], centers.shape[0]
    d_all = sq_dist(z, centers)
    out = torch.zeros(N, refined.shape[1], dtype=refined.dtype)
    for p in range(N):
        cand = list(range(M)) if allowed is None else allowed[p]
        d = {i: d_all[p, i].item() for i in cand}
        near = sorted(cand, key=lambda i: d[i])[:k]
        dmin = d[near[0]]
        wts = {i: math.exp(-(d[i] - dmin) / tau) for i in near}
        total = sum(wts.values()) if norm == "sum" else math.sqrt(sum(v * v for v in wts.values()))
        for i in near:
            out[p] += wts[i] / total * refined[i]
    return out


def expedite_tokens(x, num_prefix, grid, cells, window, iters, tau):
    """Clustering step on a token sequence [N_prefix + N, C] of one image."""
    prefix, z = x[:num_prefix], x[num_prefix:]
    s = cluster(z, grid, cells, window, iters, tau)
    return torch.cat([prefix, s]), z, s
