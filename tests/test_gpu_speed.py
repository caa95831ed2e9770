"""`vitexport doctor`'s GPU speed step: which runtime times the GPU (or why none can), the
paper estimate looked up per setting, the one-line summary, and the step with the timing
stubbed (no real model is timed here); the real measurement runs only where a CUDA device is
usable and is skipped with the reason elsewhere."""

from __future__ import annotations

import shutil

import pytest

from exporter.config import BuildSettings, ModelSpec
from exporter.doctor import GPU_HOST, gpu_info, gpu_speed_step
from exporter.gpu_speed import (
    CUDA_EP,
    INSTALL_ORT_GPU,
    cuda_backend,
    paper_estimate,
    speed_text,
    summarise,
)
from exporter.presets import resolve

from .helpers import EXPEDITE

H200 = {"name": "NVIDIA H200", "driver": "570", "compute_capability": "9.0"}
CPU_ONLY = ["CPUExecutionProvider"]
WITH_CUDA = [CUDA_EP, "CPUExecutionProvider"]


@pytest.mark.parametrize(
    "gpu, tensorrt, providers, backend, reason",
    [
        (None, None, CPU_ONLY, None, "no CUDA device"),
        (None, "10.9", WITH_CUDA, None, "no CUDA device"),  # libraries but no device
        (H200, None, WITH_CUDA, "onnxruntime-cuda", "NVIDIA H200"),
        (H200, "10.9", WITH_CUDA, "onnxruntime-cuda", CUDA_EP),  # ONNX Runtime first
        (H200, "10.9", CPU_ONLY, "tensorrt", "TensorRT 10.9"),
        (H200, None, CPU_ONLY, None, "neither ONNX Runtime's CUDAExecutionProvider"),
    ],
)
def test_the_runtime_that_times_the_gpu(gpu, tensorrt, providers, backend, reason):
    got, why = cuda_backend(gpu, tensorrt, providers)
    assert got == backend and reason in why


def settings_of(preset=None, **args):
    spec, method, resolved = resolve(preset, ModelSpec(None, None, None, None), "expedite", args)
    return BuildSettings(model=spec, method=method, method_args=resolved)


def test_paper_estimate_per_setting_and_batch():
    headline = settings_of(hw="24x24")
    assert paper_estimate(headline, (1, 3, 80, 80)).startswith("0.5-0.9x")
    assert paper_estimate(headline, (64, 3, 80, 80)) == "1.3-1.55x"
    assert paper_estimate(headline, (8, 3, 80, 80)) is None  # no estimate at that batch
    assert paper_estimate(settings_of(), (1, 3, 80, 80)) is None  # default 28x28: another setting
    assert paper_estimate(settings_of(hw="24x24", alpha=4), (1, 3, 80, 80)) is None
    large = settings_of("segmenter-ade20k")
    assert paper_estimate(large, (1, 3, 640, 640)).startswith("1.15-1.35x")
    assert paper_estimate(large, (1, 3, 512, 512)) is None


def latency(times: dict) -> dict:
    return {
        name: {"median_ms": sorted(t)[len(t) // 2], "times_ms": list(t)}
        for name, t in times.items()
    }


def test_the_summary_line_puts_the_measurement_beside_the_estimate():
    lat = latency(
        {
            "baseline": [1.0, 1.0, 1.0, 1.0],
            "reduced": [2.0, 2.0, 2.0, 2.0],
            "baseline_fused": [0.9, 1.0, 1.1, 1.0],
            "reduced_fused": [1.0, 1.0, 1.0, 1.0],
        }
    )
    pairs = {"fused": ("baseline_fused", "reduced_fused"), "plain": ("baseline", "reduced")}
    result = summarise(lat, pairs, {"baseline": 14.5, "reduced": 8.25}, 2.4, "0.5-0.9x")
    result.update(backend="onnxruntime-cuda", device="NVIDIA H200", batch=1, runs=4)
    assert result["forms"]["plain"]["speedup"] == pytest.approx(0.5)
    text = speed_text(result)
    assert text.startswith("onnxruntime-cuda, NVIDIA H200, fp32, batch 1, 4 interleaved rounds: ")
    assert "fused attention 1.000 -> 1.000 ms, 1.00x (p25-p75 0.93-1.08)" in text
    assert "plain export 1.000 -> 2.000 ms, 0.50x (p25-p75 0.50-0.50)" in text
    assert text.endswith("GFLOPs ratio 1.76x, structural limit 2.40x, paper estimate 0.5-0.9x")
    assert "\n" not in text
    result["paper_estimate"], result["structural_limit"] = None, None
    assert speed_text(result).endswith("GFLOPs ratio 1.76x, no paper estimate for this setting")


@pytest.fixture(scope="module")
def folder(built):
    return built(*EXPEDITE, "--plugins")  # the folder test_doctor checks, built once


GPU_FACTS = {"gpu": H200, "tensorrt": None}


def test_step_skips_in_one_line_where_no_runtime_can_use_the_gpu(monkeypatch):
    monkeypatch.setattr("exporter.doctor.ort_providers", lambda: CPU_ONLY)
    none = gpu_speed_step(None, None, {"gpu": None, "tensorrt": None}, None, print)
    assert none.status == "skipped" and none.fix == GPU_HOST
    assert (
        none.detail == "no CUDA device (nvidia-smi found none): the GPU speed-up was not measured"
    )
    bare = gpu_speed_step(None, None, GPU_FACTS, None, print)
    assert bare.status == "skipped" and bare.fix == INSTALL_ORT_GPU and "NVIDIA H200" in bare.detail
    off = gpu_speed_step(None, None, GPU_FACTS, None, print, wanted=False)
    assert off.status == "skipped" and "--no-gpu-speed" in off.detail


def test_step_times_through_exporter_timing_with_the_timing_stubbed(folder, tmp_path, monkeypatch):
    from exporter.folder import read_record

    from .helpers import copy_of

    out = copy_of(folder, tmp_path / "out")
    monkeypatch.setattr("exporter.doctor.ort_providers", lambda: WITH_CUDA)
    made = {}

    def sessions(paths, scratch):
        made.update(paths)
        return {
            name: object() for name in ("baseline", "reduced", "baseline_fused", "reduced_fused")
        }

    def timed(sessions, shape, runs, warmup, seed, inputs):
        assert len(inputs) >= 1 and runs == 100 and warmup == 10
        return latency({name: [2.0 if "baseline" in name else 1.0] * 3 for name in sessions})

    monkeypatch.setattr("exporter.gpu_speed.ort_sessions", sessions)
    monkeypatch.setattr("exporter.timing.interleaved_latency", timed)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    step = gpu_speed_step(out, read_record(out), GPU_FACTS, scratch, lambda text: None)
    assert step.status == "done", step.detail
    assert made["baseline"] == out / "baseline.onnx" and made["reduced"] == out / "model.onnx"
    assert read_record(out).baseline is not None  # the exported baseline is recorded
    assert step.detail.startswith("onnxruntime-cuda, NVIDIA H200, fp32, batch 1, 100 interleaved")
    assert "fused attention 2.000 -> 1.000 ms, 2.00x" in step.detail
    assert "no paper estimate for this setting" in step.detail  # the tiny model has none
    assert step.data["gflops_ratio"] > 1 and step.data["structural_limit"] > 1

    def broken(paths, scratch):
        raise RuntimeError("CUDA failure 999")

    monkeypatch.setattr("exporter.gpu_speed.ort_sessions", broken)
    failed = gpu_speed_step(out, read_record(out), GPU_FACTS, scratch, lambda text: None)
    assert failed.status == "failed" and "CUDA failure 999" in failed.detail


def usable_gpu() -> str | None:
    """Why the real GPU measurement cannot run here, or None when it can."""
    from exporter.gpu_speed import ort_providers
    from exporter.trt.engine import tensorrt_version

    backend, why = cuda_backend(gpu_info(), tensorrt_version(), ort_providers())
    return None if backend else why


@pytest.mark.skipif(usable_gpu() is not None, reason=f"GPU speed not measurable: {usable_gpu()}")
def test_gpu_speed_measured_on_a_cuda_device(folder, tmp_path):
    from exporter.doctor import host_facts
    from exporter.folder import read_record

    from .helpers import copy_of

    out = copy_of(folder, tmp_path / "out")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    step = gpu_speed_step(out, read_record(out), host_facts(), scratch, lambda text: None)
    assert step.status == "done", step.detail
    for form in step.data["forms"].values():
        assert form["speedup"] > 0 and form["ratio"]["p25"] <= form["ratio"]["p75"]
    shutil.rmtree(scratch)


def test_engine_timing_line_gives_the_per_round_ratio():
    from exporter.doctor import engine_timing_text

    text = engine_timing_text(
        latency({"baseline.engine": [2.0, 2.0, 4.0], "model.engine": [1.0, 1.0, 1.0]})
    )
    assert text == "baseline.engine 2.000 ms; model.engine 1.000 ms (2.00x, p25-p75 2.00-4.00)"
