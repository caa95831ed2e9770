"""Every registered method and model has tests, as the registries grow."""

from pathlib import Path

from exporter.methods import METHODS
from exporter.models import MODELS

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
