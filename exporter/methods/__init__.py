"""Token-reduction methods and their registry: `--method name` -> `MethodSpec`."""

from __future__ import annotations

from ..errors import InputError
from ..models.base import DenseModel
from . import expedite, none
from .base import MethodSpec, Option, ReducedModel, TokenMethod

METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    METHODS[spec.name] = spec
    return spec


for _module in (none, expedite):
    register(_module.SPEC)


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise InputError("--method", name, "|".join(METHODS), "unknown method")
    return METHODS[name]


def apply_method(model: DenseModel, name: str, args: dict) -> ReducedModel:
    """Patch `model` with method `name`; `args` holds only the flags the user gave."""
    spec = get_method(name)
    args = {k: v for k, v in args.items() if v is not None}
    spec.check_args(args)
    return ReducedModel(model, spec.build(model, args)).eval()


__all__ = ["METHODS", "MethodSpec", "Option", "ReducedModel", "TokenMethod", "apply_method",
           "get_method", "register"]
