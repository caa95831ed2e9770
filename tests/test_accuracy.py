"""Accuracy in reports: mIoU against hand-worked numbers, eval in ONNX Runtime, --eval-data."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from exporter.accuracy import check_eval_set, confusion, evaluate_onnx, miou
from exporter.config import BuildSettings
from exporter.onnx.export import export_onnx
from exporter.reference import eval_set, input_shape, patched_model
from exporter.validate import Tolerances, feeds_for, validate_artifact
from tests.helpers import TINY, run


def test_miou_of_a_hand_made_pair():
    labels = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])  # the 0 under the ignored label does not count
    cm = confusion(pred, labels, num_classes=4)
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 2 -> 2/4; class 2: FN 1 -> 0;
    # class 3: absent from labels and predictions -> skipped
    assert cm.sum() == 5
    assert miou(cm) == pytest.approx(1 / 3)


def test_miou_counts_a_class_only_predicted_as_zero():
    cm = confusion(np.array([0, 0, 1]), np.array([0, 0, 0]), num_classes=3)
    assert miou(cm) == pytest.approx((2 / 3 + 0) / 2)


def identity_model(path, batch):
    """An ONNX model whose logits are its input: 3 classes, argmax = the largest channel."""
    shape = [batch, 3, 4, 4]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["logits"])],
        "identity",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def halves_set(n):
    """Left half: channel 0 largest, labelled 0. Right half: channel 1 largest, labelled 1,
    except its top row, labelled 2. Per image: class 0 TP 8 -> IoU 1; class 1 TP 6, FP 2 ->
    6/8; class 2 FN 2 -> 0. mIoU = (1 + 0.75 + 0) / 3 whatever n."""
    images = np.zeros((n, 3, 4, 4), np.float32)
    images[:, 0, :, :2] = 1
    images[:, 1, :, 2:] = 1
    labels = np.zeros((n, 4, 4), np.int64)
    labels[:, :, 2:] = 1
    labels[:, 0, 2:] = 2
    return check_eval_set(images, labels, 3, (4, 4), None, "halves")


@pytest.mark.parametrize("batch", [1, 2, None])  # fixed 1, fixed 2 (last batch padded), dynamic
def test_evaluate_onnx_in_batches(tmp_path, batch):
    path = identity_model(tmp_path / "m.onnx", batch if batch else "N")
    lines = []
    result = evaluate_onnx(path, halves_set(3), 3, batch, lines.append, "m")
    assert result["miou"] == pytest.approx(1.75 / 3)
    assert result["pixel_accuracy"] == pytest.approx(14 / 16)
    assert result["images"] == 3
    assert lines[-1] == "m: 3/3 images"


def write_npz(path, n=3, size=(64, 96), classes=5, **override):
    rng = np.random.default_rng(0)
    data = {
        "images": rng.standard_normal((n, 3, *size)).astype(np.float32),
        "labels": rng.integers(0, classes, (n, *size)).astype(np.int64),
    }
    data.update(override)
    np.savez(path, **data)
    return path


def own_miou(pred, labels, classes):
    """mIoU written out class by class with sets of pixel indices, for comparison."""
    pred, labels = pred.reshape(-1), labels.reshape(-1)
    counted = labels != 255
    ious = []
    for c in range(classes):
        p = set(np.flatnonzero((pred == c) & counted))
        g = set(np.flatnonzero(labels == c))
        if p | g:
            ious.append(len(p & g) / len(p | g))
    return sum(ious) / len(ious)


@pytest.mark.slow
def test_build_reports_accuracy_of_both_models(tmp_path):
    data = write_npz(tmp_path / "eval.npz")
    out = tmp_path / "out"
    result = run(
        [
            "build",
            *TINY,
            "--hw",
            "3x3",
            "--eval-data",
            str(data),
            "--eval-count",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    acc = report["accuracy"]
    assert acc["metric"] == "mIoU" and acc["images"] == 2
    assert acc["retention"] == pytest.approx(acc["reduced"] / acc["baseline"])
    assert (out / "baseline.onnx").is_file() and "baseline.onnx" in report["hashes"]
    assert "## Accuracy" in (out / "report.md").read_text()
    assert "retention" in result.output
    # the artifacts were validated on the eval images, not on noise
    for entry in report["validation"]:
        assert entry["inputs"].startswith("the first 2 images of") and entry["samples"] == 2
    assert "inputs: the first 2 images of" in (out / "report.md").read_text()
    # the baseline number matches the PyTorch baseline scored by independent code
    from exporter.reference import patched_model
    from dataclasses import replace

    settings = BuildSettings.from_dict(report["settings"])
    model = patched_model(replace(settings, method="none", method_args={}))
    with np.load(data) as d:
        images, labels = d["images"][:2], d["labels"][:2]
    with torch.no_grad():
        pred = model(torch.from_numpy(images)).argmax(1).numpy()
    assert acc["baseline"] == pytest.approx(own_miou(pred, labels, 5), abs=0.01)


BAD_DATA = [
    ("missing", None),
    ("not a zip", None),
    ("no labels", {"labels": None}),
    ("wrong size", {"images": np.zeros((3, 3, 32, 32), np.float32)}),
    ("label out of range", {"labels": np.full((3, 64, 96), 7, np.int64)}),
    ("float labels", {"labels": np.zeros((3, 64, 96), np.float32)}),
]


@pytest.mark.parametrize("case,override", BAD_DATA, ids=[c for c, _ in BAD_DATA])
def test_bad_eval_data_exit_2_nothing_written(tmp_path, case, override):
    path = tmp_path / "data" / "eval.npz"
    path.parent.mkdir()
    if case == "not a zip":
        path.write_text("images, labels\n")
    elif case != "missing":
        override = dict(override)
        if override.get("labels", 0) is None:
            rng = np.random.default_rng(0)
            np.savez(path, images=rng.standard_normal((3, 3, 64, 96)).astype(np.float32))
        else:
            write_npz(path, **override)
    out = tmp_path / "work" / "out"
    result = run(["build", *TINY, "--eval-data", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--eval-data" in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(
    "extra,flag",
    [
        (["--eval-count", "5"], "--eval-count"),  # no eval data to count
        (["--eval-data", "EVAL", "--eval-count", "9"], "--eval-count"),  # more than the 3 images
    ],
)
def test_bad_eval_count(tmp_path, extra, flag):
    data = write_npz(tmp_path / "eval.npz")
    extra = [str(data) if e == "EVAL" else e for e in extra]
    out = tmp_path / "work" / "out"
    result = run(["build", *TINY, *extra, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []


def test_eval_data_refused_for_a_model_without_classes(tmp_path):
    data = write_npz(tmp_path / "eval.npz")
    result = run(
        [
            "build",
            "--model",
            "vit_tiny_patch16_224",
            "--img-size",
            "64x64",
            "--eval-data",
            str(data),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "--eval-data" in result.output and "segmentation" in result.output
    assert not (tmp_path / "out").exists()


def test_validation_feeds_come_from_the_first_images_in_batches():
    from exporter.validate import image_inputs

    images = np.arange(5 * 3 * 2 * 2, dtype=np.float64).reshape(5, 3, 2, 2)
    feeds = image_inputs(images, (2, 3, 2, 2), 4)
    assert len(feeds) == 2  # only two whole batches of 2 in 5 images
    assert feeds[1]["images"].dtype == np.float32
    np.testing.assert_array_equal(feeds[1]["images"], images[2:4])


@pytest.mark.slow
def test_token_adapter_on_the_default_model_passes_validation(tmp_path):
    # On noise images the trained model's row scores nearly tie and one runtime's rounding
    # flipped a representative choice (max abs 0.25); on its own images it must pass. The
    # validation stage alone (a build would also export the baseline, evaluate and time).
    settings = BuildSettings(method="token-adapter", eval_count=2)
    reduced = patched_model(settings)
    shape = input_shape(settings, reduced.model)
    export_onnx(reduced, tmp_path / "model.onnx", shape)
    data, text = feeds_for(shape, 0, 2, eval_set(settings, reduced.model))
    entry = validate_artifact(reduced, tmp_path / "model.onnx", data, text, Tolerances(), 0)
    assert entry.passed and text.startswith("the first 2 images of digits val")
    assert entry.to_dict()["outputs"]["logits"]["max_abs"] < 0.05
