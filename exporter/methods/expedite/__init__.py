"""Expedite (Liang et al., NeurIPS 2022) in two forms: the plain ViT's (`vit`) and the Swin
window form (`swin`), with one config and flag set (`config`)."""

from __future__ import annotations

from ...models.capabilities import TOKEN_GRID, WINDOWS
from ..spec import MethodSpec, SweepInput, side
from .config import ExpediteConfig, default_alpha


def sweep(at: SweepInput) -> list[tuple[dict, str]]:
    """alpha around the model's cut x hw (the Expedite paper Table 2 sweeps h x w); the quick grid
    keeps the other cuts at one size."""
    alpha = at.tuned.get("alpha") or default_alpha(at.depth)
    rows = []
    for a in (a for a in (alpha - 1, alpha, alpha + 1) if 1 <= a < at.depth):
        for share in (0.7, 0.6, 0.5) if (at.full or a == alpha) else (0.6,):
            hw = side(at.grid, share)
            rows.append(({"hw": hw, "alpha": a}, f"hw {hw}, alpha {a}"))
    return rows


SPEC = MethodSpec(
    "expedite",
    "token clustering after block alpha, reconstruction at the output (Liang et al. 2022)",
    ExpediteConfig,
    {TOKEN_GRID: ".vit:build", WINDOWS: ".swin:build_swin"},
    authors_form={"clustering": "dense"},
    sweep=sweep,
    marker="o",
    tiny={"hw": "3x4", "k": 6},
    plugin="TopKMaskedReconstruct",
)
