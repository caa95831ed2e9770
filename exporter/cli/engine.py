"""`vitexport engine OUT`: the TensorRT engine of an output folder, built and validated."""

from __future__ import annotations

import sys

import click

from . import _echo_err, _Held, _print_summary, main
from .options import ENGINE, REHASH, PATH


@main.command()
@click.argument("out", type=PATH)
@ENGINE
@REHASH
def engine(out, engine_options, rehash):
    """Build the TensorRT engine of an output folder and validate it (exit 2 when no engine
    could be built; build_engine.sh is written either way)."""
    from ..build import engine_for_folder, passed

    e = engine_options
    record = engine_for_folder(
        out,
        e["precision"],
        e["workspace_mib"],
        e["opt_level"],
        e["plugin_library"],
        progress=_Held(),
        rehash=rehash,
    )
    if record.engine.built:
        _print_summary(record, out)
        sys.exit(0 if passed(record) else 1)
    _echo_err(
        f"Error: no engine built ({record.engine.skipped or 'unknown reason'}); "
        f"build_engine.sh written in {out}"
    )
    sys.exit(2)
