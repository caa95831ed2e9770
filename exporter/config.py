"""Typed settings of a build and the parsing of the strings users write ("24x24", "5x5")."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from .errors import InputError

_PAIR = re.compile(r"^\s*(-?[0-9]+)\s*[xX*]\s*(-?[0-9]+)\s*$")
# ASCII only: Python's int() and float() also take "٣" or "1_000", and str.isdigit() says yes
# to "²" and "①", which int() then refuses with a traceback.
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Longer number texts are typos or attacks (int() of a 100,000-digit string is slow).
_NUMBER_CHARS = 40


def _number_text(value) -> str | None:
    """`value` stripped when it is a str or int-like text of plain ASCII, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value).strip() if isinstance(value, str) else None
    return text if text is not None and len(text) <= _NUMBER_CHARS else None


def _shown(value) -> str:
    text = str(value)
    return text if len(text) <= _NUMBER_CHARS else text[:_NUMBER_CHARS] + "..."


def parse_int(flag: str, value, low: int, high: int) -> int:
    """An integer in low..high written with the digits 0-9 only; else one InputError naming
    the flag. The one integer parser of every flag and file field."""
    allowed = f"an integer in {low}..{high} (digits 0-9)"
    text = _number_text(value)
    if text is None or not _INT.fullmatch(text):
        raise InputError(flag, _shown(value), allowed, "not an integer")
    n = int(text)
    if not low <= n <= high:
        raise InputError(flag, _shown(value), allowed, "out of range")
    return n


def parse_float(
    flag: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> float:
    """A finite number in the range (open ends where asked) written in plain ASCII (0-9, '.',
    an exponent); else one InputError naming the flag. NaN and inf are never in range."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    allowed = f"a finite number in {lo}{low:g}, {high:g}{hi}"
    text = _number_text(value)
    if text is None or not _FLOAT.fullmatch(text):
        raise InputError(flag, _shown(value), allowed, "not a number")
    v = float(text)
    inside = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not (math.isfinite(v) and inside):
        raise InputError(flag, _shown(value), allowed, "out of range")
    return v


# No size in this tool (pixels, tokens, windows) gets near this; bigger numbers are typos.
MAX_PAIR = 1 << 16


def parse_pair(
    flag: str, text, allowed: str = "HxW with positive integers, e.g. 24x24"
) -> tuple[int, int]:
    """Parse "24x24" (or a single "24" meaning 24x24) into a pair of ints in 1..MAX_PAIR."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        pair = tuple(parse_int(flag, t, -MAX_PAIR, MAX_PAIR) for t in text)
    else:
        text = str(text)
        m = _PAIR.match(text) if len(text) <= 2 * _NUMBER_CHARS else None
        if m:
            pair = (int(m.group(1)), int(m.group(2)))
        elif _INT.fullmatch(text.strip()) and len(text.strip()) <= _NUMBER_CHARS:
            pair = (int(text), int(text))
        else:
            raise InputError(flag, _shown(text), allowed, "not of the form HxW")
    if not (0 < pair[0] <= MAX_PAIR and 0 < pair[1] <= MAX_PAIR):
        shown = text if len(str(text)) < 40 else str(text)[:40] + "..."
        raise InputError(flag, shown, allowed, f"sizes must be in 1..{MAX_PAIR}")
    return pair


def format_pair(pair: tuple[int, int]) -> str:
    return f"{pair[0]}x{pair[1]}"


@dataclass
class ModelSpec:
    """Which model to build and with what weights. None means the model's default."""

    name: str = "segmenter_digits"  # the shipped trained model (exporter/demo)
    checkpoint: str | None = None
    img_size: tuple[int, int] | None = None
    num_classes: int | None = None


@dataclass
class BuildSettings:
    """Everything `vitexport build` needs; saved in report.json so any stage can be re-run."""

    model: ModelSpec = field(default_factory=ModelSpec)
    method: str = "expedite"
    method_args: dict = field(default_factory=dict)
    batch: int = 1
    dynamic_batch: bool = False
    opset: int = 18
    seed: int = 0
    atol: float = 1e-3
    rtol: float = 1e-3
    min_cosine: float = 0.99999
    error_quantile: float = 0.99  # share of elements that must be within atol/rtol
    min_argmax: float = 0.999  # segmentation: pixels whose argmax class must agree
    plugins: bool = False  # also write model.plugins.onnx with TensorRT plugin nodes
    optimize: bool = False  # also write model.optimized.onnx (attention fused, for ONNX Runtime)
    engine: bool = False  # also build a TensorRT engine (when TensorRT is importable)
    precision: str = "fp32"
    workspace_mib: int | None = None
    opt_level: int | None = None
    plugin_library: str | None = None
    eval_data: str | None = None  # .npz of images and labels for mIoU (see accuracy.py)
    eval_count: int | None = None  # evaluate only the first N images

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BuildSettings":
        data = dict(data)
        model = dict(data.pop("model", {}))
        if model.get("img_size") is not None:
            model["img_size"] = tuple(model["img_size"])
        known = {f for f in cls.__dataclass_fields__}
        return cls(model=ModelSpec(**model), **{k: v for k, v in data.items() if k in known})
