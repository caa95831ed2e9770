"""The digits data set, the shipped digits Segmenter and its training command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import run
from exporter.config import ModelSpec
from exporter.datasets import digits as data
from exporter.demo import train as demo_train
from exporter.demo.weights import METADATA, WEIGHTS, metadata
from exporter.models import create_model


def test_generator_is_deterministic_and_prefix_stable():
    a_img, a_lab = data.make_split("val", 6, seed=3)
    b_img, b_lab = data.make_split("val", 4, seed=3)
    assert a_img.shape == (6, data.CANVAS, data.CANVAS, 3) and a_img.dtype == np.uint8
    assert a_lab.shape == (6, data.CANVAS, data.CANVAS) and a_lab.dtype == np.uint8
    np.testing.assert_array_equal(a_img[:4], b_img)
    np.testing.assert_array_equal(a_lab[:4], b_lab)
    c_img, _ = data.make_split("val", 4, seed=4)
    d_img, _ = data.make_split("train", 4, seed=3)
    assert not np.array_equal(b_img, c_img) and not np.array_equal(b_img, d_img)


def test_split_is_disjoint_by_source_digit_and_covers_every_class():
    from sklearn.datasets import load_digits

    target = load_digits().target
    tr, va = data.source_indices("train"), data.source_indices("val")
    assert len(np.intersect1d(tr, va)) == 0
    assert len(tr) + len(va) == len(target)
    assert set(target[tr]) == set(target[va]) == set(range(10))
    with pytest.raises(ValueError):
        data.make_split("test", 1)


def test_labels_match_the_pasted_digit():
    images, target = data._digits()
    for k in (0, 11, 42):  # one source digit only: every labelled pixel is its class
        rng = np.random.default_rng(k)
        img, lab = data.render(rng, np.array([k]), data.CANVAS, digits=(1, 1))
        assert set(np.unique(lab)) == {0, int(target[k]) + 1}
        # the labelled pixels are the digit's ink: brighter than the background around them
        bright = img.max(-1).astype(float)
        assert bright[lab > 0].mean() > bright[lab == 0].mean() + 60
    _, labels = data.make_split("train", 20)
    assert labels.max() < data.NUM_CLASSES
    assert 0.02 < (labels > 0).mean() < 0.3


def test_to_input_and_eval_file(tmp_path):
    images, labels = data.make_split("val", 3)
    x = data.to_input(images)
    assert x.shape == (3, 3, data.CANVAS, data.CANVAS) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[0, :, 5, 7], (torch.tensor(images[0, 5, 7]).float() / 255 - 0.5) / 0.5)
    path = data.save_eval_data(tmp_path / "val.npz", count=3)
    with np.load(path) as f:
        assert f["images"].dtype == np.float32 and f["labels"].dtype == np.int64
        np.testing.assert_array_equal(f["images"], x.numpy())
        np.testing.assert_array_equal(f["labels"], labels)
    assert [p.name for p in tmp_path.iterdir()] == ["val.npz"]


def test_miou_convention():
    labels = np.array([[0, 0, 1, 1, data.IGNORE]])
    pred = np.array([[0, 1, 1, 1, 5]])
    # class 0: 1 / 2, class 1: 2 / 3; the ignored pixel's prediction does not count
    assert data.miou(pred, labels) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # a class predicted but absent from the labels counts with IoU 0
    assert data.miou(np.array([0, 0, 2]), np.array([0, 0, 0])) == pytest.approx((2 / 3 + 0) / 2)
    assert data.miou(labels, labels) == 1.0


def test_default_model_is_the_shipped_digits_segmenter():
    assert ModelSpec().name == "segmenter_digits"
    meta = metadata()
    assert WEIGHTS.stat().st_size < 32 * 2**20  # small enough for the repository
    model = create_model(ModelSpec())
    grid = tuple(c // meta["config"]["patch"] for c in meta["canvas"])
    assert model.layout.grid == grid and model.layout.image_size == tuple(meta["canvas"])
    assert model.num_classes == data.NUM_CLASSES
    assert set(meta) >= {"config", "seed", "command", "train_seconds", "commit", "val_miou"}
    # the shipped model gets most digits right (its first 100 canvases are recomputed below)
    assert meta["val_count"] == 500 and meta["val_miou"] >= 0.80


def _shipped_miou(count: int) -> float:
    model = create_model(ModelSpec())
    images, labels = data.make_split("val", count, seed=metadata()["val_seed"])
    return data.miou(demo_train.predict(model, images), labels)


@pytest.mark.slow  # the shipped model on 100 canvases
def test_shipped_checkpoint_miou_on_test_subset():
    meta = metadata()
    assert abs(_shipped_miou(meta["test_count"]) - meta["test_miou"]) < 1e-3


def test_train_demo_help():
    res = run(["train-demo", "--help"])
    assert res.exit_code == 0 and "--steps" in res.output


def test_train_demo_refuses_bad_steps(tmp_path):
    res = run(["train-demo", "--steps", "0", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "--steps 0" in res.output and "1..10000000" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_tiny_training_run_writes_weights_and_metadata(tmp_path):
    out = tmp_path / "w"
    meta = demo_train.train(
        out,
        steps=2,
        full_steps=1,
        eval_count=2,
        log=lambda _: None,
        command="test",
        config={"batch": 2, "full_batch": 1},
    )
    # the optimizer's moments stay beside the weights, for a later --resume
    assert sorted(p.name for p in out.iterdir()) == [
        "segmenter_digits.json",
        "segmenter_digits.optim.safetensors",
        "segmenter_digits.safetensors",
    ]
    assert json.loads((out / "segmenter_digits.json").read_text()) == meta
    assert meta["steps"] == 2 and meta["command"] == "test" and 0 <= meta["val_miou"] <= 1
    assert meta["steps_done"] == meta["total_steps"] == 3 and meta["final"] is True
    spec = ModelSpec(checkpoint=str(out / "segmenter_digits.safetensors"))
    # --checkpoint overrides the shipped weights
    trained = create_model(spec).state_dict()["decoder.head.weight"]
    shipped = create_model(ModelSpec()).state_dict()["decoder.head.weight"]
    assert not torch.equal(trained, shipped)


def test_failed_training_run_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dumps", boom)
    with pytest.raises(RuntimeError):
        demo_train.train(
            tmp_path, steps=1, full_steps=0, eval_count=1, log=lambda _: None, config={"batch": 1}
        )
    assert list(tmp_path.iterdir()) == []
    assert METADATA.exists()
