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
    return TokenLayout(
        grid=tuple(vit.patch_embed.grid_size),
        num_prefix=vit.num_prefix_tokens,
        dim=vit.embed_dim,
        depth=len(vit.blocks),
        num_heads=vit.blocks[0].attn.num_heads,
        patch=patch,
    )


def vit_embed(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding, prefix tokens and position embedding, as timm's forward_features does."""
    x = vit.patch_embed(images)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def timm_vit(img_size, patch: int, dim: int, depth: int, heads: int, **extra) -> VisionTransformer:
    """timm's VisionTransformer as the official Segmenter and DPT releases build it: qkv bias,
    and timm's 1000-class classifier kept so that their checkpoints' keys exist."""
    return VisionTransformer(
        img_size=tuple(img_size),
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        num_classes=1000,
        qkv_bias=True,
        **extra,
    )


class ViTBackbone(DenseModel):
    """The hooks of a model whose token blocks are a timm VisionTransformer, `backbone` (an
    attribute or property of the subclass, so each keeps its checkpoints' module names)."""

    backbone: VisionTransformer

    @property
    def blocks(self):
        return self.backbone.blocks

    def embed(self, images):
        return vit_embed(self.backbone, images)

    def patch_tokens(self, feats):
        """The last tapped block's output, normalised, without the prefix tokens."""
        return self.backbone.norm(feats[-1])[:, self.layout.num_prefix :]


class TimmViT(ViTBackbone):
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
    def backbone(self):
        return self.vit

    def head_tokens(self, feats):
        return self.patch_tokens(feats)

    def head_map(self, tokens, image_size):
        B, _, C = tokens.shape
        H, W = self.layout.grid
        return tokens.transpose(1, 2).reshape(B, C, H, W)


def create_timm_vit(name: str, img_size: tuple[int, int] | None) -> TimmViT:
    """Build a timm ViT offline (no download) at the given input size (H, W)."""
    kwargs = {"pretrained": False, "num_classes": 0, "dynamic_img_size": False}
    if img_size is not None:
        kwargs["img_size"] = tuple(img_size)
    # Name and input size are checked on the meta device first: a wrong size is refused
    # before ViT-H's 630M weights are allocated and initialised.
    with torch.device("meta"):
        probe = _create(name, kwargs)
    check_img_size(img_size, probe.patch_embed.patch_size)
    return TimmViT(_create(name, kwargs))


def _create(name: str, kwargs: dict) -> VisionTransformer:
    try:
        vit = timm.create_model(name, **kwargs)
    except (RuntimeError, TypeError, AssertionError) as err:
        raise InputError(
            "--model",
            name,
            "a timm VisionTransformer name, e.g. vit_base_patch16_224",
            str(err).splitlines()[0] if str(err) else type(err).__name__,
        ) from None
    if not isinstance(vit, VisionTransformer):
        raise InputError(
            "--model",
            name,
            f"a timm VisionTransformer name (not {type(vit).__name__}), e.g. vit_base_patch16_224",
        )
    return vit


def check_img_size(img_size, patch_size) -> None:
    """Both sides must be whole multiples of the patch; the error names the nearest sizes."""
    if img_size is None:
        return
    ph, pw = patch_size if isinstance(patch_size, (tuple, list)) else (patch_size, patch_size)
    H, W = img_size
    if H % ph or W % pw:
        below = (H // ph * ph, W // pw * pw)
        above = (-(-H // ph) * ph, -(-W // pw) * pw)
        near = [f"{h}x{w}" for h, w in (below, above) if h > 0 and w > 0]
        raise InputError(
            "--img-size",
            f"{H}x{W}",
            f"HxW with H a multiple of {ph} and W a multiple of {pw} "
            f"(nearest: {' or '.join(dict.fromkeys(near))})",
            f"not divisible by the patch size {ph}x{pw}",
        )
