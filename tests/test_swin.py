"""Swin backbones (timm names) and the Swin window forms of Expedite and Token Adapter."""

import copy

import pytest
import torch

from exporter.config import ModelSpec
from exporter.errors import InputError
from exporter.methods import apply_method
from exporter.models import create_model
from tests.helpers import export_and_run, max_abs, tiny_swin
from tests.reference import swin as ref

TOL = 1e-5


def images(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *model.layout.image_size, generator=g)


def reference_outputs(model, x, stage, alpha, end, reduced_window, pair):
    """The literal reference, float64, one image at a time -> list of [B, C, H, W]."""
    swin = copy.deepcopy(model.swin).double()
    reduce, restore = pair
    with torch.no_grad():
        per_image = [
            ref.run(swin, img.double(), stage, alpha, end, reduced_window, reduce, restore)
            for img in x
        ]
    return [torch.stack([p[s] for p in per_image]) for s in range(len(per_image[0]))]


def test_swin_outputs_equal_timm_features():
    model = tiny_swin()
    x = images(model)
    with torch.no_grad():
        outs = model(x)
        want = model.swin.forward_intermediates(x, norm=True, intermediates_only=True)
    assert [tuple(o.shape) for o in outs] == [
        (2, 16, 32, 32),
        (2, 32, 16, 16),
        (2, 64, 8, 8),
        (2, 128, 4, 4),
    ]
    for o, w in zip(outs, want):
        assert max_abs(o, w) == 0.0


def test_literal_swin_blocks_equal_timm():
    """The reference Swin block (shift, mask, bias) is the model: holds the reference honest."""
    model = tiny_swin()
    x = images(model, batch=1)
    with torch.no_grad():
        want = model(x)
    got = reference_outputs(
        model, x, stage=1, alpha=99, end=99, reduced_window=None, pair=(None, None)
    )
    for o, w in zip(got, want):
        assert max_abs(o, w) < TOL


EXPEDITE_CASES = [
    # img, window K, stage, alpha, k x k, clustering: stage 3 of a 128 input has 2x2 windows
    # (shifted blocks), stage 4 one window (no shift); a 5x5 window on a 160 input has 2x2.
    (128, 4, 3, 1, (3, 3), "dense"),
    (128, 4, 3, 2, (2, 3), "tiled"),
    (128, 4, 4, 1, (3, 3), "dense"),
    (160, 5, 3, 1, (3, 3), "tiled"),
]


@pytest.mark.parametrize("img,window,stage,alpha,hw,clustering", EXPEDITE_CASES)
def test_window_expedite_equals_reference(img, window, stage, alpha, hw, clustering):
    model = tiny_swin(img, window)
    args = {
        "stage": stage,
        "alpha": alpha,
        "window_hw": f"{hw[0]}x{hw[1]}",
        "window": "3x3",
        "iters": 3,
        "tau": 5.0,
        "k": 4,
        "clustering": clustering,
    }
    reduced = apply_method(model, "expedite", args)
    st = model.stages[stage - 1]
    x = images(model)
    with torch.no_grad():
        got = reduced(x)
    want = reference_outputs(
        model,
        x,
        stage,
        alpha,
        st.depth,
        hw,
        ref.expedite_window(st.window, hw, (3, 3), 3, 5.0, 4, "sum"),
    )
    for o, w in zip(got, want):
        assert max_abs(o, w) < TOL
    # the stage after the cut really changed, the stages before did not
    with torch.no_grad():
        base = model(x)
    assert max_abs(got[stage - 1], base[stage - 1]) > 1e-3
    assert all(max_abs(got[s], base[s]) == 0.0 for s in range(stage - 1))
    assert reduced.method.reduced_tokens() < reduced.method.full_tokens()


def test_reduced_blocks_use_bilinear_table_and_leave_the_model_alone():
    model = tiny_swin()
    before = {k: v.clone() for k, v in model.swin.state_dict().items()}
    reduced = apply_method(model, "expedite", {"stage": 3, "alpha": 1, "window_hw": "3x3"})
    blk = reduced.method.blocks[0]
    orig = model.stages[2].first + 1
    table = model.blocks[orig].block.attn.relative_position_bias_table
    want = ref.bilinear_table(table.detach().double(), (4, 4), (3, 3))
    assert blk.attn.relative_position_bias_table.shape == (25, 2)
    assert max_abs(blk.attn.relative_position_bias_table.detach(), want) < 1e-6
    assert blk.shift_size == (1, 1) and blk.window_size == (3, 3)
    for k, v in model.swin.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.blocks[orig].block.window_size == (4, 4)


@pytest.mark.slow
def test_window_expedite_exports_and_matches(tmp_path):
    model = tiny_swin()
    reduced = apply_method(model, "expedite", {"stage": 3, "alpha": 1, "window_hw": "3x3"})
    x = images(model)
    outs, _ = export_and_run(reduced, x, tmp_path / "m.onnx")
    with torch.no_grad():
        want = reduced(x)
    assert len(outs) == 4
    for o, w in zip(outs, want):
        assert max_abs(o, w) < 1e-4


@pytest.mark.parametrize(
    "args,flag",
    [
        ({"stage": 5}, "--stage"),
        ({"stage": 0}, "--stage"),
        ({"window_hw": "4x4"}, "--window-hw"),
        ({"window_hw": "3x5"}, "--window-hw"),
        ({"alpha": 4}, "--alpha"),
        ({"hw": "8x8"}, "--hw"),
        ({"restore": "output"}, "--restore"),
    ],
)
def test_window_expedite_refuses_bad_flags(args, flag):
    with pytest.raises(InputError) as err:
        apply_method(tiny_swin(), "expedite", args)
    assert err.value.flag == flag


def test_swin_flags_refused_on_plain_vit():
    from tests.helpers import tiny_vit

    for args, flag in (({"window_hw": "3x3"}, "--window-hw"), ({"stage": 2}, "--stage")):
        with pytest.raises(InputError) as err:
            apply_method(tiny_vit(), "expedite", args)
        assert err.value.flag == flag


@pytest.mark.parametrize("method", ["ailurus", "tome", "pool", "svit"])
def test_methods_without_swin_form_are_refused(method):
    with pytest.raises(InputError) as err:
        apply_method(tiny_swin(), method, {})
    assert err.value.flag == "--method" and "windowed stages" in str(err.value)


def test_none_on_swin_is_the_model():
    model = tiny_swin()
    x = images(model)
    with torch.no_grad():
        a, b = model(x), apply_method(model, "none", {})(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


ADAPTER_CASES = [
    # img, window K, stage, alpha, restore_after, rows, cols, unique, eject
    (128, 4, 3, 1, 4, 0.3, 0.3, 0.4, "m-threshold"),
    (128, 4, 3, 2, 3, 0.3, 0.5, 0.0, "max"),
    (128, 4, 4, 1, 2, 0.3, 0.3, 0.4, "max"),
    (160, 5, 3, 1, 4, 0.4, 0.2, 0.3, "m-threshold"),
]


@pytest.mark.parametrize("img,window,stage,alpha,end,rows,cols,unique,eject", ADAPTER_CASES)
def test_window_token_adapter_equals_reference(
    img, window, stage, alpha, end, rows, cols, unique, eject
):
    model = tiny_swin(img, window)
    args = {
        "stage": stage,
        "alpha": alpha,
        "restore_after": end,
        "rows_ratio": rows,
        "cols_ratio": cols,
        "unique_ratio": unique,
        "eject": eject,
        "threshold": 0.5,
    }
    reduced = apply_method(model, "token-adapter", args)
    st = model.stages[stage - 1]
    _, kept, _ = ref.adapter_ref.counts(window, window, rows, cols, unique)
    assert reduced.method.reduced_window == kept
    x = images(model)
    with torch.no_grad():
        got = reduced(x)
    want = reference_outputs(
        model,
        x,
        stage,
        alpha,
        end,
        kept,
        ref.adapter_window(st.window, rows, cols, unique, eject, 0.5),
    )
    for o, w in zip(got, want):
        assert max_abs(o, w) < TOL
    with torch.no_grad():
        base = model(x)
    assert max_abs(got[stage - 1], base[stage - 1]) > 1e-3
    assert all(max_abs(got[s], base[s]) == 0.0 for s in range(stage - 1))


@pytest.mark.slow
def test_window_token_adapter_exports_and_matches(tmp_path):
    model = tiny_swin()
    reduced = apply_method(model, "token-adapter", {"stage": 3, "alpha": 1})
    x = images(model)
    outs, _ = export_and_run(reduced, x, tmp_path / "m.onnx")
    with torch.no_grad():
        want = reduced(x)
    for o, w in zip(outs, want):
        assert max_abs(o, w) < 1e-4


@pytest.mark.parametrize(
    "args,flag",
    [
        ({"stage": 5}, "--stage"),
        ({"alpha": 4}, "--alpha"),
        ({"alpha": 2, "restore_after": 2}, "--restore-after"),
        ({"window_hw": "3x3"}, "--window-hw"),
        ({"rows_ratio": 1.0}, "--rows-ratio"),
    ],
)
def test_window_token_adapter_refuses_bad_flags(args, flag):
    with pytest.raises(InputError) as err:
        apply_method(tiny_swin(), "token-adapter", args)
    assert err.value.flag == flag


def test_token_adapter_stage_refused_on_plain_vit():
    from tests.helpers import tiny_vit

    with pytest.raises(InputError) as err:
        apply_method(tiny_vit(), "token-adapter", {"stage": 3})
    assert err.value.flag == "--stage"


def documented_keys(depths, dim, heads, window, mlp_ratio=4, patch=4, classes=1000):
    """timm's Swin state-dict names and shapes, written from its documented layout (the names
    official Swin checkpoints map to): patch embedding, per stage a patch merging (stages 2-4)
    and blocks, the final norm and the classifier."""
    keys = {
        "patch_embed.proj.weight": (dim, 3, patch, patch),
        "patch_embed.proj.bias": (dim,),
        "patch_embed.norm.weight": (dim,),
        "patch_embed.norm.bias": (dim,),
    }
    for s, (depth, h) in enumerate(zip(depths, heads)):
        d = dim * 2**s
        if s > 0:
            keys[f"layers.{s}.downsample.norm.weight"] = (2 * d,)
            keys[f"layers.{s}.downsample.norm.bias"] = (2 * d,)
            keys[f"layers.{s}.downsample.reduction.weight"] = (d, 2 * d)
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}."
            keys.update(
                {
                    p + "norm1.weight": (d,),
                    p + "norm1.bias": (d,),
                    p + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, h),
                    p + "attn.qkv.weight": (3 * d, d),
                    p + "attn.qkv.bias": (3 * d,),
                    p + "attn.proj.weight": (d, d),
                    p + "attn.proj.bias": (d,),
                    p + "norm2.weight": (d,),
                    p + "norm2.bias": (d,),
                    p + "mlp.fc1.weight": (mlp_ratio * d, d),
                    p + "mlp.fc1.bias": (mlp_ratio * d,),
                    p + "mlp.fc2.weight": (d, mlp_ratio * d),
                    p + "mlp.fc2.bias": (d,),
                }
            )
    last = dim * 2 ** (len(depths) - 1)
    keys.update(
        {
            "norm.weight": (last,),
            "norm.bias": (last,),
            "head.fc.weight": (classes, last),
            "head.fc.bias": (classes,),
        }
    )
    return keys


def random_state(keys, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in keys.items()}


def test_swin_tiny_has_exactly_the_documented_keys():
    model = create_model(ModelSpec("swin_tiny_patch4_window7_224"))
    own = {k: tuple(v.shape) for k, v in model.swin.state_dict().items()}
    want = documented_keys((2, 2, 6, 2), 96, (3, 6, 12, 24), 7)
    want = {
        k: v for k, v in want.items() if not k.startswith("head.")
    }  # the backbone has no classifier
    assert own == want


def test_checkpoint_with_timm_names_loads_every_key(tmp_path):
    from exporter.models.checkpoint import load_into
    from exporter.models.swin import convert_state

    model = tiny_swin()
    state = random_state(documented_keys((2, 2, 4, 2), 16, (1, 2, 2, 4), 4))
    path = tmp_path / "swin.pth"
    torch.save(state, path)
    load_into(model.swin, str(path), model.layout, None, convert_state)
    own = model.swin.state_dict()
    used = [k for k in state if k in own]
    assert sorted(used) == sorted(own)  # every weight of the model came from the file
    assert sorted(set(state) - set(used)) == ["head.fc.bias", "head.fc.weight"]  # the classifier
    for k in own:
        assert torch.equal(own[k], state[k]), k

    for broken, what in (
        ({k: v for k, v in state.items() if k != "norm.weight"}, "missing"),
        ({**state, "layers.0.blocks.9.norm1.weight": torch.ones(16)}, "unexpected"),
    ):
        torch.save(broken, path)
        with pytest.raises(InputError) as err:
            load_into(model.swin, str(path), model.layout, None, convert_state)
        assert err.value.flag == "--checkpoint" and what in str(err.value)


def test_checkpoint_in_the_official_layout_is_renamed(tmp_path):
    """Microsoft's release keeps patch merging at the end of a stage, buffers, and `head.*`."""
    import re

    from exporter.models.checkpoint import load_into
    from exporter.models.swin import convert_state

    model = tiny_swin()
    state = random_state(documented_keys((2, 2, 4, 2), 16, (1, 2, 2, 4), 4))
    official = {}
    for k, v in state.items():
        k = re.sub(
            r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k
        )
        official[k.replace("head.fc.", "head.")] = v
        if k.endswith("attn.relative_position_bias_table"):
            official[k.replace("bias_table", "index")] = torch.zeros(16, 16, dtype=torch.long)
    path = tmp_path / "official.pth"
    torch.save({"model": official}, path)
    load_into(model.swin, str(path), model.layout, None, convert_state)
    assert torch.equal(
        model.swin.layers[1].downsample.reduction.weight,
        state["layers.1.downsample.reduction.weight"],
    )


def test_bad_image_size_names_the_allowed_sizes():
    with pytest.raises(InputError) as err:
        create_model(ModelSpec("swin_tiny_patch4_window7_224", img_size=(512, 512)))
    assert err.value.flag == "--img-size" and "224x224" in str(err.value)


def test_larger_swin_at_another_size_builds_its_stages():
    model = create_model(ModelSpec("swin_tiny_patch4_window7_224", img_size=(448, 224)))
    assert [st.grid for st in model.stages] == [(112, 56), (56, 28), (28, 14), (14, 7)]
    assert model.layout.image_size == (448, 224)


SWIN_T = ["--model", "swin_tiny_patch4_window7_224"]


@pytest.mark.parametrize(
    "args,flag",
    [
        (SWIN_T + ["--method", "ailurus"], "--method"),
        (SWIN_T + ["--method", "expedite", "--window-hw", "7x7"], "--window-hw"),
        (SWIN_T + ["--method", "expedite", "--stage", "5"], "--stage"),
        (SWIN_T + ["--img-size", "256x256"], "--img-size"),
        (
            ["--model", "vit_tiny_patch16_224", "--method", "expedite", "--window-hw", "3x3"],
            "--window-hw",
        ),
    ],
)
def test_cli_bad_swin_input_one_line_exit_2_nothing_written(tmp_path, args, flag):
    from tests.helpers import one_line, run

    out = tmp_path / "out"
    result = run(["build", *args, "--out", str(out)])
    one_line(result, 2, flag)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_build_swin_tiny_expedite_validates(tmp_path):
    import json

    from tests.helpers import run

    out = tmp_path / "out"
    result = run(
        [
            "build",
            *SWIN_T,
            "--method",
            "expedite",
            "--stage",
            "3",
            "--alpha",
            "2",
            "--window-hw",
            "5x5",
            "--out",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["outputs"] == ["stage1", "stage2", "stage3", "stage4"]
    assert report["tokens"] == {"full": 196, "reduced": 100}
    assert report["method"]["config"]["window_hw"] == "5x5"
    (entry,) = report["validation"]
    assert entry["passed"]
    assert all(o["cosine"] >= 0.99999 for o in entry["outputs"].values())


@pytest.mark.parametrize("method,args", [("expedite", {"window_hw": "3x3"}), ("token-adapter", {})])
def test_window_forms_run_on_a_halved_model(method, args):
    """--precision fp16 halves the model only; the method's block copies stay float32."""
    reduced = apply_method(tiny_swin(), method, {"stage": 3, "alpha": 1, **args})
    half = copy.deepcopy(reduced)
    half.model.half()
    x = images(reduced.model)
    with torch.no_grad():
        got, want = half(x.half()), reduced(x)
    for o, w in zip(got, want):
        assert o.dtype == torch.float16
        assert torch.nn.functional.cosine_similarity(o.float().flatten(), w.flatten(), dim=0) > 0.99
