"""timm Swin Transformer backbones; outputs: the four stage feature maps (NCHW).

As for Mask2Former and HTC++, where the papers time the backbone alone, the model's outputs
are the backbone's multi-scale features `stage1..stage4` ([B, C_s, H/4/2^s, W/4/2^s]); the
last one goes through the final norm, as timm's `forward_features` does, so every weight of
timm's Swin names (which official Swin checkpoints map to) is used.

For the method interface the backbone is a flat list of steps, one per Swin block (the first
step of each stage also merges patches); tokens between steps are [B, H_s, W_s, C_s] (NHWC,
timm's layout) and `taps` are the last step of each stage. `stages` describes each stage's
grid, window and steps; `window_block` gives a copy of a block for a reduced grid and window
(the Swin forms of the methods run the blocks after their cut on it).
"""

from __future__ import annotations

import copy
import warnings

import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn
from torch import nn

from ..errors import InputError
from .base import DenseModel, TokenLayout, WindowStage


class SwinStep(nn.Module):
    """One Swin block, preceded by its stage's patch merging for the first block of a stage."""

    def __init__(self, block: nn.Module, downsample: nn.Module | None = None):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.block = block

    def forward(self, x):
        return self.block(self.downsample(x))


def resize_bias_table(
    table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]
) -> torch.Tensor:
    """[(2*old-1)^2, heads] -> [(2*new-1)^2, heads], bilinear (Expedite's Swin variant)."""
    heads = table.shape[1]
    grid = table.detach().T.reshape(1, heads, 2 * old[0] - 1, 2 * old[1] - 1)
    grid = F.interpolate(
        grid.float(), size=(2 * new[0] - 1, 2 * new[1] - 1), mode="bilinear", align_corners=False
    )
    return grid.reshape(heads, -1).T.contiguous().to(table.dtype)


class Swin(DenseModel):
    output_kind = "features"
    output_names = ("stage1", "stage2", "stage3", "stage4")

    def __init__(self, swin: SwinTransformer):
        super().__init__()
        self.swin = swin
        patch = tuple(swin.patch_embed.patch_size)
        stages, steps, first = [], [], 0
        for s, layer in enumerate(swin.layers):
            blocks = list(layer.blocks)
            steps.append(SwinStep(blocks[0], layer.downsample))
            steps += [SwinStep(b) for b in blocks[1:]]
            b0 = blocks[0]
            stages.append(
                WindowStage(
                    grid=tuple(layer.output_resolution),
                    window=tuple(b0.window_size),
                    dim=b0.dim,
                    num_heads=b0.attn.num_heads,
                    first=first,
                    depth=len(blocks),
                )
            )
            first += len(blocks)
        self.stages = tuple(stages)
        # Not registered: the steps are views of `swin`'s modules, whose names the state dict keeps.
        object.__setattr__(self, "_steps", nn.ModuleList(steps))
        self.taps = tuple(st.first + st.depth - 1 for st in stages)
        self.layout = TokenLayout(
            grid=tuple(swin.patch_embed.grid_size),
            num_prefix=0,
            dim=swin.embed_dim,
            depth=first,
            num_heads=stages[0].num_heads,
            patch=patch,
        )
        self.output_names = tuple(f"stage{i + 1}" for i in range(len(stages)))

    @property
    def blocks(self):
        return self._steps

    def embed(self, images):
        return self.swin.patch_embed(images)  # [B, H/4, W/4, C] (NHWC)

    def head_tokens(self, feats):
        feats = list(feats)
        feats[-1] = self.swin.norm(feats[-1])
        return tuple(f.permute(0, 3, 1, 2).contiguous() for f in feats)

    def head_map(self, tokens, image_size):
        return tokens

    def peak_elements(self, batch: int) -> tuple[int, int]:
        # windowed attention: each token attends to its window only
        attention = max(
            batch * s.num_heads * s.grid[0] * s.grid[1] * s.window[0] * s.window[1]
            for s in self.stages
        )
        return attention, max(batch * s.grid[0] * s.grid[1] * s.dim for s in self.stages)

    def window_block(self, index: int, grid: tuple[int, int], window: tuple[int, int]) -> nn.Module:
        """A copy of block `index` (flat) for a `grid` token map with windows of `window`.

        The relative-position bias table is resized bilinearly from (2K-1)^2 to (2k-1)^2, the
        shifted blocks shift by k//2 and get the attention mask of the new grid (built here,
        once). The original block is left as it is.
        """
        block = copy.deepcopy(self._steps[index].block)
        old = tuple(block.attn.window_size)
        table = resize_bias_table(block.attn.relative_position_bias_table, old, tuple(window))
        # timm's set_input_size rebuilds index and mask for the new window, but resizes the
        # table with its own interpolation; the bilinear table is put back afterwards.
        with warnings.catch_warnings():  # timm's own resize warns about its indexing
            warnings.simplefilter("ignore")
            block.set_input_size(feat_size=tuple(grid), window_size=tuple(window))
        if tuple(block.attn.window_size) != tuple(window):
            raise ValueError(f"window {window} does not fit grid {grid}")
        block.attn.relative_position_bias_table = nn.Parameter(table, requires_grad=False)
        return block


def convert_state(state: dict, module: nn.Module) -> dict:
    """timm's Swin names from a checkpoint: official (Microsoft) layouts are renamed by timm's
    filter, and the image classifier (`head.*`), which a backbone has no use for, is set aside."""
    if (
        any(k.endswith(("relative_position_index", "attn_mask")) for k in state)
        or "layers.0.downsample.reduction.weight" in state
    ):
        state = checkpoint_filter_fn(state, module)
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def is_timm_swin(name: str) -> bool:
    return name in timm.list_models("swin_*")


def stage_grids(img_size, patch: int, num_stages: int) -> list[tuple[int, int]] | None:
    step = patch * 2 ** (num_stages - 1)
    if img_size[0] % step or img_size[1] % step:
        return None
    return [(img_size[0] // patch // 2**s, img_size[1] // patch // 2**s) for s in range(num_stages)]


def check_swin_size(name: str, img_size, patch: int, windows) -> None:
    """Every stage grid must split into whole windows (or fit in one): no padding."""
    n = len(windows)
    grids = stage_grids(img_size, patch, n)
    ok = grids is not None and all(
        all(g <= w or g % w == 0 for g, w in zip(grid, win)) for grid, win in zip(grids, windows)
    )
    if not ok:
        step = patch * 2 ** (n - 1)
        win = windows[0][0]
        raise InputError(
            "--img-size",
            f"{img_size[0]}x{img_size[1]}",
            f"sides that are multiples of {step} whose stage grids (side/{patch}, "
            f"/{2 * patch}, ... /{step}) are multiples of the window {win} or at most "
            f"{win}, e.g. {step * win}x{step * win}",
            f"{name} would pad windows",
        )


def create_swin(name: str, img_size=None) -> Swin:
    """Build a timm Swin Transformer offline (no download) at the given input size."""
    kwargs = {"pretrained": False, "num_classes": 0}
    if img_size is not None:
        kwargs["img_size"] = tuple(img_size)
    # Sizes are checked on a meta-device model first: a bad size fails fast, without weights.
    probe = timm.create_model(name, pretrained=False, num_classes=0, device="meta")
    patch = probe.patch_embed.patch_size[0]
    windows = [tuple(w) for w in probe._ref_window_sizes]  # as configured, before any clamp
    size = tuple(img_size) if img_size is not None else tuple(probe.patch_embed.img_size)
    check_swin_size(name, size, patch, windows)
    swin = timm.create_model(name, **kwargs)
    if not isinstance(swin, SwinTransformer):
        raise InputError(
            "--model", name, "a timm SwinTransformer name, e.g. swin_tiny_patch4_window7_224"
        )
    return Swin(swin)
