"""Expedite (Liang et al., NeurIPS 2022) in two forms: the plain ViT's (`vit`) and the Swin
window form (`swin`), with one config and flag set (`config`)."""

from __future__ import annotations

__all__ = [
    "SPEC",
    "Expedite",
    "ExpediteConfig",
    "build",
    "check_cluster_hw",
    "default_alpha",
    "default_hw",
]

from ..base import MethodSpec
from .config import ExpediteConfig
from .swin import build_swin
from .vit import Expedite, build, check_cluster_hw, default_alpha, default_hw

SPEC = MethodSpec(
    "expedite",
    "token clustering after block alpha, reconstruction at the output (Liang et al. 2022)",
    ExpediteConfig,
    {"vit": build, "swin": build_swin},
    authors_form={"clustering": "dense"},
)
