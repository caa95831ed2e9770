"""`vitexport train-demo`: checkpoints, --resume, and what it may overwrite (never the
package's shipped weights by default, never existing weights without --force)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from exporter.demo import train as demo_train
from exporter.demo.weights import METADATA, WEIGHTS
from exporter.errors import InputError
from tests.helpers import run

TINY = {"batch": 2, "full_batch": 1, "crop": 8, "crop_digits": [1, 1], "warmup": 2}
QUIET = {"log": lambda _: None, "command": "test", "eval_count": 1, "check_count": 1}
# The cheapest run the CLI can ask for: one step on 8x8 crops, one canvas evaluated.
CLI_TINY = ["--steps", "1", "--full-steps", "0", "--crop", "8", "--eval-count", "1"]
CLI_TINY += ["--threads", "1"]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shipped() -> tuple[str, str]:
    return _sha(WEIGHTS), _sha(METADATA)


class Stop(Exception):
    pass


def test_stopped_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    """A run stopped after a checkpoint and resumed ends with the same weights as one that
    was never stopped: schedule, batches and optimizer moments all continue."""
    whole = demo_train.train(tmp_path / "whole", steps=4, full_steps=0, config=TINY, **QUIET)

    save = demo_train._save
    calls = []

    def stop_after_first(out, model, meta, opt):
        save(out, model, meta, opt)
        calls.append(meta["steps_done"])
        raise Stop

    monkeypatch.setattr(demo_train, "_save", stop_after_first)
    with pytest.raises(Stop):
        demo_train.train(tmp_path / "cut", steps=4, full_steps=0, config=TINY, every=2, **QUIET)
    monkeypatch.setattr(demo_train, "_save", save)
    cut = json.loads((tmp_path / "cut" / "segmenter_digits.json").read_text())
    assert calls == [2] and cut["steps_done"] == cut["total_steps"] == 2
    assert cut["final"] is False and "val_miou" not in cut and len(cut["checks"]) == 1
    assert cut["optimizer"]["file"] == "segmenter_digits.optim.safetensors"

    meta = demo_train.train(tmp_path / "cut", resume=tmp_path / "cut", **QUIET)
    assert meta["steps"] == 4 and meta["steps_done"] == meta["total_steps"] == 4
    assert meta["stages"] == [] and meta["final"] is True
    assert meta["train_seconds"] >= cut["train_seconds"]
    a = load_file(str(tmp_path / "whole" / "segmenter_digits.safetensors"))
    b = load_file(str(tmp_path / "cut" / "segmenter_digits.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert meta["val_miou"] == pytest.approx(whole["val_miou"], abs=0.02)


def test_new_stage_from_a_checkpoint_accumulates_steps(tmp_path):
    first = demo_train.train(tmp_path / "a", steps=2, full_steps=1, config=TINY, **QUIET)
    second = demo_train.train(
        tmp_path / "b",
        steps=3,
        full_steps=0,
        resume=tmp_path / "a" / "segmenter_digits.safetensors",
        config={"lr": 1e-4},
        **QUIET,
    )
    assert first["total_steps"] == 3 and second["total_steps"] == 6
    assert second["steps"] == 3 and second["steps_done"] == 3
    assert [s["total_steps"] for s in second["stages"]] == [3]
    assert second["stages"][0]["config"]["lr"] == demo_train.CONFIG["lr"]
    assert second["config"]["lr"] == 1e-4 and second["config"]["crop"] == 8
    assert second["resumed_from"].endswith("segmenter_digits.safetensors")
    # the first stage's final check and the second's are both in the curve
    assert [c[0] for c in second["checks"]] == [3, 6]


def test_resume_refuses_a_torn_checkpoint_and_a_changed_architecture(tmp_path):
    demo_train.train(tmp_path / "a", steps=1, full_steps=0, config=TINY, **QUIET)
    with pytest.raises(InputError) as err:
        demo_train.train(tmp_path / "b", resume=tmp_path / "a", config={"dim": 96}, **QUIET)
    assert "dim" in str(err.value) and not (tmp_path / "b").exists()
    weights = tmp_path / "a" / "segmenter_digits.safetensors"
    other = tmp_path / "other"
    demo_train.train(other, steps=1, full_steps=0, seed=1, config=TINY, **QUIET)
    weights.write_bytes((other / "segmenter_digits.safetensors").read_bytes())
    with pytest.raises(InputError) as err:
        demo_train.train(tmp_path / "b", resume=tmp_path / "a", steps=1, **QUIET)
    assert "--resume" in str(err.value) and "sha256" in str(err.value)
    with pytest.raises(InputError) as err:
        demo_train.train(tmp_path / "b", resume=tmp_path / "missing", steps=1, **QUIET)
    assert "--resume" in str(err.value) and "no such file" in str(err.value)


def test_out_with_weights_is_refused_without_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    mine = out / "segmenter_digits.json"
    mine.write_text("my notes\n")
    (out / "keep.txt").write_text("x")
    res = run(["train-demo", "--out", str(out), *CLI_TINY])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "--out" in res.output and "--force" in res.output
    assert "segmenter_digits.json" in res.output
    assert mine.read_text() == "my notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "segmenter_digits.json"]

    res = run(["train-demo", "--out", str(out), "--force", *CLI_TINY])
    assert res.exit_code == 0, res.output
    meta = json.loads(mine.read_text())
    assert meta["model"] == "segmenter_digits" and (out / "keep.txt").read_text() == "x"


def test_default_out_is_a_new_folder_not_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _shipped()
    res = run(["train-demo", *CLI_TINY])
    assert res.exit_code == 0, res.output
    assert _shipped() == before
    written = tmp_path / "vitexport-out" / "train-demo"
    assert (written / "segmenter_digits.safetensors").is_file()
    assert json.loads((written / "segmenter_digits.json").read_text())["steps"] == 1
    # a second run into the same default folder does not replace the first
    res = run(["train-demo", *CLI_TINY])
    assert res.exit_code == 2 and "--force" in res.output and _shipped() == before


def test_package_weights_need_an_explicit_flag(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(demo_train, "build_model", no_training)
    before = _shipped()
    for args, flag in (
        (["--out", str(WEIGHTS.parent)], "--into-package"),  # the package folder named as --out
        (["--into-package"], "--force"),  # the shipped files exist
        (["--into-package", "--out", str(tmp_path / "x")], "--into-package"),
    ):
        res = run(["train-demo", *args, *CLI_TINY])
        assert res.exit_code == 2, (args, res.output)
        assert flag in res.output and "Traceback" not in res.output
    assert _shipped() == before and not (tmp_path / "x").exists()
    # --into-package --force is accepted: it reaches the training (stopped here)
    with pytest.raises(AssertionError, match="trained before refusing"):
        demo_train.train(demo_train.WEIGHTS_DIR, steps=1, force=True, into_package=True, **QUIET)
    assert _shipped() == before


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    res = run(["train-demo", "--out", str(tmp_path / "f"), *CLI_TINY])
    assert res.exit_code == 2 and "is a file" in res.output
    assert (tmp_path / "f").read_text() == "x"


def test_evaluate_only_records_a_stopped_stage_s_miou(tmp_path, monkeypatch):
    from exporter.config import ModelSpec
    from exporter.datasets import digits as data
    from exporter.models import create_model

    save = demo_train._save

    def stop(out, model, meta, opt):
        save(out, model, meta, opt)
        raise Stop

    monkeypatch.setattr(demo_train, "_save", stop)
    with pytest.raises(Stop):
        demo_train.train(tmp_path / "run", steps=4, full_steps=0, config=TINY, every=2, **QUIET)
    monkeypatch.setattr(demo_train, "_save", save)
    res = run(
        ["train-demo", "--resume", str(tmp_path / "run"), "--out", str(tmp_path / "stage")]
        + ["--evaluate-only", "--eval-count", "3", "--threads", "1"],
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "stage" / "segmenter_digits.json").read_text())
    assert meta["steps_done"] == 2 and meta["final"] is False and meta["val_count"] == 3
    assert meta["optimizer"] is None and meta["evaluated"]["from"] == str(tmp_path / "run")
    weights = tmp_path / "stage" / "segmenter_digits.safetensors"
    assert _sha(weights) == _sha(tmp_path / "run" / "segmenter_digits.safetensors")
    model = create_model(ModelSpec(checkpoint=str(weights))).eval()
    images, labels = data.make_split("val", 3)
    with torch.no_grad():
        pred = model(data.to_input(images)).argmax(1).numpy()
    assert meta["val_miou"] == pytest.approx(data.miou(pred, labels), abs=1e-6)
    # without --resume it is refused, naming the flag
    res = run(["train-demo", "--evaluate-only", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--resume" in res.output
