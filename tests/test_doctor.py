"""`vitexport doctor` on a host without GPU and TensorRT: every GPU step is a skip with its
reason and fix (the GPU speed-up in one line), nothing is claimed, the report is written, the
exit status is 0; an earlier report needs --force."""

from __future__ import annotations

import json

import pytest

from exporter.doctor import INSTALL_TRT, Step, engine_steps

from .helpers import EXPEDITE, run


@pytest.fixture(scope="module")
def folder(built):
    return built(*EXPEDITE, "--plugins")


def test_doctor_reports_each_missing_piece_as_a_skip(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TensorRT_ROOT", str(tmp_path / "no-tensorrt"))
    monkeypatch.setattr("exporter.doctor.gpu_info", lambda: None)  # as on this host: no GPU
    result = run(["doctor", str(folder), "--report-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "doctor.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["build folder"]["status"] == "done"
    for name in (
        "kernel harness",
        "engine model.engine",
        "engine model.plugins.engine",
        "engine model.fp16.engine",
        "timing",
    ):
        assert steps[name]["status"] == "skipped" and "no CUDA GPU" in steps[name]["detail"]
        assert steps[name]["fix"]
    if report["host"]["tensorrt_headers"] is None:
        assert steps["plugin library"]["status"] == "skipped"
        assert "TensorRT_ROOT" in steps["plugin library"]["fix"]
    assert not any(
        s["status"] == "done" and s["name"].startswith("engine") for s in report["steps"]
    )
    assert "| engine model.plugins.engine | skipped |" in (tmp_path / "r" / "doctor.md").read_text()
    assert "skipped  kernel harness: no CUDA GPU" in result.output
    # the GPU speed-up: one line saying it was not measured and why
    assert steps["gpu speed"]["status"] == "skipped"
    (line,) = [x for x in result.output.splitlines() if "gpu speed:" in x]
    assert line.startswith("skipped  gpu speed: no CUDA device") and "not measured" in line

    again = run(["doctor", str(folder), "--report-dir", str(tmp_path / "r")])
    assert again.exit_code == 2 and "--force" in again.output
    assert len(again.output.strip().splitlines()) == 1


def test_engines_skip_without_tensorrt_on_a_gpu_host(folder):
    facts = {"gpu": {"name": "any", "driver": "1", "compute_capability": "9.0"}, "tensorrt": None}
    steps = engine_steps(folder, None, facts, None, lambda text: None)
    assert [s.status for s in steps] == ["skipped"] * 4
    assert all(isinstance(s, Step) and s.fix == INSTALL_TRT for s in steps[:3])


def test_doctor_without_out_checks_the_host_in_seconds_and_builds_nothing(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr("exporter.doctor.gpu_info", lambda: None)  # no GPU: no engine to build
    monkeypatch.setattr("exporter.doctor.build", lambda *a, **k: pytest.fail("built"))
    start = time.monotonic()
    result = run(["doctor", "--report-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start < 60  # the host facts only (the build takes minutes)
    assert "gpu: not found" in result.output
    assert "skipped  build folder: no gpu" in result.output and "--build" in result.output
    (line,) = [x for x in result.output.splitlines() if "gpu speed:" in x]
    assert line.startswith("skipped  gpu speed: no CUDA device") and "not measured" in line
    off = run(["doctor", "--report-dir", str(tmp_path / "off"), "--no-gpu-speed"])
    assert off.exit_code == 0 and "skipped  gpu speed: left out (--no-gpu-speed)" in off.output
