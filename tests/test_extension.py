"""A new method is its own module, a new model family its own module: a toy of each, declared
in tests/toy.py and registered here, is picked up by the CLI's flags and listings, the sweep's
settings and plot, validation and the shared test tables, with no edit anywhere else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from exporter.config import ModelSpec
from exporter.methods import METHODS, apply_method
from exporter.models import MODELS, create_model
from exporter.onnx.export import export_onnx
from exporter.sweep import settings_grid
from exporter.validate import Tolerances, feeds_for, validate_artifact
from tests import test_cli, test_registry
from tests.helpers import tiny_flags, tiny_vit
from tests.toy import METHOD, MODEL

ROOT = Path(__file__).parents[1]


@pytest.fixture
def toy(monkeypatch):
    """The toy method and model family in the registries for one test."""
    monkeypatch.setitem(METHODS, "toy", METHOD)
    monkeypatch.setitem(MODELS, "toy_grid", MODEL)


def cli_with_toys(*args: str) -> str:
    """`vitexport ARGS` in a fresh interpreter whose registries got the toys before the CLI
    was imported (as a method or family module is found at start-up)."""
    code = (
        "import sys; from exporter.methods import register; from exporter.models import register "
        "as add; from tests.toy import METHOD, MODEL; register(METHOD); add(MODEL); "
        "from exporter.cli import main; main(sys.argv[1:])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_lists_and_takes_the_toys():
    listing = cli_with_toys("methods")
    assert "toy" in listing and "--toy-stride" in listing
    assert "toy_grid" in cli_with_toys("models")
    help_text = " ".join(cli_with_toys("build", "--help").split())
    assert "--toy-stride" in help_text and "toy: keep every n-th patch token" in help_text
    assert "toy_grid" in help_text  # --model's help names the registered models


def test_sweep_plot_and_tables_take_the_toy_method(toy):
    model = tiny_vit(grid=(4, 6), depth=4)
    rows = [s for s in settings_grid(model.layout) if s.method == "toy"]
    assert [s.flags for s in rows] == [{"toy_stride": 2}, {"toy_stride": 3}]
    assert METHODS["toy"].marker == "*"
    assert tiny_flags("toy") == ["--toy-stride", "2"] == test_cli.method_flags("toy")


def test_validation_and_registry_tests_take_the_toy_method(toy, tmp_path):
    # the registry's shared per-method tests, run on the toy
    test_registry.test_every_method_exports_without_forbidden_ops(tmp_path, "toy")
    test_registry.test_method_flags_derive_from_its_config("toy")
    model = tiny_vit(grid=(4, 6), depth=4)
    reduced = apply_method(model, "toy", METHOD.tiny)
    assert reduced.method.reduced_tokens() == 12
    shape = (1, 3, 16, 24)
    export_onnx(reduced, tmp_path / "toy.onnx", shape)
    data, text = feeds_for(shape, 0, 2)
    result = validate_artifact(reduced, tmp_path / "toy.onnx", data, text, Tolerances(), 0)
    assert result.passed, result.to_dict()


def test_every_method_takes_the_toy_model_family(toy):
    model = create_model(ModelSpec("toy_grid"))
    images = torch.randn(1, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(images)
        for name, spec in METHODS.items():
            out = apply_method(model, name, dict(spec.tiny))(images)
            assert out.shape == full.shape == (1, 3, 16, 24), name
