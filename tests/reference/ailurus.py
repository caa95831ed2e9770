"""AiluRus written straight from the paper (002 Eq. 1-5): dense, slow, float64, one token at
a time. The export form in exporter/ops/density_peaks.py and exporter/methods/ailurus/ must
equal it. Readings of the paper are those listed in exporter/ops/density_peaks.py."""

import math

import torch


def grid_neighbours(i, grid, count):
    """The `count` tokens nearest to token i on the grid, nearest first (ties: lower index),
    i itself excluded. Position in the list = rank(j)."""
    H, W = grid
    r, c = divmod(i, W)
    others = []
    for j in range(H * W):
        if j == i:
            continue
        rj, cj = divmod(j, W)
        others.append((math.hypot(r - rj, c - cj), j))
    others.sort()
    return [j for _, j in others[:count]]


def spatial_weight(rank, count, a):
    """Eq. 2 for a token among the lambda nearest."""
    return (1 - a) * rank / count + a


def euclidean(u, v):
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(u, v)))


def density_peaks(z, grid, clusters, count, a, knn):
    """Spatial-aware DPC on one image's patch tokens z [N, C] (float64).

    Returns a dict: rho, delta, score (lists), centers (token indices, ascending) and
    assignment (slot of each token's center in `centers`)."""
    N = z.shape[0]
    nbrs = [grid_neighbours(i, grid, count) for i in range(N)]
    # weighted[i][j] = sigma(z_i, z_j) * s(i, j) for the spatial neighbours j; others are inf.
    weighted = [
        {
            j: euclidean(z[i], z[j]) * spatial_weight(rank, count, a)
            for rank, j in enumerate(nbrs[i])
        }
        for i in range(N)
    ]

    # Eq. 1: rho_i = exp(-(1/k) * sum over the k nearest (under sigma * s) of sigma * s.
    log_rho = [-sum(sorted(weighted[i].values())[:knn]) / knn for i in range(N)]
    rho = [math.exp(v) for v in log_rho]
    # At large feature scales exp underflows to 0 even in float64: then rho, D and the scores
    # are compared as logarithms (the same order, without the underflow).
    in_logs = min(rho) == 0.0
    dense = log_rho if in_logs else rho

    # Eq. 3, with a finite D for peaks: larger than every weighted distance, and large enough
    # that rho_peak * D beats rho * delta of every non-peak (rho <= 1).
    max_weighted = max(max(row.values()) for row in weighted)
    log_peak = 1 + math.log1p(max_weighted) - min(log_rho)  # log D
    peak_delta = (
        math.exp(min(log_peak, 700.0)) if in_logs else math.e * (1 + max_weighted) / min(rho)
    )
    delta, peak = [], []
    for i in range(N):
        denser = [weighted[i][j] for j in nbrs[i] if dense[j] > dense[i]]
        peak.append(not denser)
        delta.append(min(denser) if denser else peak_delta)
    if in_logs:
        key = [
            log_rho[i]
            + (log_peak if peak[i] else math.log(delta[i]) if delta[i] > 0 else -math.inf)
            for i in range(N)
        ]
        score = [math.exp(min(k, 700.0)) for k in key]
    else:
        score = [rho[i] * delta[i] for i in range(N)]
        key = score
    # Top M by rho * delta; equal scores: lower index first.
    ranked = sorted(range(N), key=lambda i: (-key[i], i))
    centers = sorted(ranked[:clusters])
    slot_of = {c: n for n, c in enumerate(centers)}

    assignment = []
    for i in range(N):
        if i in slot_of:
            assignment.append(slot_of[i])
            continue
        near = [(weighted[i][j], rank, j) for rank, j in enumerate(nbrs[i]) if j in slot_of]
        if near:
            # nearest under sigma * s; equal values: the spatially nearer neighbour
            assignment.append(slot_of[min(near)[2]])
        else:
            plain = [(euclidean(z[i], z[c]), n) for n, c in enumerate(centers)]
            assignment.append(min(plain)[1])
    return {
        "rho": rho,
        "delta": delta,
        "score": score,
        "centers": centers,
        "assignment": assignment,
    }


def merge(z, assignment, clusters):
    """Representative token = mean of its cluster; size = number of tokens in it."""
    merged = torch.zeros(clusters, z.shape[1], dtype=torch.float64)
    sizes = [0] * clusters
    for i, n in enumerate(assignment):
        merged[n] += z[i]
        sizes[n] += 1
    for n in range(clusters):
        merged[n] /= sizes[n]
    return merged, sizes


def size_weighted_attention(attn, x, sizes):
    """Eq. 5: a_ij = m_j exp(q_i k_j / s) / sum_n m_n exp(q_i k_n / s), per head.
    x [T, D] for one image; sizes: list of T token sizes."""
    T, D = x.shape
    heads = attn.num_heads
    hd = D // heads
    m = torch.tensor(sizes, dtype=x.dtype)
    qkv = attn.qkv(x).reshape(T, 3, heads, hd)
    out = torch.zeros(T, heads, hd, dtype=x.dtype)
    for h in range(heads):
        q, k, v = qkv[:, 0, h], qkv[:, 1, h], qkv[:, 2, h]
        for i in range(T):
            e = m * torch.exp((k @ q[i]) * attn.scale)  # [T]: m_j exp(q_i k_j / s)
            out[i, h] = (e / e.sum()) @ v
    return attn.proj(out.reshape(T, D))


def block_forward(block, x, sizes):
    """A timm pre-norm block with size-weighted attention (x: [T, D] for one image)."""
    x = x + block.ls1(size_weighted_attention(block.attn, block.norm1(x), sizes))
    return x + block.ls2(block.mlp(block.norm2(x)))


def forward(model, images, alpha, clusters, count, a, knn):
    """The AiluRus model for a float64 DenseModel: full blocks up to alpha, DPC on the patch
    tokens, size-weighted blocks on [prefix; merged], unfold at the output (after the head
    when the model restores at the output, else after the last block)."""
    assert tuple(model.taps) == (model.layout.depth - 1,), "one tap, after the last block"
    P = model.layout.num_prefix
    outs = []
    with torch.no_grad():
        x_all = model.embed(images)
        for b in range(images.shape[0]):
            x = x_all[b : b + 1]
            for blk in model.blocks[:alpha]:
                x = blk(x)
            x = x[0]
            dpc = density_peaks(x[P:], model.layout.grid, clusters, count, a, knn)
            merged, sizes = merge(x[P:], dpc["assignment"], clusters)
            x = torch.cat([x[:P], merged])
            sizes = [1] * P + sizes
            for blk in model.blocks[alpha:]:
                x = block_forward(blk, x, sizes)
            unfold = dpc["assignment"]
            if model.restore_at_output:
                y = model.head_tokens([x.unsqueeze(0)])[0]
                y = y[unfold]
            else:
                x = torch.cat([x[:P], x[P:][unfold]])
                y = model.head_tokens([x.unsqueeze(0)])[0]
            outs.append(model.head_map(y.unsqueeze(0), images.shape[-2:]))
    return torch.cat(outs)
