"""Expedite's config and flags, shared by its plain and Swin forms: the lambda window, the EM
steps and the reconstruction. Each form has its own defaults (the papers' tables differ)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...config import format_pair, parse_pair
from ...errors import InputError
from ..checks import check_choice, check_int, check_positive
from ..spec import flag

# Both give the same centers; "dense" is the authors' [N, h*w] formulation, kept for comparison
# (the forms map each name to its op: `clustering_op`).
CLUSTERING_FORMS = ("tiled", "dense")


def default_alpha(depth: int) -> int:
    """alpha = 10 of 24 blocks for Segmenter ViT-L/16 on ADE20K, scaled to the model's depth."""
    return max(1, min(depth - 1, round(depth * 10 / 24)))


def default_hw(grid: tuple[int, int]) -> tuple[int, int]:
    """About 0.7 of each side (40x40 -> 28x28, the paper's Segmenter default: ~N/2 tokens)."""
    return (max(1, round(grid[0] * 0.7)), max(1, round(grid[1] * 0.7)))


@dataclass(frozen=True)
class ExpediteConfig:
    """Both forms' flags; each form leaves the fields of the other (None) unset. Defaults of
    the plain form: the paper's (001, Table 1 and section 4.3; supplementary Table 1 for
    Segmenter ADE20K)."""

    alpha: int | None = flag(
        "blocks run at full resolution before clustering", rule="round(depth*10/24)"
    )
    hw: tuple[int, int] | None = flag("clusters h x w", rule="0.7 x grid per side")
    window: tuple[int, int] = flag("lambda: clusters each pixel may join (odd)", (5, 5))
    iters: int = flag("kappa: EM iterations", 5)
    tau: float = flag("temperature (exp(-d/tau))", 50.0)
    k: int = flag("clusters each pixel is reconstructed from", 20)
    norm: str = flag("reconstruction weight normalisation: sum (paper) | l2", "sum")
    neighbours: str = flag("reconstruction from: all clusters | window", "all")
    restore: str | None = flag(
        "where to reconstruct: output | backbone", rule="output for Segmenter, else backbone"
    )
    stage: int | None = flag(
        "Swin: stage (1-based) whose windows are clustered; "
        "--alpha then counts that stage's blocks",
        rule="the deepest stage",
    )
    window_hw: tuple[int, int] | None = flag(
        "Swin: clustered window k x k (K x K before)", rule="2/3 of K per side"
    )
    clustering: str = flag(
        "tiled: windows only | dense: the authors' all-pairs form (same result)", "tiled"
    )


# The Swin form's defaults: supplementary Table 2 (see swin.py). A window holds few clusters
# (k*k), most inside every lambda window: tiling saves nothing there.
SWIN_DEFAULTS = replace(ExpediteConfig(), tau=100.0, k=10, clustering="dense")


def check_lambda(args: dict, default) -> tuple[int, int]:
    """--window: the odd lambda x lambda neighbourhood of clusters a pixel may join."""
    lam = parse_pair("--window", args.get("window") or default, "odd sizes, e.g. 5x5")
    if lam[0] % 2 == 0 or lam[1] % 2 == 0:
        raise InputError("--window", format_pair(lam), "odd sizes, e.g. 3x3, 5x5, 7x7")
    return lam


def check_steps(args: dict, defaults: ExpediteConfig, clusters: int, lam: tuple[int, int]) -> dict:
    """--iters, --tau, --norm, --neighbours, --k (bounded by the clusters it may pick from)
    and --clustering, as keyword arguments of the config."""
    from ...ops.density_peaks import TOPK_LIMIT  # deferred: the ops need torch, --help does not

    neighbours = check_choice(
        "--neighbours", args.get("neighbours", defaults.neighbours), ("all", "window")
    )
    k_max = clusters if neighbours == "all" else min(clusters, lam[0] * lam[1])
    k_max = min(k_max, TOPK_LIMIT)
    k = args.get("k")
    return {
        "iters": check_int("--iters", args.get("iters", defaults.iters), 1, 100),
        "tau": check_positive("--tau", args.get("tau", defaults.tau)),
        "k": min(defaults.k, k_max) if k is None else check_int("--k", k, 1, k_max),
        "norm": check_choice("--norm", args.get("norm", defaults.norm), ("sum", "l2")),
        "neighbours": neighbours,
        "clustering": check_choice(
            "--clustering", args.get("clustering", defaults.clustering), CLUSTERING_FORMS
        ),
    }
