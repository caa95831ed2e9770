"""A build folder's inputs.json / reference.json and the `polygraphy run` commands its report
prints: the printed --onnxrt command passes with the real polygraphy CLI on the build and fails
on a swapped model."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .helpers import EXPEDITE


def printed_commands(folder: Path) -> list[str]:
    text = (folder / "report.md").read_text()
    return re.findall(r"^(polygraphy run .*)$", text, flags=re.M)


def polygraphy(command: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("polygraphy")
    assert exe, "the polygraphy CLI comes with the polygraphy dependency"
    args = shlex.split(command)
    return subprocess.run([exe, *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_files_are_polygraphys_and_recorded(built):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    out = built(*EXPEDITE)
    report = __import__("json").loads((out / "report.json").read_text())
    for key, name in (
        ("polygraphy_inputs", "inputs.json"),
        ("polygraphy_reference", "reference.json"),
    ):
        assert report["artifacts"][key] == name
        assert len(report["hashes"][name]) == 64
    feeds = load_json(str(out / "inputs.json"))
    results = RunResults.load(str(out / "reference.json"))
    [(runner, iterations)] = list(results.items())
    assert runner == "pytorch"
    entry = next(v for v in report["validation"] if v["artifact"] == "model.onnx")
    assert len(feeds) == len(iterations) == entry["samples"]
    assert feeds[0]["images"].shape == tuple(report["model"]["input_shape"])
    assert list(iterations[0].keys()) == report["model"]["outputs"]
    commands = printed_commands(out)
    assert [c.split()[3] for c in commands] == ["--onnxrt", "--trt", "--trt"]
    tol = entry["tolerances"]
    for c in commands:
        assert f"--atol {tol['atol']} --rtol {tol['rtol']}" in c
        assert f"--error-quantile {tol['error_quantile']}" in c


def test_printed_onnxrt_command_passes_and_fails_on_a_swapped_model(built, tmp_path):
    out = built(*EXPEDITE)
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("model.onnx", "inputs.json", "reference.json"):
        shutil.copy2(out / name, folder / name)
    [command] = [c for c in printed_commands(out) if " --onnxrt " in c]
    ok = polygraphy(command, folder)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "PASSED" in ok.stdout + ok.stderr

    # The same graph with one weight tensor changed by 10%: same names and shapes, other numbers.
    model = onnx.load(str(folder / "model.onnx"))
    big = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    big.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(big) * 1.1, big.name))
    onnx.save(model, str(folder / "model.onnx"))
    bad = polygraphy(command, folder)
    assert bad.returncode != 0
    assert "FAILED" in bad.stdout + bad.stderr
