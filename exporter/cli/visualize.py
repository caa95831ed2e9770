"""`vitexport visualize OUT`: pictures of what a build's method does to an image."""

from __future__ import annotations

from pathlib import Path

import click

from . import _progress, _verified, main
from ..paths import out_dir
from .options import REHASH, path_option, PATH


@main.command()
@click.argument("out", type=PATH)
@path_option(
    "--image",
    "Picture to run (resized to the model's input). Default: the first image of "
    "the model's own evaluation set (segmenter_digits), else a synthetic image.",
)
@REHASH
def visualize(out, image, rehash):
    """Draw the token assignment, the reduced picture and baseline vs reduced predictions."""
    out_dir(Path(out), "visualize", "OUT/visualize", make=False)  # before --rehash writes
    from ..visualize import visualize_folder

    record = _verified(out, rehash)  # hashed once here; the pipeline trusts this record
    result = visualize_folder(out, image, progress=_progress, record=record)
    for note in result["notes"]:
        click.echo(note)
    for path in result["files"]:
        click.echo(f"wrote {path}")
