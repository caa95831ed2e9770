"""`vitexport lint OUT`: an output folder's ONNX files against the export rules."""

from __future__ import annotations

import sys

import click

from . import main
from .options import REHASH, PATH


@main.command()
@click.argument("out", type=PATH)
@REHASH
def lint(out, rehash):
    """Check an output folder's ONNX files against the export rules and TensorRT's parser.
    The findings go to OUT/lint.json; report.json stays as the build wrote it."""
    from ..build import lint_existing

    record = lint_existing(out, rehash)
    for f in record.lint:
        click.echo(
            f"{f['artifact']}: {f['severity']}: {f['op']} in '{f['module']}': {f['message']}"
        )
    errors = [f for f in record.lint if f["severity"] == "error"]
    click.echo(
        f"{len(errors)} errors, {len(record.lint) - len(errors)} warnings "
        f"in {', '.join(a.file for a in record.graphs())}"
    )
    if getattr(record, "unsaved", None):  # the findings stand; only lint.json is missing
        click.echo(f"Note: {record.unsaved}", err=True)
    sys.exit(1 if errors else 0)
