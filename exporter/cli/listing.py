"""`vitexport methods`, `presets`, `models`: what the registries hold."""

from __future__ import annotations

import click

from . import main
from ..methods import METHODS
from ..models import MODELS, hf
from ..presets import PRESETS


@main.command()
def methods():
    """List the token-reduction methods with their flags and defaults."""
    for spec in METHODS.values():
        click.echo(f"{spec.name:14} {spec.description}")
        for opt in spec.options:
            click.echo(f"    {opt.flag:14} {opt.help} (default: {opt.default_text})")


@main.command()
def presets():
    """List the presets: the papers' settings by name, with the table each comes from."""
    for p in PRESETS.values():
        args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in p.args.items())
        click.echo(f"{p.name:26} {p.source}")
        click.echo(
            f"{'':26} --model {p.model} --img-size {p.img_size[0]}x{p.img_size[1]} "
            f"--method {p.method} {args}"
            + (f" --num-classes {p.num_classes}" if p.num_classes else "")
        )
        if p.note:
            click.echo(f"{'':26} note: {p.note}")


@main.command()
def models():
    """List the built-in models (any timm ViT name works too)."""
    for entry in MODELS.values():
        click.echo(f"{entry.name:20} {entry.description}")
    click.echo(f"{'<timm name>':20} any timm VisionTransformer, e.g. vit_base_patch16_224")
    click.echo(
        f"{'<timm swin name>':20} any timm SwinTransformer, e.g. "
        "swin_tiny_patch4_window7_224 (outputs: the four stage maps)"
    )
    click.echo(
        f"{'hf:FOLDER':20} a local transformers folder: {', '.join(hf.supported())} "
        "(docs/models.md)"
    )
