"""`vitexport bench OUT`: a build timed against its `--method none` baseline."""

from __future__ import annotations

from pathlib import Path

import click

from . import _progress, _verified, main
from ..errors import InputError
from .options import REHASH, timing_options, PATH


@main.command()
@click.argument("out", type=PATH, required=False)
@timing_options(20, 2, "Timed rounds of each model, interleaved (>= 20 for a headline).")
@click.option(
    "--model",
    "model_name",
    default=None,
    hidden=True,
    help="Moved: `vitexport sweep --model NAME`.",
)
@REHASH
def bench(out, runs, warmup, threads, model_name, rehash):
    """Time a build against its --method none baseline side by side (OUT: an output folder);
    `vitexport sweep` times every method on a model."""
    from ..bench import bench_folder
    from ..report import format_bench

    if model_name is not None:
        raise InputError(
            "--model",
            model_name,
            "OUT, an output folder of `vitexport build`",
            "every method on a model is now `vitexport sweep --model NAME`",
        )
    if out is None:
        raise InputError("OUT", "(none)", "an output folder of `vitexport build`")
    record = _verified(out, rehash)  # hashed once here; the pipeline trusts this record
    record = bench_folder(out, runs, warmup, threads, progress=_progress, record=record)
    click.echo(format_bench(record.timing.to_dict()))
    click.echo(f"report: {Path(out) / 'report.md'}")
