"""The command line: one-line errors with exit code 2 and nothing written; full builds."""

import json
import shutil

import pytest
import torch

from exporter.methods import METHODS
from exporter.paths import PREFIX
from tests.helpers import EXPEDITE, TINY, one_line, copy_of, run, tiny_flags


BAD = [
    (["--hw", "24"], None, "--hw"),  # 24x24 > 4x6 grid
    (["--hw", "3by4"], None, "--hw"),
    (["--hw", "0x4"], None, "--hw"),
    (["--hw", "13x4"], None, "--hw"),  # 13 rows on 4: some clusters beyond every 5x5 window
    (["--alpha", "12"], None, "--alpha"),
    (["--alpha", "0"], None, "--alpha"),
    (["--k", "13", "--hw", "3x4"], None, "--k"),
    (["--img-size", "65x96"], "img", "--img-size"),
    (["--model", "vit_nope"], "model", "--model"),
    (["--method", "magic"], None, "--method"),
    (["--checkpoint", "missing.pth"], None, "--checkpoint"),
    (["--window", "4x4"], None, "--window"),
]


@pytest.mark.parametrize("extra,replace,flag", BAD)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, extra, replace, flag):
    args = ["build", *TINY, "--out", str(tmp_path / "out")]
    if replace == "img":
        args[args.index("--img-size") + 1] = extra[1]
        extra = []
    if replace == "model":
        args[args.index("--model") + 1] = extra[1]
        args = [a for a in args if a not in ("--num-classes", "5")]
        extra = []
    result = run([*args, *extra])
    one_line(result, 2, flag)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 64)
    result = run(["build", *TINY, "--checkpoint", str(bad), "--out", str(tmp_path / "o")])
    one_line(result, 2, "--checkpoint")
    wrong = tmp_path / "wrong.pth"
    torch.save({"encoder.something": torch.zeros(2)}, wrong)
    result = run(["build", *TINY, "--checkpoint", str(wrong), "--out", str(tmp_path / "o")])
    one_line(result, 2, "--checkpoint")
    assert "encoder.something" in result.output and "missing" in result.output
    assert not (tmp_path / "o").exists()


def test_existing_out_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run(["build", *TINY, "--out", str(out)])
    one_line(result, 2, "--out")
    assert (out / "keep.txt").read_text() == "mine"


def test_flag_of_another_method_is_refused(tmp_path):
    result = run(["build", *TINY, "--method", "none", "--hw", "3x4", "--out", str(tmp_path / "o")])
    one_line(result, 2, "--hw")


def test_methods_lists_every_method_and_flag():
    result = run(["methods"])
    assert result.exit_code == 0
    for spec in METHODS.values():
        assert spec.name in result.output
        for opt in spec.options:
            assert opt.flag in result.output


def test_validate_of_a_folder_without_report(tmp_path):
    one_line(run(["validate", str(tmp_path)]), 2, "OUT")


# Each method's tiny settings from the registry; the pool build also runs --bench (the folder
# test_bench.py checks the build's own benchmark in).
EXTRA = {"pool": ["--bench"]}


def method_flags(method: str) -> list[str]:
    return tiny_flags(method) + EXTRA.get(method, [])


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_build(built, method):
    out = built(method, *method_flags(method))
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["weights"] == "random"
    assert report["model"]["input_shape"] == [1, 3, 64, 96]
    assert report["method"]["name"] == method
    config = report["method"]["config"]
    for key, value in METHODS[method].tiny.items():  # the flags given, as the report writes them
        if key in config and not isinstance(config[key], list):
            assert str(config[key]) == str(value), (key, config[key])
    assert report["tokens"]["full"] == 24 and 1 <= report["tokens"]["reduced"] <= 24
    assert report["artifacts"]["onnx"] == "model.onnx"
    (entry,) = report["validation"]
    assert entry["runtime"] == "onnxruntime" and entry["passed"]
    logits = entry["outputs"]["logits"]
    assert logits["cosine"] >= 0.99999 and logits["argmax_agreement"] >= 0.999
    assert "random weights" in (out / "report.md").read_text()
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no temporary folder left


def test_svit_without_gates_is_refused(tmp_path):
    result = run(["build", *TINY, "--method", "svit", "--out", tmp_path / "o"])
    one_line(result, 2, "--gates")
    assert "--random-gates" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_validate_again(built, tmp_path):
    out = copy_of(built(*EXPEDITE), tmp_path)
    again = run(["validate", out])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "validation.json").read_text())["validation"][0]["passed"]


@pytest.mark.slow
def test_validate_catches_a_real_mismatch(built, tmp_path):
    """model.onnx replaced by the unreduced model of the same weights: validate must fail."""
    out = copy_of(built(*EXPEDITE), tmp_path)
    shutil.copyfile(built("none") / "model.onnx", out / "model.onnx")
    result = run(["validate", out, "--rehash"])  # --rehash: past the sha256 check (test_faults)
    assert result.exit_code == 1, result.output
    report = json.loads((out / "validation.json").read_text())
    assert not report["validation"][0]["passed"]


@pytest.mark.parametrize(
    "extra,flag",
    [(["--method", "pool", "--plugins"], "--plugins"), (["--precision", "int8"], "--precision")],
)
def test_engine_and_plugin_flags_refused_before_any_work(tmp_path, extra, flag):
    result = run(["build", *TINY, *extra, "--out", str(tmp_path / "o")])
    one_line(result, 2, flag)
    assert "load segmenter_tiny" not in result.output  # refused before the model was built
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_terminated_build_leaves_nothing_behind(tmp_path):
    """SIGTERM (a job scheduler, a timeout) unwinds the build: no temporary folder remains."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "exporter.cli",
        "build",
        "--model",
        "segmenter_tiny",
        "--img-size",
        "256x256",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(p.name.startswith(f"{PREFIX}out.tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "the build ended before its export"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
