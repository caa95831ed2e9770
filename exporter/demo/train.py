"""Train the shipped digits Segmenter (`vitexport train-demo`, `python -m exporter.demo.train`).

Attention over the full 40x40 token grid is what makes a step expensive on a CPU, so most steps
train on small 32x32-pixel canvases (1-2 digits, a 16x16 token window). Such a window gets the
matching 16x16 slice of the model's 40x40 position embedding at a random offset, so every
position is trained and the full-size model uses the embedding exactly as learned. The last
`full_steps` steps train on full canvases, the attention span the model is exported with.

Output: `segmenter_digits.safetensors` (the `Segmenter` state dict) and `segmenter_digits.json`
(config, seed, command, wall time, machine load, validation mIoU, code commit); both are
written to temporary names first and renamed at the end, so a failed run leaves neither.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..errors import InputError
from ..models.digits import build_model
from ..models.segmenter import Segmenter
from . import data

NAME = "segmenter_digits"
WEIGHTS_DIR = Path(__file__).parent / "weights"
CONFIG = {
    "dim": 192,
    "depth": 8,
    "heads": 3,
    "patch": 2,
    "decoder_layers": 0,
    "decoder": "linear",
    "stem": "conv",
    "stem_width": 128,
    "canvas": data.CANVAS,
    "crop": 32,
    "crop_digits": [1, 2],
    "batch": 16,
    "full_batch": 4,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup": 200,
}
STEPS, FULL_STEPS = 3000, 200  # the shipped run: 4,916 s on 2 cores (82 min; ~1.1 s a crop step)
EVAL_COUNT = 500  # validation canvases the recorded mIoU is measured on
TEST_COUNT = 100  # the subset whose mIoU the test suite recomputes


def window_forward(model: Segmenter, images: torch.Tensor, offset: tuple[int, int]) -> torch.Tensor:
    """Logits [B, K, h, w] of images smaller than the model's input, placed at token `offset`
    of its position-embedding grid."""
    enc = model.encoder
    B = images.shape[0]
    x = enc.patch_embed.proj(images)
    h, w = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    gh, gw = model.layout.grid
    pos = enc.pos_embed
    patch_pos = (
        pos[:, 1:]
        .reshape(1, gh, gw, -1)[:, offset[0] : offset[0] + h, offset[1] : offset[1] + w]
        .reshape(1, h * w, -1)
    )
    x = torch.cat([enc.cls_token.expand(B, -1, -1) + pos[:, :1], x + patch_pos], 1)
    for blk in enc.blocks:
        x = blk(x)
    masks = model.decoder(enc.norm(x)[:, 1:])
    masks = masks.transpose(1, 2).reshape(B, -1, h, w)
    return F.interpolate(masks, size=images.shape[-2:], mode="bilinear")


@torch.no_grad()
def predict(model: Segmenter, images_u8: np.ndarray, batch: int = 50) -> np.ndarray:
    """Class map uint8 [N, H, W] of uint8 canvases."""
    model.eval()
    out = [
        model(data.to_input(images_u8[i : i + batch])).argmax(1).to(torch.uint8)
        for i in range(0, len(images_u8), batch)
    ]
    return torch.cat(out).numpy()


def evaluate(model: Segmenter, count: int, seed: int = 0) -> float:
    images, labels = data.make_split("val", count, seed)
    return data.miou(predict(model, images), labels)


def _batch(
    step: int, seed: int, size: int, count: int, digits
) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([seed, 2, step])  # 2: neither make_split's train nor val stream
    pool = data.source_indices("train")
    pairs = [data.render(rng, pool, size, tuple(digits)) for _ in range(count)]
    images = np.stack([p[0] for p in pairs])
    labels = torch.as_tensor(np.stack([p[1] for p in pairs])).long()
    return data.to_input(images), labels


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "exporter"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train(
    out: Path,
    steps: int = STEPS,
    full_steps: int = FULL_STEPS,
    seed: int = 0,
    eval_count: int = EVAL_COUNT,
    command: str | None = None,
    log=print,
    config: dict | None = None,
    threads: int = 2,
) -> dict:
    """Train, evaluate on the validation split, write weights + metadata; returns the metadata."""
    for flag, value, low in (
        ("--steps", steps, 1),
        ("--full-steps", full_steps, 0),
        ("--eval-count", eval_count, 1),
        ("--threads", threads, 1),
    ):
        if value < low:
            raise InputError(flag, value, f"an integer >= {low}")
    if Path(out).exists() and not Path(out).is_dir():
        raise InputError("--out", str(out), "a folder (existing or new)", "is a file")
    config = {**CONFIG, **(config or {})}
    # On a quiet 2-core machine two threads run a step in 0.21 s; on a loaded one two OpenMP
    # threads spin-wait for each other (a step took 7.9 s vs 1.3 s with one thread at load 9),
    # so pass --threads 1 when the machine is shared.
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(config)
    model.train()
    decay = [
        p
        for n, p in model.named_parameters()
        if p.ndim >= 2 and "pos_embed" not in n and "cls" not in n
    ]
    rest = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config["weight_decay"]},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=config["lr"],
    )
    total = steps + full_steps
    gh, gw = model.layout.grid
    crop_tokens = config["crop"] // config["patch"]
    load_before, start = _load(), time.time()
    ema = None
    for step in range(total):
        warm = min(1.0, (step + 1) / config["warmup"])
        for g in opt.param_groups:
            g["lr"] = config["lr"] * warm * 0.5 * (1 + math.cos(math.pi * step / total))
        if step < steps:
            x, y = _batch(step, seed, config["crop"], config["batch"], config["crop_digits"])
            rng = np.random.default_rng([seed, 3, step])
            offset = (
                int(rng.integers(0, gh - crop_tokens + 1)),
                int(rng.integers(0, gw - crop_tokens + 1)),
            )
            logits = window_forward(model, x, offset)
        else:
            x, y = _batch(
                step, seed, config["canvas"], config["full_batch"], data.DIGITS_PER_CANVAS
            )
            logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % 50 == 0 or step + 1 == total:
            log(f"step {step + 1}/{total}  loss {ema:.4f}  {time.time() - start:.0f} s")
    train_seconds = time.time() - start
    load_after = _load()
    model.eval()
    log(f"evaluating on {eval_count} validation canvases")
    images, labels = data.make_split("val", eval_count, seed=0)
    pred = predict(model, images)
    meta = {
        "model": NAME,
        "config": config,
        "steps": steps,
        "full_steps": full_steps,
        "seed": seed,
        "command": command or " ".join(["python -m exporter.demo.train"] + sys.argv[1:]),
        "train_seconds": round(train_seconds, 1),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": _commit(),
        "canvas": [config["canvas"], config["canvas"]],
        "num_classes": data.NUM_CLASSES,
        "class_names": list(data.CLASS_NAMES),
        "val_seed": 0,
        "val_count": eval_count,
        "val_miou": round(data.miou(pred, labels), 6),
        "test_count": min(TEST_COUNT, eval_count),
        "test_miou": round(data.miou(pred[:TEST_COUNT], labels[:TEST_COUNT]), 6),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights, info = out / f"{NAME}.safetensors", out / f"{NAME}.json"
    tmp_w, tmp_i = weights.with_name(weights.name + ".tmp"), info.with_name(info.name + ".tmp")
    try:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_w))
        tmp_i.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp_w, weights)
        os.replace(tmp_i, info)
    finally:
        tmp_w.unlink(missing_ok=True)
        tmp_i.unlink(missing_ok=True)
    log(f"val mIoU {meta['val_miou']:.4f} on {eval_count} canvases; wrote {weights} and {info}")
    return meta


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description="Train the digits Segmenter shipped as the default model."
    )
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--steps", type=int, default=STEPS, help="steps on 32x32 canvases")
    p.add_argument(
        "--full-steps", type=int, default=FULL_STEPS, help="final steps on full canvases"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-count", type=int, default=EVAL_COUNT)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    train(a.out, a.steps, a.full_steps, a.seed, a.eval_count, threads=a.threads)


if __name__ == "__main__":
    main()
