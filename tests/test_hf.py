"""Hugging Face transformers folders as models (`--model hf:FOLDER`): tiny random models of
each supported architecture, made with transformers' own classes and `save_pretrained`, load
into the project's models with the same output as transformers' forward, meet every method
whose needs they meet, and build through the CLI and the API."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from exporter import api
from exporter.config import ModelSpec
from exporter.errors import InputError
from exporter.methods import METHODS, apply_method
from exporter.models import create_model, entry_of, label_of, weights_of
from exporter.models.capabilities import CLASS_TOKEN
from exporter.onnx.export import export_onnx
from exporter.validate import Tolerances, feeds_for, validate_artifact
from tests.helpers import one_line, run, tiny_flags

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (the optional extra: vitexport[hf])"
)

# Tiny configurations of each architecture: 4 blocks of width 32, 4x4 to 4x6 token grids.
BLOCKS = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2)
PREPROCESSORS = {
    "dpt-segmentation": {"image_mean": [0.3, 0.4, 0.5], "image_std": [0.2, 0.3, 0.4]},
    # a non-square input (the position embedding resized) and per-channel normalisation
    "vit": {
        "size": {"height": 32, "width": 48},
        "image_mean": [0.4, 0.5, 0.6],
        "image_std": [0.2, 0.25, 0.3],
    },
}
LABELS = {0: "sky", 1: "road", 2: "car"}


def configs():
    t = transformers
    dpt = dict(
        BLOCKS,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
    )
    dinov2 = dict(BLOCKS, mlp_ratio=2, image_size=56, patch_size=14, layerscale_value=0.5)
    return {
        "vit": (
            t.ViTModel,
            t.ViTConfig(**BLOCKS, intermediate_size=64, image_size=32, patch_size=8),
        ),
        "dinov2": (t.Dinov2Model, t.Dinov2Config(**dinov2)),
        "dinov2-registers": (
            t.Dinov2WithRegistersModel,
            t.Dinov2WithRegistersConfig(**dinov2, num_register_tokens=2),
        ),
        # DINOv2-giant's MLP: SwiGLU
        "dinov2-swiglu": (t.Dinov2Model, t.Dinov2Config(**dinov2, use_swiglu_ffn=True)),
        "dpt-depth": (t.DPTForDepthEstimation, t.DPTConfig(**dpt)),
        "dpt-segmentation": (
            t.DPTForSemanticSegmentation,
            # batch norms in the fusion units: folded into their convolutions at load time
            t.DPTConfig(**dpt, id2label=LABELS, use_batch_norm_in_fusion_residual=True),
        ),
    }


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Weights far from transformers' initialisation (zero biases and position embeddings,
    unit norms, empty batch statistics), so that every tensor the loader maps matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() >= 2 and "embeddings" not in name:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif p.dim() >= 2 or "lambda1" in name:
                p.copy_(0.5 * noise)
            else:
                p.add_(0.1 * noise)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    """name -> (folder, the transformers model saved there)."""
    made = {}
    root = tmp_path_factory.mktemp("hf")
    for i, (name, (cls, config)) in enumerate(configs().items()):
        torch.manual_seed(i)
        model = cls(config).eval()
        randomise(model, i)
        folder = root / name
        model.save_pretrained(folder)
        if name in PREPROCESSORS:
            (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSORS[name]))
        made[name] = (folder, model)
    return made


def transformers_output(model, images: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """transformers' forward in the project model's output layout."""
    with torch.no_grad():
        if hasattr(model, "neck"):  # DPT: depth [B, H, W] or logits [B, K, H, W]
            out = model(pixel_values=images)
            return out.logits if hasattr(out, "logits") else out.predicted_depth[:, None]
        kw = {"interpolate_pos_encoding": True} if "vit" in type(model).__name__.lower() else {}
        tokens = model(pixel_values=images, **kw).last_hidden_state[:, num_prefix:]
        h, w = (
            images.shape[-2] // model.config.patch_size,
            images.shape[-1] // model.config.patch_size,
        )
        return tokens.transpose(1, 2).reshape(images.shape[0], -1, h, w)


@pytest.mark.parametrize(
    "name,size",
    [
        ("vit", None),  # 32x48 from the folder's preprocessor: position embedding resized
        ("dinov2", None),
        ("dinov2", (42, 70)),  # a grid other than the embedding's: resized as transformers does
        ("dinov2-swiglu", None),
        ("dinov2-registers", None),
        ("dinov2-registers", (70, 42)),
        ("dpt-depth", None),
        ("dpt-depth", (96, 96)),
        ("dpt-segmentation", None),
    ],
)
def test_output_equals_transformers(folders, name, size):
    folder, hf_model = folders[name]
    model = create_model(ModelSpec(f"hf:{folder}", img_size=size))
    images = torch.randn(2, 3, *model.layout.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(images)
    ref = transformers_output(hf_model, images, model.layout.num_prefix)
    assert ours.shape == ref.shape
    scale = float(ref.abs().max())
    assert scale > 1e-3  # the random weights leave a signal to compare
    assert float((ours - ref).abs().max()) <= 1e-4 * scale


def test_folder_settings_come_from_the_folder(folders):
    vit, _ = folders["vit"]
    entry = entry_of(f"hf:{vit}")
    assert entry.input_size == (32, 48) and entry.takes_classes
    assert entry.mean == (0.4, 0.5, 0.6) and entry.std == (0.2, 0.25, 0.3)
    pixels = np.full((1, 2, 2, 3), 255, np.uint8)
    assert torch.allclose(entry.to_input(pixels)[0, :, 0, 0], torch.tensor([3.0, 2.0, 4 / 3]))
    assert weights_of(ModelSpec(f"hf:{vit}")) == str(vit / "model.safetensors")
    assert label_of(f"hf:{vit}") == "hf-vit" == label_of(str(vit))
    # a folder holding a config.json is a model without the prefix, too
    assert entry_of(str(vit)).input_size == (32, 48)
    seg, _ = folders["dpt-segmentation"]
    entry = entry_of(f"hf:{seg}")
    assert entry.class_names == ("sky", "road", "car") and entry.num_classes == 3
    assert entry.mean == (0.3, 0.4, 0.5) and not entry.takes_classes
    depth, _ = folders["dpt-depth"]
    assert entry_of(f"hf:{depth}").std == (0.5, 0.5, 0.5)  # no processor file: DPT's default
    dino, _ = folders["dinov2-registers"]
    model = create_model(ModelSpec(f"hf:{dino}"))
    assert model.layout.num_prefix == 3 and CLASS_TOKEN in model.capabilities


def test_linear_head_with_num_classes(folders):
    folder, hf_model = folders["dinov2"]
    model = create_model(ModelSpec(f"hf:{folder}", num_classes=5))
    images = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (1, 5, 56, 56) and model.output_kind == "segmentation"
    assert entry_of(f"hf:{folder}").weights_text.endswith("model.safetensors")


def applicable(model) -> list[str]:
    return [
        n
        for n, s in METHODS.items()
        if any(c in model.capabilities for c in s.forms) or "" in s.forms
    ]


@pytest.mark.parametrize("name", ["vit", "dinov2-registers", "dpt-depth", "dpt-segmentation"])
def test_every_method_meets_the_folder_models(folders, name):
    folder, _ = folders[name]
    size = (64, 96) if name.startswith("dpt") else None
    model = create_model(ModelSpec(f"hf:{folder}", img_size=size))
    images = torch.randn(1, 3, *model.layout.image_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(images)
        for method in applicable(model):
            reduced = apply_method(model, method, dict(METHODS[method].tiny))
            out = reduced(images)
            assert out.shape == full.shape, method
            if reduced.method.reduces:
                assert reduced.method.reduced_tokens() < model.layout.num_patches, method


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_exports_and_validates_with_register_tokens(folders, tmp_path, method):
    """The folder model with the most prefix tokens (class + 2 registers) under each method,
    exported to ONNX and validated against its PyTorch reference, decisions included."""
    folder, _ = folders["dinov2-registers"]
    model = create_model(ModelSpec(f"hf:{folder}"))
    assert method in applicable(model)  # a plain token grid with prefix tokens: every method
    shape = (1, 3, *model.layout.image_size)
    data, text = feeds_for(shape, 0, 1)
    reduced = apply_method(model, method, dict(METHODS[method].tiny))
    path = tmp_path / f"{method}.onnx"
    export_onnx(reduced, path, shape)
    result = validate_artifact(reduced, path, data, text, Tolerances(), 0)
    assert result.passed, result.to_dict()


def test_unsupported_architecture_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["BeitModel"], "model_type": "beit"})
    )
    result = run(["build", "--model", f"hf:{tmp_path}", "--out", tmp_path / "out"])
    one_line(result, 2, "BeitModel", "ViTModel", "DPTForDepthEstimation")


def test_missing_folder_and_missing_transformers_are_one_line(folders, tmp_path, monkeypatch):
    result = run(["build", "--model", f"hf:{tmp_path / 'none'}", "--out", tmp_path / "a"])
    one_line(result, 2, "no such folder")
    result = run(["build", "--model", "hf:" + "x" * 5000, "--out", tmp_path / "a"])
    one_line(result, 2, "--model hf:xxx")  # a name too long to look up: the same one line
    folder, _ = folders["vit"]
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install 'vitexport\[hf\]'"):
        create_model(ModelSpec(f"hf:{folder}"))
    result = run(["build", "--model", f"hf:{folder}", "--out", tmp_path / "b"])
    one_line(result, 2, "vitexport[hf]")


@pytest.mark.slow
def test_cli_build_of_a_vit_folder(folders, tmp_path):
    folder, _ = folders["vit"]
    out = tmp_path / "out"
    result = run(
        ["build", "--model", f"hf:{folder}", "--method", *tiny_flags_of("expedite"), "--out", out]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["name"] == f"hf:{folder}"
    assert report["validation"] and all(v["passed"] for v in report["validation"])


def tiny_flags_of(method: str) -> list[str]:
    return [method, *tiny_flags(method)]


@pytest.mark.slow
def test_api_build_of_a_dpt_segmentation_folder(folders, tmp_path):
    folder, _ = folders["dpt-segmentation"]
    result = api.build(
        tmp_path / "out",
        model=f"hf:{folder}",
        method="tome",
        img_size=(64, 96),
        progress=None,
        **METHODS["tome"].tiny,
    )
    assert result.passed
    assert result.report["model"]["output_kind"] == "segmentation"
    # the folder's per-channel normalisation, in the sliding-window prediction and in Triton's
    # pre-processing: one window of the input size predicts as the PyTorch model does
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    model = create_model(ModelSpec(f"hf:{folder}", img_size=(64, 96)))
    model = apply_method(model, "tome", dict(METHODS["tome"].tiny))  # the build's reference
    with torch.no_grad():
        expected = model(entry_of(f"hf:{folder}").to_input(image[None]))[0].argmax(0).numpy()
    assert (api.predict(tmp_path / "out", image).classes == expected).mean() > 0.999
    repo = api.deploy(tmp_path / "out", tmp_path / "repo")
    pre = (repo.path / f"{repo.ensemble}_pre" / "config.pbtxt").read_text()
    assert '"0.3,0.4,0.5"' in pre and '"0.2,0.3,0.4"' in pre
    assert repo.ensemble == "hf_dpt_segmentation_tome"  # named after the folder, not its path


def test_unsupported_dpt_and_checkpoint_in_the_folder_layout(folders, tmp_path):
    folder, hf_model = folders["dpt-depth"]
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({**config, "reassemble_factors": [4, 2, 1, 1]})
    )
    with pytest.raises(InputError, match=r"reassemble_factors = \[4, 2, 1, 1\]"):
        create_model(ModelSpec(f"hf:{tmp_path}"))
    # --checkpoint in the folder's own layout (another fine-tune of the same architecture)
    vit, _ = folders["vit"]
    spec = ModelSpec(f"hf:{vit}")
    model = create_model(ModelSpec(spec.name, checkpoint=str(vit / "model.safetensors")))
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(images), create_model(spec)(images))


@pytest.mark.skipif(
    importlib.util.find_spec("exporter.models.eomt") is None, reason="no EoMT family here"
)
def test_an_eomt_folder_goes_to_its_family(tmp_path):
    config = transformers.EomtConfig(
        **BLOCKS, image_size=32, patch_size=8, num_blocks=1, num_queries=3, num_labels=2
    )
    model = transformers.EomtForUniversalSegmentation(config)
    model.attn_mask_probs.zero_()  # annealed off, as in a trained one
    model.save_pretrained(tmp_path)
    entry = entry_of(f"hf:{tmp_path}")
    assert "EomtForUniversalSegmentation" in entry.description
    model = create_model(ModelSpec(f"hf:{tmp_path}"))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)
