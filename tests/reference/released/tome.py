"""ToMe's merge and unmerge as the authors' release computes them, written for the tests.

Follows `bipartite_soft_matching` and `merge_wavg` of facebookresearch/ToMe's tome/merge.py (read
in the copy Expedit-Segmenter vendors at mmseg/ops/tome/tome/merge.py, which adds `unmerge` for
dense outputs) and `ToMeBlock` / `ToMeAttention` of tome/patch/timm.py. Our own code, written
from reading theirs; batched, in the dtype given.

Matching: metric = keys averaged over heads, divided by their norm (floored at 1e-8); set A =
even positions, B = odd positions; scores = A @ B^T with the class token's row at -inf; each A
token's best B (max); the r A tokens with the highest best score are merged (argsort
descending), the rest stay. Merge (merge_wavg): sums of x * size and of size into the B tokens,
then divided; the output is [unmerged A tokens (class token first), B tokens]. Unmerge: each
original position takes its token after merging (unmerged A from their row, merged A from their
B token, B from theirs). In the release the merge of block i runs inside the block, after its
attention and before its MLP; proportional attention adds log(size) to the logits.
"""

import math

import torch


def bipartite_soft_matching(metric, r, class_token):
    """metric [B, T, D] -> (unmerged A index [B, T_a - r], merged A index [B, r], their B
    target [B, r]); indices are positions within A (even) and B (odd) sets."""
    T = metric.shape[1]
    r = min(r, (T - int(class_token)) // 2)
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(-1, -2)
    if class_token:
        scores[:, 0, :] = -math.inf
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)
    unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
    dst_idx = node_idx.gather(1, src_idx)
    if class_token:
        unm_idx = unm_idx.sort(dim=1).values
    return unm_idx, src_idx, dst_idx


def merge_sum(x, unm_idx, src_idx, dst_idx):
    """[B, T, C] -> [B, T - r, C]: unmerged A tokens, then B tokens with the merged A summed in."""
    src, dst = x[:, ::2], x[:, 1::2]
    C = x.shape[-1]
    unm = src.gather(1, unm_idx[..., None].expand(-1, -1, C))
    moved = src.gather(1, src_idx[..., None].expand(-1, -1, C))
    dst = dst.scatter_add(1, dst_idx[..., None].expand(-1, -1, C), moved)
    return torch.cat([unm, dst], dim=1)


def merge_wavg(x, size, matching):
    """Size-weighted average: (merged x, merged size), size [B, T, 1]."""
    x = merge_sum(x * size, *matching)
    size = merge_sum(size, *matching)
    return x / size, size


def unmerge(x, matching, T):
    """[B, T - r, C] -> [B, T, C]: every original position takes its token's value."""
    unm_idx, src_idx, dst_idx = matching
    B, _, C = x.shape
    n_unm = unm_idx.shape[1]
    unm, dst = x[:, :n_unm], x[:, n_unm:]
    out = torch.zeros(B, T, C, dtype=x.dtype)
    out[:, 1::2] = dst
    out.scatter_(1, (2 * unm_idx)[..., None].expand(-1, -1, C), unm)
    src = dst.gather(1, dst_idx[..., None].expand(-1, -1, C))
    out.scatter_(1, (2 * src_idx)[..., None].expand(-1, -1, C), src)
    return out
