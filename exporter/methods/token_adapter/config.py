"""Token Adapter's config and flags, shared by its plain and Swin forms."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import InputError
from ..checks import check_choice
from ..spec import flag

EJECT_MODES = ("max", "m-threshold")


# Table 4 (r_h = r_w = 0.3, m-threshold ejector). Figure 6b's values are not in the text of the
# paper: it says only that keeping *part* of the kept lines unique beats keeping none, so the
# default keeps a small share (0.1 of 28 kept lines = 3 unique rows and 3 unique columns).
# The paper gives no threshold; 0.9 on the cosine similarity admits only near-duplicates of
# the best match, so m-threshold differs from max where several reduced tokens fit equally well.
@dataclass(frozen=True)
class TokenAdapterConfig:
    """Both forms' flags; the plain form leaves `stage` None."""

    alpha: int | None = flag(
        "blocks run at full resolution before the injector", rule="max(1, round(depth/24))"
    )
    restore_after: int | None = flag(
        "block after which the ejector restores the full grid (alpha < value <= depth)",
        rule="depth",
    )
    rows_ratio: float = flag("r_h: fraction of rows merged, in (0, 1)", 0.3)
    cols_ratio: float = flag("r_w: fraction of columns merged, in (0, 1)", 0.3)
    unique_ratio: float = flag("fraction of kept rows/columns left intact, in [0, 1)", 0.1)
    eject: str = flag("ejector matching: max | m-threshold", "m-threshold")
    threshold: float = flag(
        "m-threshold: cosine similarity at which a reduced token also joins", 0.9
    )
    stage: int | None = flag(
        "Swin: stage (1-based) whose windows are reduced; --alpha "
        "and --restore-after then count that stage's blocks",
        rule="the deepest stage",
    )


def check_fraction(flag: str, value, low_open: bool = True) -> float:
    """A number in (0, 1), or in [0, 1) when low_open is False."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    ok = (0 < v < 1) if low_open else (0 <= v < 1)
    if not ok:
        raise InputError(flag, value, "a number in (0, 1)" if low_open else "a number in [0, 1)")
    return v


def check_cosine(flag: str, value) -> float:
    """A cosine-similarity threshold in [-1, 1]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not -1 <= v <= 1:
        raise InputError(flag, value, "a number in [-1, 1] (a cosine similarity)")
    return v


def check_reduction(args: dict) -> dict:
    """--rows-ratio, --cols-ratio, --unique-ratio, --eject, --threshold (both forms), as
    keyword arguments of the config."""
    d = TokenAdapterConfig()
    return {
        "rows_ratio": check_fraction("--rows-ratio", args.get("rows_ratio", d.rows_ratio)),
        "cols_ratio": check_fraction("--cols-ratio", args.get("cols_ratio", d.cols_ratio)),
        "unique_ratio": check_fraction(
            "--unique-ratio", args.get("unique_ratio", d.unique_ratio), low_open=False
        ),
        "eject": check_choice("--eject", args.get("eject", d.eject), EJECT_MODES),
        "threshold": check_cosine("--threshold", args.get("threshold", d.threshold)),
    }


def counts_entries(counts: dict) -> dict:
    """The report's rows/columns merged, kept and left intact (`row_col_counts`)."""
    return {f"{part}_rows_cols": list(counts[part]) for part in ("normal", "kept", "unique")}
