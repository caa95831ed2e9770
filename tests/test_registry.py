"""Every registered method and model has tests, as the registries grow."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter.config import ModelSpec
from exporter.methods import METHODS, apply_method
from exporter.models import MODELS
from exporter.onnx.lint import lint
from tests.helpers import export_and_run, images_for, max_abs, tiny_vit

TESTS = Path(__file__).parent


def test_every_method_has_a_test_file_and_a_reference():
    for name in METHODS:
        if name == "none":
            continue  # the baseline: covered by test_cli's build of --method none
        stem = name.replace("-", "_")
        assert (TESTS / f"test_{stem}.py").is_file(), f"method {name} has no tests/test_{stem}.py"
        assert (TESTS / "reference" / f"{stem}.py").is_file(), f"method {name} has no reference"


@pytest.mark.parametrize("name", list(MODELS))
def test_model_entry_declares_what_its_builder_makes(name):
    """An entry's declared defaults (input name and size, classes) are its model's."""
    entry = MODELS[name]
    with torch.device("meta"):  # shapes only
        model = entry.build(ModelSpec(name))
    assert model.input_name == entry.input_name
    assert model.num_classes == entry.num_classes
    if entry.input_size is not None:
        assert model.layout.image_size == entry.input_size
    if entry.class_names is not None:
        assert len(entry.class_names) == entry.num_classes


def test_eval_sets_fit_their_models():
    owners = [(n, e) for n, e in MODELS.items() if e.eval_set is not None]
    assert owners  # the shipped digits model evaluates on every build
    for name, entry in owners:
        images, labels, source = entry.eval_set(2, (32, 32))
        assert images.shape == (2, 3, 32, 32) and images.dtype == np.float32, name
        assert labels.shape == (2, 32, 32) and labels.dtype == np.int64, name
        assert 0 <= labels.min() and labels.max() < entry.num_classes, name
        assert source and entry.eval_count > 0


@pytest.mark.parametrize("name", list(METHODS))
def test_method_flags_derive_from_its_config(name):
    """spec.options is read from the config dataclass: same keys, flags and defaults, in field
    order; a built method keeps an instance of that class."""
    spec = METHODS[name]
    flagged = [f for f in dataclasses.fields(spec.config) if "help" in f.metadata]
    assert [(o.key, o.flag, o.help, o.default) for o in spec.options] == [
        (f.name, "--" + f.name.replace("_", "-"), f.metadata["help"], f.default) for f in flagged
    ]
    method = apply_method(tiny_vit(grid=(6, 10), depth=4), name, spec.tiny).method
    if flagged:
        assert isinstance(method.cfg, spec.config)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_exports_without_forbidden_ops(tmp_path, name):
    model = tiny_vit((6, 10), num_prefix=1)
    reduced = apply_method(model, name, METHODS[name].tiny)
    images = images_for(model, batch=1)
    (out,), proto = export_and_run(reduced, images, tmp_path / "m.onnx")  # asserts a clean lint
    with torch.no_grad():
        assert max_abs(out, reduced(images)) <= 1e-4
    assert lint(proto) == []
