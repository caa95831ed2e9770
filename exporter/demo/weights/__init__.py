"""The shipped digits Segmenter: weights and the metadata of the run that produced them."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent
WEIGHTS = HERE / "segmenter_digits.safetensors"
METADATA = HERE / "segmenter_digits.json"


@lru_cache(maxsize=1)
def metadata() -> dict:
    return json.loads(METADATA.read_text())


def config() -> dict:
    """Architecture of the shipped model (from its metadata)."""
    meta = metadata()
    return {**meta["config"], "num_classes": meta["num_classes"]}
