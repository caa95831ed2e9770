"""`vitexport sweep`: the trade-off of every method on one model."""

from __future__ import annotations

import sys

import click

from . import DEFAULT_OUT, _progress, main, stop_note
from ..errors import InputError
from ..models import label_of
from .options import MODEL, Number, count, path_option, switch, timing_options


@main.command()
@MODEL
@click.option(
    "--eval-data",
    default=None,
    help="An .npz as for `vitexport build --eval-data` (default: the model's own "
    "evaluation set where it has one).",
)
@count(
    "--eval-count",
    1,
    1_000_000,
    help="Evaluate the first N images (default: as `vitexport build`).",
)
@click.option(
    "--methods", default=None, help="Only these methods, comma-separated (default: every method)."
)
@click.option(
    "--grid",
    type=click.Choice(["full", "small"]),
    default="full",
    show_default=True,
    help="small: Expedite's hw sweep at its default cut only (3 rows fewer per other cut).",
)
@timing_options(
    20, 1, "Timed rounds of each model, interleaved with the baseline's (>= 20 for a headline)."
)
@click.option(
    "--target-speedup",
    type=Number(0, 1000, low_open=True),
    default=None,
    help="Print the setting with the most retention among those at least this fast.",
)
@click.option(
    "--min-retention",
    type=Number(0, 100, low_open=True),
    default=None,
    help="Print the fastest setting that keeps at least this share of the mIoU "
    "(0.97 or 97 for 97%).",
)
@path_option(
    "--out", "Folder of NAME.md, NAME.json and NAME.png (default: vitexport-out/sweep-<model>)."
)
@click.option("--name", default="sweep", show_default=True, help="File name stem in --out.")
@switch("--resume", "Keep the finished rows of a sweep in --out.")
@switch("--force", "Replace a sweep in --out.")
def sweep(
    model,
    eval_data,
    eval_count,
    methods,
    grid,
    runs,
    warmup,
    threads,
    target_speedup,
    min_retention,
    out,
    name,
    resume,
    force,
):
    """Every method at a grid of settings: retention against speed-up (table, JSON, plot)."""
    from ..sweep import best, parse_methods, run_sweep

    if target_speedup is not None and not 0 < target_speedup < 1000:
        raise InputError("--target-speedup", target_speedup, "a speed-up > 0, e.g. 1.5")
    if min_retention is not None:
        if not 0 < min_retention <= 100:
            raise InputError("--min-retention", min_retention, "a share in (0, 1] or a percent")
        min_retention = min_retention / 100 if min_retention > 1 else min_retention
    if "/" in name or not name.strip():
        raise InputError("--name", name, "a file name stem without '/'")
    chosen = parse_methods(methods)
    spec = model
    out = out or DEFAULT_OUT / f"sweep-{label_of(spec.name)}"
    command = " ".join(["vitexport sweep", *sys.argv[2:]]) if sys.argv[1:2] == ["sweep"] else ""
    kept = f"the rows finished so far are in {out / f'{name}.json'}; --resume goes on from them"
    with stop_note(kept):
        result = run_sweep(
            spec,
            out,
            eval_data,
            eval_count,
            chosen,
            runs,
            warmup,
            threads,
            grid == "full",
            force,
            resume,
            command,
            name,
            need_retention=min_retention is not None,
            progress=_progress,
        )
    for ext in ("md", "json", "png"):
        click.echo(f"wrote {out / f'{name}.{ext}'}")
    front = [r for r in result["rows"] if r.get("pareto")]
    click.echo(f"{len(result['rows'])} settings, {len(front)} on the Pareto front")
    if target_speedup is None and min_retention is None:
        return
    pick = best(result["rows"], target_speedup, min_retention)
    wanted = " and ".join(
        t
        for t in (
            None if target_speedup is None else f"speed-up >= {target_speedup:g}x",
            None if min_retention is None else f"retention >= {min_retention:.1%}",
        )
        if t
    )
    if pick is None:
        click.echo(f"no validated setting meets {wanted}")
        sys.exit(1)
    ret = "" if pick["retention"] is None else f", retention {pick['retention']:.1%}"
    click.echo(
        f"best for {wanted}: {pick['method']} {pick['setting']}: speed-up "
        f"{pick['speedup']:.2f}x{ret}"
    )
    click.echo(pick["command"])
