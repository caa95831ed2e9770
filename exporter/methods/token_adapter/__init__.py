"""Token Adapter (Su, Fei, Luo, 2024) in two forms: the plain ViT's (`vit`) and the Swin
window form (`swin`), with one config and flag set (`config`)."""

from __future__ import annotations

__all__ = ["SPEC", "TokenAdapter", "TokenAdapterConfig", "build", "default_alpha"]

from ..base import MethodSpec
from .config import TokenAdapterConfig
from .swin import build_swin
from .vit import TokenAdapter, build, default_alpha

SPEC = MethodSpec(
    "token-adapter",
    "merge the least important rows and columns of tokens, restore by matching (Su et al. 2024)",
    TokenAdapterConfig,
    {"vit": build, "swin": build_swin},
)
