"""Segmenter (Strudel et al., 2021): ViT encoder + mask-transformer decoder.

State-dict keys follow the official release (`encoder.*`, `decoder.*`), so its checkpoints
load as they are. The encoder is timm's VisionTransformer, whose parameter names already
match; the decoder is written here with the official names.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from ..vit import ViTBackbone, check_img_size, layout_of, timm_vit
from . import DEFAULT_CLASSES, DEFAULT_IMG_SIZE, PATCH, SIZES

# Segmenter uses torch's LayerNorm default eps, not timm's 1e-6.
LayerNorm = partial(nn.LayerNorm, eps=1e-5)


class MaskTransformer(nn.Module):
    """Segmenter's decoder: class embeddings attend with patch tokens; masks by dot product."""

    def __init__(self, n_cls: int, d_encoder: int, d_model: int, n_layers: int = 2):
        super().__init__()
        self.n_cls = n_cls
        n_heads = d_model // 64
        self.blocks = nn.ModuleList(
            [
                Block(d_model, n_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=LayerNorm)
                for _ in range(n_layers)
            ]
        )
        self.cls_emb = nn.Parameter(torch.randn(1, n_cls, d_model) * 0.02)
        self.proj_dec = nn.Linear(d_encoder, d_model)
        scale = d_model**-0.5
        self.proj_patch = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.proj_classes = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.decoder_norm = LayerNorm(d_model)
        self.mask_norm = LayerNorm(n_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, n, d_encoder] -> per-token class logits [B, n, n_cls]."""
        x = self.proj_dec(x)
        x = torch.cat((x, self.cls_emb.expand(x.shape[0], -1, -1)), 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        patches, classes = x[:, : -self.n_cls], x[:, -self.n_cls :]
        patches = F.normalize(patches @ self.proj_patch, dim=-1, eps=0.0)
        classes = F.normalize(classes @ self.proj_classes, dim=-1, eps=0.0)
        return self.mask_norm(patches @ classes.transpose(1, 2))


class LinearDecoder(nn.Module):
    """Segmenter's linear decoder: per-token class logits by one linear layer."""

    def __init__(self, n_cls: int, d_encoder: int):
        super().__init__()
        self.head = nn.Linear(d_encoder, n_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class ConvStem(nn.Sequential):
    """Convolutional patch embedding of a hybrid ViT: images [B, 3, H, W] -> [B, dim, H/p, W/p].

    A 3x3 convolution, one stride-2 convolution per factor 2 of the patch size, then dilated
    convolutions (2, 4, 8) on the token grid, so each token sees about 60 pixels around it.
    Trained from scratch on a small set, a plain ViT learns where objects are long before it
    learns what they are; local features from convolutions shorten that (the digits model).
    """

    def __init__(self, patch: int, dim: int, width: int = 64):
        if patch < 2 or patch & (patch - 1):
            raise ValueError(
                f"a convolutional stem needs a patch size that is a power of 2, not {patch}"
            )
        layers = [nn.Conv2d(3, width // 2, 3, padding=1), nn.GELU()]
        c = width // 2
        for _ in range(patch.bit_length() - 1):
            layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.GELU()]
            c = width
        layers += [
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4),
            nn.GELU(),
            nn.Conv2d(width, dim, 3, padding=8, dilation=8),
        ]
        super().__init__(*layers)


class Segmenter(ViTBackbone):
    """Per-class logits at input resolution, [B, n_cls, H, W]."""

    output_kind = "segmentation"
    output_names = ("logits",)
    per_token_head = True
    restore_at_output = True  # as the Expedite authors do: reconstruct the mask logits

    def __init__(
        self,
        size="base",
        img_size=DEFAULT_IMG_SIZE,
        num_classes=DEFAULT_CLASSES,
        patch: int = PATCH,
        decoder_layers: int = 2,
        decoder: str = "mask",
        stem: str = "patch",
        stem_width: int = 64,
    ):
        super().__init__()
        if decoder not in ("mask", "linear"):
            raise ValueError(f"decoder must be 'mask' or 'linear', not {decoder!r}")
        if stem not in ("patch", "conv"):
            raise ValueError(f"stem must be 'patch' or 'conv', not {stem!r}")
        # size: a name in SIZES or an explicit (embed dim, depth, heads)
        dim, depth, heads = SIZES[size] if isinstance(size, str) else size
        self.encoder = timm_vit(img_size, patch, dim, depth, heads, norm_layer=LayerNorm)
        if stem == "conv":
            self.encoder.patch_embed.proj = ConvStem(patch, dim, stem_width)
        self.decoder = (
            MaskTransformer(num_classes, dim, dim, decoder_layers)
            if decoder == "mask"
            else LinearDecoder(num_classes, dim)
        )
        self.layout = layout_of(self.encoder)
        self.taps = (depth - 1,)
        self.num_classes = num_classes

    @property
    def backbone(self):
        return self.encoder

    def head_tokens(self, feats):
        return self.decoder(self.patch_tokens(feats))

    def head_map(self, tokens, image_size):
        return grid_to_image(tokens, self.layout.grid, image_size)


def grid_to_image(tokens: torch.Tensor, grid, image_size) -> torch.Tensor:
    """Per-token class scores [B, H*W, K] -> [B, K, *image_size], bilinear from the token grid."""
    B, _, K = tokens.shape
    masks = tokens.transpose(1, 2).reshape(B, K, *grid)
    return F.interpolate(masks, size=tuple(int(s) for s in image_size), mode="bilinear")


def create_segmenter(size, img_size=None, num_classes=None, **options) -> Segmenter:
    """A Segmenter at `img_size` (checked against the patch size first) with `num_classes`
    (default: the ADE20K sizes); `options` are Segmenter's other arguments."""
    img_size = tuple(img_size) if img_size is not None else DEFAULT_IMG_SIZE
    check_img_size(img_size, options.get("patch", PATCH))
    return Segmenter(size, img_size, num_classes or DEFAULT_CLASSES, **options)
