"""Every registered method and model has tests, as the registries grow."""

from pathlib import Path

import pytest
import torch

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


def test_every_model_family_is_tested():
    text = (TESTS / "test_models.py").read_text()
    for name in MODELS:
        family = name.split("_")[0]
        assert family in text, f"model {name} is not tested in test_models.py"


def _tiny_args(name):
    """Flags that make every method reduce a 6x10 grid of a 4-block ViT."""
    return {"expedite": {"alpha": 1, "hw": "4x5", "k": 4}, "ailurus": {"alpha": 1, "clusters": 20},
            "token-adapter": {"alpha": 1}, "tome": {"r": 4}, "pool": {"alpha": 1, "hw": "3x5"},
            "svit": {"alpha": 1, "random_gates": True}}.get(name, {})


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_exports_without_forbidden_ops(tmp_path, name):
    model = tiny_vit((6, 10), num_prefix=1)
    reduced = apply_method(model, name, _tiny_args(name))
    images = images_for(model, batch=1)
    (out,), proto = export_and_run(reduced, images, tmp_path / "m.onnx")  # asserts a clean lint
    with torch.no_grad():
        assert max_abs(out, reduced(images)) <= 1e-4
    assert lint(proto) == []
