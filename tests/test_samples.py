"""samples/: the Python API script end to end, the ONNX Runtime C++ sample built and run against
the onnxruntime wheel's own library (where matching headers are present), and the TensorRT C++
sample compiled against TensorRT's headers (where present)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .helpers import EXPEDITE
from .toolchain import WRAPPER_SKIP_REASON, can_compile_wrapper, compile_wrapper

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# Headers are never committed: fetched for local checks into the git-ignored .headers/.
HEADERS = ROOT / ".headers"


def ort_include() -> Path | None:
    for root in (os.environ.get("ONNXRUNTIME_INCLUDE_DIR"), HEADERS / "onnxruntime"):
        if root and (Path(root) / "onnxruntime_cxx_api.h").is_file():
            return Path(root)
    return None


@pytest.mark.slow
def test_python_sample_builds_validates_and_deploys(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(SAMPLES / "python" / "end_to_end.py"),
            "--model",
            "segmenter_tiny",
            "--img-size",
            "64x64",
            "--hw",
            "3x3",
            "--out",
            str(tmp_path / "out"),
            "--repo",
            str(tmp_path / "repo"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "model.onnx in onnxruntime: passed" in proc.stdout
    assert "validated again: passed" in proc.stdout
    assert "segmenter_tiny_expedite_python: python" in proc.stdout
    assert (tmp_path / "repo" / "segmenter_tiny_expedite_python" / "config.pbtxt").is_file()


@pytest.mark.skipif(
    ort_include() is None,
    reason="ONNX Runtime C++ headers not found (set "
    "ONNXRUNTIME_INCLUDE_DIR, or put onnxruntime_cxx_api.h and the headers it "
    "includes in .headers/onnxruntime/; they are not committed)",
)
@pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("g++") is None, reason="cmake or g++ not found"
)
def test_ort_cpp_sample_matches_python(built, tmp_path):
    import onnxruntime as ort
    from polygraphy.json import load_json

    out = built(*EXPEDITE)
    # The wheel ships only libonnxruntime.so.<version>; its SONAME is libonnxruntime.so.1.
    lib = next((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so.*"))
    root = tmp_path / "ort"
    (root / "lib").mkdir(parents=True)
    for name in ("libonnxruntime.so", "libonnxruntime.so.1"):
        (root / "lib" / name).symlink_to(lib)
    (root / "include").symlink_to(ort_include())
    build = tmp_path / "build"
    for cmd in (
        [
            "cmake",
            "-S",
            str(SAMPLES / "cpp" / "ort"),
            "-B",
            str(build),
            f"-DONNXRUNTIME_ROOT={root}",
        ],
        ["cmake", "--build", str(build)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    images = load_json(str(out / "inputs.json"))[0]["images"]
    images.tofile(tmp_path / "input.bin")
    proc = subprocess.run(
        [
            str(build / "vitexport_ort"),
            str(out / "model.onnx"),
            str(tmp_path / "input.bin"),
            str(tmp_path / "output.bin"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(None, {"images": images})[0]
    got = np.fromfile(tmp_path / "output.bin", dtype=np.float32).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert proc.stdout.startswith(f"logits [{', '.join(map(str, want.shape))}]")
    counts = np.bincount(want[0].argmax(0).ravel(), minlength=want.shape[1])
    expected = " ".join(f"class {c}: {k} px;" for c, k in enumerate(counts) if k)
    assert f"image 0: {expected}" in proc.stdout


@pytest.mark.skipif(not can_compile_wrapper(), reason=WRAPPER_SKIP_REASON)
def test_trt_cpp_sample_compiles(tmp_path):
    proc = compile_wrapper(SAMPLES / "cpp" / "trt" / "main.cpp", tmp_path / "main.o")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "main.o").stat().st_size > 0
