"""SViT's gate and token selection as the authors' release computes them, written for the tests.

Follows uzh-rpg/svit: `SelectiveModule.forward` in mmdet_custom/models/backbones/base/
selective_vit.py (the gate) and the inference branch (batch of one) of the adapter's forward
in mmdet_custom/models/backbones/adapter_modules.py (the selection). Our own code, written from
reading theirs; float64.

Gate: LayerNorm over the channels, then an MLP C -> hidden -> 2 (GELU), then log-softmax; at
inference a token is kept when the argmin of its two log-probabilities is 1, i.e. when logit 0
is larger than logit 1 (equal logits: dropped). With `version` 1 the class token is not scored
and always kept. The block runs on the kept tokens only (gathered, in any order: the block
does not depend on it) and they are written back to their positions; the others are left as
they were. The number kept varies per image.
"""

import torch
import torch.nn.functional as F


def gate_logits(z, norm, fc1, fc2):
    """z [N, C] -> [N, 2]: LayerNorm (norm: (weight, bias)), Linear-GELU-Linear."""
    y = F.layer_norm(z, z.shape[-1:], norm[0], norm[1])
    return F.linear(F.gelu(F.linear(y, *fc1)), *fc2)


def kept(logits):
    """[N, 2] -> bool [N]: argmin of the log-softmax is 1 (logit 0 > logit 1)."""
    return torch.argmin(torch.log_softmax(logits, dim=-1), dim=-1) == 1


def selective_block(block, x, keep, num_prefix):
    """x [P + N, C] of one image; keep: bool [N] over the patch tokens. The block runs on the
    prefix tokens and the kept tokens only; those are written back, the rest stay."""
    rows = torch.cat([torch.arange(num_prefix), num_prefix + torch.nonzero(keep)[:, 0]])
    out = x.clone()
    out[rows] = block(x[rows][None])[0]
    return out
