"""Token-reduction methods and their registry: `--method name` -> `MethodSpec`.

A method is a subpackage here whose `__init__` defines `SPEC` (a `MethodSpec`): its config
and flags, the forms it has for each model capability, its sweep grid, plot marker, plugin and
tiny test settings. Those declarations import no torch (the CLI's --help reads them); a form's
module (the torch code) is imported when a model is patched. Adding a method touches its own
package only (docs/architecture.md, "Adding a method").
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import InputError
from .spec import MethodSpec, Option

METHODS: dict[str, MethodSpec] = {}
ORDER = ("none", "expedite", "ailurus", "token-adapter", "tome", "svit", "pool")


def register(spec: MethodSpec, package: str | None = None) -> MethodSpec:
    """Add `spec` (forms given as "module:function" are found relative to `package`)."""
    if package is not None:
        spec.package = package
    METHODS[spec.name] = spec
    return spec


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.ispkg:  # the shared modules (base, spec, checks, swin_window)
            continue
        package = f"{__name__}.{info.name}"
        spec = getattr(importlib.import_module(package), "SPEC", None)
        if isinstance(spec, MethodSpec):
            register(spec, package)
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


def baseline_of(model):
    """The baseline of `model` (the same loaded weights, not a second load): `--method none`."""
    return apply_method(model, BASELINE, {})


def apply_method(model, name: str, args: dict):
    """Patch `model` (a DenseModel) with method `name`; `args` holds only the flags the user
    gave. Returns the `ReducedModel`."""
    from .base import ReducedModel  # deferred: torch, which the registry itself does not need

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
    "all_options",
    "apply_method",
    "get_method",
    "register",
]
