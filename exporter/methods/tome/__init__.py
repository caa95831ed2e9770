"""ToMe (Bolya et al., ICLR 2023): bipartite soft matching merges r tokens in every block.

Placement: timm's Block cannot change the token count between its attention and its MLP,
so instead of forking it, the merge of block i runs just before block i, matched on block
i's own attention keys (computed from its qkv projection on norm1(x), mean over heads: the
metric ToMe uses in block i). Block i's attention then already sees the merged tokens; in
ToMe it sees them unmerged and only the MLP runs merged. This costs one key projection (a
third of qkv) per merging block and saves the attention on the r merged tokens.

Proportional attention adds log(size) to the attention logits (timm's attn_mask). Dense
tokens come back by gathering through the position map: at the taps for backbones, or, for
models whose head works per token (Segmenter), after the decoder has run on the merged tokens,
as Expedite restores the mask logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import MethodSpec, SweepInput, flag


@dataclass(frozen=True)
class ToMeConfig:
    """Resolved: r is the schedule (tokens merged before each block), alpha its first merging
    block (None: r is 0 everywhere)."""

    r: tuple[int, ...] | None = flag(
        "tokens merged per block, or one count per block (comma-separated)",
        rule="N/(2 x merging blocks): half the tokens merged by the end",
    )
    alpha: int | None = flag("blocks run at full resolution before merging starts", rule="0")
    restore: str | None = flag(
        "where to unmerge: output | backbone", rule="output for Segmenter, else backbone"
    )


def sweep(at: SweepInput) -> list[tuple[dict, str]]:
    """r that merges a quarter, half and three quarters of the tokens by the last block."""
    shares = (0.25, 0.5, 0.75)
    counts = [max(1, round(at.num_patches * share / at.depth)) for share in shares]
    return [({"r": r}, f"r {r} ({share:.0%} merged)") for r, share in zip(counts, shares)]


SPEC = MethodSpec(
    "tome",
    "bipartite soft matching merges r tokens per block, proportional attention (Bolya et al. 2023)",
    ToMeConfig,
    sweep=sweep,
    marker="v",
    tiny={"r": 4},
)
