"""Pool baseline (the Expedite paper, Tables 3-4): average-pool the token grid, upsample it back.

After block alpha the H x W patch tokens are replaced by their adaptive average pool to
h x w; the remaining blocks run on [prefix; pooled]; at the restore point the pooled tokens
are upsampled back to H x W bilinearly (align_corners=False). Prefix tokens are carried
through and never pooled. It has Expedite's shape (reduce once, restore once, same restore
placements) and the same defaults, so the two compare at equal token counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import MethodSpec, SweepInput, flag, side


@dataclass(frozen=True)
class PoolConfig:
    alpha: int | None = flag(
        "blocks run at full resolution before pooling", rule="round(depth*10/24)"
    )
    hw: tuple[int, int] | None = flag("pooled grid h x w", rule="0.7 x grid per side")
    restore: str | None = flag(
        "where to upsample: output | backbone", rule="output for Segmenter, else backbone"
    )


def sweep(at: SweepInput) -> list[tuple[dict, str]]:
    """Pooling at Expedite's cluster grids (the Expedite paper Table 3)."""
    return [({"hw": side(at.grid, s)}, f"hw {side(at.grid, s)}") for s in (0.7, 0.5)]


SPEC = MethodSpec(
    "pool",
    "average-pool the token grid after block alpha, bilinear upsampling back (the Expedite paper's baseline)",
    PoolConfig,
    sweep=sweep,
    marker="s",
    tiny={"hw": "3x4"},
)
