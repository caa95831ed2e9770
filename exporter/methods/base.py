"""What every token-reduction method provides, and the model it produces.

A method sees a `DenseModel` only through its `TokenLayout`, its blocks and its head hooks.
The default `run` covers methods that reduce once and restore once (Expedite, pooling):
they implement `reduce` and `restore`; others override `run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch
from torch import nn

from ..config import format_pair, parse_pair
from ..errors import InputError
from ..models.base import DenseModel, TokenLayout


@dataclass(frozen=True)
class Option:
    """One method flag: its CLI name, config key and help, and its default: the value the
    method's config takes when the flag is not given, or, where the default depends on the
    model (default None), `rule` saying how the builder computes it."""

    key: str
    help: str
    default: Any = None
    rule: str = ""
    is_flag: bool = False  # a switch without a value (e.g. --random-gates)

    @property
    def flag(self) -> str:
        return flag_of(self.key)

    @property
    def default_text(self) -> str:
        if self.rule:
            return self.rule
        if isinstance(self.default, tuple):
            return format_pair(self.default)
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def flag_of(key: str) -> str:
    """The CLI flag of a config key: alpha -> --alpha, keep_ratio -> --keep-ratio."""
    return "--" + key.replace("_", "-")


def flag(help: str, default: Any = None, rule: str = "", is_flag: bool = False) -> Any:
    """A config field that is also a method flag, named after the field (`options_of` reads
    it back)."""
    return field(default=default, metadata={"help": help, "rule": rule, "is_flag": is_flag})


def options_of(config: type) -> tuple[Option, ...]:
    """The flags of a method's config dataclass, in field order."""
    return tuple(
        Option(f.name, f.metadata["help"], f.default, f.metadata["rule"], f.metadata["is_flag"])
        for f in fields(config)
        if "help" in f.metadata
    )


def entries(config, *names: str) -> dict:
    """{name: value} of some config fields as report.json writes them (pairs as "HxW")."""
    values = {n: getattr(config, n) for n in names}
    return {n: format_pair(v) if isinstance(v, tuple) else v for n, v in values.items()}


@dataclass(frozen=True)
class NoConfig:
    """The config of a method without flags."""


@dataclass
class MethodSpec:
    """A registry entry: `--method name` -> a builder of the method for each model family."""

    name: str
    description: str
    # the method's frozen config dataclass: its fields with `flag` metadata are its flags
    config: type
    # DenseModel.family -> builder of the method's form for that family
    builders: dict[str, Callable[[DenseModel, dict], "TokenMethod"]]
    # flags that switch to the authors' own formulation (same result), timed beside ours by bench
    authors_form: dict | None = None

    @property
    def options(self) -> tuple[Option, ...]:
        return options_of(self.config)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.builders)

    def builder(self, model: DenseModel) -> Callable[[DenseModel, dict], "TokenMethod"]:
        """The builder for `model`'s family, or an InputError when the method has no such form."""
        family = getattr(model, "family", "vit")
        if family not in self.builders:
            raise InputError(
                "--method",
                self.name,
                f"a model family in {'|'.join(self.families)}",
                f"{self.name} has no {family} form",
            )
        return self.builders[family]

    def check_args(self, args: dict) -> None:
        """Refuse flags that this method does not use."""
        keys = {o.key for o in self.options}
        for key, value in args.items():
            if key not in keys:
                flag = flag_of(key)
                allowed = ", ".join(o.flag for o in self.options) or "no method flags"
                raise InputError(flag, value, allowed, f"does not apply to --method {self.name}")


class TokenMethod(nn.Module):
    """A token-reduction method attached to one model layout."""

    name: str = ""
    # False for the baseline (`--method none`): nothing to compare a speed-up or retention with
    reduces: bool = True
    restore_at_output: bool = False
    # how the pictures caption the patch tokens `assignment` marks -1
    pruned_note: str = "pruned"

    def __init__(self, layout: TokenLayout):
        super().__init__()
        self.layout = layout
        self.cut: int | None = None  # 0-based index of the first block that sees reduced tokens

    def config(self) -> dict:
        """The resolved settings, as written into report.json."""
        return {}

    def reduced_tokens(self) -> int:
        """Number of patch tokens the blocks after the cut process."""
        return self.layout.num_patches

    def full_tokens(self) -> int:
        """Number of patch tokens those blocks process in the unmodified model."""
        return self.layout.num_patches

    def reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def restore(self, x: torch.Tensor, state: Any, num_prefix: int) -> torch.Tensor:
        raise NotImplementedError

    def assignment(self, model: DenseModel, images: torch.Tensor) -> torch.Tensor | None:
        """For pictures: for each patch token, the reduced token it went to, [B, N] int64 (equal
        ids = one reduced token; -1 = pruned), or None for a method without such a map.
        Runs the model up to the cut and calls `assign`; not part of the exported graph."""
        if self.cut is None:
            return None
        x = model.embed(images)
        for blk in list(model.blocks)[: self.cut]:
            x = self.block_forward(blk, x, None)
        return self.assign(x)

    def assign(self, x: torch.Tensor) -> torch.Tensor | None:
        """`assignment` from the tokens that reach the cut, x [B, P + N, C]."""
        return None

    def decisions(self) -> tuple[str, ...]:
        """Names of the discrete choices (top-k, argmax, selection indices) this method makes,
        as its token ops pass them to `ops.decisions.decide`; validation compares them
        between the reference and a runtime. By default those of the ops it holds."""
        names = (n for m in self.modules() for n in getattr(m, "decision_names", ()))
        return tuple(dict.fromkeys(names))

    def block_forward(self, block: nn.Module, x: torch.Tensor, state: Any) -> torch.Tensor:
        """One block on the current tokens (`state` is None before the cut)."""
        return block(x)

    def run(self, model: DenseModel, images: torch.Tensor) -> torch.Tensor:
        x = model.embed(images)
        feats, state = [], None
        for i, blk in enumerate(model.blocks):
            if i == self.cut:
                x, state = self.reduce(x)
            x = self.block_forward(blk, x, state)
            if i in model.taps:
                if state is not None and not self.restore_at_output:
                    feats.append(self.restore(x, state, self.layout.num_prefix))
                else:
                    feats.append(x)
        y = model.head_tokens(feats)
        if state is not None and self.restore_at_output:
            y = self.restore(y, state, 0)
        return model.head_map(y, images.shape[-2:])


class ReducedModel(nn.Module):
    """The patched model: the PyTorch reference that every artifact is compared with."""

    def __init__(self, model: DenseModel, method: TokenMethod):
        super().__init__()
        self.model, self.method = model, method
        self.output_names = model.output_names

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.run(self.model, images)


def split_prefix(x: torch.Tensor, num_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, :num_prefix], x[:, num_prefix:]


def check_int(flag: str, value, low: int, high: int) -> int:
    """An integer in low..high, or an `InputError` naming the flag."""
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        raise InputError(flag, value, f"an integer in {low}..{high}")
    return int(text)


def check_alpha(args: dict, depth: int, default) -> int:
    """--alpha: the blocks run at full resolution first, 1..depth-1; `default(depth)` when
    the flag is not given. A model of one block has no place to reduce."""
    if depth < 2:
        raise InputError(
            "--model",
            f"depth {depth}",
            "a model with at least 2 blocks",
            "the reduction needs a block before and after it",
        )
    alpha = args.get("alpha")
    return default(depth) if alpha is None else check_int("--alpha", alpha, 1, depth - 1)


def check_positive(flag: str, value) -> float:
    """A finite number > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not 0 < v < float("inf"):
        raise InputError(flag, value, "a finite number > 0")
    return v


def check_choice(flag: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(flag, value, "|".join(choices))
    return value


def check_hw(value, grid: tuple[int, int]) -> tuple[int, int]:
    """--hw as a pair no larger than the token grid."""
    hw = parse_pair("--hw", value)
    if hw[0] > grid[0] or hw[1] > grid[1]:
        raise InputError(
            "--hw",
            format_pair(hw),
            f"1..{grid[0]} x 1..{grid[1]}",
            f"larger than the token grid {format_pair(grid)}",
        )
    return hw


def check_restore(value, model: DenseModel) -> str:
    """--restore output|backbone, by default the model's; output needs a per-token head."""
    if value is None:
        return "output" if model.restore_at_output else "backbone"
    check_choice("--restore", value, ("output", "backbone"))
    if value == "output" and not model.per_token_head:
        raise InputError("--restore", value, "backbone", "this model's head is not per token")
    return value
