"""Accuracy as evidence: a method's mIoU retention on the shipped default model.

One `Retention` per session (tests/conftest.py, fixture `digits_retention`) evaluates the
unmodified model once and each method once per setting, in PyTorch (the export equals PyTorch:
each method's own tests hold that), on the first COUNT validation canvases of the digits set.

COUNT is 40 of the 100 canvases that docs/accuracy.md reports. A retention on 40 canvases is
not the 100-canvas one: measured side by side at every method's default (stage-0 weights) they
differ by up to two points (Expedite 100.0% on 40 against 98.0% on 100, Token Adapter 95.3%
against 96.6%; 20 canvases differ more), so each test asserts what its 40 canvases measure,
with about a point of margin for rounding (a few pixels' classes may change with the CPU), and
names the value the earlier (stage-0) weights measured beside it. 40 canvases cost about 20 s
per method on one core, 100 about 50 s.
"""

from __future__ import annotations

import torch

from exporter.config import ModelSpec
from exporter.datasets import digits as data
from exporter.methods import apply_method
from exporter.models import create_model, method_defaults

COUNT = 40
BATCH = 20


class Retention:
    """`retention(method, **flags)` -> reduced mIoU / baseline mIoU on the default model, the
    method at the model's defaults unless flags say otherwise (as `vitexport build` would)."""

    def __init__(self, count: int = COUNT):
        images, self.labels = data.make_split("val", count)
        self.images = data.to_input(images)
        self.spec = ModelSpec()
        self.baseline = self.miou(create_model(self.spec))
        self.results: dict[tuple, float] = {}

    def miou(self, model) -> float:
        model.eval()
        with torch.no_grad():
            pred = [
                model(self.images[i : i + BATCH]).argmax(1)
                for i in range(0, len(self.images), BATCH)
            ]
        return data.miou(torch.cat(pred).numpy(), self.labels)

    def __call__(self, method: str, **flags) -> float:
        key = (method, *sorted(flags.items()))
        if key not in self.results:
            args = {**method_defaults(self.spec.name, method), **flags}
            reduced = apply_method(create_model(self.spec), method, args)
            self.results[key] = self.miou(reduced) / self.baseline
        return self.results[key]
