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


def cluster(z, grid, cells, window, iters, tau):
    """Eq. 3 iterated kappa times. z: [N, C] float64 -> centers [h*w, C]."""
    s = initial_centers(z, grid, cells)
    N, M = z.shape[0], s.shape[0]
    for _ in range(iters):
        q = torch.zeros(N, M, dtype=z.dtype)
        for p in range(N):
            nb = neighbours(p, grid, cells, window)
            d = torch.stack([((z[p] - s[i]) ** 2).sum() for i in nb])
            e = torch.exp(-(d - d.min()) / tau)  # same ratios as exp(-d/tau), without underflow
            for i, v in zip(nb, e / e.sum()):
                q[p, i] = v
        new = torch.zeros_like(s)
        for i in range(M):
            total = max(q[:, i].sum().item(), 1e-16)
            new[i] = sum(q[p, i] * z[p] for p in range(N)) / total
        s = new
    return s


def reconstruct(z, centers, refined, k, tau, norm="sum", allowed=None):
    """Eq. 4: each pixel from its k nearest centers (features before clustering vs centers at
    clustering time), weights exp(-d/tau) normalised by their sum (or L2 norm), applied to
    the refined per-cluster values. `allowed[p]`: candidate clusters (default: all)."""
    N, M = z.shape[0], centers.shape[0]
    out = torch.zeros(N, refined.shape[1], dtype=refined.dtype)
    for p in range(N):
        cand = list(range(M)) if allowed is None else allowed[p]
        d = {i: ((z[p] - centers[i]) ** 2).sum().item() for i in cand}
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
