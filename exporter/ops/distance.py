"""Pairwise distances written as matrix products, so they export to MatMul and run fast."""

import torch


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 for a [B, N, C] and b [B, M, C] -> [B, N, M] (clamped at 0)."""
    ab = torch.matmul(a, b.transpose(1, 2))
    aa = (a * a).sum(-1, keepdim=True)
    bb = (b * b).sum(-1).unsqueeze(1)
    return (aa + bb - 2.0 * ab).clamp_min(0.0)
