"""A toy method and a toy model family, each declared as a new one is (a `MethodSpec`, a
`ModelEntry`), registered by the tests that use them and nowhere else. Their torch code is in
tests/toy_torch.py, imported when a model is built or patched."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.models.capabilities import TOKEN_GRID
from exporter.models.entry import ModelEntry
from exporter.methods.spec import MethodSpec, SweepInput, flag


@dataclass(frozen=True)
class ToyConfig:
    toy_stride: int | None = flag("keep every n-th patch token after block 1", rule="2")


def sweep(at: SweepInput) -> list[tuple[dict, str]]:
    return [({"toy_stride": s}, f"stride {s}") for s in (2, 3)]


METHOD = MethodSpec(
    "toy",
    "keep every n-th patch token after block 1, repeat them back (a test's method)",
    ToyConfig,
    {TOKEN_GRID: "tests.toy_torch:build_method"},
    sweep=sweep,
    marker="*",
    tiny={"toy_stride": 2},
)


def build_model(spec):
    from .toy_torch import ToyGrid

    return ToyGrid(spec.img_size or (16, 24))


MODEL = ModelEntry(
    "toy_grid",
    build_model,
    "a 4-block ViT on a plain token grid (a test's model family)",
    input_size=(16, 24),
)
