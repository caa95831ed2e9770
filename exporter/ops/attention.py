"""Size-aware (proportional) attention through timm's own extension point.

timm's `Block.forward(x, attn_mask=...)` adds a float mask to the attention logits before
the softmax, so adding log(m_n) for key n (AiluRus Eq. 5, ToMe's proportional attention)
needs no fork of timm's blocks and exports as a plain Add.
"""

from __future__ import annotations

import torch


def size_bias(sizes: torch.Tensor) -> torch.Tensor:
    """Token sizes [B, N] (prefix tokens included, size 1) -> additive mask [B, 1, 1, N]."""
    return torch.log(sizes.float()).unsqueeze(1).unsqueeze(1)


def run_block(block, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """Run a timm block, adding log(size) of each key token to the attention logits."""
    if sizes is None:
        return block(x)
    return block(x, attn_mask=size_bias(sizes).to(x.dtype))
