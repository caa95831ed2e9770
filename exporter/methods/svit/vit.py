"""SViT's plain-token-grid form (see the package for the method)."""

from __future__ import annotations

import re

import torch
from torch import nn

from ...config import parse_float
from ...errors import InputError
from ...models.base import DenseModel
from ...models.checkpoint import read_state_dict
from ...ops.gating import CapacityGate, TokenGate
from ..base import TokenMethod, check_int
from . import SViTConfig

RANDOM_GATES_SEED = 0
SHOWN_MISMATCHES = 3
_GATE_KEY = re.compile(r"^gates\.(\d+)\.")


def default_alpha(depth: int) -> int:
    return max(1, min(depth - 1, round(depth / 4)))


class SViT(TokenMethod):
    name = "svit"
    pruned_note = "skipped by the first gated block"

    def __init__(self, layout, cfg: SViTConfig, hidden: dict[int, int]):
        super().__init__(layout)
        self.cfg = cfg
        self.cut, self.keep_ratio = cfg.alpha, cfg.keep_ratio
        self.capacity = capacity_of(cfg.keep_ratio, layout.num_patches)
        self.gates = nn.ModuleDict(
            {
                str(i): CapacityGate(
                    TokenGate(layout.dim, hidden[i]),
                    layout.num_patches,
                    layout.num_prefix,
                    self.capacity,
                )
                for i in range(cfg.alpha, layout.depth)
            }
        )

    def config(self):
        return {
            "alpha": self.cut,
            "keep_ratio": self.keep_ratio,
            "capacity": self.capacity,
            "gates": "random" if self.cfg.random_gates else self.cfg.gates,
        }

    def reduced_tokens(self):
        return self.capacity

    def gate_state(self) -> dict[str, torch.Tensor]:
        """The gate weights under the --gates file's keys."""
        return {
            f"gates.{i}.{name}": t
            for i, g in self.gates.items()
            for name, t in g.gate.state_dict().items()
        }

    def run(self, model, images):
        x = model.embed(images)
        feats = []
        for i, blk in enumerate(model.blocks):
            x = self.gates[str(i)](blk, x) if i >= self.cut else blk(x)
            if i in model.taps:
                feats.append(x)
        return model.head_map(model.head_tokens(feats), images.shape[-2:])

    def assign(self, x):
        # the first gated block: processed tokens keep their own id, skipped ones get -1
        z = x[:, self.layout.num_prefix :]
        rank = self.gates[str(self.cut)].select(z)
        own = torch.arange(z.shape[1], device=z.device).expand_as(rank)
        return torch.where(rank < self.capacity, own, -1)


def capacity_of(keep_ratio: float, num_patches: int) -> int:
    return max(1, min(num_patches, round(keep_ratio * num_patches)))


def check_keep_ratio(value) -> float:
    return parse_float("--keep-ratio", value, 0, 1, low_open=True)


def read_gates(path: str) -> dict[str, torch.Tensor]:
    try:
        return read_state_dict(path)
    except InputError as err:  # the checkpoint reader names --checkpoint
        raise InputError("--gates", path, err.allowed, err.reason) from None


def first_gated_block(state: dict) -> int | None:
    blocks = [int(m.group(1)) for m in map(_GATE_KEY.match, state) if m]
    return min(blocks) if blocks else None


def fit_gates(state: dict, path: str, alpha: int, depth: int, dim: int) -> dict[int, int]:
    """Check every key and shape of a gates file; return each block's hidden width."""
    hidden, problems = {}, []
    expected = set()
    for i in range(alpha, depth):
        w1 = state.get(f"gates.{i}.fc1.weight")
        h = int(w1.shape[0]) if w1 is not None and w1.dim() == 2 and w1.shape[0] > 0 else dim // 4
        hidden[i] = max(1, h)
        shapes = {
            "fc1.weight": [hidden[i], dim],
            "fc1.bias": [hidden[i]],
            "fc2.weight": [1, hidden[i]],
            "fc2.bias": [1],
        }
        for name, shape in shapes.items():
            key = f"gates.{i}.{name}"
            expected.add(key)
            if key not in state:
                problems.append(f"missing {key}")
            elif list(state[key].shape) != shape:
                problems.append(f"{key} has shape {list(state[key].shape)}, expected {shape}")
            elif not torch.isfinite(state[key].float()).all():  # NaN scores would break the ranking
                problems.append(f"{key} has non-finite values")
    problems += [f"unexpected {k}" for k in sorted(state) if k not in expected]
    if problems:
        more = (
            f" (and {len(problems) - SHOWN_MISMATCHES} more)"
            if len(problems) > SHOWN_MISMATCHES
            else ""
        )
        raise InputError(
            "--gates",
            path,
            f"gates.<i>.fc1/fc2.weight/bias for blocks {alpha}..{depth - 1}, C={dim}",
            "does not fit the model: " + "; ".join(problems[:SHOWN_MISMATCHES]) + more,
        )
    return hidden


def build(model: DenseModel, args: dict) -> SViT:
    lay = model.layout
    path, random_gates = args.get("gates"), bool(args.get("random_gates"))
    if path is None and not random_gates:
        raise InputError(
            "--gates",
            "(none)",
            "--gates PATH (trained gates) or --random-gates",
            "SViT needs trained gates",
        )
    if path is not None and random_gates:
        raise InputError("--random-gates", "with --gates", "one of --gates PATH or --random-gates")
    state = read_gates(path) if path is not None else None
    keep_ratio = check_keep_ratio(args.get("keep_ratio", SViTConfig.keep_ratio))
    alpha = args.get("alpha")
    if alpha is not None:
        alpha = check_int("--alpha", alpha, 1, lay.depth - 1)
    elif (
        state is not None
        and (first := first_gated_block(state)) is not None
        and 1 <= first < lay.depth
    ):
        alpha = first
    else:
        alpha = default_alpha(lay.depth)
    if state is None:
        hidden = {i: max(1, lay.dim // 4) for i in range(alpha, lay.depth)}
        with torch.random.fork_rng(devices=[]):  # seeded, and the caller's RNG is untouched
            torch.manual_seed(RANDOM_GATES_SEED)
            method = SViT(lay, SViTConfig(alpha, keep_ratio, random_gates=True), hidden)
        return method
    hidden = fit_gates(state, path, alpha, lay.depth, lay.dim)
    method = SViT(lay, SViTConfig(alpha, keep_ratio, str(path)), hidden)
    for i, g in method.gates.items():
        g.gate.load_state_dict(
            {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"gates.{i}.")}
        )
    return method
