"""`vitexport deploy triton OUT --repo DIR`: a Triton model repository from a build folder."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .options import count, path_option, switch


@main.group()
def deploy():
    """Deploy a build folder (Triton Inference Server)."""


@deploy.command()
@click.argument("out", type=click.Path(path_type=Path))
@path_option(
    "--repo",
    "Model repository folder to write (new, or written by vitexport with --force).",
    required=True,
)
@click.option(
    "--name",
    default=None,
    help="Model name prefix (default: <model>_<method>); models are <name>_python, _onnx, _trt.",
)
@click.option(
    "--max-batch",
    type=int,
    default=None,
    help="max_batch_size for a build with a dynamic batch (default: the engine profile's max, 8).",
)
@switch("--dynamic-batch", "Let Triton batch requests (only for a build with --dynamic-batch).")
@switch("--force", "Replace a repository written by vitexport.")
def triton(out, repo, name, max_batch, dynamic_batch, force):
    """Write a Triton model repository (python, onnxruntime and TensorRT models) for OUT."""
    from ..api import deploy as run_deploy

    result = run_deploy(
        out, repo, name=name, max_batch=max_batch, dynamic_batch=dynamic_batch, force=force
    )
    for model, kind in result.models.items():
        click.echo(f"{model:40} {kind}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {result.path} (see {result.path / 'README.md'})")


@deploy.command()
@click.argument("repo", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model to load (repeatable; default: every <name>_python model of REPO).",
)
@path_option(
    "--workdir", "Folder for the backend copy and server.log (default: REPO/../.triton-work)."
)
@count("--timeout", 1, 3600, 60, help="Seconds to wait for the server to become ready.")
def serve(repo, models, workdir, timeout):
    """Serve REPO on this host with the Triton server of nvidia-pytriton (CPU, python backend)
    on free loopback ports, until Ctrl-C."""
    from ..deploy.server import serve_models

    for line in serve_models(repo, list(models) or None, workdir, timeout):
        click.echo(line)
