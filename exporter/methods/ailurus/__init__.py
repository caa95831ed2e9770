"""AiluRus (Li et al., NeurIPS 2023): adaptive resolution by spatial-aware density peaks.

After block alpha the N patch tokens are reduced to M representative tokens: M centers are
chosen by rho * delta (Eq. 1-3, `DensityPeaksSelection`), every token joins a center and each
cluster is averaged (center included). The later blocks attend with log(cluster size) added
to the logits of each key (Eq. 5); prefix tokens (class, register) are carried, size 1, never
merged. At the output every original position takes its cluster's token: after the decoder
for Segmenter (the paper, section 4.1), after the last block otherwise.

Defaults follow the paper's reference configuration: clustering after block 2 with 400 of
1600 tokens (section 3.3, Figure 4, Tables 5-6, for ViT-L and ViT-B alike), i.e. alpha = 2
and M = N/4; a = 0.9, lambda = 50, k = 1 (Table 7).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import MethodSpec, SweepInput, flag, side


@dataclass(frozen=True)
class AiluRusConfig:
    alpha: int | None = flag(
        "blocks run at full resolution before clustering", rule="2 (the paper's location)"
    )
    clusters: int | None = flag(
        "M: representative tokens kept (1..N-1)", rule="round(N/4) (400 of 1600 in the paper)"
    )
    spatial_alpha: float = flag("a: spatial weight floor of Eq. 2, in (0, 1]", 0.9)
    spatial_neighbours: int | None = flag(
        "lambda: spatial neighbours per token (1..N-1)", rule="50, at most N-1"
    )
    knn: int = flag("k: neighbours averaged in the density (1..lambda)", 1)


def sweep(at: SweepInput) -> list[tuple[dict, str]]:
    """The paper's slight, mild and extreme reductions (the AiluRus paper Table 1), plus as many
    clusters as Expedite's middle hw keeps."""
    n, middle = at.num_patches, side(at.grid, 0.6)
    rows, cols = (int(v) for v in middle.split("x"))
    levels = [(n * 0.5, "slight"), (rows * cols, f"as hw {middle}"), (n * 0.25, "mild")]
    kept = [(max(1, min(n - 1, round(c))), w) for c, w in [*levels, (n * 0.125, "extreme")]]
    return [({"clusters": m}, f"clusters {m} ({word})") for m, word in kept]


SPEC = MethodSpec(
    "ailurus",
    "spatial-aware density peaks clustering after block alpha, unfold at the output "
    "(Li et al. 2023)",
    AiluRusConfig,
    sweep=sweep,
    marker="^",
    tiny={"clusters": 12},
    plugin="DPCSelect",
)
