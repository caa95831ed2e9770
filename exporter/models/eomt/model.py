"""EoMT's model code: the timm ViT with registers and layer scale, the queries, the upscaling
and mask head, the class head, and the reading of a Hugging Face EoMT folder (see the package
for the family and the two places a method may rebuild the token grid)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import SwiGLU
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ...config import format_pair
from ...errors import InputError
from ..base import TokenLayout
from ..checkpoint import load_checked
from ..hf.common import read_weights
from ..vit import ViTBackbone, check_img_size
from . import CONFIGS, DEFAULT_CLASSES, DEFAULT_IMG_SIZE, FLAG, EoMTConfig

# Hugging Face's activation names this model writes as torch modules
ACTIVATIONS = {"gelu": nn.GELU, "gelu_pytorch_tanh": partial(nn.GELU, approximate="tanh")}


class ScaleLayer(nn.Module):
    """One 2x upscaling of the patch map: transposed convolution, activation, depthwise 3x3
    convolution, LayerNorm over the channels."""

    def __init__(self, dim: int, act=nn.GELU):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        self.act = act()
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.act(self.conv1(x)))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MaskHead(nn.Module):
    """The queries' mask embeddings: three linear layers, activations between them."""

    def __init__(self, dim: int, act=nn.GELU):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (nn.Linear(dim, dim) for _ in range(3))
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class EoMT(ViTBackbone):
    """Semantic class scores at input resolution, [B, num_classes, H, W].

    `blocks` are the blocks before the queries join; the query blocks, the final norm, the
    class and mask heads are the head: `head_tokens` runs the query blocks on the tapped
    tokens (prefix included, patch tokens full or reduced) and returns the patch tokens
    after the last block, `head_map` predicts the masks on the full patch grid."""

    output_kind = "segmentation"
    output_names = ("logits",)
    per_token_head = True  # the query blocks take any number of patch tokens
    restore_at_output = False  # setting A: rebuild the grid before the queries join

    def __init__(
        self,
        config: EoMTConfig = CONFIGS["large"],
        img_size=DEFAULT_IMG_SIZE,
        num_classes: int = DEFAULT_CLASSES,
        act: str = "gelu",
    ):
        super().__init__()
        c = config
        if not 1 <= c.num_blocks < c.depth:
            raise ValueError(f"num_blocks must be in 1..{c.depth - 1}, not {c.num_blocks}")
        act_layer = ACTIVATIONS[act]
        # weight_init="skip": random weights until a folder's load; PyTorch's seeded default
        # init is enough, timm's full init costs seconds for ViT-L
        self.backbone = VisionTransformer(
            img_size=tuple(img_size),
            patch_size=c.patch,
            embed_dim=c.dim,
            depth=c.depth,
            num_heads=c.heads,
            mlp_ratio=c.mlp_ratio,
            qkv_bias=True,
            init_values=c.layerscale,
            class_token=True,
            no_embed_class=True,  # the position embedding covers the patch tokens only
            reg_tokens=c.num_registers,
            num_classes=0,
            global_pool="",
            norm_layer=partial(nn.LayerNorm, eps=c.eps),
            act_layer=act_layer,
            weight_init="skip",
        )
        vit = self.backbone
        for p in (vit.cls_token, vit.reg_token, vit.pos_embed):
            if p is not None:
                nn.init.normal_(p, std=0.02)  # "skip" leaves them uninitialised
        if c.swiglu:
            hidden = (int(int(c.dim * c.mlp_ratio) * 2 / 3) + 7) // 8 * 8
            for blk in vit.blocks:
                blk.mlp = SwiGLU(c.dim, hidden)
        self.query = nn.Embedding(c.num_queries, c.dim)
        self.upscale = nn.ModuleList(
            [ScaleLayer(c.dim, act_layer) for _ in range(c.upscale_blocks)]
        )
        self.mask_head = MaskHead(c.dim, act_layer)
        self.class_head = nn.Linear(c.dim, num_classes + 1)  # the last: "no object"
        self.config = c
        self.num_classes = num_classes
        self.num_queries = c.num_queries
        self.first_query_block = c.depth - c.num_blocks
        grid = tuple(vit.patch_embed.grid_size)
        self.layout = TokenLayout(
            grid=grid,
            num_prefix=vit.num_prefix_tokens,
            dim=c.dim,
            depth=self.first_query_block,
            num_heads=c.heads,
            patch=(c.patch, c.patch),
        )
        self.taps = (self.first_query_block - 1,)
        self._queries: torch.Tensor | None = None

    @property
    def blocks(self):
        """The blocks before the queries join (what a method reduces)."""
        return self.backbone.blocks[: self.first_query_block]

    @property
    def query_blocks(self):
        return self.backbone.blocks[self.first_query_block :]

    def peak_elements(self, batch: int) -> tuple[int, int]:
        lay = self.layout
        n = lay.num_patches + lay.num_prefix + self.num_queries
        h, w = lay.image_size
        # the per-query masks at the input size are larger than the attention scores at 640
        scores = max(lay.num_heads * n * n, self.num_queries * h * w)
        return batch * scores, batch * n * lay.dim

    def head_tokens(self, feats):
        """The query blocks on [queries; prefix; patch tokens] of the last tapped block; the
        queries' final norm is kept for `head_map` of the same forward (the interface passes
        only the patch tokens between the two, which a method may rebuild in between)."""
        x = feats[-1]
        queries = self.query.weight.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([queries, x], dim=1)
        for blk in self.query_blocks:
            x = blk(x)
        q = self.num_queries
        self._queries = self.backbone.norm(x[:, :q])
        return x[:, q + self.layout.num_prefix :]

    def head_map(self, tokens, image_size):
        """Patch tokens after the last block [B, H/P * W/P, C] -> semantic scores: masks from
        the upscaled normalised patch map and the queries' mask embeddings, bilinearly resized
        to the input, sigmoid, weighted by each query's class probabilities (softmax without
        "no object") and summed over the queries."""
        if self._queries is None:
            raise RuntimeError("EoMT: head_map needs head_tokens of the same forward first")
        queries, self._queries = self._queries, None
        B, _, C = tokens.shape
        H, W = self.layout.grid
        x = self.backbone.norm(tokens).transpose(1, 2).reshape(B, C, H, W)
        for layer in self.upscale:
            x = layer(x)
        h, w = x.shape[-2:]
        masks = (self.mask_head(queries) @ x.flatten(2)).reshape(B, -1, h, w)
        size = tuple(int(s) for s in image_size)
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        classes = self.class_head(queries).softmax(dim=-1)[..., :-1]
        scores = classes.transpose(1, 2) @ masks.sigmoid().flatten(2)
        return scores.reshape(B, -1, *size)


def create_eomt(size: str = "large", img_size=None, num_classes=None) -> EoMT:
    """A built-in EoMT (random weights) at `img_size` with `num_classes`."""
    img_size = tuple(img_size) if img_size is not None else DEFAULT_IMG_SIZE
    config = CONFIGS[size]
    check_img_size(img_size, config.patch)
    return EoMT(config, img_size, num_classes or DEFAULT_CLASSES)


# Hugging Face's EoMT names -> this model's (regular expressions, in order; q/k/v are joined
# into timm's qkv separately)
RENAMES = (
    (r"^embeddings\.cls_token$", "backbone.cls_token"),
    (r"^embeddings\.register_tokens$", "backbone.reg_token"),
    (r"^embeddings\.patch_embeddings\.projection\.", "backbone.patch_embed.proj."),
    (r"^layers\.(\d+)\.attention\.out_proj\.", r"backbone.blocks.\1.attn.proj."),
    (r"^layers\.(\d+)\.layer_scale([12])\.lambda1$", r"backbone.blocks.\1.ls\2.gamma"),
    (r"^layers\.(\d+)\.mlp\.gate_proj\.", r"backbone.blocks.\1.mlp.fc1_g."),
    (r"^layers\.(\d+)\.mlp\.up_proj\.", r"backbone.blocks.\1.mlp.fc1_x."),
    (r"^layers\.(\d+)\.mlp\.down_proj\.", r"backbone.blocks.\1.mlp.fc2."),
    (r"^layers\.(\d+)\.", r"backbone.blocks.\1."),
    (r"^layernorm\.", "backbone.norm."),
    (r"^upscale_block\.block\.(\d+)\.layernorm2d\.", r"upscale.\1.norm."),
    (r"^upscale_block\.block\.(\d+)\.", r"upscale.\1."),
    (r"^class_predictor\.", "class_head."),
)
QKV = re.compile(r"^layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")
# training state: the loss's class weights
DROPPED = ("criterion.empty_weight",)


def convert_state(state: dict, module=None) -> dict:
    """A Hugging Face EoMT state dict -> this model's names. Its `attn_mask_probs` must be all
    0: a trained EoMT anneals masked attention to probability 0, which is its inference; a
    folder still masking (a model fresh from EomtConfig has 1) is refused, as the masks at
    0 < p < 1 are a random draw. A state without the entry is taken as trained."""
    probs = state.get("attn_mask_probs")
    if probs is not None and bool((probs != 0).any()):
        raise InputError(
            FLAG,
            f"attn_mask_probs {[round(float(p), 3) for p in probs.flatten()]}",
            "a trained EoMT (attn_mask_probs all 0: no masked attention at inference)",
            "masked attention is on in its query blocks",
        )
    out, qkv = {}, {}
    for key, value in state.items():
        if key == "attn_mask_probs" or key in DROPPED:
            continue
        m = QKV.match(key)
        if m:
            qkv.setdefault((int(m[1]), m[3]), {})[m[2]] = value
            continue
        name = key
        for pattern, repl in RENAMES:
            name, hits = re.subn(pattern, repl, name)
            if hits:
                break
        if name == "embeddings.position_embeddings.weight":
            name, value = "backbone.pos_embed", value.unsqueeze(0)
        out[name] = value
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise InputError(
                FLAG,
                f"layers.{i}.attention {kind}",
                "q_proj, k_proj and v_proj",
                f"has only {', '.join(sorted(parts))}",
            )
        out[f"backbone.blocks.{i}.attn.qkv.{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    return out


def _number(config: dict, key: str, default, low, high, kind=int):
    value = config.get(key, default)
    ok = isinstance(value, kind) and not isinstance(value, bool) and low <= value <= high
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = low <= value <= high, float(value)
    if not ok:
        raise InputError(FLAG, f"config.json {key}={value!r}", f"{kind.__name__} in {low}..{high}")
    return value


def _pair(config: dict, key: str, default) -> tuple[int, int]:
    value = config.get(key, default)
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16384 for v in pair
    ):
        raise InputError(FLAG, f"config.json {key}={value!r}", "a size or [height, width]")
    return pair


def config_of(config: dict) -> tuple[EoMTConfig, tuple[int, int], int, str]:
    """A Hugging Face EoMT config.json -> (shape, image size, classes, activation)."""
    dim = _number(config, "hidden_size", 1024, 1, 65536)
    heads = _number(config, "num_attention_heads", 16, 1, dim)
    if dim % heads:
        raise InputError(FLAG, f"config.json hidden_size={dim}", f"a multiple of {heads} heads")
    depth = _number(config, "num_hidden_layers", 24, 2, 1024)
    patch = _pair(config, "patch_size", 16)
    if patch[0] != patch[1]:
        raise InputError(FLAG, f"config.json patch_size={list(patch)}", "a square patch")
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise InputError(FLAG, f"config.json hidden_act={act!r}", "|".join(ACTIVATIONS))
    if config.get("num_channels", 3) != 3:
        raise InputError(FLAG, f"config.json num_channels={config['num_channels']!r}", "3")
    labels = config.get("id2label")
    classes = _number(
        config, "num_labels", len(labels) if isinstance(labels, dict) and labels else 2, 1, 100000
    )
    shape = EoMTConfig(
        dim=dim,
        depth=depth,
        heads=heads,
        num_blocks=_number(config, "num_blocks", 4, 1, depth - 1),
        num_queries=_number(config, "num_queries", 200, 1, 100000),
        num_registers=_number(config, "num_register_tokens", 4, 0, 1024),
        patch=patch[0],
        mlp_ratio=_number(config, "mlp_ratio", 4, 1, 64, float),
        upscale_blocks=_number(config, "num_upscale_blocks", 2, 0, 8),
        eps=_number(config, "layer_norm_eps", 1e-6, 0, 1, float),
        swiglu=config.get("use_swiglu_ffn", False) is True,
    )
    return shape, _pair(config, "image_size", 640), classes, act


def from_hf(folder: Path, config: dict, spec) -> EoMT:
    """The EoMT of a Hugging Face folder (save_pretrained layout: config.json `config`, the
    weights as `hf.common.read_weights` finds them) at its config's image size; `spec` (a
    ModelSpec) may name the same size and class count, not others: the position embedding is
    the training grid's. Built on the meta device (shapes only), it reads no weights."""
    shape, img_size, classes, act = config_of(config)
    if spec.img_size is not None and tuple(spec.img_size) != img_size:
        raise InputError(
            "--img-size",
            format_pair(tuple(spec.img_size)),
            format_pair(img_size),
            "the folder's EoMT runs at its image_size (its position embedding's grid)",
        )
    if spec.num_classes is not None and spec.num_classes != classes:
        raise InputError(
            "--num-classes", spec.num_classes, str(classes), "the folder's class head has these"
        )
    check_img_size(img_size, shape.patch)
    model = EoMT(shape, img_size, classes, act)
    if next(model.parameters()).device.type != "meta":
        load_checked(model, convert_state(read_weights(Path(folder))), str(folder), FLAG)
    return model.eval()
