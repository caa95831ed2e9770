"""Compilers, headers and runtimes for the plugin tests: found here, skipped with a reason
where absent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.doctor import tensorrt_headers as tensorrt_include  # noqa: F401 - used by the tests
from exporter.onnx.plugin_ops import ort_extensions_available

NVCC = shutil.which("nvcc")
CXX = shutil.which("g++")
WRAPPER_SKIP_REASON = (
    "TensorRT headers (set TensorRT_ROOT to a TensorRT with include/), "
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


def cuda_include() -> Path | None:
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda", "/usr"]
    for root in filter(None, roots):
        if (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    return None


def can_compile_wrapper() -> bool:
    return CXX is not None and tensorrt_include() is not None and cuda_include() is not None


def compile_wrapper(source: Path, out: Path) -> subprocess.CompletedProcess:
    """Compile a plugin .cpp against the TensorRT headers (warnings are errors, except the
    deprecations inside TensorRT's own headers)."""
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
            f"-I{cuda_include()}",
            str(source),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )


def compile_kernel(source: Path, arch: str, out: Path) -> subprocess.CompletedProcess:
    """`nvcc -c` of a plugin's .cu for one GPU architecture (sm_80, sm_90)."""
    return subprocess.run(
        [NVCC, "-c", f"-arch={arch}", "-std=c++17", str(source), "-o", str(out)],
        capture_output=True,
        text=True,
    )
