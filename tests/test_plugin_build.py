"""The plugins' CMake: the kernel harness built and run (host side here, whole on a GPU), and
libvitexport_plugins.so built where TensorRT headers are present."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .toolchain import NVCC, cuda_include, tensorrt_include

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
CMAKE = shutil.which("cmake")
needs_cmake = pytest.mark.skipif(CMAKE is None, reason="cmake is not on PATH (pip install cmake)")
NO_HEADERS = (
    "TensorRT headers not found (set TensorRT_ROOT to a TensorRT with include/, or put its "
    "include/ in .tensorrt/)"
)


def _cmake(build: Path, *flags: str) -> None:
    for cmd in (
        ["cmake", "-S", str(PLUGINS), "-B", str(build), *flags],
        ["cmake", "--build", str(build), "-j2"],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _lines(output: str, verdict: str) -> list[str]:
    """The harness's lines with that verdict (ctest -V prefixes them with the test number)."""
    lines = (re.sub(r"^\d+: ", "", line) for line in output.splitlines())
    return [line for line in lines if line.startswith(verdict + " ")]


@needs_cmake
def test_host_only_harness_builds_and_passes_under_ctest(tmp_path):
    _cmake(tmp_path, "-DVITEXPORT_HOST_ONLY=ON")
    result = subprocess.run(
        ["ctest", "--test-dir", str(tmp_path), "-V"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:]
    passed = _lines(result.stdout, "PASS")
    assert not _lines(result.stdout, "FAIL")
    # every case of both plugins, the largest ones included, plus the comparators and generator
    for case in (
        "dpc_select/largest-M",
        "dpc_select/ties",
        "topk_reconstruct/largest-k",
        "topk_reconstruct/largest-M",
        "topk_reconstruct/ties-mask",
        "comparators",
    ):
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
    result = subprocess.run(
        [str(cuda_build / "tests" / "kernel_harness")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout
    assert any(line.startswith("PASS launchers:") for line in result.stdout.splitlines())
    gpu = [line for line in result.stdout.splitlines() if line.startswith(("PASS gpu", "FAIL gpu"))]
    if any(line.startswith("SKIP gpu:") for line in result.stdout.splitlines()):
        assert not gpu  # no GPU here: said so, and nothing claimed
    else:
        assert len(gpu) == 16 and all(line.startswith("PASS") for line in gpu)


@pytest.mark.slow
@pytest.mark.skipif(
    tensorrt_include() is None,
    reason=NO_HEADERS,
)
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
    result = subprocess.run(
        ["bash", str(PLUGINS / "tests" / "run_gpu_checks.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1].startswith("FAIL")
    assert "nvcc" in result.stdout or "no GPU" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    tensorrt_include() is None,
    reason=NO_HEADERS,
)
def test_plugin_entry_points_behave_as_specified(cuda_build, tmp_path):
    """The creators and plugins as a builder calls them, without TensorRT: a stand-in registry
    (tests/native/plugin_behaviour.cpp) receives the creators the library registers."""
    exe = tmp_path / "behaviour"
    sources = [
        ROOT / "tests" / "native" / "plugin_behaviour.cpp",
        PLUGINS / "dpc_select" / "dpcSelectPlugin.cpp",
        PLUGINS / "topk_masked_reconstruct" / "topkMaskedReconstructPlugin.cpp",
    ]
    cuda = cuda_include()
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-Wno-deprecated-declarations",
            "-isystem",
            str(tensorrt_include()),
            f"-I{cuda}",
            *map(str, sources),
            str(cuda_build / "libvitexport_kernels.a"),
            f"-L{cuda.parent / 'lib64'}",
            "-lcudart",
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # names, versions and attribute types (5 = kINT32, 1 = kFLOAT32) as in the YAML specs
    assert "DPCSelect version 1 namespace '' fields: clusters:5 knn:5\n" in out
    assert (
        "TopKMaskedReconstruct version 1 namespace '' fields: k:5 tau:1 norm:5 has_mask:5\n" in out
    )
    for line in [
        "create defaults: clusters=400.000000 knn=1.000000",
        "create int64: clusters=8.000000 knn=2.000000",
        "create clusters 3840: clusters=3840.000000",
        "create clusters 3841: refused",
        "create knn float: refused",
        "create clusters list: refused",
        "create float64 tau: k=6.000000 tau=0.500000 norm=1.000000 has_mask=1.000000",
        "create k 1025: refused",
        "create tau 0: refused",
        "create norm 2: refused",
        # z float, neighbours int32, weights float -> centers, assignment int32
        "types float int32 float: 0 3 3",
        "types half int32 float: -1",
        "formats (float half int32 bool per position): 1000 0010 1000 0010 0010 chw32:0",
        "shapes valid: configurePlugin 0 onShapeChange 0 workspace",
        "shapes M = N: configurePlugin -1 onShapeChange -1",
        "shapes knn > lambda: configurePlugin -1",
        # the mask is bool and only an input when has_mask = 1
        "formats (float half int32 bool per position): 1000 1000 1000 0001 1000 chw32:0",
        "shapes largest M: configurePlugin 0",
        "shapes shared memory: configurePlugin -1",
        "shapes mask wrong: configurePlugin -1",
    ]:
        assert line in out, line
    # a refused shape is refused by enqueue too, never launched
    assert all(" enqueue -1" in line for line in out.splitlines() if "configurePlugin -1" in line)
    assert (
        "[TensorRT plugin] DPCSelect::createPlugin: clusters = 3841 is out of range: "
        "allowed 1..3840"
    ) in result.stderr
