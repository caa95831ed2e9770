"""EoMT from a Hugging Face folder: the project's model equals transformers' own semantic
inference, and Expedite builds and validates in both places the token grid may be rebuilt
(before the queries join, `--restore backbone`; after the last block, `--restore output`)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers", reason="EoMT folders are written with transformers")

from transformers import EomtConfig, EomtForUniversalSegmentation  # noqa: E402

from exporter import api  # noqa: E402
from exporter.config import BuildSettings, ModelSpec  # noqa: E402
from exporter.errors import InputError  # noqa: E402
from exporter.methods import METHODS, apply_method  # noqa: E402
from exporter.models import create_model  # noqa: E402
from exporter.models.eomt import from_hf  # noqa: E402
from exporter.models.eomt.model import convert_state  # noqa: E402
from exporter.timing import count_gflops, count_settings_gflops  # noqa: E402
from tests.helpers import run  # noqa: E402

SIZE = 48
# 4 blocks, the queries join before the last; a 6x6 patch grid
TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    image_size=SIZE,
    patch_size=8,
    num_blocks=1,
    num_queries=5,
    num_register_tokens=2,
    num_labels=3,
)


def semantic(out) -> torch.Tensor:
    """transformers' semantic inference from its outputs, at the input size."""
    masks = torch.nn.functional.interpolate(
        out.masks_queries_logits, size=(SIZE, SIZE), mode="bilinear"
    )
    classes = out.class_queries_logits.softmax(dim=-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", classes, masks.sigmoid())


@pytest.fixture(scope="session")
def hf_eomt(tmp_path_factory):
    """(folder, transformers model) of a tiny random EoMT, its masked attention annealed off
    as a trained one's is."""
    torch.manual_seed(0)
    model = EomtForUniversalSegmentation(EomtConfig(**TINY)).eval()
    model.attn_mask_probs.zero_()
    folder = tmp_path_factory.mktemp("eomt") / "hf"
    model.save_pretrained(folder)
    return folder, model


def load(folder, spec=ModelSpec("hf:tiny")):
    return from_hf(folder, json.loads((folder / "config.json").read_text()), spec)


@pytest.fixture(scope="session")
def eomt_built(hf_eomt, tmp_path_factory):
    """`eomt_built(setting)` -> the folder of `vitexport build --model hf:FOLDER --method
    expedite --restore SETTING` of the tiny EoMT, each setting built once per session."""
    outs = {}

    def built(setting: str):
        if setting not in outs:
            out = tmp_path_factory.mktemp("eomt-build") / setting
            args = ["--restore", setting, "--hw", "4x4", "--k", "6", "--out", out]
            result = run(["build", "--model", f"hf:{hf_eomt[0]}", "--method", "expedite", *args])
            assert result.exit_code == 0, result.output
            outs[setting] = out
        return outs[setting]

    return built


def test_unreduced_model_equals_transformers(hf_eomt):
    folder, hf = hf_eomt
    model = load(folder)
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = semantic(hf(pixel_values=images)), model(images)
    assert got.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("setting", ["backbone", "output"])
def test_expedite_builds_and_validates_in_both_settings(eomt_built, setting):
    out = eomt_built(setting)
    assert run(["validate", out]).exit_code == 0
    result = api.validate(out, progress=None)
    assert result.passed, result.validation
    assert result.report["model"]["name"].startswith("hf:")
    assert result.report["method"]["config"]["restore"] == setting
    assert result.report["tokens"] == {"full": 36, "reduced": 16}


def test_setting_output_runs_the_query_blocks_on_the_clusters(hf_eomt):
    model = load(hf_eomt[0])
    shape = (1, 3, SIZE, SIZE)
    gflops = {
        s: count_gflops(apply_method(model, "expedite", {"restore": s, "hw": "4x4"}), shape)
        for s in ("backbone", "output")
    }
    assert gflops["output"] < gflops["backbone"] < count_gflops(model, shape)


def test_masked_attention_and_other_sizes_are_refused(hf_eomt):
    folder = hf_eomt[0]
    with pytest.raises(InputError, match="masked attention") as err:
        convert_state({"attn_mask_probs": torch.ones(1)})
    assert err.value.flag == "--model"
    with pytest.raises(InputError) as err:
        load(folder, ModelSpec("hf:tiny", None, (64, 64)))
    assert err.value.flag == "--img-size"
    with pytest.raises(InputError) as err:
        load(folder, ModelSpec("hf:tiny", None, None, 7))
    assert err.value.flag == "--num-classes"


def test_every_method_runs_on_eomt_in_the_settings_it_takes(hf_eomt):
    model = load(hf_eomt[0])
    images = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(images)
        for name, spec in METHODS.items():
            settings = ("backbone", "output") if "restore" in {o.key for o in spec.options} else ()
            for setting in settings or (None,):
                args = dict(spec.tiny, **({"restore": setting} if setting else {}))
                out = apply_method(model, name, args)(images)
                assert out.shape == full.shape and torch.isfinite(out).all(), (name, setting)


def test_eomt_large_gflops_in_both_settings():
    """The figures docs/performance.md states for EoMT-L at 640 (counted without weights)."""
    counts = {
        setting: count_settings_gflops(
            BuildSettings(
                model=ModelSpec("eomt_large"),
                method="none" if setting is None else "expedite",
                method_args={} if setting is None else {"restore": setting},
            )
        )
        for setting in (None, "backbone", "output")
    }
    base, a, b = counts.values()
    # the reduced counts move by tenths with the clustering op's tiling; the ratios stay
    assert round(base, 1) == 678.9
    assert (round(base / a, 2), round(base / b, 2)) == (1.33, 1.51)


def test_checkpoint_in_the_folders_layout_loads(hf_eomt):
    folder = hf_eomt[0]
    weights = folder / "model.safetensors"
    model = create_model(ModelSpec(f"hf:{folder}", checkpoint=str(weights)))
    images = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(images), load(folder)(images), atol=0, rtol=0)


def test_a_swiglu_eomt_equals_transformers(tmp_path):
    torch.manual_seed(4)
    hf = EomtForUniversalSegmentation(EomtConfig(**TINY, use_swiglu_ffn=True)).eval()
    hf.attn_mask_probs.zero_()
    hf.save_pretrained(tmp_path)
    images = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, got = semantic(hf(pixel_values=images)), load(tmp_path)(images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
