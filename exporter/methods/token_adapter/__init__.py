"""Token Adapter (Su, Fei, Luo, 2024) in two forms: the plain ViT's (`vit`) and the Swin
window form (`swin`), with one config and flag set (`config`)."""

from __future__ import annotations

from ...models.capabilities import TOKEN_GRID, WINDOWS
from ..spec import MethodSpec, SweepInput
from .config import TokenAdapterConfig


def sweep(at: SweepInput) -> list[tuple[dict, str]]:
    """The rows and columns merged (the Token Adapter paper)."""
    return [({"rows_ratio": r, "cols_ratio": r}, f"rows/cols ratio {r}") for r in (0.3, 0.5)]


SPEC = MethodSpec(
    "token-adapter",
    "merge the least important rows and columns of tokens, restore by matching (Su et al. 2024)",
    TokenAdapterConfig,
    {TOKEN_GRID: ".vit:build", WINDOWS: ".swin:build_swin"},
    sweep=sweep,
    marker="D",
)
