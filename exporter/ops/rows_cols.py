"""Token Adapter's row/column token injector and ejector (the Token Adapter paper, section 3.2) at fixed shape.

Every count depends only on (H, W, r_h, r_w, unique_ratio), so the reduced sequence has a
static length. Selection is done with integer ranks (ties broken by index) and TopK on
distinct integer keys, never with boolean indexing; merging and restoring are one-hot
matmuls or gathers, so the graph has no NonZero, scatter, Loop or If.

Rounding: `round_half_up(x) = floor(x + 0.5)`.
- normal rows  n_h = clamp(round_half_up(r_h * H), 0, H - 1); kept rows K_h = H - n_h
  (likewise columns); kept tokens K_h * K_w, merged away H*W - K_h*K_w (= the paper's
  H*W*(r_h + r_w - r_h*r_w) whenever r_h*H and r_w*W are integers).
- unique rows  u_h = clamp(round_half_up(unique_ratio * K_h), 0, K_h - 1) (likewise columns),
  so at least one representative row and column remain to receive the normal tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .decisions import decide, top_margin

# Cosine similarity lies in [-1, 1]; non-representative columns get a value below it.
MASKED_SIMILARITY = -4.0
EPS = 1e-12  # F.normalize's floor for a zero token


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def row_col_counts(
    grid: tuple[int, int], rows_ratio: float, cols_ratio: float, unique_ratio: float
) -> dict:
    """Static counts: normal, kept and unique rows/cols (see the module docstring)."""
    H, W = grid
    n_h = min(max(round_half_up(rows_ratio * H), 0), H - 1)
    n_w = min(max(round_half_up(cols_ratio * W), 0), W - 1)
    k_h, k_w = H - n_h, W - n_w
    u_h = min(max(round_half_up(unique_ratio * k_h), 0), k_h - 1)
    u_w = min(max(round_half_up(unique_ratio * k_w), 0), k_w - 1)
    return {"normal": (n_h, n_w), "kept": (k_h, k_w), "unique": (u_h, u_w)}


def stable_rank(score: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Ascending rank of each entry of score [B, L] with ties by index (0 = least important).

    rank_i = #{j : s_j < s_i} + #{j < i : s_j == s_i}; `before[i, j]` = j < i (a constant).
    Counting comparisons keeps PyTorch and ONNX Runtime in agreement on ties, which a sort
    without a stability guarantee would not.
    """
    s_i, s_j = score.unsqueeze(2), score.unsqueeze(1)
    return ((s_j < s_i) | ((s_j == s_i) & before)).sum(-1)


def select_ascending(keep: torch.Tensor, count: int, descending_key: torch.Tensor) -> torch.Tensor:
    """Indices [B, count] of the True entries of keep [B, L], in increasing order.

    Exactly `count` entries are True; each gets the distinct key L - index and the others 0,
    so TopK returns them in ascending index order with no ties among the winners.
    """
    key = torch.where(keep, descending_key, torch.zeros_like(descending_key))
    return torch.topk(key, count, dim=1, largest=True, sorted=True).indices


class RowColInjector(nn.Module):
    """Split a token grid into normal / unique / representative tokens and merge.

    forward(z [B, H*W, C]) -> (merged [B, K_h*K_w, C] in raster order of the kept grid,
    ejection state). Runs in float32.
    """

    decision_names = ("adapter.rows", "adapter.cols", "adapter.best_rep")

    def __init__(
        self, grid: tuple[int, int], rows_ratio: float, cols_ratio: float, unique_ratio: float
    ):
        super().__init__()
        self.grid = tuple(grid)
        counts = row_col_counts(grid, rows_ratio, cols_ratio, unique_ratio)
        self.normal, self.kept, self.unique = counts["normal"], counts["kept"], counts["unique"]
        H, W = self.grid
        for name, n in (("h", H), ("w", W)):
            ar = torch.arange(n)
            self.register_buffer(
                f"before_{name}", ar.unsqueeze(1) > ar.unsqueeze(0), persistent=False
            )
            self.register_buffer(f"key_{name}", (n - ar).float(), persistent=False)

    @property
    def num_reduced(self) -> int:
        return self.kept[0] * self.kept[1]

    def _axis(self, name, score, before, key, n_normal, n_kept, n_unique):
        """Per-axis masks: kept [B, L], kept indices [B, n_kept], unique among kept [B, n_kept].
        The kept lines are a decision (the n_kept most important, ties to the lower index)."""
        L = score.shape[1]
        rank = stable_rank(score, before.to(score.device))
        kept = rank >= n_normal
        chosen = select_ascending(kept, n_kept, key.to(score.dtype).expand(score.shape[0], -1))
        index = decide(name, chosen, top_margin(score))
        if index is not chosen:
            # Another runtime's lines imposed (validation only): the kept mask follows them,
            # and the unique lines are the most important of those kept.
            kept = (index.unsqueeze(2) == torch.arange(L, device=score.device)).any(1)
            rank = torch.where(
                kept, stable_rank(score.masked_fill(~kept, -torch.inf), before.to(score.device)), -1
            )
        unique = torch.gather(rank >= L - n_unique, 1, index)  # highest-importance kept lines
        return kept, index, unique

    def forward(self, z: torch.Tensor):
        B, N, C = z.shape
        H, W = self.grid
        (k_h, k_w), M = self.kept, self.num_reduced
        z = z.float()
        token_score = z.amax(dim=2).reshape(B, H, W)  # importance of a token: max over channels
        kept_r, rows, uniq_r = self._axis(
            "adapter.rows",
            token_score.amax(2),
            self.before_h,
            self.key_h,
            self.normal[0],
            k_h,
            self.unique[0],
        )
        kept_c, cols, uniq_c = self._axis(
            "adapter.cols",
            token_score.amax(1),
            self.before_w,
            self.key_w,
            self.normal[1],
            k_w,
            self.unique[1],
        )
        flat = (rows.unsqueeze(2) * W + cols.unsqueeze(1)).reshape(B, M)  # kept tokens, raster
        representative = (~uniq_r.unsqueeze(2) & ~uniq_c.unsqueeze(1)).reshape(B, M)

        # Where each original token goes: kept -> its own slot; normal -> best representative.
        zn = F.normalize(z, dim=2, eps=EPS)
        kept_n = torch.gather(zn, 1, flat.unsqueeze(2).expand(B, M, C))
        sim = torch.matmul(zn, kept_n.transpose(1, 2))  # [B, N, M] cosine similarity
        rep_sim = torch.where(representative.unsqueeze(1), sim, MASKED_SIMILARITY)
        best_rep = decide("adapter.best_rep", rep_sim.argmax(2), top_margin(rep_sim))
        slot_r = torch.cumsum(kept_r.long(), 1) - 1
        slot_c = torch.cumsum(kept_c.long(), 1) - 1
        own_slot = (slot_r.unsqueeze(2) * k_w + slot_c.unsqueeze(1)).reshape(B, N)
        is_kept = (kept_r.unsqueeze(2) & kept_c.unsqueeze(1)).reshape(B, N)
        target = torch.where(is_kept, own_slot, best_rep)

        # Group average as a one-hot matmul: each slot = mean of the tokens sent to it.
        onehot = (target.unsqueeze(2) == torch.arange(M, device=z.device)).float()  # [B, N, M]
        merged = torch.matmul(onehot.transpose(1, 2), z) / onehot.sum(1).unsqueeze(2)
        return merged, {"zn": zn, "flat": flat, "representative": representative, "target": target}


class RowColEjector(nn.Module):
    """Rebuild H*W tokens from K_h*K_w refined ones by similarity to the merged tokens.

    The similarity is between the original tokens and the merged-but-unrefined reduced tokens
    (X_r^m, Table 4c), so `weights` runs at injection time and `forward` after the blocks.
    - `max`: each original token takes the refined token of its most similar reduced token.
    - `m-threshold`: that best match plus every reduced token whose cosine similarity to the
      original token is >= threshold, averaged with equal weights.
    """

    decision_names = ("adapter.eject_best",)

    def __init__(self, mode: str = "m-threshold", threshold: float = 0.9):
        super().__init__()
        if mode not in ("max", "m-threshold"):
            raise ValueError(f"mode must be 'max' or 'm-threshold', not {mode!r}")
        self.mode, self.threshold = mode, float(threshold)

    def weights(self, zn: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
        """zn: L2-normalised originals [B, N, C]; merged [B, M, C] -> best index [B, N] (max)
        or averaging weights [B, N, M] (m-threshold)."""
        sim = torch.matmul(zn, F.normalize(merged.float(), dim=2, eps=EPS).transpose(1, 2))
        # first index on ties, in PyTorch and ONNX ArgMax alike
        best = decide("adapter.eject_best", sim.argmax(2), top_margin(sim))
        if self.mode == "max":
            return best
        M = merged.shape[1]
        chosen = (sim >= self.threshold) | (best.unsqueeze(2) == torch.arange(M, device=sim.device))
        w = chosen.float()
        return w / w.sum(2, keepdim=True)

    def forward(self, refined: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """refined [B, M, D] -> [B, N, D]."""
        dtype = refined.dtype
        refined = refined.float()
        if self.mode == "max":
            out = torch.gather(refined, 1, w.unsqueeze(2).expand(-1, -1, refined.shape[2]))
        else:
            out = torch.matmul(w, refined)
        return out.to(dtype)
