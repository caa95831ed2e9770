"""Plain timm VisionTransformer backbones, output: the patch-token feature map."""

from __future__ import annotations

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from ..errors import InputError
from .base import DenseModel, TokenLayout


def layout_of(vit: VisionTransformer) -> TokenLayout:
    patch = vit.patch_embed.patch_size
    patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
    return TokenLayout(grid=tuple(vit.patch_embed.grid_size), num_prefix=vit.num_prefix_tokens,
                       dim=vit.embed_dim, depth=len(vit.blocks),
                       num_heads=vit.blocks[0].attn.num_heads, patch=patch)


def vit_embed(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding, prefix tokens and position embedding, as timm's forward_features does."""
    x = vit.patch_embed(images)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


class TimmViT(DenseModel):
    """A timm ViT whose output is the normalised patch tokens as a [B, C, H/P, W/P] map."""

    output_kind = "features"
    output_names = ("features",)
    per_token_head = True

    def __init__(self, vit: VisionTransformer):
        super().__init__()
        self.vit = vit
        self.layout = layout_of(vit)
        self.taps = (self.layout.depth - 1,)

    @property
    def blocks(self):
        return self.vit.blocks

    def embed(self, images):
        return vit_embed(self.vit, images)

    def head_tokens(self, feats):
        return self.vit.norm(feats[-1])[:, self.layout.num_prefix:]

    def head_map(self, tokens, image_size):
        B, _, C = tokens.shape
        H, W = self.layout.grid
        return tokens.transpose(1, 2).reshape(B, C, H, W)


def create_timm_vit(name: str, img_size: tuple[int, int] | None) -> TimmViT:
    """Build a timm ViT offline (no download) at the given input size."""
    kwargs = {"pretrained": False, "num_classes": 0, "dynamic_img_size": False}
    if img_size is not None:
        kwargs["img_size"] = tuple(img_size)
    try:
        vit = timm.create_model(name, **kwargs)
    except (RuntimeError, TypeError) as err:
        raise InputError("--model", name, "a timm VisionTransformer name, e.g. vit_base_patch16_224",
                         str(err).splitlines()[0]) from None
    if not isinstance(vit, VisionTransformer):
        raise InputError("--model", name, "a timm VisionTransformer name (not "
                         f"{type(vit).__name__}), e.g. vit_base_patch16_224")
    check_img_size(img_size, vit.patch_embed.patch_size)
    return TimmViT(vit)


def check_img_size(img_size, patch_size) -> None:
    if img_size is None:
        return
    ph, pw = patch_size if isinstance(patch_size, (tuple, list)) else (patch_size, patch_size)
    if img_size[0] % ph or img_size[1] % pw:
        raise InputError("--img-size", f"{img_size[0]}x{img_size[1]}",
                         f"sizes divisible by the patch size {ph}x{pw}")
