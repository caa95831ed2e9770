"""The checks of method flags shared by several methods: each returns the value or raises an
`InputError` naming the flag and the allowed range. No torch here: the methods' config
modules (read by --help) use them."""

from __future__ import annotations

from ..config import format_pair, parse_float, parse_int, parse_pair
from ..errors import InputError


def check_int(flag: str, value, low: int, high: int) -> int:
    """An integer in low..high, or an `InputError` naming the flag."""
    return parse_int(flag, value, low, high)


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
    return parse_float(flag, value, 0, 1e30, low_open=True)


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


def check_restore(value, model) -> str:
    """--restore output|backbone, by default the model's; output needs a per-token head."""
    if value is None:
        return "output" if model.restore_at_output else "backbone"
    check_choice("--restore", value, ("output", "backbone"))
    if value == "output" and not model.per_token_head:
        raise InputError("--restore", value, "backbone", "this model's head is not per token")
    return value
