"""`vitexport visualize`: the method assignment hooks, the pictures and their sizes."""

import numpy as np
import pytest
import torch
from PIL import Image

from exporter.config import BuildSettings, ModelSpec
from exporter.methods import METHODS, apply_method
from exporter.visualize import (
    EDGE,
    enlarge,
    prediction_figure,
    reconstruction_picture,
    tokens_picture,
)

from exporter.folder import file_hashes, write_report
from exporter.paths import foreign
from exporter.record import BuildRecord, ModelInfo

from .helpers import EXPEDITE, copy_of, images_for, run, tiny_segmenter


def folder(tmp_path, method, args=None, model=("segmenter_tiny", (64, 96), 5)):
    """An output folder as `vitexport build` leaves it, as far as visualize reads it."""
    name, size, classes = model
    settings = BuildSettings(
        model=ModelSpec(name, None, size, classes), method=method, method_args=args or {}
    )
    out = tmp_path / f"out-{method}"
    out.mkdir()
    side = size or (64, 64)  # the model's default size: visualize reads it from the settings
    grid = [max(1, side[0] // 16), max(1, side[1] // 16)]
    record = BuildRecord(
        model=ModelInfo(
            name,
            "random",
            (1, 3, *side),
            False,
            {"grid": grid, "num_prefix": 1, "dim": 192, "depth": 12},
            "segmentation",
            ["logits"],
        ),
        method=method,
        method_config={},
        tokens={"full": grid[0] * grid[1], "reduced": 1},
        settings=settings,
    )
    (out / "model.onnx").write_bytes(b"a stand-in: visualize rebuilds the PyTorch model")
    record.add("onnx", "model.onnx")
    record.set_hashes(file_hashes(out, record.files()))
    write_report(out, record)  # with report.sha256 and the file's hash, which visualize checks
    return out


def sizes(out):
    return {p.name: Image.open(p).size for p in sorted((out / "visualize").glob("*.png"))}


# Figures of fixed size at 100 dpi: tokens.png two 4.4-inch panels; prediction.png one
# 2.8-inch panel each for input, (ground truth,) baseline and reduced.
TOKENS = (880, 525)
PREDICTION = {3: (840, 410), 4: (1120, 410)}
ALL = {"tokens.png": TOKENS, "prediction.png": PREDICTION[3]}


# every method that reduces (has sweep rows), at its tiny settings
@pytest.mark.parametrize(
    "method,args", [(name, spec.tiny) for name, spec in METHODS.items() if spec.sweep]
)
def test_pictures_written_with_their_sizes(tmp_path, method, args):
    out = folder(tmp_path, method, args)
    result = run(["visualize", str(out)])
    assert result.exit_code == 0, result.output
    assert sizes(out) == ALL
    assert "synthetic" in result.output
    # only SViT drops tokens at the cut; the caption says what the grey ones are
    pruned = "(grey: skipped by the first gated block)" in result.output
    assert pruned == (method == "svit") and ("grey:" in result.output) == pruned


def test_method_without_assignment_still_pictures_predictions(tmp_path):
    out = folder(tmp_path, "none")
    result = run(["visualize", str(out)])
    assert result.exit_code == 0, result.output
    assert "no token assignment" in result.output
    assert sizes(out) == {"prediction.png": PREDICTION[3]}


def test_given_image_of_another_size_and_bad_image_refused(tmp_path, built):
    # a real build: an image of another size than the model's is also run through model.onnx
    # by sliding windows (windows.png, classes.png), which the stand-in folders cannot do
    out = copy_of(built(*EXPEDITE), tmp_path)
    png = tmp_path / "photo.png"
    Image.fromarray(np.full((50, 30, 3), 200, np.uint8)).save(png)
    result = run(["visualize", str(out), "--image", str(png)])
    assert result.exit_code == 0, result.output
    drawn = sizes(out)
    assert {k: drawn[k] for k in ALL} == ALL
    assert set(drawn) == set(ALL) | {"windows.png", "classes.png"}
    assert drawn["classes.png"] == (30, 50)  # the class map at the image's own size
    assert foreign(out) == []  # every picture is in the folder's marker: --force may replace it
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    result = run(["visualize", str(out), "--image", str(bad)])
    assert result.exit_code == 2 and "--image" in result.output
    assert "Traceback" not in result.output


def test_feature_model_pictures(tmp_path):
    # timm ViT-Ti/16 at 64x64: features [1, 192, 4, 4] shown as principal components
    out = folder(tmp_path, "pool", {"hw": "2x2"}, ("vit_tiny_patch16_224", (64, 64), None))
    result = run(["visualize", str(out)])
    assert result.exit_code == 0, result.output
    assert sizes(out) == ALL


def distinct(ids):
    return len(torch.unique(ids[ids >= 0]))


def test_assignments_map_every_patch_token_to_a_reduced_token():
    model = tiny_segmenter(img=(64, 96))  # 24 patch tokens
    images = images_for(model, batch=2)
    n = model.layout.num_patches
    cases = {
        "expedite": ({"hw": "2x3"}, lambda k: 1 <= k <= 6),  # argmax may leave clusters empty
        "pool": ({"hw": "2x3"}, lambda k: k == 6),  # every cell owns the tokens of its bin
        "ailurus": ({"clusters": 5}, lambda k: k == 5),  # each cluster holds its center
        "tome": ({"r": "4,4,4" + ",0" * 9}, lambda k: k == n - 12),  # 4 merged in 3 blocks
        "token-adapter": ({}, lambda k: 1 <= k <= 12),  # 3 x 4 kept grid at r = 0.3
    }
    for name, (args, ok) in cases.items():
        reduced = apply_method(model, name, args)
        with torch.no_grad():
            ids = reduced.method.assignment(model, images)
        assert ids.shape == (2, n) and ids.dtype == torch.int64, name
        assert ids.min() >= 0, name
        for b in range(2):
            assert ok(distinct(ids[b])), (name, distinct(ids[b]))
    svit = apply_method(model, "svit", {"random_gates": True, "keep_ratio": 0.5})
    with torch.no_grad():
        ids = svit.method.assignment(model, images)
    assert ((ids >= 0).sum(1) == 12).all()  # capacity 12 of 24 processed, the rest pruned
    assert apply_method(model, "none", {}).method.assignment(model, images) is None


def test_pool_assignment_is_the_grid_of_cells():
    model = tiny_segmenter(img=(64, 64))  # 4x4 grid pooled to 2x2: 2x2 blocks of tokens
    reduced = apply_method(model, "pool", {"hw": "2x2"})
    ids = reduced.method.assignment(model, images_for(model, batch=1))[0]
    expect = [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]
    assert ids.tolist() == expect


def test_reconstruction_paints_each_token_with_its_mean_colour():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 0], image[0, 1], image[1, 0], image[1, 1] = 10, 30, 100, 7
    ids = np.array([[4, 4], [9, -1]])  # two pixels in token 4, one in 9, one pruned
    out = reconstruction_picture(image, ids, 1)
    assert out[0, 0].tolist() == [20, 20, 20] and out[0, 1].tolist() == [20, 20, 20]
    assert out[1, 0].tolist() == [100, 100, 100]
    assert out[1, 1].tolist() == [96, 96, 96]  # pruned: grey


def test_digits_model_pictures_its_first_validation_image(tmp_path):
    out = folder(tmp_path, "ailurus", {}, ("segmenter_digits", None, None))
    result = run(["visualize", str(out)])
    assert result.exit_code == 0, result.output
    assert "first image of the digits val split" in result.output
    # its labels come with it: input | ground truth | baseline | reduced
    assert sizes(out) == {"tokens.png": TOKENS, "prediction.png": PREDICTION[4]}


def test_tokens_picture_draws_the_boundaries_between_reduced_tokens():
    image = np.full((4, 4, 3), 100, np.uint8)
    ids = np.array([[0, 0, 1, 1]] * 2 + [[2, 2, 2, 2], [2, 2, 2, -1]])
    out = tokens_picture(image, ids, 2)  # enlarged 2x: 8x8
    edge = (out == EDGE).all(-1)
    # a line where the token changes to the right or below, one pixel wide; none elsewhere
    expect = np.zeros((8, 8), bool)
    expect[:4, 3] = True  # 0 | 1
    expect[3, :] = True  # 0, 1 above 2
    expect[6:, 5] = True  # 2 | pruned
    expect[5, 6:] = True  # 2 above pruned
    np.testing.assert_array_equal(edge, expect)
    assert (out[~expect & (enlarge(ids, 2) >= 0)] == 100).all()  # the input elsewhere
    grey = out[7, 7]
    assert (grey < 100).all()  # pruned tokens greyed


def test_prediction_figure_names_the_classes_shown():
    image = np.zeros((8, 8, 3), np.uint8)
    labels = np.zeros((8, 8), np.int64)
    labels[:4] = 3
    labels[0, 0] = 255  # ignored
    base = labels.clip(0, 3).copy()
    red = base.copy()
    red[4:, :4] = 1
    names = ["background", "cat", "dog", "bird"]
    fig = prediction_figure(image, labels, base, red, "segmentation", names, "pool", "t")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "input",
        "ground truth",
        "baseline (--method none)",
        "reduced (pool)\n75.0% of pixels as baseline",
    ]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "cat", "bird"]
