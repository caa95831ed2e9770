"""Expedite's token reconstruction layer (the Expedite paper, Eq. 4) as fixed-shape tensor operations."""

from __future__ import annotations

import torch
from torch import nn

from .clustering import LOWEST, WEIGHT_FLOOR
from .decisions import decide, top_margin
from .grid import window_mask


class ReconstructionWeights(nn.Module):
    """Each pixel's k nearest clusters and their normalised weights exp(-d/tau).

    A module of its own so that its nodes carry their own scope in the exported graph (the
    benchmark tells token operations apart by scope).
    """

    decision_names = ("reconstruction.index",)

    def __init__(self, k: int, tau: float, norm: str = "sum", window: torch.Tensor | None = None):
        super().__init__()
        if norm not in ("sum", "l2"):
            raise ValueError(f"norm must be 'sum' or 'l2', not {norm!r}")
        self.k, self.tau, self.norm = k, float(tau), norm
        self.register_buffer("allowed", window, persistent=False)

    def forward(self, z: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices [B, N, k] of the k nearest clusters and their normalised weights (float32)."""
        z, centers = z.float(), centers.float()
        # Nearest by distance = largest s = 2 z.c - |c|^2 (|z - c|^2 = |z|^2 - s, and |z|^2 is
        # the same for all of a pixel's clusters): one product and one broadcast subtraction.
        s = torch.matmul(z, (2.0 * centers).transpose(1, 2)) - (centers * centers).sum(-1)[:, None]
        if self.allowed is not None:
            s = torch.where(self.allowed, s, LOWEST)
        near, index = torch.topk(s, self.k, dim=2, largest=True, sorted=True)
        shift = near[..., :1]
        chosen = decide("reconstruction.index", index, top_margin(s))
        if chosen is not index:  # validation imposes the runtime's clusters: their scores
            index, near = chosen, s.gather(2, chosen)
            shift = near.amax(-1, keepdim=True)
        # exp(-(d - d_min)/tau) = exp((s - s_max)/tau): both normalisations cancel the common
        # factor exp(-d_min/tau), and the shift keeps the weights from underflowing to zero.
        w = torch.exp((near - shift) / self.tau)
        if self.norm == "sum":
            w = w / w.sum(-1, keepdim=True).clamp_min(WEIGHT_FLOOR)
        else:
            w = w / w.norm(dim=-1, keepdim=True).clamp_min(WEIGHT_FLOOR)
        return index, w


class TokenReconstruction(nn.Module):
    """Weights from each pixel to its k most similar clusters, then a gather-and-sum.

    The weights use the pixel features before clustering and the centers at clustering time;
    `forward` applies them to any per-cluster tensor (refined tokens, or per-class logits).
    """

    def __init__(self, k: int, tau: float, norm: str = "sum", window: torch.Tensor | None = None):
        super().__init__()
        self.weighting = ReconstructionWeights(k, tau, norm, window)

    @classmethod
    def for_grid(cls, k, tau, norm, neighbours, grid, cells, window):
        """`neighbours` 'all': top-k over every cluster; 'window': only the clustering window."""
        mask = window_mask(grid, cells, window) if neighbours == "window" else None
        return cls(k, tau, norm, mask)

    def weights(self, z: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices [B, N, k] of the k nearest clusters and their normalised weights (float32)."""
        return self.weighting(z, centers)

    def forward(self, values: torch.Tensor, index: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """values [B, M, D] -> [B, N, D]: sum_j w[b, n, j] * values[b, index[b, n, j]]."""
        B, M, D = values.shape
        N, k = index.shape[1], index.shape[2]
        offset = (torch.arange(B, device=index.device) * M).view(B, 1, 1)
        picked = values.float().reshape(B * M, D)[(index + offset).reshape(-1)]
        out = torch.matmul(w.unsqueeze(2), picked.reshape(B, N, k, D)).squeeze(2)
        return out.to(values.dtype)
