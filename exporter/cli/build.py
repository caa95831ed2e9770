"""`vitexport build`: a model patched with a method, exported, linted, validated, reported."""

from __future__ import annotations

import sys
import time

import click

from . import DEFAULT_OUT, _echo_err, _Held, _print_summary, _progress, main
from ..config import BuildSettings
from ..models import label_of
from ..presets import named_preset, resolve
from .options import ENGINE, METHOD_FLAGS, MODEL, SEED, TOLERANCE, count, path_option, switch


@main.command()
@click.option(
    "--preset",
    default=None,
    help="A paper's settings by name (see `vitexport presets`); explicit flags win.",
)
@MODEL
@click.option(
    "--method",
    default=None,
    help="Token-reduction method (see `vitexport methods`). Default: expedite.",
)
@METHOD_FLAGS
@count("--batch", 1, 4096, 1, help="Batch size of the export.")
@switch("--dynamic-batch", "Export with a dynamic batch dimension.")
@count("--opset", 17, 23, 18, help="ONNX opset (17..23).")
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of random weights and of validation inputs.",
)
@click.option("--atol", type=TOLERANCE, default=None, help="Absolute tolerance (default 1e-3).")
@click.option("--rtol", type=TOLERANCE, default=None, help="Relative tolerance (default 1e-3).")
@switch(
    "--plugins", "Also write model.plugins.onnx with TensorRT plugin nodes (validated on the CPU)."
)
@switch(
    "--optimize",
    "Also write model.optimized.onnx for ONNX Runtime: attention fused into its "
    "MultiHeadAttention op and its graph optimisations applied (validated like model.onnx).",
)
@switch("--engine", "Also build a TensorRT engine (needs TensorRT).")
@ENGINE
@click.option(
    "--eval-data",
    default=None,
    help="An .npz of images float32 [N,3,H,W] and labels int [N,H,W] (255 = ignore): "
    "report mIoU of baseline and reduced model (segmenter_digits: its "
    "validation split by default).",
)
@count(
    "--eval-count",
    1,
    1_000_000,
    help="Evaluate only the first N images (segmenter_digits default: 100 of 500).",
)
@path_option("--out", "Output folder (default: vitexport-out/<model>-<method>).")
@switch(
    "--force",
    "Replace the output folder if it exists (only a build's own output folder or "
    "an empty one; the old folder stays until the new one is in place).",
)
@click.option(
    "--max-memory",
    default=None,
    help="Refuse builds estimated to need more memory than this, e.g. 64G (default: "
    "the memory available now).",
)
@click.option(
    "--bench/--no-bench",
    "run_bench",
    default=None,
    help="--bench: then time the result against --method none as `vitexport bench "
    "OUT` does; --no-bench: skip the quick timing a build with evaluation data "
    "does against its baseline.onnx (default).",
)
def build(
    preset,
    model,
    method,
    method_args,
    atol,
    rtol,
    out,
    force,
    max_memory,
    run_bench,
    engine_options,
    **settings,
):
    """Patch a model with a token-reduction method, export ONNX, validate, write a report."""
    from ..bench import bench_folder
    from ..build import ExportRuleError, passed
    from ..build import build as run_build
    from ..limits import parse_size
    from ..report import format_bench

    spec, chosen, args = resolve(preset, model, method, method_args)
    config = BuildSettings(
        model=spec, method=chosen, method_args=args, **engine_options, **settings
    )
    if atol is not None:
        config.atol = atol
    if rtol is not None:
        config.rtol = rtol
    out = out or DEFAULT_OUT / f"{label_of(spec.name)}-{chosen}"
    limit = parse_size("--max-memory", max_memory) if max_memory is not None else None
    start = time.perf_counter()
    try:
        with named_preset(preset, model, method, method_args):
            report = run_build(
                config,
                out,
                force=force,
                bench=run_bench is None,
                max_memory=limit,
                progress=_Held(f"vitexport build: {spec.name} + {chosen}", until_done=False),
            )
    except ExportRuleError as err:
        _echo_err(f"Error: the exported graph breaks the export rules: {err}")
        sys.exit(1)
    if run_bench:
        report = bench_folder(out, progress=_progress, record=report)  # just built: trusted
        click.echo(format_bench(report.timing.to_dict()))
    _print_summary(report, out)
    click.echo(f"built in {time.perf_counter() - start:.0f} s")
    sys.exit(0 if passed(report) else 1)
