"""Accuracy of exported segmentation models: run an ONNX file over an eval set, compute mIoU.

The eval set is an `.npz` with `images` float32 [N, 3, H, W] (already normalised as the model
expects) and `labels` integer [N, H, W] (class ids, 255 = ignore). mIoU pools the pixels of all
images into one confusion matrix (as segmentation benchmarks do) and averages IoU over the
classes present in the labels or the predictions.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError
from .limits import MAX_EVAL_BYTES, available_memory, check_npz
from .paths import check_regular
from .runtime import input_name, onnx_session

IGNORE = 255
DYNAMIC_BATCH = 8  # images per run when the export has a dynamic batch dimension
FLAG = "--eval-data"


@dataclass
class EvalSet:
    images: np.ndarray  # float32 [N, 3, H, W]
    labels: np.ndarray  # int64 [N, H, W]
    source: str  # what the report names as the data

    def __len__(self) -> int:
        return len(self.images)


def load_eval_set(
    path, num_classes: int, image_size: tuple[int, int], count: int | None = None
) -> EvalSet:
    """Read and check an eval `.npz`; every problem is an `InputError` naming --eval-data."""
    path = Path(path)
    allowed = (
        f"an .npz with images float32 [N, 3, {image_size[0]}, {image_size[1]}] and "
        f"labels int [N, {image_size[0]}, {image_size[1]}] in 0..{num_classes - 1} or "
        f"{IGNORE}"
    )
    if path.is_dir():
        raise InputError(FLAG, str(path), allowed, "is a folder")
    check_regular(path, FLAG)  # a FIFO or device would hang the zip reader
    if not zipfile.is_zipfile(path):
        raise InputError(FLAG, str(path), allowed, "not an .npz (zip) file")
    # Shapes from the headers first: no zip bomb or header claiming a million images is unpacked.
    shapes = check_npz(path, FLAG, max_bytes=min(MAX_EVAL_BYTES, available_memory() // 2))
    H, W = image_size
    if "images" not in shapes or "labels" not in shapes:
        raise InputError(
            FLAG, str(path), allowed, f"keys {sorted(shapes)}, needs images and labels"
        )
    (ishape, _), (lshape, _) = shapes["images"], shapes["labels"]
    if len(ishape) != 4 or ishape[1:] != (3, H, W):
        raise InputError(FLAG, str(path), allowed, f"images have shape {list(ishape)}")
    if lshape != (ishape[0], H, W):
        raise InputError(
            FLAG, str(path), allowed, f"labels have shape {list(lshape)} for {ishape[0]} images"
        )
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputError(FLAG, str(path), allowed, "a single array, not an .npz")
        with data:
            if "images" not in data or "labels" not in data:
                raise InputError(
                    FLAG, str(path), allowed, f"keys {sorted(data.files)}, needs images and labels"
                )
            images, labels = data["images"], data["labels"]
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(FLAG, str(path), allowed, f"not a readable .npz ({err})") from None
    return check_eval_set(images, labels, num_classes, image_size, count, str(path))


def check_eval_set(
    images, labels, num_classes: int, image_size: tuple[int, int], count: int | None, source: str
) -> EvalSet:
    H, W = image_size
    allowed = (
        f"images float [N, 3, {H}, {W}] and labels int [N, {H}, {W}] in "
        f"0..{num_classes - 1} or {IGNORE}"
    )

    def bad(reason):
        return InputError(FLAG, source, allowed, reason)

    if images.ndim != 4 or images.shape[1:] != (3, H, W):
        raise bad(f"images have shape {list(images.shape)}")
    if not np.issubdtype(images.dtype, np.floating):
        raise bad(f"images are {images.dtype}")
    if labels.shape != (images.shape[0], H, W):
        raise bad(f"labels have shape {list(labels.shape)} for {images.shape[0]} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise bad(f"labels are {labels.dtype}")
    if len(images) == 0:
        raise bad("no images")
    if count is not None:
        if not 1 <= count <= len(images):
            raise InputError(
                "--eval-count",
                count,
                f"an integer in 1..{len(images)}",
                f"{source} holds {len(images)} images",
            )
        images, labels = images[:count], labels[:count]
    wrong = (labels != IGNORE) & ((labels < 0) | (labels >= num_classes))
    if wrong.any():
        raise bad(f"label {int(labels[wrong][0])} is not a class of a {num_classes}-class model")
    if not np.isfinite(images).all():
        raise bad("images hold NaN or infinity")
    if (labels == IGNORE).all():  # every pixel ignored: an accuracy of nothing
        raise bad(f"every label is {IGNORE} (ignored): no pixel to evaluate")
    return EvalSet(np.ascontiguousarray(images, dtype=np.float32), labels.astype(np.int64), source)


def confusion(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] pixel counts, rows = label, columns = prediction."""
    keep = labels != IGNORE
    index = labels[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in labels or predictions (nan when none is)."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


def evaluate_onnx(
    path: Path,
    data: EvalSet,
    num_classes: int,
    batch: int | None,
    progress: Callable[[str], None] = lambda text: None,
    name: str = "",
) -> dict:
    """mIoU of the ONNX model at `path` over `data` in ONNX Runtime (CPU).

    `batch` is the export's fixed batch size, or None for a dynamic batch dimension; a last
    partial batch of a fixed-batch model is padded with copies of its last image.
    """
    sess = onnx_session(Path(path))
    step = DYNAMIC_BATCH if batch is None else batch
    cm = np.zeros((num_classes, num_classes), np.int64)
    n = len(data)
    report_every = max(1, n // 10) if n >= 20 else n  # about ten lines for a long run
    done_reported = 0
    for start in range(0, n, step):
        images = data.images[start : start + step]
        real = len(images)
        if batch is not None and real < batch:
            images = np.concatenate([images, np.repeat(images[-1:], batch - real, axis=0)])
        logits = sess.run(None, {input_name(sess): images})[0][:real]
        cm += confusion(logits.argmax(axis=1), data.labels[start : start + real], num_classes)
        done = start + real
        if done - done_reported >= report_every or done == n:
            progress(f"{name}: {done}/{n} images")
            done_reported = done
    return {"miou": miou(cm), "pixel_accuracy": float(np.trace(cm) / max(1, cm.sum())), "images": n}


def accuracy_entry(
    baseline: dict, reduced: dict, source: str, runtime: str = "onnxruntime"
) -> dict:
    """The report's "accuracy" section: both mIoUs and retention = reduced / baseline."""
    b, r = baseline["miou"], reduced["miou"]
    return {
        "metric": "mIoU",
        "baseline": b,
        "reduced": r,
        "retention": r / b if b and np.isfinite(b) else None,
        "pixel_accuracy": {
            "baseline": baseline["pixel_accuracy"],
            "reduced": reduced["pixel_accuracy"],
        },
        "images": reduced["images"],
        "data": source,
        "runtime": runtime,
    }
