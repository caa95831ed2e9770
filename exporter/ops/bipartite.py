"""ToMe's bipartite soft matching (Bolya et al., ICLR 2023) as fixed-shape tensor operations.

One layer merges exactly r tokens: the tokens are split alternately into A (even positions)
and B (odd positions); each A token finds its most similar B token (cosine of the matching
metric, e.g. the attention keys averaged over heads); the r A tokens with the best matches
are merged into them by size-weighted average, and sizes add. Prefix tokens (class,
distillation, register) are never merged and never merged into.

Layout convention: the surviving tokens keep their original relative order, so prefix tokens
stay in front and A/B keep alternating over the image. Every step is a static-shape
comparison, cumsum, gather or one-hot matmul: no TopK, scatter, NonZero or control flow.
The comparison tables are [n_a, n_a] and [n - r, n] booleans per image; the only matmul with
the channel dimension is [n - r, r] (the merged tokens into their slots).
A layer also returns `target`, the new index of every input token; composing these maps
gives, for each original position, the token that now holds it (`compose`, `unmerge`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .decisions import decide, top_margin

# Score of protected tokens: below any cosine (>= -1), finite in float16 (unlike 1e16 or inf).
MASKED_SCORE = -1.0e4
# Floor of a metric vector's norm: keeps an all-zero key from dividing by zero.
NORM_FLOOR = 1.0e-12


def mergeable(num_tokens: int, num_prefix: int) -> int:
    """How many tokens one layer can merge away: the A tokens that are not prefix tokens,
    provided at least one B token is not a prefix token (something to merge into)."""
    a_free = (num_tokens + 1) // 2 - (num_prefix + 1) // 2
    b_free = num_tokens // 2 - num_prefix // 2
    return max(0, a_free) if b_free > 0 else 0


class MergePlan(NamedTuple):
    """One layer's merge. All int64, sequence positions unless said otherwise."""

    target: torch.Tensor  # [B, n]: output index of every input token
    kept: torch.Tensor  # [B, n - r]: the input token each output slot starts from
    sources: torch.Tensor  # [B, r]: the merged-away A tokens
    source_slot: torch.Tensor  # [B, r]: the output index each of them joins


class BipartiteSoftMatching(nn.Module):
    """One ToMe merge of `num_tokens` tokens (prefix included) down to `num_tokens - r`."""

    decision_names = ("tome.match", "tome.merged")

    def __init__(self, num_tokens: int, r: int, num_prefix: int):
        super().__init__()
        if not 0 <= r <= mergeable(num_tokens, num_prefix):
            raise ValueError(f"cannot merge {r} of {num_tokens} tokens ({num_prefix} protected)")
        self.num_tokens, self.r, self.num_prefix = num_tokens, r, num_prefix
        n_a, n_b = (num_tokens + 1) // 2, num_tokens // 2
        a_pos, b_pos = torch.arange(n_a) * 2, torch.arange(n_b) * 2 + 1
        # Constant tables, built once: positions and protection of A and B, the permutation
        # from [A; B] order back to sequence order, "a' comes before a" for stable ranking,
        # and the output slots for the one-hot merge.
        self.register_buffer("a_pos", a_pos, persistent=False)
        self.register_buffer("b_pos", b_pos, persistent=False)
        self.register_buffer("a_protected", a_pos < num_prefix, persistent=False)
        self.register_buffer("b_protected", b_pos < num_prefix, persistent=False)
        seq = torch.arange(num_tokens)
        self.register_buffer(
            "to_sequence", torch.where(seq % 2 == 0, seq // 2, n_a + seq // 2), persistent=False
        )
        idx = torch.arange(n_a)
        self.register_buffer("earlier", idx.view(1, -1) < idx.view(-1, 1), persistent=False)
        self.register_buffer("slots", torch.arange(num_tokens - r), persistent=False)
        self.register_buffer("ranks", torch.arange(r), persistent=False)

    @property
    def num_out(self) -> int:
        return self.num_tokens - self.r

    def plan(self, metric: torch.Tensor) -> MergePlan:
        """metric [B, n, D] -> which tokens merge, and where every token goes."""
        m = metric.float()
        m = m / m.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
        scores = torch.matmul(m[:, 0::2], m[:, 1::2].transpose(1, 2))  # cosine, [B, n_a, n_b]
        scores = torch.where(self.b_protected.view(1, 1, -1), MASKED_SCORE, scores)
        best = scores.amax(dim=2)
        # first maximum: ties go to the lower B index
        match = decide("tome.match", scores.argmax(dim=2), top_margin(scores))
        best = torch.where(self.a_protected.view(1, -1), MASKED_SCORE, best)
        # Rank of each A token by (best score descending, index ascending), by counting the
        # tokens ahead of it: exact, identical in every runtime, and free of TopK's K limit.
        ahead = (best.unsqueeze(1) > best.unsqueeze(2)) | (
            (best.unsqueeze(1) == best.unsqueeze(2)) & self.earlier
        )
        rank = ahead.sum(dim=2)  # a permutation of 0..n_a-1
        merged = rank < self.r  # [B, n_a]
        # The merged A tokens (sequence positions, by rank) are a decision: the r best matches.
        of_rank = rank.unsqueeze(1) == self.ranks.view(1, -1, 1)  # [B, r, n_a]
        own_sources = (of_rank * self.a_pos.view(1, 1, -1)).sum(dim=2)
        by_a = top_margin(best)
        sources = decide(
            "tome.merged", own_sources, lambda own, other: by_a(own // 2, other // 2), is_set=True
        )
        if sources is not own_sources:  # another runtime's choice imposed (validation only)
            merged = (self.a_pos.view(1, -1, 1) == sources.unsqueeze(1)).any(2)
        # Where each token goes, in sequence positions: merged A tokens to their B match.
        dest_a = torch.where(merged, match * 2 + 1, self.a_pos)
        dest_b = self.b_pos.view(1, -1).expand(match.shape[0], -1)
        dest = torch.cat([dest_a, dest_b], dim=1).index_select(1, self.to_sequence)
        kept = torch.cat([~merged, torch.ones_like(dest_b, dtype=torch.bool)], dim=1)
        kept = kept.index_select(1, self.to_sequence)
        # Survivors keep their order: the output index of a kept token is the count of kept
        # tokens before it; a merged token takes the output index of its destination.
        kept_before = torch.cumsum(kept.to(torch.int64), dim=1)
        target = (kept_before - 1).gather(1, dest)
        # Inverse maps by counting, not scattering: slot t holds the kept token with t kept
        # tokens before it; source k is the A token of rank k.
        kept_index = (kept_before.unsqueeze(1) <= self.slots.view(1, -1, 1)).sum(dim=2)
        return MergePlan(target, kept_index, sources, target.gather(1, sources))

    def merge(
        self, x: torch.Tensor, sizes: torch.Tensor, plan: MergePlan
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Size-weighted average: gather the kept tokens, add the r merged ones by a one-hot
        matmul ([n - r, r], not [n - r, n]: its cost stays small next to the block's)."""
        sizes = sizes.float()
        weighted = x.float() * sizes.unsqueeze(2)
        into = (plan.source_slot.unsqueeze(1) == self.slots.view(1, -1, 1)).to(torch.float32)
        new_sizes = sizes.gather(1, plan.kept) + torch.matmul(
            into, sizes.gather(1, plan.sources).unsqueeze(2)
        ).squeeze(2)
        out = gather_tokens(weighted, plan.kept) + torch.matmul(
            into, gather_tokens(weighted, plan.sources)
        )
        return (out / new_sizes.unsqueeze(2)).to(x.dtype), new_sizes

    def forward(
        self, x: torch.Tensor, metric: torch.Tensor, sizes: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Merge r tokens: x [B, n, C], sizes [B, n], positions [B, N0] (original position ->
        token index) -> the same for n - r tokens."""
        plan = self.plan(metric)
        x, sizes = self.merge(x, sizes, plan)
        return x, sizes, compose(positions, plan.target)


def compose(positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Original position -> token index, after one more merge whose map is `target`."""
    return target.gather(1, positions)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens [B, n, D], index [B, m] -> [B, m, D]."""
    return tokens.gather(1, index.unsqueeze(2).expand(-1, -1, tokens.shape[2]))


def unmerge(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """tokens [B, n, D] -> [B, N0, D]: every original position takes the token holding it."""
    return gather_tokens(tokens, positions)
