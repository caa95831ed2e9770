"""`exporter.api.predict`: a build's class map for an image of any size, by sliding windows.

The windows, their normalisation and the overlap average are `tiling.py`'s, the same file the
Triton ensemble's `_pre` and `_post` steps run, and the model is the build's model.onnx in ONNX
Runtime, as the ensemble's `_python` model runs it: the server's answer and this one are the same
computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .folder import read_record
from .models import entry_of
from .runtime import onnx_session
from .tiling import TilingError, classes, default_stride, softmax, stitch, tile


@dataclass
class Prediction:
    classes: np.ndarray  # uint8 [H, W]
    logits: np.ndarray  # float32 [C, H, W], overlaps averaged
    window: tuple[int, int]
    stride: tuple[int, int]
    windows: int

    @property
    def confidences(self) -> np.ndarray:
        """Per-class softmax of the logits, float32 [C, H, W]."""
        return softmax(self.logits)


def run_windows(session, tiles: np.ndarray) -> np.ndarray:
    """The model's first output for every window: at once for a dynamic batch, else in chunks
    of the export's fixed batch (the last padded with its own last window)."""
    spec = session.get_inputs()[0]
    batch = spec.shape[0] if isinstance(spec.shape[0], int) else len(tiles)
    outs = []
    for start in range(0, len(tiles), batch):
        chunk = tiles[start : start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
        outs.append(session.run(None, {spec.name: chunk})[0])
    return np.concatenate(outs)[: len(tiles)]


def predict_folder(out, image: np.ndarray, stride=None, threads: int | None = None) -> Prediction:
    """Class map of `image` (uint8 H x W x 3) by the build in `out`."""
    record = read_record(Path(out))
    kind = record.model.output_kind
    if kind != "segmentation":
        raise InputError("OUT", str(out), "a segmentation model", f"its output is {kind}")
    entry = entry_of(record.model.name)
    session = onnx_session(Path(out) / record.onnx.file, threads)
    window = tuple(int(d) for d in session.get_inputs()[0].shape[2:4])
    stride = tuple(stride) if stride is not None else default_stride(window)
    if not (1 <= stride[0] <= window[0] and 1 <= stride[1] <= window[1]):
        raise InputError(
            "--stride", f"{stride[0]}x{stride[1]}", f"1x1..{window[0]}x{window[1]} (the window)"
        )
    try:
        tiles, origins = tile(np.asarray(image), window, stride, entry.mean, entry.std)
    except TilingError as err:
        raise InputError("--image", "", "uint8 H x W x 3 with H, W >= 1", str(err)) from None
    scores = stitch(run_windows(session, tiles), origins, image.shape[:2])
    return Prediction(classes(scores), scores, window, stride, len(tiles))
