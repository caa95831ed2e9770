"""DPT adapters: official key names load, shapes at square and non-square sizes, ONNX equals
PyTorch; Expedite, AiluRus, Token Adapter, ToMe and pool restore dense tokens before every
reassemble after the cut, SViT keeps them; CLI builds of DPT-Base and DPT-Hybrid validate."""

import json

import pytest
import torch

from exporter.config import ModelSpec
from exporter.methods import apply_method
from exporter.models import create_model
from exporter.models.dpt import DPT
from tests.helpers import TINY_BASE, tiny_dpt, export_and_run, max_abs, vit_block_keys, run


# The official ViT-B/16 layout at a tenth of the width and a third of the depth: same code
# path (project readout, four ViT taps), exports in seconds instead of half a minute.
def official_dpt_keys(backbone: str):
    """Key names and shapes of the official DPT depth checkpoints (isl-org/DPT dpt/vit.py,
    blocks.py, models.py), written out from that layout at 384x384 (24x24 grid)."""
    dim, depth, widths = {
        "base": (768, 12, (96, 192, 384, 768)),
        "hybrid": (768, 12, (256, 512, 768, 768)),
    }[backbone]
    vit = "pretrained.model"
    keys = {
        f"{vit}.cls_token": (1, 1, dim),
        f"{vit}.pos_embed": (1, 577, dim),
        f"{vit}.norm.weight": (dim,),
        f"{vit}.norm.bias": (dim,),
        f"{vit}.head.weight": (1000, dim),
        f"{vit}.head.bias": (1000,),
    }
    for i in range(depth):
        keys.update(vit_block_keys(f"{vit}.blocks.{i}", dim))
    if backbone == "hybrid":
        rn = f"{vit}.patch_embed.backbone"
        keys.update(
            {
                f"{rn}.stem.conv.weight": (64, 3, 7, 7),
                f"{rn}.stem.norm.weight": (64,),
                f"{rn}.stem.norm.bias": (64,),
            }
        )
        c_in = 64
        for s, (n_blocks, mid) in enumerate([(3, 64), (4, 128), (9, 256)]):
            out = 4 * mid
            for b in range(n_blocks):
                p = f"{rn}.stages.{s}.blocks.{b}"
                if b == 0:
                    keys.update(
                        {
                            f"{p}.downsample.conv.weight": (out, c_in, 1, 1),
                            f"{p}.downsample.norm.weight": (out,),
                            f"{p}.downsample.norm.bias": (out,),
                        }
                    )
                for j, shape in enumerate(
                    [(mid, c_in if b == 0 else out, 1, 1), (mid, mid, 3, 3), (out, mid, 1, 1)],
                    start=1,
                ):
                    keys.update(
                        {
                            f"{p}.conv{j}.weight": shape,
                            f"{p}.norm{j}.weight": shape[:1],
                            f"{p}.norm{j}.bias": shape[:1],
                        }
                    )
            c_in = out
        keys.update(
            {
                f"{vit}.patch_embed.proj.weight": (dim, 1024, 1, 1),
                f"{vit}.patch_embed.proj.bias": (dim,),
            }
        )
    else:
        keys.update(
            {
                f"{vit}.patch_embed.proj.weight": (dim, 3, 16, 16),
                f"{vit}.patch_embed.proj.bias": (dim,),
            }
        )
    # reassemble: [0] project readout, [3] 1x1 conv, [4] resample (none at 1/16)
    resample = {1: ("T", 4), 2: ("T", 2), 4: ("S", 3)}
    for i in range(3 if backbone == "hybrid" else 1, 5):
        w = widths[i - 1]
        p = f"pretrained.act_postprocess{i}"
        keys.update(
            {
                f"{p}.0.project.0.weight": (dim, 2 * dim),
                f"{p}.0.project.0.bias": (dim,),
                f"{p}.3.weight": (w, dim, 1, 1),
                f"{p}.3.bias": (w,),
            }
        )
        if i in resample:
            k = resample[i][1]
            keys.update({f"{p}.4.weight": (w, w, k, k), f"{p}.4.bias": (w,)})
    for i in range(1, 5):
        keys[f"scratch.layer{i}_rn.weight"] = (256, widths[i - 1], 3, 3)
        p = f"scratch.refinenet{i}"
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in ("conv1", "conv2"):
                keys.update(
                    {
                        f"{p}.{unit}.{conv}.weight": (256, 256, 3, 3),
                        f"{p}.{unit}.{conv}.bias": (256,),
                    }
                )
        keys.update({f"{p}.out_conv.weight": (256, 256, 1, 1), f"{p}.out_conv.bias": (256,)})
    keys.update(
        {
            "scratch.output_conv.0.weight": (128, 256, 3, 3),
            "scratch.output_conv.0.bias": (128,),
            "scratch.output_conv.2.weight": (32, 128, 3, 3),
            "scratch.output_conv.2.bias": (32,),
            "scratch.output_conv.4.weight": (1, 32, 1, 1),
            "scratch.output_conv.4.bias": (1,),
        }
    )
    return keys


@pytest.mark.parametrize("backbone,img", [("base", (64, 96)), ("hybrid", (32, 64))])
def test_official_checkpoint_loads_every_key(tmp_path, backbone, img):
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * 0.02 for k, s in official_dpt_keys(backbone).items()}
    path = tmp_path / "dpt.pt"
    torch.save(state, path)  # the release saves a bare state dict
    model = create_model(ModelSpec(f"dpt_{backbone}", str(path), img))
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in state)  # pos_embed kept at 24x24 too
    with torch.no_grad():
        depth = model(torch.randn(1, 3, *img))
    assert depth.shape == (1, 1, *img) and torch.isfinite(depth).all()


def test_hybrid_stage_features_live_for_one_forward():
    model = create_model(ModelSpec("dpt_hybrid", None, (32, 48)))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 1, 32, 48)
    assert model._stage_feats is None  # nothing kept between forwards
    with pytest.raises(RuntimeError, match="embed"):
        model.head_tokens([torch.zeros(1, 7, 768)] * 2)


@pytest.mark.parametrize("img", [(64, 64), (64, 96), (96, 48), (48, 80)])  # 48x80: odd grid 3x5
def test_depth_at_input_resolution(img):
    model = tiny_dpt(img)
    assert model.layout.grid == (img[0] // 16, img[1] // 16)
    with torch.no_grad():
        depth = model(torch.randn(2, 3, *img))
    assert depth.shape == (2, 1, *img)
    assert (depth >= 0).all()  # the head ends in a ReLU: non-negative inverse depth


def test_position_embedding_resized_from_the_checkpoint_grid():
    model = tiny_dpt((64, 96))
    pos = model._pos_embed()
    assert pos.shape == (1, 1 + 4 * 6, 64)
    assert torch.equal(pos[:, 0], model.pretrained.model.pos_embed[:, 0])  # class token as is
    at_train = DPT(TINY_BASE, (384, 384), features=32)
    assert at_train._pos_embed() is at_train.pretrained.model.pos_embed


@pytest.mark.parametrize("readout", ["ignore", "add", "project"])
def test_readouts(readout):
    torch.manual_seed(0)
    model = DPT(TINY_BASE, (32, 32), readout=readout, features=16).eval()
    has_project = any(".project." in k for k in model.state_dict())
    assert has_project == (readout == "project")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_onnx_equals_pytorch(tmp_path):
    model = tiny_dpt((64, 96))
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(images)
    assert ref.std() > 1e-3  # a live output, not a constant
    (out,), _ = export_and_run(model, images, tmp_path / "dpt.onnx")
    assert max_abs(out, ref) <= 1e-4


def test_expedite_restores_before_each_reassemble_and_exports(tmp_path):
    model = tiny_dpt((64, 96))
    seen = []
    original = model.head_tokens
    model.head_tokens = lambda feats: seen.append([f.shape for f in feats]) or original(feats)
    reduced = apply_method(model, "expedite", {"alpha": 2, "hw": "2x3"})
    assert reduced.method.cut == 2 and not reduced.method.restore_at_output
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = reduced(images)
        full = model(images)
    # taps 2 and 3 come after the cut, yet the head sees every tap at the full 4x6 grid
    assert seen[0] == [torch.Size([2, 1 + 24, 64])] * 4
    assert ref.shape == (2, 1, 64, 96)
    assert 0 < max_abs(ref, full) < 0.1 * float(full.abs().max())
    del model.head_tokens  # back to the method, so the export traces the plain module
    (out,), _ = export_and_run(reduced, images, tmp_path / "dpt_expedite.onnx")
    assert max_abs(out, ref) <= 1e-4


# Cut placed inside the tap range of TINY_BASE (taps after blocks 0..3): taps on both sides.
RESTORING = {
    "ailurus": {"alpha": 2, "clusters": 8},
    "token-adapter": {"alpha": 1},
    "tome": {"alpha": 1},
    "pool": {"alpha": 2, "hw": "2x3"},
}


def record_taps(model: DPT) -> list:
    """Make `model.head_tokens` keep the tap tokens of every call; `del model.head_tokens`
    undoes it."""
    seen, original = [], model.head_tokens
    model.head_tokens = lambda feats: seen.append([f.clone() for f in feats]) or original(feats)
    return seen


def tokens_run(method, block: int) -> int:
    """Patch tokens block `block` runs on under `method` (ToMe shrinks block by block)."""
    if method.name == "tome":
        return method.layout.num_patches - sum(method.schedule[: block + 1])
    return method.reduced_tokens()


def patch_rank(tokens) -> int:
    """The smallest rank over the batch of the [N, C] patch-token matrix."""
    return int(torch.linalg.matrix_rank(tokens[:, 1:]).min())


def run_tiny_dpt(name, args):
    """Patch a tiny DPT with `name` and run both models once, recording every tap's tokens."""
    model = tiny_dpt((64, 96))
    seen = record_taps(model)
    reduced = apply_method(model, name, args)
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = reduced(images)
        full = model(images)
    del model.head_tokens  # back to the method, so the export traces the plain module
    return model, reduced, images, ref, full, seen


@pytest.mark.parametrize("name", sorted(RESTORING))
def test_method_restores_before_each_reassemble_and_exports(tmp_path, name):
    model, reduced, images, ref, full, (taps, full_taps) = run_tiny_dpt(name, RESTORING[name])
    method = reduced.method
    assert not method.restore_at_output
    N = model.layout.num_patches
    assert [t.shape for t in taps] == [torch.Size([2, 1 + N, 64])] * 4
    for block, tap, dense in zip(model.taps, taps, full_taps):
        if block < method.cut:  # untouched: the full model's tokens
            assert torch.allclose(tap, dense, atol=1e-5) and patch_rank(tap) == N
        else:
            # Rebuilt from the fewer tokens the block ran on: every method restores by copying
            # or by a linear map of them, so the rank gives it away.
            assert tokens_run(method, block) < N
            assert patch_rank(tap) <= tokens_run(method, block)
    assert 0 < max_abs(ref, full) < 0.1 * float(full.abs().max())
    (out,), _ = export_and_run(reduced, images, tmp_path / f"dpt_{name}.onnx")
    assert max_abs(out, ref) <= 1e-4


def test_svit_keeps_every_token_for_the_reassembles_and_exports(tmp_path):
    # SViT never drops a token from the sequence (skipped ones pass through), so the taps
    # need no restoring: they carry every position, at full rank.
    model, reduced, images, ref, full, (taps, full_taps) = run_tiny_dpt(
        "svit", {"random_gates": True, "alpha": 1, "keep_ratio": 0.5}
    )
    N = model.layout.num_patches
    assert [t.shape for t in taps] == [torch.Size([2, 1 + N, 64])] * 4
    assert torch.equal(taps[0], full_taps[0])  # block 0 runs before the gates
    assert not torch.allclose(taps[3], full_taps[3], atol=1e-4)  # the gates did skip tokens
    assert all(patch_rank(t) == N for t in taps)
    assert 0 < max_abs(ref, full)
    (out,), _ = export_and_run(reduced, images, tmp_path / "dpt_svit.onnx")
    assert max_abs(out, ref) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,size,hw,alpha",
    [
        ("dpt_base", "128x160", "6x8", 5),
        # the hybrid's taps (blocks 8 and 11) both follow the cut at block 5; its ResNet scales
        # feed the head as they are
        ("dpt_hybrid", "64x96", "3x4", 5),
    ],
)
def test_cli_build_dpt_with_expedite(tmp_path, model, size, hw, alpha):
    out = tmp_path / "out"
    result = run(
        [
            "build",
            "--model",
            model,
            "--img-size",
            size,
            "--method",
            "expedite",
            "--hw",
            hw,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["output_kind"] == "depth"
    assert report["method"]["config"]["alpha"] == alpha
    validations = report["validation"]
    assert validations and all(v["passed"] for v in validations), validations
    outputs = [o for v in validations for o in v["outputs"].values()]
    assert outputs and all(o["argmax_agreement"] is None for o in outputs)
    assert [name for v in validations for name in v["outputs"]] == ["depth"] * len(validations)
    assert outputs and all(o["cosine"] >= 0.99999 for o in outputs)
