"""Digits segmentation: a small real dense-prediction task made from bundled data.

scikit-learn ships 1,797 real handwritten digits of 8x8 pixels (`load_digits`). A canvas is a
textured colour background with 2 to 4 of them pasted at random places and sizes; every pixel
is labelled with its digit's class (1..10 for "0".."9") or background (0). Nothing is stored:
every canvas is a function of (seed, split, index), so the first k canvases of a split are the
same whatever `count` is asked for.

Footprint: a digit is scaled bilinearly from 8x8 to its size; its intensity (0..16 in the source)
divided by 16 is its opacity when painted over the canvas, and its label covers the pixels where
that opacity is >= THRESHOLD (0.3). Overlaps: a later digit is painted over and labelled over
the earlier ones. The split is by source image: every fifth digit of each class is in "val", the rest in
"train", so no handwritten sample appears in both.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

NUM_CLASSES = 11
CLASS_NAMES = ("background",) + tuple(str(d) for d in range(10))
IGNORE = 255
CANVAS = 80  # pixels per side; with patch 2 the model sees a 40x40 token grid
DIGIT_SIZES = (20, 30)  # digit height in pixels, inclusive range
DIGITS_PER_CANVAS = (3, 6)  # inclusive
# Opacity from which a pixel belongs to the digit. With 20-30 px digits and 0.3, a model that
# predicts every 2x2 patch perfectly and upsamples bilinearly reaches mIoU 0.956 (0.888 with
# 14-24 px digits at 0.5): thin strokes would cap what any patch-2 model can score.
THRESHOLD = 0.3
MEAN, STD = 0.5, 0.5  # input normalisation: uint8 -> [-1, 1]
SPLITS = ("train", "val")
DEFAULT_COUNT = {"train": 4000, "val": 500}


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # deferred: the model registry reads the constants

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


@lru_cache(maxsize=2)
def source_indices(split: str) -> np.ndarray:
    """Indices into `load_digits()` of the source digits of a split (disjoint, class-balanced)."""
    _check_split(split)
    _, target = _digits()
    val = np.concatenate([np.flatnonzero(target == c)[::5] for c in range(10)])
    if split == "val":
        return np.sort(val)
    return np.setdiff1d(np.arange(len(target)), val)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a 2-D array (pixel centres aligned, edges clamped)."""

    def axis(n_out, n_in):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (x - lo).astype(np.float32)

    r0, r1, rw = axis(h, img.shape[0])
    c0, c1, cw = axis(w, img.shape[1])
    rows = img[r0] * (1 - rw[:, None]) + img[r1] * rw[:, None]
    return rows[:, c0] * (1 - cw) + rows[:, c1] * cw


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour noise + soft blobs + pixel noise, values in about [0, 0.6]."""
    cells = int(rng.integers(3, 9))
    coarse = rng.uniform(0.05, 0.45, (cells, cells, 3)).astype(np.float32)
    img = np.stack([_resize(coarse[..., c], size, size) for c in range(3)], -1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(2, 7))):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(size / 16, size / 5)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        img += blob * rng.uniform(-0.2, 0.2, 3).astype(np.float32)
    img += rng.normal(0, 0.04, img.shape).astype(np.float32)
    return img


def render(
    rng: np.random.Generator,
    pool: np.ndarray,
    size: int,
    digits: tuple[int, int] = DIGITS_PER_CANVAS,
) -> tuple[np.ndarray, np.ndarray]:
    """One canvas: (image uint8 [size, size, 3], label uint8 [size, size])."""
    images, target = _digits()
    img = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    lo, hi = DIGIT_SIZES
    for _ in range(int(rng.integers(digits[0], digits[1] + 1))):
        k = int(pool[rng.integers(len(pool))])
        h = min(int(rng.integers(lo, hi + 1)), size)
        w = min(max(4, round(h * rng.uniform(0.7, 1.0))), size)
        alpha = np.clip(_resize(images[k], h, w), 0, 1)
        # A few tries to keep digits from hiding each other; overlap stays possible.
        for _ in range(8):
            y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            if (label[y : y + h, x : x + w][alpha >= THRESHOLD] > 0).mean() < 0.1:
                break
        colour = rng.uniform(0.55, 1.0, 3).astype(np.float32)
        colour[rng.integers(3)] = rng.uniform(0.85, 1.0)
        a = alpha[..., None]
        img[y : y + h, x : x + w] = img[y : y + h, x : x + w] * (1 - a) + colour * a
        label[y : y + h, x : x + w][alpha >= THRESHOLD] = target[k] + 1
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), label


def make_split(
    split: str, count: int | None = None, seed: int = 0, size: int = CANVAS
) -> tuple[np.ndarray, np.ndarray]:
    """`count` canvases of a split: images uint8 [N, size, size, 3], labels uint8 [N, size, size].

    Canvas i depends only on (seed, split, i, size). `count` defaults to 4000 (train) / 500 (val).
    """
    _check_split(split)
    count = DEFAULT_COUNT[split] if count is None else int(count)
    pool = source_indices(split)
    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.empty((count, size, size), np.uint8)
    for i in range(count):
        rng = np.random.default_rng([int(seed), SPLITS.index(split), i])
        images[i], labels[i] = render(rng, pool, size)
    return images, labels


def to_input(images) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] normalised as the model was trained."""
    import torch  # deferred: the model registry reads this module's constants

    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float()
    return (x / 255.0 - MEAN) / STD


def save_eval_data(path, split: str = "val", count: int | None = None, seed: int = 0) -> Path:
    """Write an `.npz` for `vitexport build --eval-data`: images float32 [N, 3, H, W] (already
    normalised by `to_input`), labels int64 [N, H, W]. Written whole or not at all."""
    images, labels = make_split(split, count, seed)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, images=to_input(images).numpy(), labels=labels.astype(np.int64))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def confusion(
    pred: np.ndarray, labels: np.ndarray, num_classes: int = NUM_CLASSES, ignore: int = IGNORE
) -> np.ndarray:
    """[num_classes, num_classes] pixel counts, rows = label, cols = prediction; `ignore`
    pixels skipped."""
    pred, labels = np.asarray(pred).reshape(-1), np.asarray(labels).reshape(-1)
    if pred.shape != labels.shape:
        raise ValueError(f"pred and labels differ in size: {pred.size} vs {labels.size}")
    keep = labels != ignore
    pred, labels = pred[keep].astype(np.int64), labels[keep].astype(np.int64)
    if pred.size and (
        pred.min() < 0
        or pred.max() >= num_classes
        or labels.min() < 0
        or labels.max() >= num_classes
    ):
        raise ValueError(f"class ids must be in [0, {num_classes}) or {ignore} (labels)")
    return np.bincount(labels * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def miou(
    pred: np.ndarray, labels: np.ndarray, num_classes: int = NUM_CLASSES, ignore: int = IGNORE
) -> float:
    """Mean intersection over union over the whole set.

    Pixels are pooled over all images (one confusion matrix, as segmentation benchmarks do, not
    a mean of per-image scores); pixels labelled `ignore` do not count. The mean is over the
    classes present in the labels or in the predictions (a class absent from both is skipped,
    a class only predicted counts with IoU 0). Returns nan when no pixel counts.
    """
    cm = confusion(pred, labels, num_classes, ignore)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    if not present.any():
        return float("nan")
    return float((tp[present] / union[present]).mean())
