"""The plugins' CMake: the kernel harness built and run (host side here, whole on a GPU), and
libvitexport_plugins.so built where TensorRT headers are present."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .toolchain import NVCC, tensorrt_include

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
CMAKE = shutil.which("cmake")
needs_cmake = pytest.mark.skipif(CMAKE is None, reason="cmake is not on PATH (pip install cmake)")


def _cmake(build: Path, *flags: str) -> None:
    for cmd in (["cmake", "-S", str(PLUGINS), "-B", str(build), *flags],
                ["cmake", "--build", str(build), "-j2"]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _lines(output: str, verdict: str) -> list[str]:
    """The harness's lines with that verdict (ctest -V prefixes them with the test number)."""
    lines = (re.sub(r"^\d+: ", "", line) for line in output.splitlines())
    return [line for line in lines if line.startswith(verdict + " ")]


@needs_cmake
def test_host_only_harness_builds_and_passes_under_ctest(tmp_path):
    _cmake(tmp_path, "-DVITEXPORT_HOST_ONLY=ON")
    result = subprocess.run(["ctest", "--test-dir", str(tmp_path), "-V"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    passed = _lines(result.stdout, "PASS")
    assert not _lines(result.stdout, "FAIL")
    # every case of both plugins, the largest ones included, plus the comparators and generator
    for case in ("dpc_select/largest-M", "dpc_select/ties", "topk_reconstruct/largest-k",
                 "topk_reconstruct/largest-M", "topk_reconstruct/ties-mask", "comparators"):
        assert any(case in line for line in passed), case
    assert re.search(r"kernel harness: 18 passed, 0 failed, 2 skipped", result.stdout)


@pytest.fixture(scope="module")
def cuda_build(tmp_path_factory):
    """The whole CMake build (one GPU architecture), with the TensorRT headers when found."""
    if CMAKE is None or NVCC is None:
        pytest.skip("cmake or nvcc is not on PATH: the CUDA build cannot run here")
    build = tmp_path_factory.mktemp("plugins-build")
    flags = ["-DCMAKE_CUDA_ARCHITECTURES=80"]
    if tensorrt_include() is not None:
        flags.append(f"-DTensorRT_ROOT={tensorrt_include().parent}")
    _cmake(build, *flags)
    return build


@pytest.mark.slow
def test_harness_compiles_with_nvcc_and_runs_where_it_can(cuda_build):
    result = subprocess.run([str(cuda_build / "tests" / "kernel_harness")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert any(line.startswith("PASS launchers:") for line in result.stdout.splitlines())
    gpu = [line for line in result.stdout.splitlines() if line.startswith(("PASS gpu", "FAIL gpu"))]
    if any(line.startswith("SKIP gpu:") for line in result.stdout.splitlines()):
        assert not gpu  # no GPU here: said so, and nothing claimed
    else:
        assert len(gpu) == 16 and all(line.startswith("PASS") for line in gpu)


@pytest.mark.slow
@pytest.mark.skipif(tensorrt_include() is None,
                    reason="TensorRT headers not found (set TensorRT_ROOT to a TensorRT with include/)")
def test_plugin_library_builds_with_both_creators(cuda_build):
    library = cuda_build / "libvitexport_plugins.so"
    assert library.is_file()
    symbols = subprocess.run(["nm", "-DC", str(library)], capture_output=True, text=True).stdout
    for kind in ("dpc_select::DPCSelect", "topk_reconstruct::TopKMaskedReconstruct"):
        assert f"PluginRegistrar<vitexport::common::PluginCreator<vitexport::{kind}> >" in symbols
    data = library.read_bytes()
    assert b"DPCSelect\0" in data and b"TopKMaskedReconstruct\0" in data


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has a GPU")
def test_gpu_check_script_says_there_is_no_gpu(tmp_path):
    env = {**os.environ, "PATH": os.environ["PATH"]}
    result = subprocess.run(["bash", str(PLUGINS / "tests" / "run_gpu_checks.sh"), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1].startswith("FAIL")
    assert "nvcc" in result.stdout or "no GPU" in result.stdout
