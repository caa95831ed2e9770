"""The digits Segmenter shipped with the package (trained by `vitexport train-demo`): its
architecture, weights and evaluation set (the digits validation split)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ...datasets import digits as data
from ...errors import InputError
from ..entry import EvalData, ModelEntry

NAME = "segmenter_digits"
# Written by the training script (exporter/demo/train.py), read here as data.
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "demo" / "weights"
WEIGHTS = WEIGHTS_DIR / f"{NAME}.safetensors"
METADATA = WEIGHTS_DIR / f"{NAME}.json"
# The first 100 of the 500 validation canvases: a build stays within a minute or two on a
# busy 2-core machine (~0.1-0.3 s per image and model); --eval-count 500 for the whole split.
EVAL_COUNT = 100


@lru_cache(maxsize=1)
def metadata() -> dict:
    return json.loads(METADATA.read_text())


def config() -> dict:
    """Architecture of the shipped model (from its metadata)."""
    meta = metadata()
    return {**meta["config"], "num_classes": meta["num_classes"]}


def build_model(config: dict, img_size=None):
    """The digits Segmenter of `config` (train-demo's or the shipped metadata's), for canvases
    of `img_size` (default: the training canvas)."""
    from ..segmenter import create_segmenter  # deferred: torch

    size = img_size or (config["canvas"], config["canvas"])
    options = {k: config[k] for k in ("patch", "decoder_layers", "decoder", "stem", "stem_width")}
    dims = (config["dim"], config["depth"], config["heads"])
    return create_segmenter(dims, size, data.NUM_CLASSES, **options)


def eval_set(count: int, size: tuple[int, int]) -> EvalData:
    """The first `count` canvases of the validation split, rendered at `size`."""
    if size[0] != size[1]:
        raise InputError(
            "--img-size", f"{size[0]}x{size[1]}", "a square size", "the digits canvases are square"
        )
    images, labels = data.make_split("val", count, size=size[0])
    return data.to_input(images).numpy(), labels.astype("int64"), "digits val split"


ENTRIES = (
    ModelEntry(
        NAME,
        lambda spec: build_model(config(), spec.img_size),
        "Segmenter trained on handwritten digits (80x80 canvases, conv stem to a 40x40 token grid, "
        "dim 192, 8 blocks, linear decoder, 11 classes; vitexport train-demo)",
        pos_embed_key="encoder.pos_embed",
        default_weights=lambda: str(WEIGHTS),
        # alpha 3 of 8 blocks (the paper's 10 of 24, scaled), kept explicit: Expedite 24x24 there
        # keeps 97.9% of the baseline mIoU at 3.1x the speed (docs/accuracy.md).
        method_defaults={"expedite": {"alpha": 3}},
        mean=data.MEAN,
        std=data.STD,
        num_classes=data.NUM_CLASSES,
        class_names=data.CLASS_NAMES,
        eval_set=eval_set,
        eval_count=EVAL_COUNT,
        eval_size=data.DEFAULT_COUNT["val"],
    ),
)
