"""Token-reduction methods and their registry: `--method name` -> `MethodSpec`.

Every module or subpackage here that defines `SPEC` (a `MethodSpec`) is registered, so adding
a method touches one new file (a method with several forms is a subpackage).
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import InputError
from ..models.base import DenseModel
from .base import MethodSpec, Option, ReducedModel, TokenMethod

METHODS: dict[str, MethodSpec] = {}
ORDER = ("none", "expedite", "ailurus", "token-adapter", "tome", "svit", "pool")


def register(spec: MethodSpec) -> MethodSpec:
    METHODS[spec.name] = spec
    return spec


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if isinstance(spec, MethodSpec):
            register(spec)
    order = {n: i for i, n in enumerate(ORDER)}
    for name in sorted(METHODS, key=lambda n: order.get(n, len(order))):
        METHODS[name] = METHODS.pop(name)


_discover()


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise InputError("--method", name, "|".join(METHODS), "unknown method")
    return METHODS[name]


def all_options() -> dict[str, list[tuple[str, Option]]]:
    """Every method flag once, with (method, its Option) for each method that uses it."""
    flags: dict[str, list[tuple[str, Option]]] = {}
    for spec in METHODS.values():
        for opt in spec.options:
            flags.setdefault(opt.flag, []).append((spec.name, opt))
    return flags


# The method every reduced model is compared with (speed-up, retention): the model unmodified.
BASELINE = "none"


def reducing() -> list[str]:
    """The methods that reduce tokens: every registered one but the baseline."""
    return [name for name in METHODS if name != BASELINE]


def baseline_of(model: DenseModel) -> ReducedModel:
    """The baseline of `model` (the same loaded weights, not a second load): `--method none`."""
    return apply_method(model, BASELINE, {})


def apply_method(model: DenseModel, name: str, args: dict) -> ReducedModel:
    """Patch `model` with method `name`; `args` holds only the flags the user gave."""
    spec = get_method(name)
    build = spec.builder(model)
    args = {k: v for k, v in args.items() if v is not None and v is not False}
    spec.check_args(args)
    return ReducedModel(model, build(model, args)).eval()


__all__ = [
    "BASELINE",
    "METHODS",
    "baseline_of",
    "reducing",
    "MethodSpec",
    "Option",
    "ReducedModel",
    "TokenMethod",
    "all_options",
    "apply_method",
    "get_method",
    "register",
]
