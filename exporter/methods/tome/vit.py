"""ToMe's plain-token-grid form (see the package for the method)."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ...config import parse_int
from ...errors import InputError
from ...models.base import DenseModel, TokenLayout
from ...ops import run_block
from ...ops.bipartite import BipartiteSoftMatching, mergeable, unmerge
from ..base import TokenMethod, check_int, check_restore
from . import ToMeConfig

DEFAULT_SHARE = 0.5  # default r removes this share of the patch tokens by the last block


def default_r(num_patches: int, merging_blocks: int) -> int:
    """Half the patch tokens gone by the last block. ToMe's r = 8 was set for 197-token
    classifiers; on a 1024-token dense grid it removes under 10% and costs more than it saves."""
    return max(1, round(num_patches * DEFAULT_SHARE / max(1, merging_blocks)))


def attention_keys(block, x: torch.Tensor) -> torch.Tensor:
    """The keys block's attention computes from x, averaged over heads: [B, n, head_dim]."""
    attn = block.attn
    B, n, _ = x.shape
    dim = attn.num_heads * attn.head_dim
    bias = attn.qkv.bias[dim : 2 * dim] if attn.qkv.bias is not None else None
    k = F.linear(block.norm1(x), attn.qkv.weight[dim : 2 * dim], bias)
    k = attn.k_norm(k.reshape(B, n, attn.num_heads, attn.head_dim))
    return k.mean(dim=2)


class ToMe(TokenMethod):
    name = "tome"

    def __init__(self, layout: TokenLayout, cfg: ToMeConfig):
        super().__init__(layout)
        self.cfg = cfg
        self.schedule = list(cfg.r)
        self.restore_at_output = cfg.restore == "output"
        self.cut = cfg.alpha
        self.merges = nn.ModuleDict()
        n = layout.num_prefix + layout.num_patches
        for i, r in enumerate(self.schedule):
            if r > 0:
                self.merges[str(i)] = BipartiteSoftMatching(n, r, layout.num_prefix)
                n -= r
        self.register_buffer(
            "identity", torch.arange(layout.num_prefix + layout.num_patches), persistent=False
        )

    def config(self):
        return {
            "r": self.schedule,
            "alpha": self.cfg.alpha,
            "merge": "before each block, on its attention keys",
            "restore": self.cfg.restore,
        }

    def reduced_tokens(self):
        return self.layout.num_patches - sum(self.schedule)

    def run(self, model: DenseModel, images: torch.Tensor) -> torch.Tensor:
        x = model.embed(images)
        sizes = positions = None  # both stay None until the first merge
        feats = []
        for i, blk in enumerate(model.blocks):
            merge = self.merges[str(i)] if str(i) in self.merges else None
            if merge is not None:
                if positions is None:
                    sizes = x.new_ones(x.shape[:2], dtype=torch.float32)
                    positions = self.identity.view(1, -1).expand(x.shape[0], -1)
                x, sizes, positions = merge(x, attention_keys(blk, x), sizes, positions)
            x = run_block(blk, x, sizes)
            if i in model.taps:
                restore = positions is not None and not self.restore_at_output
                feats.append(unmerge(x, positions) if restore else x)
        y = model.head_tokens(feats)
        if positions is not None and self.restore_at_output:
            p = self.layout.num_prefix
            y = unmerge(y, positions[:, p:] - p)  # prefix tokens stay in front, so shift by p
        return model.head_map(y, images.shape[-2:])

    def assignment(self, model: DenseModel, images: torch.Tensor) -> torch.Tensor | None:
        """The merged token holding each patch token after the last merge (see `run`)."""
        if self.cut is None:
            return None
        last = max(int(i) for i in self.merges)
        x = model.embed(images)
        sizes = positions = None
        for i, blk in enumerate(list(model.blocks)[: last + 1]):
            if str(i) in self.merges:
                if positions is None:
                    sizes = x.new_ones(x.shape[:2], dtype=torch.float32)
                    positions = self.identity.view(1, -1).expand(x.shape[0], -1)
                x, sizes, positions = self.merges[str(i)](
                    x, attention_keys(blk, x), sizes, positions
                )
            if i < last:
                x = run_block(blk, x, sizes)
        p = self.layout.num_prefix
        return positions[:, p:] - p


def parse_r(value, depth: int) -> list[int] | int:
    """'8' -> 8; '0,2,2,...' (one entry per block) -> a list; anything else -> InputError."""
    items = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
    allowed = f"an integer >= 0, or {depth} comma-separated integers >= 0 (one per block)"
    if len(items) not in (1, depth):
        raise InputError("--r", value, allowed, f"{len(items)} entries for {depth} blocks")
    try:
        numbers = [parse_int("--r", v, 0, 1 << 20) for v in items]
    except InputError:
        raise InputError("--r", value, allowed) from None
    return numbers[0] if len(numbers) == 1 else numbers


def make_schedule(layout: TokenLayout, r, alpha: int | None) -> list[int]:
    """Tokens merged before each block. A single r is clamped per block to what it can merge,
    as ToMe does, so it never runs out of tokens; a list must fit as given."""
    depth, p, patches = layout.depth, layout.num_prefix, layout.num_patches
    parsed = parse_r(r, depth)
    if isinstance(parsed, int):
        start = 0 if alpha is None else alpha
        first = mergeable(p + patches, p)
        if parsed > first:
            raise InputError(
                "--r",
                r,
                f"an integer in 0..{first}",
                f"a block seeing {patches} patch tokens can merge at most {first}",
            )
        schedule, n = [0] * depth, p + patches
        for i in range(start, depth):
            schedule[i] = min(parsed, mergeable(n, p))
            n -= schedule[i]
        return schedule
    if alpha is not None and any(parsed[:alpha]):
        raise InputError("--r", r, f"zeros for the {alpha} blocks before --alpha {alpha}")
    total = sum(parsed)
    if total > patches - 1:
        raise InputError(
            "--r",
            r,
            f"a total of at most {patches - 1}",
            f"merges {total} of {patches} patch tokens, leaving fewer than 1",
        )
    n = p + patches
    for i, ri in enumerate(parsed):
        if ri > mergeable(n, p):
            raise InputError(
                "--r",
                r,
                f"at most {mergeable(n, p)} for block {i}",
                f"block {i} sees {n - p} patch tokens",
            )
        n -= ri
    return parsed


def build(model: DenseModel, args: dict) -> ToMe:
    lay = model.layout
    attn = model.blocks[0].attn
    if not all(hasattr(attn, a) for a in ("qkv", "num_heads", "head_dim", "k_norm")):
        raise InputError(
            "--method",
            "tome",
            "models whose blocks use timm's Attention",
            f"{type(attn).__name__} has no qkv projection",
        )
    alpha = args.get("alpha")
    alpha = None if alpha is None else check_int("--alpha", alpha, 0, lay.depth - 1)
    r = args.get("r")
    if r is None:  # the default shrinks to what tiny grids allow; a given value never does
        r = min(
            default_r(lay.num_patches, lay.depth - (alpha or 0)),
            mergeable(lay.num_prefix + lay.num_patches, lay.num_prefix),
        )
    schedule = make_schedule(lay, r, alpha)
    restore = check_restore(args.get("restore"), model)
    if (
        restore == "output"
        and len(model.taps) > 1
        and any(schedule[min(model.taps) + 1 : max(model.taps) + 1])
    ):
        raise InputError(
            "--restore", "output", "backbone", "the model's taps would see different token counts"
        )
    merged = [i for i, ri in enumerate(schedule) if ri > 0]
    return ToMe(lay, ToMeConfig(tuple(schedule), merged[0] if merged else None, restore))
