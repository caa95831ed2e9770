"""`vitexport train-demo`: train the shipped digits Segmenter."""

from __future__ import annotations

import sys

import click

from . import _progress, main
from ..demo import DEFAULT_OUT as TRAIN_OUT
from .options import SEED, Number, count, path_option, switch


@main.command("train-demo")
@path_option(
    "--out",
    f"Folder for segmenter_digits.safetensors/.json (default: {TRAIN_OUT}; never the "
    "package's shipped weights unless --into-package).",
)
@switch(
    "--into-package",
    "Write the package's shipped weights (every build's default model); needs --force.",
)
@switch("--force", "Replace segmenter_digits.* files already in the output folder.")
@path_option(
    "--resume",
    "Continue from a checkpoint (its folder or .safetensors, with its .json beside it): a "
    "stopped run where it stopped, or with --steps/--full-steps a new stage from its weights.",
)
@count("--steps", 1, 10_000_000, help="Crop steps (default 3000).")
@count("--full-steps", 0, 10_000_000, help="Final steps on full 80x80 canvases (default 200).")
@count("--crop", 2, 80, help="Crop size in pixels, even (default 32).")
@count("--full-every", 0, 10_000_000, help="Every n-th crop step on a full canvas (0: none).")
@click.option("--lr", type=Number(0, 1, low_open=True), help="Peak learning rate.")
@count("--warmup", 1, 10_000_000, help="Warm-up steps (default 200).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@count(
    "--eval-count", 1, 1_000_000, help="Validation canvases for the recorded mIoU (default 500)."
)
@count("--checkpoint-every", 0, 10_000_000, 0, help="Write a checkpoint every n steps (0: none).")
@count("--check-count", 1, 500, 50, help="Validation canvases of a checkpoint's quick mIoU.")
@count("--threads", 1, 256, 2, help="torch CPU threads (1 is faster on a loaded machine).")
@switch(
    "--evaluate-only",
    "With --resume: measure the checkpoint's validation mIoU and write it with its weights to "
    "--out, training nothing (a stage stopped after its last checkpoint).",
)
def train_demo(
    out,
    into_package,
    force,
    resume,
    steps,
    full_steps,
    crop,
    full_every,
    lr,
    warmup,
    seed,
    eval_count,
    checkpoint_every,
    check_count,
    threads,
    evaluate_only,
):
    """Train the digits Segmenter (the default model) and write its weights and metadata."""
    from ..demo import train

    if out is not None and into_package:
        raise click.UsageError("--out and --into-package name two places; give one")
    config = {
        k: v
        for k, v in {"crop": crop, "full_every": full_every, "lr": lr, "warmup": warmup}.items()
        if v is not None
    }
    out = train.WEIGHTS_DIR if into_package else (out or train.DEFAULT_OUT)
    command = " ".join(["vitexport"] + sys.argv[1:])
    if evaluate_only:
        if resume is None:
            raise click.UsageError("--evaluate-only needs --resume CHECKPOINT")
        meta = train.evaluate_checkpoint(
            resume,
            out,
            eval_count or train.EVAL_COUNT,
            threads,
            command,
            _progress,
            force,
            into_package,
        )
        click.echo(f"val mIoU {meta['val_miou']:.4f} ({meta['val_count']} canvases)")
        return
    meta = train.train(
        out,
        steps,
        full_steps,
        seed=seed,
        eval_count=eval_count or train.EVAL_COUNT,
        log=_progress,
        threads=threads,
        command=command,
        config=config or None,
        resume=resume,
        every=checkpoint_every,
        check_count=check_count,
        force=force,
        into_package=into_package,
    )
    click.echo(
        f"val mIoU {meta['val_miou']:.4f} ({meta['val_count']} canvases), "
        f"{meta['train_seconds']:.0f} s"
    )
