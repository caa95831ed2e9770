"""AiluRus written out literally: dense, slow, float64, one token at a time. The export form in
exporter/ops/density_peaks.py and exporter/methods/ailurus/ must equal it.

The clustering is the paper's spatial-aware DPC (Eq. 1-3, its spatial weight s of Eq. 2) with
the distance convention of the released DPC-kNN code it builds on (TCFormer's
`cluster_dpc_knn`): feature distances divided by sqrt(C), the density from the squared k
nearest distances, and the image's largest distance for a token without a denser one. An
earlier version of this file took sigma as the raw Euclidean distance and the density from the
unsquared distances, as the paper's Eq. 1 reads alone; on a trained model that kept 55% of the
mIoU where the released convention keeps 99% (docs/methods.md). The per-step choices are
listed in docs/methods.md; tests/reference/released/ailurus.py is the independent form that
follows the released function's structure.
"""

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
    N, C = z.shape
    nbrs = [grid_neighbours(i, grid, count) for i in range(N)]
    # weighted[i][j] = sigma(z_i, z_j) / sqrt(C) * s(i, j) for the spatial neighbours j.
    weighted = [
        {
            j: euclidean(z[i], z[j]) / math.sqrt(C) * spatial_weight(rank, count, a)
            for rank, j in enumerate(nbrs[i])
        }
        for i in range(N)
    ]

    # rho_i = exp(-(1/k) * sum of the squares of the k smallest weighted distances).
    log_rho = [-sum(v * v for v in sorted(weighted[i].values())[:knn]) / knn for i in range(N)]
    rho = [math.exp(v) for v in log_rho]
    # At large feature scales exp underflows to 0 even in float64: then rho and the scores
    # are compared as logarithms (the same order, without the underflow).
    in_logs = min(rho) == 0.0
    dense = log_rho if in_logs else rho

    # delta: nearest denser neighbour (equal densities: the lower index is denser); none
    # denser: the image's largest weighted distance.
    max_weighted = max(max(row.values()) for row in weighted)
    delta = []
    for i in range(N):
        denser = [weighted[i][j] for j in nbrs[i] if (dense[j], -j) > (dense[i], -i)]
        delta.append(min(denser) if denser else max_weighted)
    if in_logs:
        key = [log_rho[i] + (math.log(delta[i]) if delta[i] > 0 else -math.inf) for i in range(N)]
        score = [math.exp(k) for k in key]
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
            # nearest under the weighted distance; equal values: the spatially nearer neighbour
            assignment.append(slot_of[min(near)[2]])
        else:
            plain = [(euclidean(z[i], z[c]), n) for n, c in enumerate(centers)]
            assignment.append(min(plain)[1])
    return {
        "rho": rho,
        "delta": delta,
        "score": score,
        # log(rho * delta), taken from the logarithms where the product underflows
        "log_score": key if in_logs else [math.log(v) if v > 0 else -math.inf for v in score],
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
