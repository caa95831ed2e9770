"""Large plain ViTs (SWAG ViT-L/16 512, ViT-H/14 518): patch 14, non-square inputs, presets.

The real models are far too big for the suite; a small timm architecture with the same code
path (patch 14, registered under a timm name so that `--model` resolves it like any timm ViT)
stands in for them, and the large ones are checked on the meta device (shapes only).
"""

import hashlib
import inspect
import json

import numpy as np
import onnx
import pytest
import timm
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from exporter.config import ModelSpec
from exporter.methods import apply_method
from exporter.models import create_model
from exporter.presets import resolve

from .helpers import export_and_run, images_for, max_abs, run, tiny_vit

_VIT_ARGS = set(inspect.signature(VisionTransformer).parameters)


@register_model
def vit_test_patch14(pretrained=False, **kwargs):
    """A ViT with patch 14 and ViT-H/14's layout (class token, no registers), 3 blocks, dim 32."""
    kwargs = {k: v for k, v in kwargs.items() if k in _VIT_ARGS}  # drop timm's cache/cfg args
    return VisionTransformer(
        **{"patch_size": 14, "embed_dim": 32, "depth": 3, "num_heads": 2, **kwargs}
    )


# 70x126 (HxW) -> a 5 x 9 grid: rows and columns differ, so a swap would show.
SMALL = ["--model", "vit_test_patch14", "--img-size", "70x126"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,extra,reduced",
    [
        ("expedite", ["--alpha", "1", "--hw", "3x6", "--window", "3x3", "--k", "4"], 18),
        # 2 of 5 rows and 3 of 9 columns merged away: 3 x 6 tokens kept
        ("token-adapter", ["--rows-ratio", "0.4", "--cols-ratio", "0.3334"], 18),
    ],
)
def test_patch14_non_square_build_validates(tmp_path, method, extra, reduced):
    out = tmp_path / "out"
    result = run(["build", *SMALL, "--method", method, *extra, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input_shape"] == [1, 3, 70, 126]
    assert report["model"]["layout"]["grid"] == [5, 9]
    assert report["tokens"] == {"full": 45, "reduced": reduced}
    (entry,) = report["validation"]
    assert entry["passed"] and entry["outputs"]["features"]["cosine"] >= 0.99999
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 32, 5, 9]


@pytest.mark.parametrize("num_prefix", [0, 1, 5])  # no class token; class token; + 4 registers
def test_feature_map_rows_are_image_rows(num_prefix):
    model = tiny_vit(grid=(5, 9), num_prefix=num_prefix, depth=2, patch=14)
    assert model.layout.image_size == (70, 126) and model.layout.num_prefix == num_prefix
    images = images_for(model)
    with torch.no_grad():
        got = model(images)
        # timm's own forward: the patch tokens in row-major order after the prefix tokens
        tokens = model.vit.forward_features(images)[:, num_prefix:]
    assert got.shape == (2, 32, 5, 9)
    expected = tokens.reshape(2, 5, 9, 32).permute(0, 3, 1, 2)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("num_prefix", [0, 5])
def test_expedite_keeps_prefix_tokens_out_of_the_clusters(num_prefix):
    model = tiny_vit(grid=(5, 9), num_prefix=num_prefix, depth=2, patch=14)
    reduced = apply_method(model, "expedite", {"alpha": 1, "hw": "3x6", "window": "3x3", "k": 4})
    x = torch.randn(2, num_prefix + 45, 32)
    tokens, _ = reduced.method.reduce(x)
    assert tokens.shape == (2, num_prefix + 18, 32)
    assert torch.equal(tokens[:, :num_prefix], x[:, :num_prefix])


@pytest.mark.slow
def test_patch14_registers_non_square_export_matches_pytorch(tmp_path):
    model = tiny_vit(grid=(5, 9), num_prefix=5, depth=2, patch=14)
    reduced = apply_method(model, "expedite", {"alpha": 1, "hw": "3x6", "window": "3x3", "k": 4})
    images = images_for(model, batch=1)
    (out,), _ = export_and_run(reduced, images, tmp_path / "m.onnx")
    with torch.no_grad():
        ref = reduced(images).numpy()
    assert out.shape == (1, 32, 5, 9)
    assert max_abs(out, ref) < 1e-4
    assert np.abs(ref).max() > 0.1  # not a trivially small output


# The Expedite paper's supplementary material: Table 1 (alpha, h x w, lambda, kappa, tau, k, grid,
# depth L) and Table 3 (input resolution), rows "SWAG ViT-H/14" and "SWAG ViT-L/16".
SWAG = {
    "swag-vit-h14": dict(
        model="vit_huge_patch14_224",
        img=(518, 518),
        alpha=8,
        grid=(37, 37),
        depth=32,
        hw="25x25",
        window="7x7",
        iters=5,
        tau=1,
        k=20,
        dim=1280,
    ),
    "swag-vit-l16": dict(
        model="vit_large_patch16_224",
        img=(512, 512),
        alpha=8,
        grid=(32, 32),
        depth=24,
        hw="22x22",
        window="9x9",
        iters=5,
        tau=1,
        k=20,
        dim=1024,
    ),
}


@pytest.mark.parametrize("name", list(SWAG))
def test_swag_presets_are_the_papers_rows(name):
    row = SWAG[name]
    spec, method, args = resolve(name, ModelSpec(None), None, {})
    assert (spec.name, spec.img_size, method) == (row["model"], row["img"], "expedite")
    for key in ("alpha", "hw", "window", "iters", "tau", "k"):
        assert args[key] == row[key], key
    with torch.device("meta"):  # shapes only: ViT-H has 630M weights
        model = create_model(spec)
    reduced = apply_method(model, method, args)  # index tables are built on the CPU
    lay = model.layout
    assert (lay.grid, lay.depth, lay.dim, lay.num_prefix) == (
        row["grid"],
        row["depth"],
        row["dim"],
        1,
    )
    h, w = map(int, row["hw"].split("x"))
    assert reduced.method.reduced_tokens() == h * w
    assert reduced.method.cut == row["alpha"]  # blocks 0..alpha-1 run on all tokens


@pytest.mark.parametrize(
    "args,nearest",
    [
        (["--preset", "swag-vit-h14", "--img-size", "512x512"], "504x504 or 518x518"),
        (["--model", "vit_huge_patch14_224", "--img-size", "518x520"], "518x518 or 518x532"),
        (["--model", "vit_large_patch16_224", "--img-size", "352x1210"], "352x1200 or 352x1216"),
        (SMALL[:2] + ["--img-size", "10x126"], "14x126"),
    ],
)
def test_img_size_not_divisible_by_the_patch(tmp_path, args, nearest):
    result = run(["build", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "--img-size" in lines[0] and nearest in lines[0], result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_timm_name_resolves_to_patch14_non_square_grid():
    model = create_model(ModelSpec("vit_test_patch14", None, (70, 126)))
    assert model.layout.grid == (5, 9) and model.layout.patch == (14, 14)
    assert "vit_test_patch14" in timm.list_models("vit_*")


def test_more_cluster_rows_than_token_rows_matches_the_paper_form():
    # 6 cluster rows over 4 token rows (as DPT KITTI's 28 over 22): centers start by adaptive
    # pooling that repeats rows, and every cluster is still inside some token's 3x3 window.
    from exporter.ops import TokenClustering

    from .reference.expedite import cluster

    grid, cells, window = (4, 9), (6, 5), (3, 3)
    z = torch.randn(1, 36, 8, generator=torch.Generator().manual_seed(0))
    got = TokenClustering(grid, cells, window, 3, 2.0)(z)[0]
    ref = cluster(z[0].double(), grid, cells, window, 3, 2.0)
    assert got.shape == (30, 8)
    assert torch.allclose(got.double(), ref, atol=1e-5)


@pytest.mark.parametrize(
    "hw,window,ok",
    [("6x5", "3x3", True), ("8x9", "3x3", True), ("9x9", "3x3", False), ("5x9", "1x1", False)],
)
def test_cluster_rows_beyond_the_grid_only_where_windows_reach(hw, window, ok):
    from exporter.errors import InputError

    model = tiny_vit(grid=(4, 9), depth=2, patch=14)
    args = {"alpha": 1, "hw": hw, "window": window, "k": 4}
    if ok:
        assert apply_method(model, "expedite", args).method.config()["hw"] == hw
        return
    with pytest.raises(InputError) as err:
        apply_method(model, "expedite", args)
    # 3x3: rows of cells floor(r*8/4) = 0, 2, 4, 6 reach 0..7; 1x1: only the 4 own rows
    assert err.value.flag == "--hw" and err.value.allowed.startswith(
        "1..8 x" if window == "3x3" else "1..4 x"
    )


def test_dpt_kitti_preset_is_the_papers_row():
    # 000 Table 1, DPT R50+ViT-B/16 KITTI: alpha 2, 76 x 22 patches (W x H), 28 x 28 clusters,
    # lambda 5x5, kappa 5, tau 5, k 20; Table 3: input 1216 x 352 (W x H).
    spec, method, args = resolve("dpt-kitti", ModelSpec(None), None, {})
    assert (spec.name, spec.img_size, method) == ("dpt_hybrid", (352, 1216), "expedite")
    assert (args["alpha"], args["hw"], args["window"], args["iters"], args["tau"], args["k"]) == (
        2,
        "28x28",
        "5x5",
        5,
        5,
        20,
    )
    with torch.device("meta"):
        model = create_model(spec)
    assert model.layout.grid == (22, 76)
    assert apply_method(model, method, args).method.reduced_tokens() == 784


@pytest.mark.slow
def test_weights_past_the_proto_limit_go_to_external_data(tmp_path, monkeypatch):
    # ViT-H/14's 2.5 GB of weights exceed protobuf's 2 GB; a lower limit takes the same path.
    import onnxruntime as ort

    from exporter.onnx import export
    from exporter.onnx.lint import lint_folder
    from exporter.folder import file_hashes
    from exporter.record import Artifact

    monkeypatch.setattr(export, "MAX_PROTO_BYTES", 10_000)
    vit = tiny_vit(grid=(2, 3), depth=2, patch=14)
    model = apply_method(vit, "expedite", {"alpha": 1, "hw": "2x2", "k": 2})
    images = images_for(vit, batch=1)
    proto = export.export_onnx(model, tmp_path / "model.onnx", tuple(images.shape))
    saved = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False).graph.initializer
    external = [t for t in saved if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and {
        e.value for t in external for e in t.external_data if e.key == "location"
    } == {"model.onnx.data"}
    assert (tmp_path / "model.onnx.data").stat().st_size > 10_000
    # the returned proto still holds its weights (plugin and fp16 graphs derive from it)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in proto.graph.initializer)
    assert lint_folder(tmp_path, [Artifact.plain("model.onnx")]) == {"model.onnx": []}
    # the report's hashes cover the weights file too
    hashes = file_hashes(tmp_path, ["model.onnx"])
    assert set(hashes) == {"model.onnx", "model.onnx.data"}
    assert (
        hashes["model.onnx.data"]
        == hashlib.sha256((tmp_path / "model.onnx.data").read_bytes()).hexdigest()
    )
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"images": images.numpy()})
    with torch.no_grad():
        assert max_abs(out, model(images)) < 1e-4


@pytest.mark.slow
def test_bench_variant_past_the_proto_limit_keeps_its_weights_beside_it(tmp_path, monkeypatch):
    import onnxruntime as ort

    from exporter.bench import export_variant
    from exporter.config import BuildSettings, ModelSpec
    from exporter.onnx import export
    from exporter.record import BuildRecord

    monkeypatch.setattr(export, "MAX_PROTO_BYTES", 10_000)
    settings = BuildSettings(model=ModelSpec("segmenter_tiny", None, (64, 64), 3), method="none")
    record = BuildRecord(model=None, method="none", method_config={}, tokens={}, settings=settings)
    path = export_variant(tmp_path, "baseline", settings, (1, 3, 64, 64), record)
    # the weights carry the name the graph refers to, and nothing else is left in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.onnx", "baseline.onnx.data"]
    assert set(record.hashes) == {"baseline.onnx", "baseline.onnx.data"}
    assert record.baseline.file == "baseline.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})[0].shape == (
        1,
        3,
        64,
        64,
    )
