"""ToMe's bipartite soft matching written straight from the description (Bolya et al. 2023,
section 3): one image at a time, Python loops, float64. The export form in exporter/ops must
equal it.

Conventions shared with the export form (they are choices, not in the paper): tokens at even
sequence positions form A, odd positions form B; ties go to the lower index; the surviving
tokens keep their original order.
"""

import math

import torch


def cosine(u, v):
    norm_u, norm_v = math.sqrt(float(torch.dot(u, u))), math.sqrt(float(torch.dot(v, v)))
    return float(torch.dot(u, v)) / (norm_u * norm_v)


def merge_layer(x, metric, sizes, r, num_prefix):
    """Merge r tokens of one image. x [n, C], metric [n, D], sizes: list of n numbers.

    Returns (new x [n - r, C], new sizes, target) with target[j] = new index of token j.
    """
    n = x.shape[0]
    set_a = [j for j in range(n) if j % 2 == 0 and j >= num_prefix]  # prefix never merged...
    set_b = [j for j in range(n) if j % 2 == 1 and j >= num_prefix]  # ...nor merged into
    edges = []
    for a in set_a:
        best, match = -math.inf, None
        for b in set_b:  # strict '>' keeps the first (lowest) B of equal similarity
            s = cosine(metric[a], metric[b])
            if s > best:
                best, match = s, b
        edges.append((best, a, match))
    edges.sort(key=lambda e: (-e[0], e[1]))  # most similar first, ties by A position
    into = {a: b for _, a, b in edges[:r]}
    assert len(into) == r, "not enough tokens to merge"
    kept = [j for j in range(n) if j not in into]
    new_index = {j: k for k, j in enumerate(kept)}
    target = [new_index[into.get(j, j)] for j in range(n)]
    new_x, new_sizes = [], []
    for k in range(len(kept)):
        group = [j for j in range(n) if target[j] == k]
        total = sum(sizes[j] for j in group)
        new_x.append(sum(sizes[j] * x[j] for j in group) / total)
        new_sizes.append(total)
    return torch.stack(new_x), new_sizes, target


def merge_layers(x, metrics, schedule, num_prefix):
    """Several merges of one image, each with its own metric function of the current tokens.

    Returns (tokens, sizes, where) with where[p] = index of the token holding original token p.
    """
    sizes, where = [1.0] * x.shape[0], list(range(x.shape[0]))
    for metric_of, r in zip(metrics, schedule):
        x, sizes, target = merge_layer(x, metric_of(x), sizes, r, num_prefix)
        where = [target[w] for w in where]
    return x, sizes, where


def keys_mean_over_heads(block, x):
    """The keys of block's attention for tokens x [n, C], averaged over heads: [n, head_dim]."""
    attn = block.attn
    heads, hd = attn.num_heads, attn.head_dim
    qkv = attn.qkv(block.norm1(x))  # [n, 3 * heads * hd]: q, k, v one after the other
    per_head = [attn.k_norm(qkv[:, (heads + h) * hd : (heads + h + 1) * hd]) for h in range(heads)]
    return sum(per_head) / heads


def run_model(model, images, schedule, restore_at_output):
    """ToMe on a DenseModel (use a float64 copy), one image at a time: merge r_i tokens before
    block i on its keys, proportional attention, dense tokens restored by the position map."""
    outputs = []
    p = model.layout.num_prefix
    for img in images:
        x = model.embed(img[None])[0]
        sizes, where = [1.0] * x.shape[0], list(range(x.shape[0]))
        feats = []
        for i, blk in enumerate(model.blocks):
            if schedule[i] > 0:
                x, sizes, target = merge_layer(
                    x, keys_mean_over_heads(blk, x), sizes, schedule[i], p
                )
                where = [target[w] for w in where]
            log_size = torch.tensor([math.log(s) for s in sizes], dtype=x.dtype)
            x = blk(x[None], attn_mask=log_size.view(1, 1, 1, -1))[0]
            if i in model.taps:
                feats.append(x[None] if restore_at_output else x[where][None])
        y = model.head_tokens(feats)[0]
        if restore_at_output:
            y = torch.stack([y[where[q] - p] for q in range(p, len(where))])
        outputs.append(model.head_map(y[None], img.shape[-2:])[0])
    return torch.stack(outputs)
