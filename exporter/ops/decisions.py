"""The token ops' discrete choices (top-k, argmax, selection indices), named for validation.

A choice goes through `decide(name, choice, margin)`. Outside validation this returns `choice`
and does nothing else (the exported graph is unchanged). Inside `Decisions()` it records the
reference's own choice and, when the validation imposes another one (the runtime's: "teacher
forcing"), returns that instead, so that the rest of the reference runs on the runtime's
choices. `margin(own, other)` says, for every row where `other` differs from `own`, how far
`other` was from winning in the reference's own scores, relative to the scores' magnitude: a
flip whose margin is within float rounding is a near-tie, not an error.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import torch

# (own, other) -> relative margins of the rows where they differ (>= 0; inf: not a candidate)
Margin = Callable[[np.ndarray, np.ndarray], np.ndarray]
_active: "Decisions | None" = None


class Decisions:
    """Records (and with `imposed`, replaces) every `decide` call of one reference run.

    Keys are `name#n`, n counting the calls of that name in the run (one per image batch and
    per layer that decides)."""

    def __init__(self, imposed: dict[str, np.ndarray] | None = None):
        self.imposed = dict(imposed or {})
        self.own: dict[str, np.ndarray] = {}
        self.margins: dict[str, Margin | None] = {}
        self.sets: set[str] = set()  # keys whose choice is a set: its order is not a decision
        self._calls: Counter = Counter()

    def __enter__(self) -> "Decisions":
        global _active
        self._outer, _active = _active, self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = self._outer


def decide(
    name: str, choice: torch.Tensor, margin: Margin | None = None, is_set: bool = False
) -> torch.Tensor:
    """`choice`, or inside a validation run the imposed choice of this call (see module doc).
    `is_set`: the last axis lists a chosen set (e.g. tokens ordered by score); runtimes that
    order it differently made the same decision."""
    run = _active
    if run is None:
        return choice
    key = f"{name}#{run._calls[name]}"
    run._calls[name] += 1
    run.own[key] = choice.detach().cpu().numpy()
    run.margins[key] = margin
    if is_set:
        run.sets.add(key)
    if key not in run.imposed:
        return choice
    return torch.as_tensor(run.imposed[key]).to(choice.device, choice.dtype)


def _scale(values: np.ndarray) -> np.ndarray:
    """The magnitude of each row's finite scores (the unit of its rounding)."""
    finite = np.where(np.isfinite(values) & (np.abs(values) < 1e30), np.abs(values), 0.0)
    return np.maximum(finite.max(-1), 1e-30)


def top_margin(scores: torch.Tensor | Callable[[], torch.Tensor], largest: bool = True) -> Margin:
    """Margins of a choice of indices among `scores` [..., n] (top-k along the last axis, k =
    the choice's last dim; an argmax/argmin choice [...] counts as k = 1). The chosen sets
    are compared, not their order: how far the other's weakest pick is behind the reference's
    weakest pick. `scores` may be a function that forms them: nothing is computed unless a
    validation asks for the margins."""

    def margin(own: np.ndarray, other: np.ndarray) -> np.ndarray:
        t = scores() if callable(scores) else scores
        s = t.detach().double().cpu().numpy()
        if not largest:
            s = -s
        a = own.reshape(*s.shape[:-1], -1).astype(np.int64)
        b = other.reshape(*s.shape[:-1], -1).astype(np.int64)
        differ = (np.sort(a, -1) != np.sort(b, -1)).any(-1)
        if not differ.any():
            return np.zeros(0)
        rows_s, rows_a, rows_b = s[differ], a[differ], b[differ]
        if rows_b.min() < 0 or rows_b.max() >= s.shape[-1]:
            return np.full(len(rows_s), np.inf)
        weakest_own = np.take_along_axis(rows_s, rows_a, -1).min(-1)
        weakest_other = np.take_along_axis(rows_s, rows_b, -1).min(-1)
        return np.maximum(weakest_own - weakest_other, 0.0) / _scale(rows_s)

    return margin
