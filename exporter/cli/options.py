"""Flags that several commands share, each group declared once. A group hands its command one
typed value (a `ModelSpec`, the method's flags, the engine options) instead of one parameter
per flag, as polygraphy's argument groups do."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..config import ModelSpec, parse_float, parse_int, parse_pair
from ..methods import all_options
from ..models import DEFAULT_MODEL, model_names_help


class Integer(click.ParamType):
    """An integer in low..high through the one strict parser (digits 0-9 only: click's own
    int() takes "٣" and "1_000")."""

    name = "integer"

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        flag = param.opts[0] if param is not None and param.opts else "value"
        return parse_int(flag, value, self.low, self.high)


class Number(click.ParamType):
    """A finite number in a range through the one strict parser (ASCII digits only)."""

    name = "number"

    def __init__(self, low: float, high: float, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx):
        flag = param.opts[0] if param is not None and param.opts else "value"
        return parse_float(flag, value, self.low, self.high, low_open=self.low_open)


def count(flag: str, low: int, high: int, default: int | None = None, **options):
    """An integer option in low..high; its default, where it has one, shown in --help."""
    show = {"show_default": True} if default is not None else {}
    return click.option(flag, type=Integer(low, high), default=default, **show, **options)


class PathType(click.Path):
    """click's Path, refusing a NUL byte in one line (os.stat raises ValueError on it, which
    click does not catch)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "\0" in value:
            self.fail("holds a NUL byte", param, ctx)
        return super().convert(value, param, ctx)


PATH = PathType(path_type=Path)  # every file or folder a command takes


def path_option(flag: str, help: str, default=None, **options):
    """An option naming a file or folder (a Path)."""
    return click.option(flag, type=PATH, default=default, help=help, **options)


def switch(flag: str, help: str):
    """An on/off flag."""
    return click.option(flag, is_flag=True, help=help)


def option_group(name: str, options: list, collect):
    """A decorator adding `options` ([(parameter, click.option(...))], in help order) to a
    command and passing it `name=collect(**their values)` instead of the parameters."""

    def decorate(func):
        @functools.wraps(func)
        def command(*args, **kwargs):
            kwargs[name] = collect(**{key: kwargs.pop(key) for key, _ in options})
            return func(*args, **kwargs)

        for _, option in reversed(options):
            command = option(command)
        return command

    return decorate


TOLERANCE = Number(0, 1e6, low_open=True)
SEED = Integer(0, 2**32 - 1)
REHASH = switch(
    "--rehash",
    "Accept the folder's files as they are now and record their sha256 "
    "(by default a file that differs from report.json is refused).",
)


def _model_spec(model_name, checkpoint, img_size, num_classes) -> ModelSpec:
    size = parse_pair("--img-size", img_size) if img_size is not None else None
    return ModelSpec(model_name, checkpoint, size, num_classes)


# -> model: ModelSpec (None where the flag was not given: the preset's or the model's default)
MODEL = option_group(
    "model",
    [
        (
            "model_name",
            click.option(
                "--model",
                "model_name",
                default=None,
                help=f"{model_names_help()}, a timm ViT (vit_*, deit*) or Swin (swin_*) name, "
                "or hf:FOLDER (a transformers model folder; docs/models.md). "
                f"Default: {DEFAULT_MODEL} (shipped).",
            ),
        ),
        (
            "checkpoint",
            click.option(
                "--checkpoint",
                default=None,
                help="Weights (.pth with weights_only, or .safetensors).",
            ),
        ),
        (
            "img_size",
            click.option(
                "--img-size",
                default=None,
                help="Input HxW (default: the model's, 80x80 for segmenter_digits, 512x512 for other "
                "Segmenters).",
            ),
        ),
        (
            "num_classes",
            count(
                "--num-classes",
                1,
                100000,
                help="Segmenter classes (default 150; segmenter_digits has 11).",
            ),
        ),
    ],
    _model_spec,
)


def _engine(precision, workspace, opt_level, plugin_lib) -> dict:
    return {
        "precision": precision,
        "workspace_mib": workspace,
        "opt_level": opt_level,
        "plugin_library": plugin_lib,
    }


# -> engine: {precision, workspace_mib, opt_level, plugin_library} (BuildSettings' names)
ENGINE = option_group(
    "engine_options",
    [
        (
            "precision",
            click.option(
                "--precision",
                default="fp32",
                show_default=True,
                help="Engine precision: fp32 | fp16 (fp16 also writes model.fp16.onnx).",
            ),
        ),
        (
            "workspace",
            count("--workspace", 1, 1 << 22, help="TensorRT workspace in MiB."),
        ),
        (
            "opt_level",
            count("--opt-level", 0, 5, help="TensorRT builder optimisation level 0..5."),
        ),
        (
            "plugin_lib",
            click.option(
                "--plugin-lib", default=None, help="Path of libvitexport_plugins.so for the engine."
            ),
        ),
    ],
    _engine,
)


def _method_flags() -> list:
    """One option per method flag in the registry, all None by default (the method's default)."""
    options = []
    for flag, uses in all_options().items():
        opt = uses[0][1]
        text = "; ".join(f"{name}: {o.help} (default {o.default_text})" for name, o in uses)
        kind = {"is_flag": True} if opt.is_flag else {}
        options.append((opt.key, click.option(flag, opt.key, default=None, help=text, **kind)))
    return options


# -> method_args: {config key: value} of the method flags given
METHOD_FLAGS = option_group(
    "method_args",
    _method_flags(),
    lambda **given: {k: v for k, v in given.items() if v is not None},
)


def timing_options(runs: int, warmup: int, runs_help: str):
    """--runs, --warmup and --threads of the commands that time models (bench, sweep)."""
    options = (
        count("--runs", 1, 1000, runs, help=runs_help),
        count("--warmup", 0, 100, warmup),
        count("--threads", 1, 256, help="ONNX Runtime intra-op threads (default: ONNX Runtime's)."),
    )

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
