"""Compilers, headers and runtimes for the plugin tests: found here, skipped with a reason
where absent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.doctor import tensorrt_headers
from exporter.onnx.plugin_ops import ort_extensions_available

NVCC = shutil.which("nvcc")
CXX = shutil.which("g++")
WRAPPER_SKIP_REASON = (
    "TensorRT headers (set TensorRT_ROOT to a TensorRT with include/, or put its include/ in .tensorrt/), "
    "CUDA headers or g++ not found"
)
# Where a plugin graph runs on the CPU: the reference op, and ONNX Runtime's custom-op library.
BACKENDS = [
    "reference",
    pytest.param(
        "ort",
        marks=pytest.mark.skipif(
            not ort_extensions_available(), reason="onnxruntime-extensions is not installed"
        ),
    ),
]


ROOT = Path(__file__).resolve().parents[1]
# Headers are never committed: fetched for local checks into the git-ignored .tensorrt/ or
# .headers/ of the checkout.
LOCAL_TENSORRT = (ROOT / ".tensorrt", ROOT / ".headers" / "tensorrt")


def tensorrt_include() -> Path | None:
    """TensorRT's include/: where `vitexport doctor` finds it, else a fetched local copy."""
    local = (
        r / "include" for r in LOCAL_TENSORRT if (r / "include" / "NvInferRuntime.h").is_file()
    )
    return tensorrt_headers() or next(local, None)


def cuda_include() -> Path | None:
    roots = [
        os.environ.get("CUDA_HOME"),
        os.environ.get("CUDA_PATH"),
        "/usr/local/cuda",
        *sorted(Path("/usr/local").glob("cuda-*")),
        "/usr",
    ]
    for root in filter(None, roots):
        if (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    return None


def can_compile_wrapper() -> bool:
    return CXX is not None and tensorrt_include() is not None and cuda_include() is not None


def compile_wrapper(source: Path, out: Path) -> subprocess.CompletedProcess:
    """Compile a .cpp (a plugin, the C++ sample) against the TensorRT and CUDA headers (warnings
    in our code are errors; the deprecations inside TensorRT's own headers are not)."""
    return subprocess.run(
        [
            CXX,
            "-std=c++17",
            "-c",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-deprecated-declarations",
            "-isystem",
            str(tensorrt_include()),
            "-isystem",
            str(cuda_include()),
            str(source),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def compile_kernel(source: Path, arch: str, out: Path) -> subprocess.CompletedProcess:
    """`nvcc -c` of a plugin's .cu for one GPU architecture (sm_80, sm_90)."""
    return subprocess.run(
        [NVCC, "-c", f"-arch={arch}", "-std=c++17", str(source), "-o", str(out)],
        capture_output=True,
        text=True,
    )
