"""DPCSelect: kernel math (host build of the .cuh), CUDA compile, CPU op, graph surgery.

Everything runs without a GPU and without TensorRT: the plugin's per-element math is compiled for
the host and compared with exporter.ops.density_peaks.DensityPeaksSelection, the kernels are only
compiled, and the plugin graph runs on the CPU implementation.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporter.build import PLUGIN_METHODS
from exporter.methods import apply_method
from exporter.onnx.export import export_onnx
from exporter.onnx.plugin_ops import (
    DPC_SELECT,
    PLUGIN_DOMAIN,
    dpc_select,
    run_plugin_graph,
)
from exporter.onnx.plugins import (
    PluginSurgeryError,
    selection_node_names,
    use_dpc_select_plugin,
    use_plugins,
)
from exporter.ops.decisions import Decisions
from exporter.ops.density_peaks import DensityPeaksSelection

from .helpers import images_for, max_abs, tiny_vit
from .test_ailurus import column_features, features
from .toolchain import (
    BACKENDS,
    CXX,
    NVCC,
)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "dpc_select"
HOST_SOURCE = Path(__file__).parent / "native" / "dpc_select_host.cpp"
TOL = 1e-5

# grid, M, lambda, a, k: the test_ailurus cases plus a 16x16 grid with the paper's lambda = 50.
CASES = [
    ((5, 7), 9, 10, 0.9, 2),
    ((7, 9), 3, 4, 0.6, 1),
    ((4, 6), 12, 23, 0.9, 1),
    ((6, 5), 7, 8, 1.0, 3),
    ((16, 16), 64, 50, 0.9, 1),
]


def _expected(grid, M, lam, a, k, z):
    sel = DensityPeaksSelection(grid, M, lam, a, k, z.shape[-1])
    centers, assignment = sel(z)
    _, neg_log_rho, score = sel.scores(z)
    return sel, centers.numpy(), assignment.numpy(), neg_log_rho.numpy(), score.numpy()


def _assert_float_close(got, expect):
    # -inf scores (duplicate tokens: log 0) must be -inf on both sides; the rest within TOL.
    assert np.array_equal(np.isfinite(got), np.isfinite(expect))
    assert np.array_equal(got[~np.isfinite(got)], expect[~np.isfinite(expect)])
    finite = np.isfinite(expect)
    assert not finite.any() or max_abs(got[finite], expect[finite]) <= TOL


# ---- the .cuh math, built for the host ----------------------------------------------------------


@pytest.fixture(scope="module")
def host_program(tmp_path_factory):
    if NVCC is None and CXX is None:
        pytest.skip(
            "neither nvcc nor g++ is on PATH: cannot build the host test of the kernel math"
        )
    exe = tmp_path_factory.mktemp("native") / "dpc_select_host"
    # g++ with -Werror is quick; nvcc -x cu checks the __host__ __device__ build (slow test below).
    cmd = (
        [CXX, "-std=c++17", "-O2", "-Wall", "-Werror"] if CXX else [NVCC, "-x", "cu", "-std=c++17"]
    )
    subprocess.run(
        cmd + [f"-I{PLUGIN_DIR}", str(HOST_SOURCE), "-o", str(exe)],
        check=True,
        capture_output=True,
        text=True,
    )
    return exe


def _run_host(exe, tmp_path, sel, z, M, k):
    B, N, C = z.shape
    lam = sel.neighbours.shape[1]
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    with open(src, "wb") as f:
        f.write(z.numpy().astype(np.float32).tobytes())
        f.write(sel.neighbours.numpy().astype(np.int32).tobytes())
        f.write(sel.weights.numpy().astype(np.float32).tobytes())
    subprocess.run([str(exe), str(src), str(dst), *map(str, (B, N, C, lam, M, k))], check=True)
    raw = dst.read_bytes()
    sizes = [(np.float32, B * N), (np.float32, B * N), (np.int32, B * M), (np.int32, B * N)]
    out, offset = [], 0
    for dtype, count in sizes:
        out.append(np.frombuffer(raw, dtype, count, offset))
        offset += 4 * count
    assert offset == len(raw)
    nlr, score, centers, assignment = out
    return nlr.reshape(B, N), score.reshape(B, N), centers.reshape(B, M), assignment.reshape(B, N)


@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied-columns"])
@pytest.mark.parametrize("grid,M,lam,a,k", CASES)
def test_kernel_math_matches_density_peaks_selection(
    host_program, tmp_path, grid, M, lam, a, k, tied
):
    N = grid[0] * grid[1]
    z = column_features(grid) if tied else features(2, N, 16, seed=N + k)
    sel, centers, assignment, nlr, score = _expected(grid, M, lam, a, k, z)
    got_nlr, got_score, got_centers, got_assignment = _run_host(
        host_program, tmp_path, sel, z, M, k
    )
    assert np.array_equal(got_centers, centers)
    assert np.array_equal(got_assignment, assignment)
    assert max_abs(got_nlr, nlr) <= TOL
    _assert_float_close(got_score, score)


def test_kernel_math_fallback_is_exercised(host_program, tmp_path):
    """Few centers and lambda = 4: some tokens have no center among their neighbours."""
    grid, M, lam, a, k = (7, 9), 3, 4, 0.6, 1
    z = features(2, 63, 16, seed=63 + k)
    sel, centers, assignment, _, _ = _expected(grid, M, lam, a, k, z)
    is_center = np.zeros((2, 63), dtype=bool)
    np.put_along_axis(is_center, centers, True, axis=1)
    assert (~is_center[:, sel.neighbours.numpy()].any(-1)).any()  # the fallback path runs
    _, _, got_centers, got_assignment = _run_host(host_program, tmp_path, sel, z, M, k)
    assert np.array_equal(got_assignment, assignment)


# ---- the host build of the kernel math (kernels and wrapper: test_plugin_sources.py) ----------------


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
def test_host_math_builds_with_nvcc(tmp_path):
    result = subprocess.run(
        [
            NVCC,
            "-x",
            "cu",
            "-std=c++17",
            f"-I{PLUGIN_DIR}",
            str(HOST_SOURCE),
            "-o",
            str(tmp_path / "host"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


# ---- the CPU implementation ---------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied-columns"])
@pytest.mark.parametrize("grid,M,lam,a,k", CASES)
def test_cpu_op_matches_density_peaks_selection(grid, M, lam, a, k, tied):
    N = grid[0] * grid[1]
    z = column_features(grid) if tied else features(2, N, 16, seed=N + k)
    sel, centers, assignment, _, _ = _expected(grid, M, lam, a, k, z)
    got_centers, got_assignment = dpc_select(
        z.numpy(), sel.neighbours.numpy().astype(np.int32), sel.weights.numpy(), clusters=M, knn=k
    )
    assert got_centers.dtype == got_assignment.dtype == np.int32
    assert_same_up_to_ties(sel, z, got_centers, got_assignment)
    if not tied:  # random features: no score within rounding of another here
        assert np.array_equal(got_centers, centers) and np.array_equal(got_assignment, assignment)


# Relative margin within which two implementations' roundings may order scores differently:
# tied columns give mathematically equal scores, and a vectorised log may round equal inputs
# differently by position (SIMD lanes vs the scalar tail), so which CPU runs decides the order.
TIE = 1e-6


def assert_same_up_to_ties(sel, z, centers, assignment):
    """The op's choices are the module's, or differ only where the module's own scores tie
    within rounding: the documented rule (higher score, then lower index) decides everything
    else. The assignment is judged with the op's centers imposed on the module."""
    with Decisions({"selection.centers#0": centers.astype(np.int64)}) as record:
        sel(z)
    for key, choice in (("selection.centers#0", centers), ("selection.assignment#0", assignment)):
        margins = record.margins[key](record.own[key], choice.astype(np.int64))
        assert (margins <= TIE).all(), (key, margins.max())


def test_cpu_op_rejects_clusters_not_below_tokens():
    sel = DensityPeaksSelection((2, 3), 2, 3, 0.9, 1, 4)
    z = features(1, 6, 4, seed=0).numpy()
    with pytest.raises(ValueError, match=r"clusters = 6 .*allowed 1..5"):
        dpc_select(z, sel.neighbours.numpy(), sel.weights.numpy(), clusters=6, knn=1)
    with pytest.raises(ValueError, match=r"knn = 4 .*allowed 1..3"):
        dpc_select(z, sel.neighbours.numpy(), sel.weights.numpy(), clusters=2, knn=4)


# ---- graph surgery -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ailurus_vit(tmp_path_factory):
    reduced = apply_method(
        tiny_vit(grid=(8, 8)), "ailurus", {"clusters": 12, "spatial_neighbours": 10, "knn": 2}
    )
    images = images_for(reduced.model, batch=2)
    path = tmp_path_factory.mktemp("ailurus") / "model.onnx"
    proto = export_onnx(reduced, path, tuple(images.shape))
    portable = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return proto, portable.run(None, {"images": images.numpy()}), images, reduced


def test_plugin_graph_structure(ailurus_vit):
    proto, _, _, reduced = ailurus_vit
    plugin = use_dpc_select_plugin(proto)
    onnx.checker.check_model(plugin)
    assert selection_node_names(proto) and not selection_node_names(plugin), "selection left over"
    assert not [n for n in plugin.graph.node if n.op_type in ("TopK", "ArgMin", "CumSum")]
    nodes = [n for n in plugin.graph.node if n.op_type == DPC_SELECT]
    assert len(nodes) == 1 and nodes[0].domain == PLUGIN_DOMAIN
    attrs = {a.name: a for a in nodes[0].attribute}
    types = {name: onnx.AttributeProto.AttributeType.Name(a.type) for name, a in attrs.items()}
    assert types == {
        "clusters": "INT",
        "knn": "INT",
        "plugin_version": "STRING",
        "plugin_namespace": "STRING",
    }
    values = {name: onnx.helper.get_attribute_value(a) for name, a in attrs.items()}
    assert values["plugin_version"] == b"1" and values["plugin_namespace"] == b""
    assert values["clusters"] == 12 and values["knn"] == 2
    # Constant tables as inputs, no INT64 tensor fed to the plugin.
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in plugin.graph.initializer}
    z, neighbours, weights = nodes[0].input
    assert inits[neighbours].dtype == np.int32
    assert np.array_equal(inits[neighbours], reduced.method.selection.neighbours.numpy())
    assert np.array_equal(inits[weights], reduced.method.selection.weights.numpy())
    assert plugin.ir_version == proto.ir_version
    # int32 out of the plugin, cast back to int64 for the graph's consumers.
    casts = [n for n in plugin.graph.node if n.op_type == "Cast" and n.input[0] in nodes[0].output]
    assert casts and all(
        onnx.helper.get_attribute_value(c.attribute[0]) == onnx.TensorProto.INT64 for c in casts
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_plugin_graph_matches_portable_graph(ailurus_vit, backend):
    proto, expected, images, _ = ailurus_vit
    got = run_plugin_graph(
        use_plugins(proto, "ailurus"), {"images": images.numpy()}, backend=backend
    )
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        assert max_abs(a, b) <= TOL


def test_use_plugins_refuses_a_graph_without_plugin_subgraph():
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    model = onnx.helper.make_model(
        graph, ir_version=10, opset_imports=[onnx.helper.make_opsetid("", 18)]
    )
    with pytest.raises(PluginSurgeryError, match="--method tome"):
        use_plugins(model, "tome")
    with pytest.raises(PluginSurgeryError, match="DensityPeaksSelection"):
        use_dpc_select_plugin(model)


def test_build_offers_plugins_for_ailurus():
    assert "ailurus" in PLUGIN_METHODS and "expedite" in PLUGIN_METHODS
