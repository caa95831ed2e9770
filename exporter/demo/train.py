"""Train the shipped digits Segmenter (`vitexport train-demo`, `python -m exporter.demo.train`).

Attention over the full 40x40 token grid is what makes a step expensive on a CPU, so crop steps
train on smaller canvases (`crop` pixels, `crop_digits` digits). Such a window gets the matching
slice of the model's 40x40 position embedding at a random offset, so every position is trained
and the full-size model uses the embedding exactly as learned. Every `full_every`-th step (0:
none) and the last `full_steps` steps train on full canvases, the attention span the model is
exported with (a model trained on windows alone loses mIoU on full canvases: the shipped
weights score 0.72 on 32x32 windows and 0.55 on full canvases).

A run is a *stage*: `steps` + `full_steps` steps under one learning-rate schedule (warm-up, then
cosine to 0). Every `every` steps the stage writes a checkpoint (weights, metadata with the
steps so far and the mIoU on the first `check_count` validation canvases, and the optimizer's
moments), so it can be stopped at any time. `resume` continues from a checkpoint:
- a stage stopped before its end continues where it stopped (same schedule, same batches), when
  neither `steps` nor `full_steps` is given;
- otherwise a new stage of `steps` + `full_steps` steps starts from its weights, on batches no
  earlier stage saw, with the checkpoint's configuration updated by `config`.
Restored: the weights, the optimizer's moments and step counts when their file is beside the
checkpoint (else they start at zero and the warm-up covers that), the schedule position of an
unfinished stage, the step counts and wall time so far, the checks so far. Not restored: the
random state of anything but the batches (batches and crop offsets are functions of the seed and
the step, so nothing else is random), and the architecture: it is the checkpoint's.

Output in `out`: `segmenter_digits.safetensors` (the `Segmenter` state dict),
`segmenter_digits.json` (config, seed, command, steps, wall time, machine load, checks, final
validation mIoU, code commit) and, during a run, `segmenter_digits.optim.safetensors`. Each is
written to a temporary name of the tool's own and renamed; the metadata, written last, records
the weights' sha256, so a reader can tell a pair torn by a crash (resume refuses it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import paths
from ..errors import InputError
from ..models.digits import build_model
from ..models.segmenter import Segmenter
from . import DEFAULT_OUT, data

NAME = "segmenter_digits"
WEIGHTS_DIR = Path(__file__).parent / "weights"
FILES = (f"{NAME}.safetensors", f"{NAME}.json", f"{NAME}.optim.safetensors")
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
    "full_every": 0,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup": 200,
}
# What a checkpoint fixes: a resumed stage may change the rest of CONFIG, not these.
ARCHITECTURE = ("dim", "depth", "heads", "patch", "decoder_layers", "decoder", "stem")
ARCHITECTURE += ("stem_width", "canvas")
STEPS, FULL_STEPS = 3000, 200  # the shipped run: 4,916 s on 2 cores (82 min; ~1.1 s a crop step)
EVAL_COUNT = 500  # validation canvases the recorded mIoU is measured on
TEST_COUNT = 100  # the subset whose mIoU the test suite recomputes
CHECK_COUNT = 50  # validation canvases of a checkpoint's quick mIoU (~30 s at one thread)


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
    was_training = model.training
    model.eval()
    out = [
        model(data.to_input(images_u8[i : i + batch])).argmax(1).to(torch.uint8)
        for i in range(0, len(images_u8), batch)
    ]
    model.train(was_training)
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _staged(path: Path, write) -> Path:
    """`write(tmp)` to a temporary name of the tool's own beside `path` (created exclusively,
    so no file of the user's is taken over); returns it, to be renamed to `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".vitexport-{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the result private
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _is_package(folder: Path) -> bool:
    return folder.resolve() == WEIGHTS_DIR.resolve()


def check_out(out: Path, force: bool, into_package: bool, resume: Path | None = None) -> Path:
    """The output folder, refused before any work when it is a file, the package's shipped
    weights without `into_package`, or holds files a run would replace without `force` (a stage
    resumed from the same folder may replace its own checkpoint)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("--out", str(out), "a folder (existing or new)", "is a file")
    if _is_package(out) and not into_package:
        raise InputError(
            "--out",
            str(out),
            "a folder outside the installed package (or --into-package)",
            "it holds the shipped weights every build uses",
        )
    if out.is_dir() and not force:
        same = resume is not None and _checkpoint_files(resume)[0].parent.resolve() == (
            out.resolve()
        )
        taken = [name for name in FILES if (out / name).exists() or (out / name).is_symlink()]
        if taken and not same:
            raise InputError(
                "--out",
                str(out),
                "a folder without segmenter_digits.* files, or --force to replace them",
                f"holds {', '.join(taken)}",
            )
    return out


def _checkpoint_files(resume: Path) -> tuple[Path, Path, Path]:
    """(weights, metadata, optimizer) of a checkpoint given as its folder or its weights."""
    resume = Path(resume)
    weights = resume / f"{NAME}.safetensors" if resume.is_dir() else resume
    stem = weights.name.removesuffix(".safetensors")
    return (
        weights,
        weights.with_name(stem + ".json"),
        weights.with_name(stem + ".optim.safetensors"),
    )


def _read_checkpoint(resume: Path) -> tuple[dict, dict, Path | None]:
    """(metadata, state dict, optimizer file or None) of a checkpoint, refused with one line
    when a file is missing or unreadable, or the weights are not the ones its metadata names."""
    weights, info, optim = _checkpoint_files(resume)
    paths.check_regular(weights, "--resume", limit=1 << 30)
    try:
        meta = json.loads(paths.read_text(info, "--resume", follow=True))
    except json.JSONDecodeError as err:
        raise InputError("--resume", str(info), "the JSON metadata train-demo wrote", str(err))
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise InputError("--resume", str(info), "the metadata train-demo wrote", "no config")
    recorded = meta.get("weights_sha256")
    if recorded is not None and recorded != _sha256(weights):
        raise InputError(
            "--resume",
            str(weights),
            "weights whose sha256 is the one their metadata records",
            "they differ (a checkpoint torn by a crash, or edited)",
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError("--resume", str(weights), "a safetensors file", str(err)) from None
    bad = sorted({k for k, v in state.items() if v.dtype != torch.float32})
    if bad:
        raise InputError("--resume", str(weights), "float32 tensors", f"{bad[0]} is not")
    opt = meta.get("optimizer")
    usable = opt is not None and optim.is_file() and opt.get("sha256") == _sha256(optim)
    return meta, state, optim if usable else None


def _stage_record(meta: dict) -> dict:
    keys = ("steps", "full_steps", "steps_done", "config", "seed", "command", "train_seconds")
    keys += ("torch_threads", "commit", "val_count", "val_miou")
    return {k: meta.get(k) for k in keys if k in meta}


def _optimizer(model: Segmenter, config: dict) -> torch.optim.AdamW:
    decay = [
        p
        for n, p in model.named_parameters()
        if p.ndim >= 2 and "pos_embed" not in n and "cls" not in n
    ]
    rest = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config["weight_decay"]},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=config["lr"],
    )


def _optimizer_tensors(model: Segmenter, opt: torch.optim.Optimizer) -> dict:
    out = {}
    for name, p in model.named_parameters():
        state = opt.state.get(p)
        if state:
            out[f"exp_avg.{name}"] = state["exp_avg"].contiguous()
            out[f"exp_avg_sq.{name}"] = state["exp_avg_sq"].contiguous()
            out[f"step.{name}"] = torch.as_tensor(state["step"], dtype=torch.float32).reshape(1)
    return out


def _restore_optimizer(model: Segmenter, opt: torch.optim.Optimizer, path: Path) -> bool:
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    if {k.split(".", 1)[1] for k in tensors} - set(params):
        return False
    for name, p in params.items():
        if f"exp_avg.{name}" in tensors:
            if tensors[f"exp_avg.{name}"].shape != p.shape:
                return False
            opt.state[p] = {
                "step": tensors[f"step.{name}"].reshape(()).clone(),
                "exp_avg": tensors[f"exp_avg.{name}"].clone(),
                "exp_avg_sq": tensors[f"exp_avg_sq.{name}"].clone(),
            }
    return True


def _check_config(config: dict) -> None:
    for key in ("crop", "batch", "full_batch", "warmup"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise InputError(f"config {key}", config[key], "an integer >= 1")
    if config["crop"] % config["patch"] or config["crop"] > config["canvas"]:
        raise InputError(
            "--crop",
            config["crop"],
            f"a multiple of {config['patch']} up to {config['canvas']}",
        )
    if not isinstance(config["full_every"], int) or config["full_every"] < 0:
        raise InputError("--full-every", config["full_every"], "an integer >= 0")
    if not (isinstance(config["lr"], (int, float)) and 0 < config["lr"] <= 1):
        raise InputError("--lr", config["lr"], "a number in (0, 1]")


def train(*args, **kwargs) -> dict:
    """Train a stage (see the module's doc), evaluate on the validation split, write weights +
    metadata; returns the metadata. Arguments as `_train`'s; the caller's torch thread count
    is restored after."""
    previous = torch.get_num_threads()
    try:
        return _train(*args, **kwargs)
    finally:
        torch.set_num_threads(previous)


def _train(
    out: Path,
    steps: int | None = None,
    full_steps: int | None = None,
    seed: int = 0,
    eval_count: int = EVAL_COUNT,
    command: str | None = None,
    log=print,
    config: dict | None = None,
    threads: int = 2,
    resume: Path | None = None,
    every: int = 0,
    check_count: int = CHECK_COUNT,
    force: bool = False,
    into_package: bool = False,
) -> dict:
    for flag, value, low in (
        ("--steps", steps if steps is not None else 1, 1),
        ("--full-steps", full_steps if full_steps is not None else 0, 0),
        ("--eval-count", eval_count, 1),
        ("--threads", threads, 1),
        ("--checkpoint-every", every, 0),
        ("--check-count", check_count, 1),
    ):
        if value < low:
            raise InputError(flag, value, f"an integer >= {low}")
    out = check_out(out, force, into_package, resume)
    prior: dict = {}
    state = optim_file = None
    if resume is not None:
        prior, state, optim_file = _read_checkpoint(resume)
        base_config = {**CONFIG, **prior["config"]}
        changed = [k for k in ARCHITECTURE if k in (config or {}) and config[k] != base_config[k]]
        if changed:
            raise InputError(
                f"config {changed[0]}",
                config[changed[0]],
                f"the checkpoint's {base_config[changed[0]]}",
                "a resumed run keeps the architecture",
            )
    else:
        base_config = dict(CONFIG)
    planned = prior.get("steps", 0) + prior.get("full_steps", 0)
    unfinished = resume is not None and prior.get("steps_done", planned) < planned
    if unfinished and steps is None and full_steps is None and not config:
        # Continue the stopped stage: its plan, seed, schedule position and batches.
        config, steps, full_steps = base_config, prior["steps"], prior["full_steps"]
        seed, start_step = prior.get("seed", seed), prior["steps_done"]
        base = prior["total_steps"] - start_step
        stages, seconds_before = list(prior.get("stages", [])), prior.get("train_seconds", 0.0)
    else:
        config = {**base_config, **(config or {})}
        steps = STEPS if steps is None else steps
        full_steps = FULL_STEPS if full_steps is None else full_steps
        start_step, seconds_before = 0, 0.0
        base = prior.get("total_steps", planned) if resume is not None else 0
        stages = list(prior.get("stages", []))
        if resume is not None:
            stages.append({**_stage_record(prior), "total_steps": base})
    _check_config(config)
    # On a quiet 2-core machine two threads run a step in 0.21 s; on a loaded one two OpenMP
    # threads spin-wait for each other (a step took 7.9 s vs 1.3 s with one thread at load 9),
    # so pass --threads 1 when the machine is shared.
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(config)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(
                "--resume",
                str(resume),
                "weights of the digits Segmenter its metadata describes",
                f"{len(missing)} missing and {len(unexpected)} unexpected tensors",
            )
    model.train()
    opt = _optimizer(model, config)
    if optim_file is not None and _restore_optimizer(model, opt, optim_file):
        log(f"restored the optimizer's moments from {optim_file}")
    elif resume is not None:
        log("no optimizer state beside the checkpoint: moments start at zero (warm-up)")
    total = steps + full_steps
    gh, gw = model.layout.grid
    crop_tokens = config["crop"] // config["patch"]
    load_before, start = _load(), time.time()
    checks = list(prior.get("checks", []))
    common = {
        "model": NAME,
        "config": config,
        "steps": steps,
        "full_steps": full_steps,
        "seed": seed,
        "command": command or " ".join(["python -m exporter.demo.train"] + sys.argv[1:]),
        "load_average_before": prior.get("load_average_before", load_before)
        if start_step
        else load_before,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": _commit(),
        "canvas": [config["canvas"], config["canvas"]],
        "num_classes": data.NUM_CLASSES,
        "class_names": list(data.CLASS_NAMES),
        "resumed_from": str(resume) if resume is not None else None,
        "stages": stages,
        "check_count": check_count,
        "val_seed": 0,
    }

    def progress(done: int) -> dict:
        return {
            "steps_done": done,
            "total_steps": base + done,
            "train_seconds": round(seconds_before + time.time() - start, 1),
            "load_average_after": _load(),
            "checks": checks,
        }

    ema = None
    for step in range(start_step, total):
        warm = min(1.0, (step + 1) / config["warmup"])
        for g in opt.param_groups:
            g["lr"] = config["lr"] * warm * 0.5 * (1 + math.cos(math.pi * step / total))
        index = base + step  # batches no earlier stage saw
        every_full = config["full_every"] and (step + 1) % config["full_every"] == 0
        if step < steps and not every_full:
            x, y = _batch(index, seed, config["crop"], config["batch"], config["crop_digits"])
            rng = np.random.default_rng([seed, 3, index])
            offset = (
                int(rng.integers(0, gh - crop_tokens + 1)),
                int(rng.integers(0, gw - crop_tokens + 1)),
            )
            logits = window_forward(model, x, offset)
        else:
            x, y = _batch(
                index, seed, config["canvas"], config["full_batch"], data.DIGITS_PER_CANVAS
            )
            logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % 50 == 0 or step + 1 == total:
            log(f"step {step + 1}/{total}  loss {ema:.4f}  {time.time() - start:.0f} s")
        if every and (step + 1) % every == 0 and step + 1 < total:
            check = round(evaluate(model, check_count), 6)
            checks.append([base + step + 1, check])
            log(f"step {step + 1}/{total}  mIoU {check:.4f} on {check_count} val canvases")
            _save(out, model, {**common, **progress(step + 1), "final": False}, opt)
    log(f"evaluating on {eval_count} validation canvases")
    images, labels = data.make_split("val", eval_count, seed=0)
    pred = predict(model, images)
    meta = {
        **common,
        **progress(total),
        "final": True,
        "val_count": eval_count,
        "val_miou": round(data.miou(pred, labels), 6),
        "test_count": min(TEST_COUNT, eval_count),
        "test_miou": round(data.miou(pred[:TEST_COUNT], labels[:TEST_COUNT]), 6),
    }
    if eval_count >= check_count:
        check = data.miou(pred[:check_count], labels[:check_count])
        meta["checks"] = checks + [[meta["total_steps"], round(check, 6)]]
    # The moments stay beside a run's final weights (a later stage resumes with them), but
    # never go into the installed package.
    meta = _save(out, model, meta, None if into_package else opt)
    log(f"val mIoU {meta['val_miou']:.4f} on {eval_count} canvases; wrote {out}")
    return meta


def _save(out: Path, model: Segmenter, meta: dict, opt) -> dict:
    """Write the weights, the optimizer's moments (or, without `opt`, remove a stale file of
    them) and the metadata naming both by sha256: all to temporary names first, so a failure
    leaves the folder as it was; then renamed, the metadata last, so a reader sees each file
    whole and a pair torn by a crash between the renames is told by the weights' sha256."""
    out.mkdir(parents=True, exist_ok=True)
    weights, info, optim = (out / name for name in FILES)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    staged: list[tuple[Path, Path]] = []
    try:
        staged.append((_staged(weights, lambda tmp: save_file(tensors, str(tmp))), weights))
        meta = {**meta, "weights_sha256": _sha256(staged[0][0]), "optimizer": None}
        if opt is not None:
            moments = _optimizer_tensors(model, opt)
            staged.append((_staged(optim, lambda tmp: save_file(moments, str(tmp))), optim))
            meta["optimizer"] = {"file": optim.name, "sha256": _sha256(staged[1][0])}
        text = json.dumps(meta, indent=2) + "\n"
        staged.append((_staged(info, lambda tmp: tmp.write_text(text)), info))
        for tmp, path in staged:
            os.replace(tmp, path)
        if opt is None:
            optim.unlink(missing_ok=True)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return meta


def evaluate_checkpoint(
    resume: Path,
    out: Path,
    eval_count: int = EVAL_COUNT,
    threads: int = 2,
    command: str | None = None,
    log=print,
    force: bool = False,
    into_package: bool = False,
) -> dict:
    """Measure a checkpoint's mIoU on the first `eval_count` validation canvases (and the first
    100) and write its weights with that in the metadata to `out`: how a stage stopped after
    its last checkpoint gets the numbers a finished one records. Nothing is trained; the
    optimizer's moments are not copied (a stage resumed from `out` starts them at zero)."""
    if eval_count < 1:
        raise InputError("--eval-count", eval_count, "an integer >= 1")
    out = check_out(out, force, into_package, resume)
    prior, state, _ = _read_checkpoint(resume)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model({**CONFIG, **prior["config"]})
        model.load_state_dict(state)
        start, load = time.time(), _load()
        log(f"evaluating {resume} on {eval_count} validation canvases")
        images, labels = data.make_split("val", eval_count, seed=0)
        pred = predict(model, images)
        meta = {
            **prior,
            "val_seed": 0,
            "val_count": eval_count,
            "val_miou": round(data.miou(pred, labels), 6),
            "test_count": min(TEST_COUNT, eval_count),
            "test_miou": round(data.miou(pred[:TEST_COUNT], labels[:TEST_COUNT]), 6),
            "evaluated": {
                "from": str(resume),
                "command": command or " ".join(["python -m exporter.demo.train"] + sys.argv[1:]),
                "seconds": round(time.time() - start, 1),
                "load_average_before": load,
                "torch_threads": torch.get_num_threads(),
                "commit": _commit(),
            },
        }
        meta = _save(out, model, meta, None)
    finally:
        torch.set_num_threads(previous)
    log(f"val mIoU {meta['val_miou']:.4f} on {eval_count} canvases; wrote {out}")
    return meta


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description="Train the digits Segmenter shipped as the default model."
    )
    p.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT}")
    p.add_argument("--into-package", action="store_true", help="write the shipped weights")
    p.add_argument("--force", action="store_true", help="replace segmenter_digits.* in --out")
    p.add_argument("--resume", type=Path, default=None)
    p.add_argument("--steps", type=int, default=None, help="crop steps (default 3000)")
    p.add_argument("--full-steps", type=int, default=None, help="final full-canvas steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-count", type=int, default=EVAL_COUNT)
    p.add_argument("--check-count", type=int, default=CHECK_COUNT)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--config", type=json.loads, default=None, help="JSON overrides of CONFIG")
    p.add_argument("--evaluate-only", action="store_true", help="see evaluate_checkpoint")
    a = p.parse_args(argv)
    if a.out is not None and a.into_package:
        p.error("--out and --into-package name two places; give one")
    out = WEIGHTS_DIR if a.into_package else (a.out or DEFAULT_OUT)
    # SIGTERM unwinds like Ctrl-C, so temporary files are removed (checkpoints stay).
    signal.signal(signal.SIGTERM, _interrupt)
    if a.evaluate_only:
        if a.resume is None:
            p.error("--evaluate-only needs --resume CHECKPOINT")
        evaluate_checkpoint(
            a.resume, out, a.eval_count, a.threads, force=a.force, into_package=a.into_package
        )
        return
    train(
        out,
        a.steps,
        a.full_steps,
        a.seed,
        a.eval_count,
        threads=a.threads,
        config=a.config,
        resume=a.resume,
        every=a.checkpoint_every,
        check_count=a.check_count,
        force=a.force,
        into_package=a.into_package,
    )


if __name__ == "__main__":
    main()
