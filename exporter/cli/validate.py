"""`vitexport validate OUT`: every artifact of an output folder compared with PyTorch again."""

from __future__ import annotations

import sys

import click

from . import _echo_err, _Held, _print_summary, main
from .options import REHASH, TOLERANCE, PATH


@main.command()
@click.argument("out", type=PATH)
@click.option(
    "--atol", type=TOLERANCE, default=None, help="Absolute tolerance (default: the build's)."
)
@click.option(
    "--rtol", type=TOLERANCE, default=None, help="Relative tolerance (default: the build's)."
)
@REHASH
def validate(out, atol, rtol, rehash):
    """Re-run validation of every artifact in an output folder (after checking their sha256).
    The result goes to OUT/validation.json; report.json stays as the build wrote it."""
    from ..build import passed, revalidate

    report = revalidate(out, progress=_Held(), atol=atol, rtol=rtol, rehash=rehash)
    _print_summary(report, out)
    if getattr(report, "unsaved", None):  # the verdict stands; only its copy on disk is missing
        _echo_err(f"Note: {report.unsaved}")
    sys.exit(0 if passed(report) else 1)
