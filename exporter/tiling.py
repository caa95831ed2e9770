"""Sliding windows: a fixed-shape model over an image of any size (numpy only).

The image is cut into windows of the model's input size, `stride` apart, the last window of a
row or column flush with the image's edge; a side shorter than the window is padded with zeros
after normalisation (the normalised mean). The model's outputs for the windows are summed where
they overlap, divided by how many windows covered each pixel, and cropped back to the image.
This is the sliding-window evaluation of Segmenter and mmsegmentation.

The same file runs in three places, so the answers agree to the last bit of the model's own
arithmetic: `exporter.api.predict`, `vitexport visualize --image`, and the `_pre`/`_post` models
of a Triton ensemble (copied next to their model.py; the server's Python needs only numpy).
"""

from __future__ import annotations

import numpy as np


class TilingError(ValueError):
    """An image this tiling cannot take (empty, not HxWx3 uint8, too many windows)."""


def default_stride(window: tuple[int, int]) -> tuple[int, int]:
    """Two thirds of the window (a third of each window overlaps its neighbour), as
    mmsegmentation's 512-crop / 341-stride setting."""
    return tuple(max(1, -(-2 * w // 3)) for w in window)


def starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of the windows along one side: every `stride`, then one flush with the end."""
    if length <= window:
        return [0]
    out = list(range(0, length - window, stride))
    return out + [length - window]


def count(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> int:
    """How many windows an image of `size` (H, W) needs."""
    return len(starts(size[0], window[0], stride[0])) * len(starts(size[1], window[1], stride[1]))


def check_image(image: np.ndarray, window, stride, max_windows: int | None) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TilingError(
            f"image of dtype {image.dtype} and shape {list(image.shape)}: allowed: uint8 H x W x 3"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise TilingError(f"empty image ({image.shape[0]} x {image.shape[1]} pixels)")
    n = count(image.shape[:2], window, stride)
    if max_windows is not None and n > max_windows:
        raise TilingError(
            f"image of {image.shape[0]} x {image.shape[1]} pixels needs {n} windows of "
            f"{window[0]}x{window[1]} at stride {stride[0]}x{stride[1]}; allowed: at most "
            f"{max_windows} (a smaller image, or deploy triton --max-batch or --stride)"
        )


def tile(
    image: np.ndarray,
    window: tuple[int, int],
    stride: tuple[int, int],
    mean: float | tuple[float, ...],
    std: float | tuple[float, ...],
    max_windows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H, W, 3] -> (float32 windows [N, 3, h, w] normalised as (x/255 - mean)/std,
    mean and std one number or one per channel; int32 origins [N, 2] (top, left))."""
    check_image(image, window, stride, max_windows)
    H, W = image.shape[:2]
    h, w = window
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    x = (image.astype(np.float32) / np.float32(255.0) - mean) / std
    x = x.transpose(2, 0, 1)
    if H < h or W < w:
        x = np.pad(x, ((0, 0), (0, max(0, h - H)), (0, max(0, w - W))))
    origins = [(t, left) for t in starts(H, h, stride[0]) for left in starts(W, w, stride[1])]
    tiles = np.stack([x[:, t : t + h, left : left + w] for t, left in origins])
    return np.ascontiguousarray(tiles, np.float32), np.array(origins, np.int32)


def stitch(outputs: np.ndarray, origins: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Window outputs [N, C, h, w] -> float32 [C, H, W]: overlaps averaged, padding cropped."""
    outputs = np.asarray(outputs, np.float32)
    n, c, h, w = outputs.shape
    if len(origins) != n:
        raise TilingError(f"{n} window outputs for {len(origins)} windows")
    H, W = int(size[0]), int(size[1])
    total = np.zeros((c, max(H, h), max(W, w)), np.float32)
    hits = np.zeros(total.shape[1:], np.float32)
    for out, (t, left) in zip(outputs, origins):
        total[:, t : t + h, left : left + w] += out
        hits[t : t + h, left : left + w] += 1
    return total[:, :H, :W] / hits[:H, :W]


def classes(scores: np.ndarray) -> np.ndarray:
    """[C, H, W] -> uint8 class ids [H, W] (the first class wins a tie, as numpy's argmax)."""
    if scores.shape[0] > 256:
        raise TilingError(f"{scores.shape[0]} classes: a uint8 class map holds at most 256")
    return scores.argmax(0).astype(np.uint8)


def softmax(scores: np.ndarray) -> np.ndarray:
    """[C, H, W] logits -> per-class confidences, float32, summing to 1 over C."""
    e = np.exp(scores - scores.max(0, keepdims=True))
    return (e / e.sum(0, keepdims=True)).astype(np.float32)


def norm_text(value) -> str:
    """A mean or std as one text: "0.5", or "0.485,0.456,0.406" with one value per channel
    (Triton's parameters carry it so; `norm_value` reads it back)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return ",".join(repr(float(v)) for v in values)


def norm_value(text: str) -> float | tuple[float, ...]:
    """`norm_text` read back: a float, or a tuple of one float per channel."""
    values = tuple(float(v) for v in text.split(","))
    return values[0] if len(values) == 1 else values
