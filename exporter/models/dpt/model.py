"""DPT's model code: the ViT (or ResNet-50 + ViT) backbone, readouts, reassemble and fusion
stages and the depth head (the family and its checkpoints' layout: see the package)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from torch import nn

from ...errors import InputError
from ..base import DenseModel, TokenLayout
from ..vit import check_img_size, timm_vit
from . import CONFIGS, DPTConfig

PATCH = 16
TRAIN_SIZE = (384, 384)  # the official checkpoints' position-embedding grid is 24x24
DEFAULT_IMG_SIZE = (384, 384)
FUSION_FEATURES = 256
READOUTS = ("ignore", "add", "project")


class ProjectReadout(nn.Module):
    """Concatenate the class token to every patch token and project back (DPT's default)."""

    def __init__(self, dim: int, num_prefix: int):
        super().__init__()
        self.num_prefix = num_prefix
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x):
        patches = x[:, self.num_prefix :]
        readout = x[:, :1].expand_as(patches)
        return self.project(torch.cat([patches, readout], dim=-1))


class AddReadout(nn.Module):
    """Add the class token to every patch token."""

    def __init__(self, num_prefix: int):
        super().__init__()
        self.num_prefix = num_prefix

    def forward(self, x):
        return x[:, self.num_prefix :] + x[:, :1]


class IgnoreReadout(nn.Module):
    """Drop the prefix tokens."""

    def __init__(self, num_prefix: int):
        super().__init__()
        self.num_prefix = num_prefix

    def forward(self, x):
        return x[:, self.num_prefix :]


def make_readout(kind: str, dim: int, num_prefix: int) -> nn.Module:
    if kind == "project":
        return ProjectReadout(dim, num_prefix)
    if kind == "add":
        return AddReadout(num_prefix)
    return IgnoreReadout(num_prefix)


class Reassemble(nn.Sequential):
    """Tokens of one tapped block -> a feature map at one of the four scales.

    Laid out as the official Sequential so keys match: [0] readout, [1], [2] parameter-free
    slots where the official transposes and unflattens, [3] 1x1 projection, [4] resampling
    (4x and 2x transposed conv, none, or a stride-2 3x3 conv).
    """

    def __init__(self, readout: nn.Module, dim: int, width: int, resample: nn.Module | None):
        layers = [readout, nn.Identity(), nn.Identity(), nn.Conv2d(dim, width, 1)]
        if resample is not None:
            layers.append(resample)
        super().__init__(*layers)

    def forward(self, tokens, grid: tuple[int, int]):
        x = self[0](tokens)
        x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid[0], grid[1])
        for layer in list(self)[3:]:
            x = layer(x)
        return x


def reassemble_resamplers(widths) -> list[nn.Module | None]:
    """Per scale: 1/4 (4x up), 1/8 (2x up), 1/16 (as is), 1/32 (2x down) of the input."""
    return [
        nn.ConvTranspose2d(widths[0], widths[0], 4, stride=4),
        nn.ConvTranspose2d(widths[1], widths[1], 2, stride=2),
        None,
        nn.Conv2d(widths[3], widths[3], 3, stride=2, padding=1),
    ]


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x):
        # not in place: x is also the residual
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FusionBlock(nn.Module):
    """Add the skip (after a residual unit), refine, upsample, project with a 1x1 conv."""

    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)  # unused by refinenet4, kept for its keys
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x, skip, out_size: tuple[int, int]):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        # An explicit size equals the official scale_factor=2 on even grids and keeps odd
        # grids aligned with the next, larger skip.
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


def depth_head(features: int) -> nn.Sequential:
    """Official indices: 0 conv, 1 2x upsample, 2 conv, 3 ReLU, 4 conv to 1, 5 ReLU (depth is
    non-negative), 6 identity. Index 1 is applied by `DPT.head_map` at the input's size."""
    return nn.Sequential(
        nn.Conv2d(features, features // 2, 3, padding=1),
        nn.Identity(),
        nn.Conv2d(features // 2, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 1, 1),
        nn.ReLU(),
        nn.Identity(),
    )


def resnet50_embed(dim: int) -> nn.Module:
    """The R50+ViT-B/16 patch embedding: timm's ResNetV2 (stages of 3, 4, 9 blocks, output
    1024 channels at 1/16) and a 1x1 projection, under timm's names `backbone` and `proj`.

    Built from the pieces rather than timm's HybridEmbed, which sizes itself with a probe
    forward of the ResNet (seconds at 384x384); its forward is not used here anyway."""
    embed = nn.Module()
    embed.backbone = ResNetV2(
        layers=(3, 4, 9),
        num_classes=0,
        global_pool="",
        preact=False,
        stem_type="same",
        conv_layer=partial(StdConv2dSame, eps=1e-8),
    )
    embed.proj = nn.Conv2d(1024, dim, 1)
    return embed


class DPT(DenseModel):
    """Relative inverse depth at input resolution, [B, 1, H, W] (DPT's raw output)."""

    output_kind = "depth"
    output_names = ("depth",)
    per_token_head = False
    restore_at_output = False  # methods restore the tokens before every reassemble after the cut

    def __init__(
        self,
        config: DPTConfig = CONFIGS["base"],
        img_size=DEFAULT_IMG_SIZE,
        readout: str = "project",
        features: int = FUSION_FEATURES,
        patch: int = PATCH,
        pos_grid: tuple[int, int] | None = None,
        **vit_options,
    ):
        """`pos_grid`: the grid of the position embedding the weights hold (default: the
        official checkpoints' 24x24), resized to the input's grid in the forward;
        `vit_options`: more of timm's VisionTransformer arguments (norm_layer, mlp_layer)."""
        super().__init__()
        if readout not in READOUTS:
            raise InputError("readout", readout, "|".join(READOUTS))
        dim, depth, heads, taps, widths, self.hybrid = config
        self.pretrained = nn.Module()
        # num_classes=1000: the official backbones keep timm's classifier, so its keys exist.
        # weight_init="skip": these are random weights until a checkpoint loads; PyTorch's
        # seeded default init is enough and timm's full init costs seconds for ViT-L.
        self.patch = patch
        self.pos_grid = tuple(pos_grid or (TRAIN_SIZE[0] // PATCH, TRAIN_SIZE[1] // PATCH))
        train_size = (self.pos_grid[0] * patch, self.pos_grid[1] * patch)
        self.pretrained.model = timm_vit(
            train_size, patch, dim, depth, heads, weight_init="skip", **vit_options
        )
        if self.hybrid:
            self.pretrained.model.patch_embed = resnet50_embed(dim)
        # "skip" leaves these two uninitialised (torch.empty)
        nn.init.normal_(self.pretrained.model.cls_token, std=0.02)
        nn.init.normal_(self.pretrained.model.pos_embed, std=0.02)
        grid = (img_size[0] // patch, img_size[1] // patch)
        self.layout = TokenLayout(
            grid=grid, num_prefix=1, dim=dim, depth=depth, num_heads=heads, patch=(patch, patch)
        )
        self.taps = taps
        self.readout = readout
        resamplers = reassemble_resamplers(widths)
        # the hybrid's first two scales are ResNet stages, used as they are (no reassemble)
        first = 2 if self.hybrid else 0
        for i in range(first, 4):
            setattr(
                self.pretrained,
                f"act_postprocess{i + 1}",
                Reassemble(make_readout(readout, dim, 1), dim, widths[i], resamplers[i]),
            )
        self.scratch = nn.Module()
        for i in range(4):
            setattr(
                self.scratch,
                f"layer{i + 1}_rn",
                nn.Conv2d(widths[i], features, 3, padding=1, bias=False),
            )
            setattr(self.scratch, f"refinenet{i + 1}", FusionBlock(features))
        self.scratch.output_conv = depth_head(features)
        self._stage_feats: list[torch.Tensor] | None = None

    @property
    def blocks(self):
        return self.pretrained.model.blocks

    def _pos_embed(self) -> torch.Tensor:
        """The checkpoint's position embedding, resized bilinearly to the input grid."""
        pos = self.pretrained.model.pos_embed
        base = self.pos_grid
        if tuple(self.layout.grid) == base:
            return pos
        grid = pos[:, 1:].reshape(1, base[0], base[1], -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=self.layout.grid, mode="bilinear", align_corners=False)
        return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)

    def embed(self, images):
        vit = self.pretrained.model
        if self.hybrid:
            resnet = vit.patch_embed.backbone
            x = resnet.stem(images)
            stage_feats = []
            for stage in resnet.stages:
                x = stage(x)
                stage_feats.append(x)
            x = resnet.norm(x)
            # Kept for head_tokens of this same forward. The interface passes only tokens
            # through the blocks; head_tokens takes the features back and clears the field,
            # so the module holds no tensor between forwards (torch.export accepts that, and
            # a head run without its embed fails instead of reading stale features).
            self._stage_feats = stage_feats[:2]
            x = vit.patch_embed.proj(x)
        else:
            x = vit.patch_embed.proj(images)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return vit.pos_drop(x + self._pos_embed())

    def head_tokens(self, feats):
        """Tapped block outputs -> the fused feature map at half the input resolution.

        DPT's head is not per token, so this returns a map [B, 256, H/2, W/2], not tokens."""
        grid = self.layout.grid
        if self.hybrid:
            if self._stage_feats is None:
                raise RuntimeError("DPT hybrid: head_tokens needs embed of the same forward first")
            maps, self._stage_feats = list(self._stage_feats), None
        else:
            maps = []
        for i in range(len(maps), 4):
            tokens = feats[i - 4]  # the ViT taps are the last len(feats) scales
            maps.append(getattr(self.pretrained, f"act_postprocess{i + 1}")(tokens, grid))
        scratch = self.scratch
        layers = [getattr(scratch, f"layer{i + 1}_rn")(m) for i, m in enumerate(maps)]
        half = (grid[0] * self.patch // 2, grid[1] * self.patch // 2)
        size = [tuple(int(s) for s in m.shape[-2:]) for m in layers]
        x = scratch.refinenet4(layers[3], None, size[2])
        x = scratch.refinenet3(x, layers[2], size[1])
        x = scratch.refinenet2(x, layers[1], size[0])
        return scratch.refinenet1(x, layers[0], half)

    def head_map(self, tokens, image_size):
        head = self.scratch.output_conv
        x = head[0](tokens)
        x = F.interpolate(
            x, size=tuple(int(s) for s in image_size), mode="bilinear", align_corners=True
        )
        for layer in list(head)[2:]:
            x = layer(x)
        return x


def create_dpt(size: str, img_size=None, readout: str = "project") -> DPT:
    img_size = tuple(img_size) if img_size is not None else DEFAULT_IMG_SIZE
    check_img_size(img_size, PATCH)
    return DPT(CONFIGS[size], img_size, readout)
