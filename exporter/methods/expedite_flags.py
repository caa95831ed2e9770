"""Flags shared by Expedite's plain and Swin forms: the lambda window, the EM steps and the
reconstruction. Each form passes its own defaults (the papers' tables differ)."""

from __future__ import annotations

from ..config import format_pair, parse_pair
from ..errors import InputError
from ..ops.clustering import DenseClustering, TokenClustering
from ..ops.density_peaks import TOPK_LIMIT
from .base import check_choice, check_int, check_positive

# Both give the same centers; "dense" is the authors' [N, h*w] formulation, kept for comparison.
CLUSTERING = {"tiled": TokenClustering, "dense": DenseClustering}


def check_lambda(args: dict, default) -> tuple[int, int]:
    """--window: the odd lambda x lambda neighbourhood of clusters a pixel may join."""
    lam = parse_pair("--window", args.get("window") or default, "odd sizes, e.g. 5x5")
    if lam[0] % 2 == 0 or lam[1] % 2 == 0:
        raise InputError("--window", format_pair(lam), "odd sizes, e.g. 3x3, 5x5, 7x7")
    return lam


def check_steps(args: dict, defaults: dict, clusters: int, lam: tuple[int, int]) -> dict:
    """--iters, --tau, --norm, --neighbours, --k (bounded by the clusters it may pick from)
    and --clustering, as keyword arguments of the method."""
    neighbours = check_choice("--neighbours", args.get("neighbours", defaults["neighbours"]),
                              ("all", "window"))
    k_max = clusters if neighbours == "all" else min(clusters, lam[0] * lam[1])
    k_max = min(k_max, TOPK_LIMIT)
    k = args.get("k")
    return {
        "iters": check_int("--iters", args.get("iters", defaults["iters"]), 1, 100),
        "tau": check_positive("--tau", args.get("tau", defaults["tau"])),
        "k": min(defaults["k"], k_max) if k is None else check_int("--k", k, 1, k_max),
        "norm": check_choice("--norm", args.get("norm", defaults["norm"]), ("sum", "l2")),
        "neighbours": neighbours,
        "clustering": check_choice("--clustering", args.get("clustering", defaults["clustering"]),
                                   tuple(CLUSTERING)),
    }
