"""Resources bounded before they are allocated: a build's peak memory, .npz contents, images.

The memory estimate is deliberately simple and errs high: attention scores and their softmax
([B, heads, N, N] each, float32, or per window for windowed backbones), a dozen activation
copies [B, N, dim] (MLP hidden, q/k/v, residuals), the weights held four times (PyTorch, the
exported file, ONNX Runtime's copy, the baseline) and the eval images. ONNX Runtime allocates
the whole attention matrix of a block at once, which is what fails first on large grids.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy
from PIL import Image

from .config import ModelSpec
from .errors import InputError
from .models import entry_of
from .paths import check_regular

FLOAT = 4
WEIGHT_COPIES = 4
ACTIVATION_COPIES = 12
ATTENTION_COPIES = 2
# Pixels per image side anywhere a size is given (--img-size, an npz's images): large enough for
# every paper setting (DPT/Segmenter at 640-1024), small enough that a size alone allocates nothing
# absurd before the memory estimate.
MAX_SIDE = 8192
# --image: Pillow refuses to decode beyond this many pixels (its DecompressionBomb guard).
MAX_IMAGE_PIXELS = 64_000_000
# --eval-data: arrays beyond this many bytes are refused from their headers, before reading.
MAX_EVAL_BYTES = 8 << 30
MAX_NPZ_MEMBERS = 16


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(flag: str, text) -> int:
    """ "24G", "512M", "1.5T" or a number of GiB into bytes (bounded: 1 MiB .. 1 PiB)."""
    m = _SIZE.match(str(text))
    allowed = "a size like 16G, 512M or 1.5T (1M to 1024T)"
    if not m:
        raise InputError(flag, text, allowed, "not a size")
    scale = {"": 1 << 30, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    value = int(float(m.group(1)) * scale[m.group(2).lower()])
    if not (1 << 20) <= value <= (1 << 50):
        raise InputError(flag, text, allowed, "out of range")
    return value


def available_memory() -> int:
    """Bytes this process may still use: MemAvailable, capped by a cgroup limit if there is one."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, avail)


def _shape_only_model(spec):
    """The model of `spec` with shape-only (meta) tensors: its layout and size cost nothing.
    None when the model cannot be built that way; the real build then reports the problem."""
    entry = entry_of(spec.name)  # an unknown name is an InputError here already
    bare = ModelSpec(spec.name, None, spec.img_size, spec.num_classes)
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            return entry.build(bare)
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - an estimate only; the build itself will say what is wrong
        return None


def estimate_bytes(model, batch: int, eval_images: int = 0) -> dict:
    """The parts of a build's peak memory for `model` at batch `batch`, in bytes."""
    layout = model.layout
    params = sum(p.numel() for p in model.parameters())
    attention, activations = (FLOAT * n for n in model.peak_elements(batch))
    h, w = layout.image_size
    parts = {
        "attention": ATTENTION_COPIES * attention,
        "activations": ACTIVATION_COPIES * activations,
        "weights": WEIGHT_COPIES * params * FLOAT,
        "eval data": eval_images * h * w * (3 * FLOAT + 8),
    }
    parts["total"] = sum(parts.values())
    return parts


def check_build_memory(settings, max_memory: int | None = None) -> int | None:
    """Refuse a build whose estimated peak memory exceeds what the machine has (or `max_memory`
    bytes, --max-memory); return the estimate (None when it could not be made)."""
    if settings.model.img_size is not None:
        check_side("--img-size", settings.model.img_size)
    model = _shape_only_model(settings.model)
    if model is None:
        return None
    eval_images = check_eval_count(settings)
    parts = estimate_bytes(model, max(1, settings.batch), eval_images)
    limit = available_memory() if max_memory is None else max_memory
    if parts["total"] > limit:
        h, w = model.layout.image_size
        biggest = max((k for k in parts if k != "total"), key=parts.get)
        source = "--max-memory" if max_memory is not None else "available memory"
        if biggest == "eval data":  # the flag that asks for it is the one to name
            raise InputError(
                "--eval-count",
                eval_images,
                f"fewer images, whose build fits in {size_text(limit)} ({source})",
                f"needs about {size_text(parts['total'])} (eval data {size_text(parts[biggest])})",
            )
        raise InputError(
            "--img-size",
            f"{h}x{w}",
            f"a size whose build fits in {size_text(limit)} ({source}; --max-memory to override)",
            f"needs about {size_text(parts['total'])} ({biggest} "
            f"{size_text(parts[biggest])}, {model.layout.grid[0]}x"
            f"{model.layout.grid[1]} tokens)",
        )
    return parts["total"]


def check_eval_count(settings) -> int:
    """The number of images a build evaluates, with --eval-count refused (naming it) beyond
    what the data holds: the .npz's image count read from its header, or the size of the
    model's own evaluation set. Reads no image data."""
    count = settings.eval_count
    entry = entry_of(settings.model.name)
    if settings.eval_data is None:
        if getattr(entry, "eval_set", None) is None:
            return 0
        count = entry.eval_count if count is None else count
        entry.check_eval_count(count)
        return count
    path = Path(settings.eval_data)
    check_regular(path, "--eval-data")  # never open a FIFO or a device
    if not zipfile.is_zipfile(path):
        return count or 0  # the loader says what is wrong with it
    shapes = check_npz(path, "--eval-data", max_bytes=min(MAX_EVAL_BYTES, available_memory() // 2))
    images = shapes.get("images")
    if images is None or len(images[0]) == 0:
        return count or 0
    held = int(images[0][0])
    if count is not None and not 1 <= count <= held:
        raise InputError(
            "--eval-count", count, f"an integer in 1..{held}", f"{path} holds {held} images"
        )
    return held if count is None else count


def check_side(flag: str, size) -> None:
    if not all(1 <= int(s) <= MAX_SIDE for s in size):
        raise InputError(flag, f"{size[0]}x{size[1]}", f"sides in 1..{MAX_SIDE}")


def check_npz(path: Path, flag: str = "--eval-data", max_bytes: int = MAX_EVAL_BYTES) -> dict:
    """Shapes and dtypes of an .npz's arrays, read from the zip directory and the .npy headers
    only; refuses members whose declared or stored sizes exceed `max_bytes` (zip bombs, headers
    that claim millions of images) before any data is read."""
    allowed = f"an .npz of at most {size_text(max_bytes)} (uncompressed) without pickled objects"
    shapes = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
            if len(zf.infolist()) > MAX_NPZ_MEMBERS:
                raise InputError(flag, str(path), allowed, f"{len(zf.infolist())} members")
            total = sum(i.file_size for i in members)
            if total > max_bytes:
                raise InputError(
                    flag, str(path), allowed, f"its arrays unpack to {size_text(total)}"
                )
            for info in members:
                with zf.open(info) as f:
                    version = npy.read_magic(f)
                    reader = {
                        (1, 0): npy.read_array_header_1_0,
                        (2, 0): npy.read_array_header_2_0,
                    }.get(version)
                    if reader is None:
                        raise InputError(
                            flag, str(path), allowed, f"{info.filename}: .npy version {version}"
                        )
                    shape, _, dtype = reader(f, max_header_size=10000)
                if dtype.hasobject:
                    raise InputError(flag, str(path), allowed, f"{info.filename} holds objects")
                need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if need > max_bytes or need > info.file_size:
                    raise InputError(
                        flag,
                        str(path),
                        allowed,
                        f"{info.filename} declares {list(shape)} {dtype} "
                        f"({size_text(need)}) in {size_text(info.file_size)}",
                    )
                shapes[info.filename[:-4]] = (tuple(shape), dtype)
    except InputError:
        raise
    except IsADirectoryError:
        raise InputError(flag, str(path), allowed, "is a folder") from None
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        SyntaxError,
    ) as err:
        why = str(err).splitlines()[0][:100] if str(err) else type(err).__name__
        raise InputError(flag, str(path), allowed, f"not a readable .npz ({why})") from None
    return shapes


def open_image(path, flag: str = "--image"):
    """A Pillow image, opened lazily with the pixel bound; callers convert and resize it."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    path = Path(path)
    if path.is_dir():
        raise InputError(flag, str(path), "an image file", "is a folder")
    check_regular(path, flag, limit=1 << 30)  # a FIFO would hang Pillow, /dev/zero feed it
    try:
        img = Image.open(path)
        w, h = img.size
    except Image.DecompressionBombError:
        raise InputError(
            flag,
            str(path),
            f"an image of at most {MAX_IMAGE_PIXELS} pixels",
            "far more pixels than that (a decompression bomb?)",
        ) from None
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise InputError(
            flag, str(path), f"an image of at most {MAX_IMAGE_PIXELS} pixels", f"{w}x{h} pixels"
        )
    return img


def expected_size(model, settings) -> int:
    """Bytes a build writes: the float32 weights once per ONNX file (model, baseline, plugin
    graph, half the size for fp16), plus room for reports and scripts."""
    params = sum(p.numel() for p in model.parameters())
    copies = 2 + bool(settings.plugins) + 0.5 * (settings.precision == "fp16")
    return int(params * FLOAT * copies) + (16 << 20)
