"""`vitexport train-demo`: train the shipped digits Segmenter."""

from __future__ import annotations

import sys

import click

from . import _progress, main
from .options import SEED, count, path_option


@main.command("train-demo")
@path_option(
    "--out", "Folder for segmenter_digits.safetensors/.json (default: the package's weights)."
)
@count("--steps", 1, 10_000_000, help="Steps on 32x32 canvases (default 3000).")
@count("--full-steps", 0, 10_000_000, help="Final steps on full 80x80 canvases (default 200).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@count(
    "--eval-count", 1, 1_000_000, help="Validation canvases for the recorded mIoU (default 500)."
)
@count("--threads", 1, 256, 2, help="torch CPU threads (1 is faster on a loaded machine).")
def train_demo(out, steps, full_steps, seed, eval_count, threads):
    """Train the digits Segmenter (the default model) and write its weights and metadata."""
    from ..demo import train

    args = {
        k: v
        for k, v in {"steps": steps, "full_steps": full_steps, "eval_count": eval_count}.items()
        if v is not None
    }
    meta = train.train(
        out or train.WEIGHTS_DIR,
        seed=seed,
        log=_progress,
        threads=threads,
        command=" ".join(["vitexport"] + sys.argv[1:]),
        **args,
    )
    click.echo(
        f"val mIoU {meta['val_miou']:.4f} ({meta['val_count']} canvases), "
        f"{meta['train_seconds']:.0f} s"
    )
