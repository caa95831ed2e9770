"""transformers' ViTModel, Dinov2Model and Dinov2WithRegistersModel as the project's timm
VisionTransformer (`TimmViT`), so every method's plain-token-grid form applies.

The weights are renamed onto timm's (query/key/value into one qkv projection, DINOv2's layer
scales into timm's LayerScale). The position embedding is resized once, at load time, to the
build's fixed grid, as transformers resizes it in its forward (bicubic; antialiased for the
register variant, as its own code does); DINOv2's register tokens sit between the class token
and the patches with no position embedding, which here is a zero row in timm's embedding of
all prefix tokens. Output: the normalised patch tokens as a [B, C, H/P, W/P] map, or per-class
logits by the project's linear head (as Segmenter's linear decoder, random until trained)
with --num-classes.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import GluMlp, Mlp
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ...config import ModelSpec
from ..segmenter.model import LinearDecoder, grid_to_image
from ..vit import TimmViT, check_img_size, layout_of
from ..checkpoint import load_checked
from . import FLAG
from .common import is_meta, read_weights, strip_prefix, transformers_config
from .common import unsupported

ACTIVATIONS = {"gelu": nn.GELU, "gelu_pytorch_tanh": partial(nn.GELU, approximate="tanh")}


class Family:
    """How one architecture's config and weights read: which key holds what."""

    def __init__(self, norm1, norm2, fc1, fc2, antialias: bool):
        self.names = {
            norm1: "norm1",
            norm2: "norm2",
            "attention.output.dense": "attn.proj",
            fc1: "mlp.fc1",
            fc2: "mlp.fc2",
            "layer_scale1.lambda1": "ls1.gamma",
            "layer_scale2.lambda1": "ls2.gamma",
        }
        self.antialias = antialias


VIT = Family("layernorm_before", "layernorm_after", "intermediate.dense", "output.dense", False)
DINOV2 = Family("norm1", "norm2", "mlp.fc1", "mlp.fc2", False)
DINOV2_REGISTERS = Family("norm1", "norm2", "mlp.fc1", "mlp.fc2", True)
SWIGLU = {"mlp.weights_in": "mlp.fc1", "mlp.weights_out": "mlp.fc2"}
DROPPED = ("pooler.", "embeddings.mask_token")  # unused by the features (classifier pooling)


class LinearSegmentation(TimmViT):
    """The backbone's normalised patch tokens -> per-class logits by one linear layer (as
    Segmenter's linear decoder), upsampled bilinearly to the input size."""

    output_kind = "segmentation"
    output_names = ("logits",)
    per_token_head = True
    restore_at_output = True

    def __init__(self, vit: VisionTransformer, num_classes: int):
        super().__init__(vit)
        self.decoder = LinearDecoder(num_classes, self.layout.dim)
        self.num_classes = num_classes

    def head_tokens(self, feats):
        return self.decoder(self.patch_tokens(feats))

    def head_map(self, tokens, image_size):
        return grid_to_image(tokens, self.layout.grid, image_size)


def _mlp(hidden: int, act, glu: bool):
    """timm's MLP with transformers' exact hidden width (an mlp_ratio could round it)."""

    def make(in_features, bias=True, device=None, dtype=None, **_):
        kinds = {"bias": bias, "device": device, "dtype": dtype}
        if glu:  # SwiGLU: fc1 makes both halves, silu(first) * second, as transformers' DINOv2
            return GluMlp(in_features, 2 * hidden, act_layer=nn.SiLU, gate_last=False, **kinds)
        return Mlp(in_features, hidden, act_layer=act, **kinds)

    return make


def _swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    hidden = int(dim * mlp_ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8


def _vision_transformer(
    folder: Path, cfg, img_size, registers: int, layerscale
) -> VisionTransformer:
    act = ACTIVATIONS.get(cfg.hidden_act)
    if act is None:
        raise unsupported(folder, "hidden_act", cfg.hidden_act, "|".join(ACTIVATIONS))
    if getattr(cfg, "num_channels", 3) != 3:
        raise unsupported(folder, "num_channels", cfg.num_channels, "3 (RGB)")
    dim = cfg.hidden_size
    glu = bool(getattr(cfg, "use_swiglu_ffn", False))
    if glu:
        hidden = _swiglu_hidden(dim, cfg.mlp_ratio)
    elif hasattr(cfg, "intermediate_size"):
        hidden = cfg.intermediate_size
    else:
        hidden = int(dim * cfg.mlp_ratio)
    return VisionTransformer(
        img_size=tuple(img_size),
        patch_size=cfg.patch_size,
        embed_dim=dim,
        depth=cfg.num_hidden_layers,
        num_heads=cfg.num_attention_heads,
        num_classes=0,
        qkv_bias=getattr(cfg, "qkv_bias", True),
        init_values=layerscale,
        class_token=True,
        reg_tokens=registers,
        global_pool="token",
        norm_layer=partial(nn.LayerNorm, eps=cfg.layer_norm_eps),
        mlp_layer=_mlp(hidden, act, glu),
        weight_init="skip",
    )


def _resized_pos(pos: torch.Tensor, grid: tuple[int, int], registers: int, antialias: bool):
    """transformers' position embedding [1, 1 + S*S, C] -> timm's for the build's grid: the
    patch rows resized (bicubic) to grid, zero rows for the register tokens after the class's."""
    cls, patches = pos[:, :1], pos[:, 1:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise ValueError(f"position embedding of {patches.shape[1]} patches is not square")
    if tuple(grid) != (side, side):
        x = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
        x = F.interpolate(
            x, size=tuple(grid), mode="bicubic", align_corners=False, antialias=antialias
        )
        patches = x.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos.dtype)
    zeros = pos.new_zeros(1, registers, pos.shape[-1])
    return torch.cat([cls, zeros, patches], dim=1)


def backbone_state(state: dict, family: Family, root: str, pos) -> dict:
    """transformers' ViT-style encoder keys (embeddings.*, encoder.layer.N.*, layernorm.*) ->
    timm's under `root` ("vit.", "pretrained.model."); `pos(embedding)` makes timm's position
    embedding of transformers'. Keys of neither stay as they are (reported as not used)."""
    out = {}
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(DROPPED):
            continue
        if key.startswith("encoder.layer."):
            index, _, rest = key[len("encoder.layer.") :].partition(".")
            layers.setdefault(int(index), {})[rest] = value
        elif key == "embeddings.position_embeddings":
            out[f"{root}pos_embed"] = pos(value)
        elif key in EMBEDDINGS:
            out[f"{root}{EMBEDDINGS[key]}"] = value
        else:
            out[key] = value
    names = {**family.names, **SWIGLU}
    for i, layer in layers.items():
        block = f"{root}blocks.{i}"
        for part in ("weight", "bias"):
            qkv = [
                layer.pop(f"attention.attention.{n}.{part}", None)
                for n in ("query", "key", "value")
            ]
            if all(t is not None for t in qkv):
                out[f"{block}.attn.qkv.{part}"] = torch.cat(qkv, dim=0)
        for rest, value in layer.items():
            stem, _, part = rest.rpartition(".")
            if rest in names:  # a parameter itself (the layer scales)
                out[f"{block}.{names[rest]}"] = value
            elif stem in names:
                out[f"{block}.{names[stem]}.{part}"] = value
            else:
                out[f"encoder.layer.{i}.{rest}"] = value  # reported as not used
    return out


EMBEDDINGS = {
    "embeddings.cls_token": "cls_token",
    "embeddings.register_tokens": "reg_token",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}


def convert_state(state: dict, module: nn.Module) -> dict:
    """transformers' ViT / DINOv2 keys -> the model's (keys already the model's stay)."""
    own = module.state_dict()
    if all(k in own for k in state):
        return state
    vit = module.vit
    family = getattr(module, "hf_family", VIT)
    registers, grid = vit.num_prefix_tokens - 1, layout_of(vit).grid
    out = backbone_state(
        strip_prefix(state, "embeddings.cls_token"),
        family,
        "vit.",
        lambda pos: _resized_pos(pos, grid, registers, family.antialias),
    )
    for key, value in own.items():
        if key.startswith("decoder."):  # the project's head: not in a backbone's folder
            out.setdefault(key, value)
    return out


def _load(folder: Path, config: dict, spec: ModelSpec, family: Family, layerscale) -> TimmViT:
    cfg = transformers_config(config)
    img_size = spec.img_size or (cfg.image_size, cfg.image_size)
    check_img_size(img_size, cfg.patch_size)
    registers = int(getattr(cfg, "num_register_tokens", 0) or 0)
    vit = _vision_transformer(folder, cfg, img_size, registers, layerscale(cfg))
    if spec.num_classes is None:
        model = TimmViT(vit)
    else:
        model = LinearSegmentation(vit, spec.num_classes)
    model.hf_family = family
    if not is_meta(model):
        state = convert_state(read_weights(folder), model)
        load_checked(model, state, f"hf:{folder}", FLAG)
    return model.eval()


def load_vit(folder: Path, config: dict, spec: ModelSpec) -> TimmViT:
    return _load(folder, config, spec, VIT, lambda cfg: None)


def load_dinov2(folder: Path, config: dict, spec: ModelSpec) -> TimmViT:
    return _load(folder, config, spec, DINOV2, lambda cfg: cfg.layerscale_value)


def load_dinov2_registers(folder: Path, config: dict, spec: ModelSpec) -> TimmViT:
    return _load(folder, config, spec, DINOV2_REGISTERS, lambda cfg: cfg.layerscale_value)
