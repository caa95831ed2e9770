"""`vitexport deploy triton|serve|load`: a Triton model repository from a build folder, served
on this host, and measured under load."""

from __future__ import annotations

import re
from pathlib import Path

import click

from . import main, stop_note
from ..config import parse_pair
from ..errors import InputError
from .options import count, path_option, switch, PATH


@main.group()
def deploy():
    """Deploy a build folder (Triton Inference Server)."""


def _stride(ctx, param, value):
    return None if value is None else parse_pair("--stride", value)


@deploy.command()
@click.argument("out", type=PATH)
@path_option(
    "--repo",
    "Model repository folder to write (new or empty; with --force an existing one, where only "
    "model folders vitexport wrote are replaced).",
    required=True,
)
@click.option(
    "--name",
    default=None,
    help="Model name prefix (default: <model>_<method>); the ensemble is <name>, its steps "
    "<name>_pre and <name>_post, the models <name>_python, _onnx, _trt.",
)
@click.option(
    "--backend",
    type=click.Choice(["python", "onnx", "trt"]),
    default="python",
    show_default=True,
    help="The model the ensemble runs (onnx and trt need a build with --dynamic-batch).",
)
@click.option(
    "--stride",
    default=None,
    callback=_stride,
    help="Sliding-window stride HxW of the ensemble (default: 2/3 of the model's window).",
)
@count(
    "--max-batch",
    1,
    4096,
    help="max_batch_size: windows per execution of the python "
    "model (default 64, also the most windows one image may need); for the onnx and trt "
    "models of a --dynamic-batch build at most the engine profile's max (default 8).",
)
@count("--instances", 1, 64, 1, help="instance_group count of every model.")
@count(
    "--threads", 0, 1024, 0, help="ONNX Runtime threads per python-model instance (0: all cores)."
)
@count(
    "--queue-delay-us",
    0,
    10_000_000,
    1000,
    help="Dynamic batcher: longest wait for more requests (microseconds).",
)
@switch(
    "--dynamic-batch",
    "Dynamic batching on the onnx and trt models too (only for a build "
    "with --dynamic-batch; the python model always has it).",
)
@switch("--confidences", "The ensemble also returns per-class confidences (softmax, C x H x W).")
@switch("--allow-failed", "Deploy a build whose validation failed.")
@switch("--force", "Add to an existing repository, replacing model folders vitexport wrote.")
def triton(out, repo, **options):
    """Write a Triton model repository for OUT: an ensemble (image in, class map out) and the
    python, onnxruntime and TensorRT models."""
    from ..api import deploy as run_deploy

    result = run_deploy(out, repo, **options)
    for model, kind in result.models.items():
        click.echo(f"{model:40} {kind}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {result.path} (see {result.path / 'README.md'})")


@deploy.command()
@click.argument("repo", type=PATH)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model folder of REPO to load (repeatable; default: the ensembles and the python models).",
)
@path_option(
    "--workdir", "Folder for the backend copy and server.log (default: REPO/../.triton-work)."
)
@count("--timeout", 1, 3600, 60, help="Seconds to wait for the server to become ready.")
def serve(repo, models, workdir, timeout):
    """Serve REPO on this host with the Triton server of nvidia-pytriton (CPU, python backend)
    on free loopback ports, until Ctrl-C."""
    from ..deploy.server import serve_models

    with stop_note("the server was stopped; REPO is unchanged"):
        for line in serve_models(repo, list(models) or None, workdir, timeout):
            click.echo(line)


def _levels(ctx, param, value):
    if not re.fullmatch(r"[0-9]+(,[0-9]+)*", value) or not all(
        1 <= int(v) <= 256 for v in value.split(",")
    ):
        raise InputError("--concurrency", value, "comma-separated integers in 1..256, e.g. 1,2,4")
    return [int(v) for v in value.split(",")]


@deploy.command()
@click.argument("repo", type=PATH)
@click.option("--model", required=True, help="Model folder of REPO to load and send to.")
@click.option(
    "--concurrency",
    default="1,2,4",
    show_default=True,
    callback=_levels,
    help="Clients sending at once, one level after another.",
)
@count("--seconds", 1, 3600, 10, help="Seconds of load per level.")
@path_option("--image", "Image to send (default: a synthetic one of the model's window).")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option(
    "--url",
    default=None,
    help="host:port of a running server (default: start one on REPO for the test, on loopback).",
)
@path_option("--json", "Where to write the results (default: load-<model>.json).")
@switch("--force", "Overwrite an existing --json file.")
@path_option(
    "--workdir", "Folder for the backend copy and server.log (default: REPO/../.triton-work)."
)
def load(repo, model, concurrency, seconds, image, protocol, url, json, force, workdir):
    """Measure throughput and latency of MODEL at each concurrency level (the bundled
    tritonserver on loopback, or --url)."""
    from ..deploy.load import measure
    from ..folder import write_json

    path = json or Path(f"load-{model}.json")
    if path.exists() and not force:
        raise InputError("--json", str(path), "a new file, or --force to overwrite it", "exists")
    with stop_note("the load test was stopped; nothing was written"):
        result = measure(
            repo, model, concurrency, seconds, image, url, protocol, workdir, progress=click.echo
        )
    write_json(path, result)
    click.echo(f"wrote {path}")
