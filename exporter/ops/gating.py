"""Learned token gating with a fixed capacity (SViT, SViT's supplementary material) as fixed-shape operations.

A gate scores every patch token; the `capacity` best are gathered, run through the block with
the prefix tokens, and written back to their positions; the rest pass through unchanged.

Selection ranks tokens by counting, rank_i = #{j : s_j > s_i, or s_j = s_i and j < i}, instead
of TopK: torch.topk does not break ties by index (ONNX's TopK does, TensorRT's need not), so
counting is the one form every runtime agrees on, and it has no K limit. It costs N^2
comparisons per image, C times fewer operations than the block's attention.
Ranks are a permutation, so the write-back is a gather by rank (no scatter) and the list of
selected tokens is a ScatterElements without reduction whose indices never collide.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenGate(nn.Module):
    """The per-layer gating MLP: Linear(C, hidden) - GELU - Linear(hidden, 1) -> score."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> scores [B, N] (higher = processed first)."""
        return self.fc2(self.act(self.fc1(z))).squeeze(-1)


def rank_tokens(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """scores [B, N], index = arange(N) -> rank [B, N]: 0 for the best, ties by lower index."""
    s_i, s_j = scores.unsqueeze(2), scores.unsqueeze(1)  # [B, N, 1], [B, 1, N]
    earlier = index.view(1, 1, -1) < index.view(1, -1, 1)  # [1, N(i), N(j)]: j before i
    beats = (s_j > s_i) | ((s_j == s_i) & earlier)
    # count in int32: the [B, N, N] intermediate is half the size of an int64 one
    return beats.sum(dim=2, dtype=torch.int32).long()


def order_of(rank: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Inverse permutation: order[b, r] = the token of rank r."""
    return torch.zeros_like(rank).scatter(1, rank, index.expand_as(rank))


class CapacityGate(nn.Module):
    """Run `block` on the prefix tokens and the `capacity` best-scored patch tokens only."""

    def __init__(self, gate: TokenGate, num_patches: int, num_prefix: int, capacity: int):
        super().__init__()
        self.gate, self.num_prefix, self.capacity = gate, num_prefix, capacity
        self.register_buffer("index", torch.arange(num_patches), persistent=False)

    def select(self, z: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, C] -> rank [B, N]; a token is processed when rank < capacity."""
        return rank_tokens(self.gate(z), self.index)

    def forward(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        P, k = self.num_prefix, self.capacity
        prefix, z = x[:, :P], x[:, P:]
        C = z.shape[-1]
        rank = self.select(z)
        chosen = order_of(rank, self.index)[:, :k]  # [B, k], best first
        picked = z.gather(1, chosen.unsqueeze(-1).expand(-1, -1, C))
        y = block(torch.cat([prefix, picked], dim=1))
        # token i (if chosen) sits at row rank_i of the processed tokens
        back = y[:, P:].gather(1, rank.clamp(max=k - 1).unsqueeze(-1).expand(-1, -1, C))
        z = torch.where((rank < k).unsqueeze(-1), back, z)
        return torch.cat([y[:, :P], z], dim=1)
