"""transformers' DPTForDepthEstimation and DPTForSemanticSegmentation (ViT backbone) as the
project's DPT (exporter/models/dpt), so every method meets them as it meets the built-in DPTs:
the cut, and the restoring of tokens before each reassemble tapped after it, are the DPT's own.

Renamed: the ViT encoder as in hf/vit.py (under `pretrained.model.`), the reassemble stages
(`neck.reassemble_stage.*` -> `pretrained.act_postprocess1..4`), `neck.convs` ->
`scratch.layer1..4_rn`, the fusion layers, deepest first (`neck.fusion_stage.layers.0..3` ->
`scratch.refinenet4..1`), the depth head. Batch norms (fusion residual units where the config
has them, the segmentation head) are folded into the convolution before them, as inference
runs them. The position embedding stays at the config's grid and is resized to the input's
in the forward (bilinear), as transformers does. The segmentation model's auxiliary head
(training only) is not used.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...config import ModelSpec
from ..dpt import DPTConfig
from ..dpt.model import DPT, READOUTS
from ..vit import check_img_size
from ..checkpoint import load_checked
from . import FLAG
from .common import is_meta, read_weights, transformers_config, unsupported
from .vit import ACTIVATIONS, VIT, _mlp, backbone_state

FACTORS = [4, 2, 1, 0.5]  # the reassemble resamplers the project's DPT has


class DPTSegmentation(DPT):
    """DPT with transformers' semantic segmentation head: per-class logits [B, K, H, W]."""

    output_kind = "segmentation"
    output_names = ("logits",)

    def __init__(self, *args, num_classes: int, **kwargs):
        super().__init__(*args, **kwargs)
        features = self.scratch.refinenet1.out_conv.out_channels
        del self.scratch.output_conv
        # conv 3x3 (its batch norm folded in), ReLU, conv 1x1 to the classes; dropout is off
        self.seg_head = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(features, num_classes, 1),
        )
        self.num_classes = num_classes

    def head_map(self, tokens, image_size):
        x = self.seg_head(tokens)
        size = tuple(int(s) for s in image_size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _check(folder: Path, cfg) -> None:
    checks = [
        ("is_hybrid", bool(cfg.is_hybrid), False, "false (a ViT backbone)"),
        ("backbone_config", cfg.backbone_config is not None, False, "null (the DPT's own ViT)"),
        ("readout_type", cfg.readout_type in READOUTS, True, "|".join(READOUTS)),
        ("reassemble_factors", list(cfg.reassemble_factors) == FACTORS, True, str(FACTORS)),
        ("backbone_out_indices", len(cfg.backbone_out_indices) == 4, True, "four blocks"),
        ("neck_hidden_sizes", len(cfg.neck_hidden_sizes) == 4, True, "four widths"),
        ("neck_ignore_stages", not cfg.neck_ignore_stages, True, "[]"),
        ("head_in_index", cfg.head_in_index == -1, True, "-1"),
        ("add_projection", bool(getattr(cfg, "add_projection", False)), False, "false"),
        ("hidden_act", cfg.hidden_act in ACTIVATIONS, True, "|".join(ACTIVATIONS)),
        ("num_channels", cfg.num_channels == 3, True, "3 (RGB)"),
        ("qkv_bias", bool(getattr(cfg, "qkv_bias", True)), True, "true"),
    ]
    for field, value, wanted, allowed in checks:
        if value != wanted:
            raise unsupported(folder, field, getattr(cfg, field, None), allowed)


def _fold(conv_w, conv_b, state: dict, bn: str):
    """A convolution followed by batch norm `bn` (its keys in `state`) as one convolution."""
    scale = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + 1e-5)
    w = conv_w * scale.reshape(-1, 1, 1, 1)
    b = conv_b if conv_b is not None else torch.zeros_like(scale)
    return w, (b - state[f"{bn}.running_mean"]) * scale + state[f"{bn}.bias"]


def _head_state(state: dict, segmentation: bool) -> dict:
    out = {}
    if segmentation:
        w, b = _fold(
            state["head.head.0.weight"], state.get("head.head.0.bias"), state, "head.head.1"
        )
        out.update({"seg_head.0.weight": w, "seg_head.0.bias": b})
        out.update({f"seg_head.2.{p}": state[f"head.head.4.{p}"] for p in ("weight", "bias")})
    else:
        for i in (0, 2, 4):
            for p in ("weight", "bias"):
                out[f"scratch.output_conv.{i}.{p}"] = state[f"head.head.{i}.{p}"]
    return out


def convert_state(state: dict, module: nn.Module) -> dict:
    """transformers' DPT keys -> the project DPT's (keys already the model's stay)."""
    own = module.state_dict()
    if all(k in own for k in state):
        return state
    segmentation = isinstance(module, DPTSegmentation)
    backbone = {k[4:]: v for k, v in state.items() if k.startswith("dpt.")}
    out = backbone_state(backbone, VIT, "pretrained.model.", lambda pos: pos)
    used = {"head.head.", "auxiliary_head.", "neck.", "dpt."}
    out.update({k: v for k, v in state.items() if not k.startswith(tuple(used))})
    out.update(_head_state(state, segmentation))
    stage = "neck.reassemble_stage."
    for i in range(4):
        post = f"pretrained.act_postprocess{i + 1}"
        for p in ("weight", "bias"):
            for src, dst in (
                (f"{stage}readout_projects.{i}.0.{p}", f"{post}.0.project.0.{p}"),
                (f"{stage}layers.{i}.projection.{p}", f"{post}.3.{p}"),
                (f"{stage}layers.{i}.resize.{p}", f"{post}.4.{p}"),
            ):
                if src in state:
                    out[dst] = state[src]
        out[f"scratch.layer{i + 1}_rn.weight"] = state[f"neck.convs.{i}.weight"]
        fusion, refine = f"neck.fusion_stage.layers.{i}", f"scratch.refinenet{4 - i}"
        for p in ("weight", "bias"):
            out[f"{refine}.out_conv.{p}"] = state[f"{fusion}.projection.{p}"]
        for unit in (1, 2):
            for conv in (1, 2):
                src = f"{fusion}.residual_layer{unit}"
                w = state[f"{src}.convolution{conv}.weight"]
                b = state.get(f"{src}.convolution{conv}.bias")
                if f"{src}.batch_norm{conv}.weight" in state:
                    w, b = _fold(w, b, state, f"{src}.batch_norm{conv}")
                dst = f"{refine}.resConfUnit{unit}.conv{conv}"
                out[f"{dst}.weight"] = w
                out[f"{dst}.bias"] = b if b is not None else torch.zeros(w.shape[0])
    for key, value in own.items():
        if key.startswith("pretrained.model.head."):  # timm's classifier, kept for its keys
            out.setdefault(key, value)
    return out


def _load(folder: Path, config: dict, spec: ModelSpec, segmentation: bool) -> DPT:
    cfg = transformers_config(config)
    _check(folder, cfg)
    patch = cfg.patch_size
    img_size = spec.img_size or (cfg.image_size, cfg.image_size)
    check_img_size(img_size, patch)
    side = cfg.image_size // patch
    act = ACTIVATIONS[cfg.hidden_act]
    dpt_config = DPTConfig(
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        tuple(cfg.backbone_out_indices),
        tuple(cfg.neck_hidden_sizes),
    )
    options = dict(
        readout=cfg.readout_type,
        features=cfg.fusion_hidden_size,
        patch=patch,
        pos_grid=(side, side),
        norm_layer=partial(nn.LayerNorm, eps=cfg.layer_norm_eps),
        mlp_layer=_mlp(cfg.intermediate_size, act, False),
    )
    if segmentation:
        model = DPTSegmentation(dpt_config, img_size, num_classes=cfg.num_labels, **options)
    else:
        model = DPT(dpt_config, img_size, **options)
    if not is_meta(model):
        load_checked(model, convert_state(read_weights(folder), model), f"hf:{folder}", FLAG)
    return model.eval()


def load_depth(folder: Path, config: dict, spec: ModelSpec) -> DPT:
    return _load(folder, config, spec, segmentation=False)


def load_segmentation(folder: Path, config: dict, spec: ModelSpec) -> DPT:
    return _load(folder, config, spec, segmentation=True)
