"""What the rest of the tool knows about a method, declared without importing torch: its flags,
the model capabilities each of its forms needs, its sweep grid, plot marker, plugin and tiny
test settings. The CLI's --help and `vitexport methods` read only this; the form's module
(the torch code) is imported when a model is patched."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from ..config import format_pair
from ..errors import InputError
from ..models.capabilities import TOKEN_GRID


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


@dataclass(frozen=True)
class SweepInput:
    """What a method's sweep grid may depend on: the model's token layout and the flags the
    model tunes for the method (`ModelEntry.method_defaults`)."""

    grid: tuple[int, int]
    num_patches: int
    depth: int
    tuned: dict = field(default_factory=dict)
    full: bool = True  # False: the short grid (`vitexport sweep --quick`)


def side(grid, share) -> str:
    """A grid scaled by `share` per side, at least 1x1, as an "HxW" flag value."""
    return format_pair((max(1, round(grid[0] * share)), max(1, round(grid[1] * share))))


# A form of a method: a builder, or "module:function" relative to the method's package,
# imported only when a model is patched (the declaration stays free of torch).
Builder = Callable[[Any, dict], Any] | str


@dataclass
class MethodSpec:
    """A registry entry: `--method name` -> everything the tool needs to know about the method.

    `forms` maps a model capability (exporter.models.capabilities) to the builder of the form
    for models that have it, tried in order; the empty capability "" accepts every model. By
    default a method has one form, for a plain token grid: `build` in its package's `vit.py`.
    `sweep` gives the method's rows of `vitexport sweep` ([(flags, label)]); `tiny` the flags
    that make it reduce the tests' tiny models (grids of 4x4 and up, 4 blocks and up)."""

    name: str
    description: str
    # the method's frozen config dataclass: its fields with `flag` metadata are its flags
    config: type
    forms: dict[str, Builder] = field(default_factory=lambda: {TOKEN_GRID: ".vit:build"})
    # flags that switch to the authors' own formulation (same result), timed beside ours by bench
    authors_form: dict | None = None
    sweep: Callable[[SweepInput], list[tuple[dict, str]]] | None = None
    marker: str = "o"  # matplotlib marker of the method's points in the sweep plot
    tiny: dict = field(default_factory=dict)
    plugin: str | None = None  # the TensorRT plugin (plugins/<name>/) that --plugins uses
    package: str = ""  # where `forms` strings are found (set by the registry)

    @property
    def options(self) -> tuple[Option, ...]:
        return options_of(self.config)

    @property
    def needs(self) -> tuple[str, ...]:
        """The model capabilities, one of which a model needs for this method."""
        return tuple(self.forms)

    def accepts(self, capabilities) -> bool:
        return any(need == "" or need in capabilities for need in self.forms)

    def builder(self, model) -> Callable:
        """The builder of the form for `model`'s capabilities, or an InputError when the
        method has no form for them."""
        have = model.capabilities
        for need, build in self.forms.items():
            if need == "" or need in have:
                if isinstance(build, str):
                    module, func = build.split(":")
                    build = getattr(importlib.import_module(module, self.package), func)
                return build
        raise InputError(
            "--method",
            self.name,
            f"a model with {' or '.join(self.needs)}",
            f"{self.name} has no form for a model with {', '.join(sorted(have)) or 'none of them'}",
        )

    def check_args(self, args: dict) -> None:
        """Refuse flags that this method does not use."""
        keys = {o.key for o in self.options}
        for key, value in args.items():
            if key not in keys:
                flag = flag_of(key)
                allowed = ", ".join(o.flag for o in self.options) or "no method flags"
                raise InputError(flag, value, allowed, f"does not apply to --method {self.name}")
