"""Model adapters: official Segmenter key names load, checkpoints load safely or fail clearly."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from exporter.config import ModelSpec
from exporter.errors import InputError
from exporter.models import MODELS, create_model
from tests.helpers import vit_block_keys


def official_segmenter_keys(dim, depth, n_cls, grid_side, dec_layers=2):
    """Key names and shapes of the official Segmenter release (segm/model: vit.py, decoder.py,
    blocks.py), written out from its documented layout."""

    keys = {
        "encoder.cls_token": (1, 1, dim),
        "encoder.pos_embed": (1, grid_side * grid_side + 1, dim),
        "encoder.patch_embed.proj.weight": (dim, 3, 16, 16),
        "encoder.patch_embed.proj.bias": (dim,),
        "encoder.norm.weight": (dim,),
        "encoder.norm.bias": (dim,),
        "encoder.head.weight": (1000, dim),
        "encoder.head.bias": (1000,),
        "decoder.cls_emb": (1, n_cls, dim),
        "decoder.proj_dec.weight": (dim, dim),
        "decoder.proj_dec.bias": (dim,),
        "decoder.proj_patch": (dim, dim),
        "decoder.proj_classes": (dim, dim),
        "decoder.decoder_norm.weight": (dim,),
        "decoder.decoder_norm.bias": (dim,),
        "decoder.mask_norm.weight": (n_cls,),
        "decoder.mask_norm.bias": (n_cls,),
    }
    for i in range(depth):
        keys.update(vit_block_keys(f"encoder.blocks.{i}", dim))
    for i in range(dec_layers):
        keys.update(vit_block_keys(f"decoder.blocks.{i}", dim))
    return keys


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


@pytest.mark.parametrize("fmt", ["pth-wrapped", "safetensors"])
def test_official_segmenter_checkpoint_loads_every_key(tmp_path, fmt):
    # a checkpoint trained at 128x128 (8x8 grid) used at 64x96: position embedding resized
    state = random_state(official_segmenter_keys(192, 12, 7, grid_side=8))
    if fmt == "safetensors":
        path = tmp_path / "seg.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "checkpoint.pth"
        torch.save({"model": state, "epoch": 63}, path)  # the release wraps the state dict
    model = create_model(ModelSpec("segmenter_tiny", str(path), (64, 96), 7))
    own = model.state_dict()
    assert set(own) == set(state)
    for key in state:
        if key != "encoder.pos_embed":
            assert torch.equal(own[key], state[key]), key
    assert own["encoder.pos_embed"].shape == (1, 4 * 6 + 1, 192)
    assert torch.equal(own["encoder.pos_embed"][:, 0], state["encoder.pos_embed"][:, 0])


def test_segmenter_sizes_match_official_shapes():
    for size, (dim, depth) in {"tiny": (192, 12), "small": (384, 12)}.items():
        model = create_model(ModelSpec(f"segmenter_{size}", None, (64, 64), 3))
        expect = official_segmenter_keys(dim, depth, 3, grid_side=4)
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert got == expect


def test_code_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": ModelSpec()}, f)  # needs a class import to unpickle
    with pytest.raises(InputError, match="code execution"):
        create_model(ModelSpec("segmenter_tiny", str(path), (64, 64), 3))


@pytest.mark.parametrize("content,reason", [(None, "no such file"), (b"garbage", "cannot be read")])
def test_missing_or_corrupt_checkpoint(tmp_path, content, reason):
    path = tmp_path / "c.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as err:
        create_model(ModelSpec("segmenter_tiny", str(path), (64, 64), 3))
    assert err.value.flag == "--checkpoint"


def test_mismatched_keys_are_named(tmp_path):
    state = random_state(official_segmenter_keys(192, 12, 3, grid_side=4))
    state["decoder.extra.weight"] = torch.zeros(1)
    del state["encoder.norm.bias"]
    path = tmp_path / "c.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as err:
        create_model(ModelSpec("segmenter_tiny", str(path), (64, 64), 3))
    assert "encoder.norm.bias" in str(err.value) and "decoder.extra.weight" in str(err.value)


def test_timm_vit_checkpoint_without_prefix(tmp_path):
    model = create_model(ModelSpec("vit_tiny_patch16_224", None, (64, 64)), seed=1)
    path = tmp_path / "vit.pth"
    torch.save(model.vit.state_dict(), path)
    again = create_model(ModelSpec("vit_tiny_patch16_224", str(path), (64, 64)), seed=2)
    assert torch.equal(again.vit.pos_embed, model.vit.pos_embed)


def test_random_weights_are_seeded():
    a = create_model(ModelSpec("segmenter_tiny", None, (64, 64), 3), seed=3)
    b = create_model(ModelSpec("segmenter_tiny", None, (64, 64), 3), seed=3)
    assert torch.equal(a.decoder.cls_emb, b.decoder.cls_emb)


@pytest.mark.parametrize(
    "spec,flag",
    [
        (ModelSpec("resnet50"), "--model"),
        (ModelSpec("nope"), "--model"),
        (ModelSpec("segmenter_tiny", None, (65, 64)), "--img-size"),
        (ModelSpec("vit_tiny_patch16_224", None, (100, 64)), "--img-size"),
        (ModelSpec("vit_tiny_patch16_224", None, (64, 64), 3), "--num-classes"),
        (ModelSpec("segmenter_tiny", None, None, 0), "--num-classes"),
    ],
)
def test_bad_model_input(spec, flag):
    with pytest.raises(InputError) as err:
        create_model(spec)
    assert err.value.flag == flag


def test_every_registered_model_builds():
    for name, entry in MODELS.items():
        model = create_model(ModelSpec(name, None, (32, 32), 2 if entry.takes_classes else None))
        # patch 16, except the digits model's patch 2 (its shipped weights load resized)
        assert model.layout.grid == ((16, 16) if name == "segmenter_digits" else (2, 2))


def test_num_classes_refused_where_there_are_no_classes():
    with pytest.raises(InputError, match="no classes") as err:
        create_model(ModelSpec("dpt_base", None, (32, 32), 3))
    assert err.value.flag == "--num-classes"


def test_every_dpt_builds_with_official_taps():
    # dpt_large builds here only (ViT-L is slow to run); taps are DPT's reassemble hooks
    taps = {"dpt_base": (2, 5, 8, 11), "dpt_large": (5, 11, 17, 23), "dpt_hybrid": (8, 11)}
    assert sorted(n for n in MODELS if n.startswith("dpt_")) == sorted(taps)
    for name, expect in taps.items():
        model = create_model(ModelSpec(name, None, (64, 64)))
        assert model.taps == expect and model.layout.grid == (4, 4)
        assert model.output_kind == "depth" and not model.per_token_head
        assert all(
            k.startswith(("pretrained.model.", "pretrained.act_postprocess", "scratch."))
            for k in model.state_dict()
        )


def test_segmenter_conv_stem_and_linear_decoder():
    from exporter.models.segmenter import ConvStem, create_segmenter

    torch.manual_seed(0)
    model = create_segmenter((32, 1, 2), (16, 24), 5, patch=4, decoder="linear", stem="conv").eval()
    assert model.layout.grid == (4, 6)
    keys = set(model.state_dict())
    assert {"decoder.head.weight", "decoder.head.bias", "encoder.patch_embed.proj.0.weight"} <= keys
    assert not any(k.startswith("decoder.cls_emb") for k in keys)
    stem = model.encoder.patch_embed.proj
    # one stride-2 convolution per factor 2 of the patch size
    assert [c.stride for c in stem if isinstance(c, torch.nn.Conv2d)].count((2, 2)) == 2
    x = torch.randn(2, 3, 16, 24)
    assert stem(x).shape == (2, 32, 4, 6)
    with torch.no_grad():
        assert model(x).shape == (2, 5, 16, 24)
        # a token's logits are the linear head of its final feature, the class token dropped
        last = model.encoder.blocks(model.embed(x))
        expected = model.encoder.norm(last)[:, 1:] @ model.decoder.head.weight.T
        torch.testing.assert_close(model.head_tokens([last]), expected + model.decoder.head.bias)
    with pytest.raises(ValueError, match="power of 2"):
        ConvStem(3, 32)
    with pytest.raises(ValueError, match="decoder"):
        create_segmenter((32, 1, 2), (16, 16), 5, patch=4, decoder="fpn")
