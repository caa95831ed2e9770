"""Presets: the papers' tables resolve to settings every method accepts; explicit flags win."""

import pytest
import torch

from exporter.config import ModelSpec
from exporter.errors import InputError
from exporter.methods import apply_method
from exporter.models import create_model
from exporter.presets import PRESETS, resolve


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_applies_to_its_model(name):
    spec, method, args = resolve(name, ModelSpec(None), None, {})
    with torch.device("meta"):  # shapes only: no memory for ViT-L/H weights
        model = create_model(spec)
    reduced = apply_method(model, method, args)
    cfg = reduced.method.config()
    for key in ("alpha", "hw", "clusters", "stage", "window_hw"):
        if key in args:
            assert cfg[key] == args[key]


def test_explicit_flags_override_the_preset():
    spec, method, args = resolve(
        "segmenter-ade20k", ModelSpec(None, None, (512, 512)), None, {"hw": "24x24"}
    )
    assert spec.img_size == (512, 512) and args["hw"] == "24x24" and args["alpha"] == 10
    spec, method, args = resolve("segmenter-ade20k", ModelSpec(None), "pool", {})
    assert method == "pool" and args == {}  # another method: the preset's method flags drop


def test_no_preset_means_project_defaults():
    spec, method, args = resolve(None, ModelSpec(None), None, {})
    assert (spec.name, method, args) == ("segmenter_digits", "expedite", {"alpha": 3})


def test_unknown_preset():
    with pytest.raises(InputError) as err:
        resolve("nope", ModelSpec(None), None, {})
    assert err.value.flag == "--preset" and "segmenter-ade20k" in err.value.allowed


def test_model_tuned_defaults_fill_only_unset_flags():
    # the digits model tunes Expedite's alpha; an explicit flag still wins
    _, method, args = resolve(None, ModelSpec(None), "expedite", {"hw": "24x24"})
    assert method == "expedite" and args == {"hw": "24x24", "alpha": 3}
    _, _, args = resolve(None, ModelSpec(None), "expedite", {"alpha": 1})
    assert args == {"alpha": 1}
    # other methods and other models get nothing added
    assert resolve(None, ModelSpec(None), "pool", {})[2] == {}
    assert resolve(None, ModelSpec("segmenter_base"), "expedite", {})[2] == {}
