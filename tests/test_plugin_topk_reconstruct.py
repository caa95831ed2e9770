"""TopKMaskedReconstruct: kernel math (host build of the .cuh), CUDA compile, CPU op, graph surgery.

Everything here runs without a GPU and without TensorRT: the plugin's per-element math is
compiled for the host and compared with exporter.ops.TokenReconstruction, the kernel is only
compiled, and the plugin graph runs on the CPU implementation.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporter.methods import apply_method
from exporter.onnx.export import export_onnx
from exporter.onnx.plugin_ops import (
    NORMS,
    PLUGIN_DOMAIN,
    TOPK_RECONSTRUCT,
    run_plugin_graph,
    topk_masked_reconstruct,
)
from exporter.onnx.plugins import PluginSurgeryError, use_topk_reconstruct_plugin
from exporter.ops import TokenReconstruction
from exporter.ops.grid import window_mask

from .helpers import images_for, max_abs, tiny_segmenter, tiny_vit
from .toolchain import (
    BACKENDS,
    CXX,
    NVCC,
)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "topk_masked_reconstruct"
HOST_SOURCE = Path(__file__).parent / "native" / "topk_reconstruct_host.cpp"
KERNEL_TOL = 1e-5
GRAPH_TOL = 1e-4

# (grid, cells, C, D, k, tau): M from 1 cluster (k = M = 1) to 48, N from 12 to 96 pixels.
# tau >= 2: with sharper weights the float32 reference itself drifts by ~1e-5 from float64 truth.
KERNEL_CASES = [
    ((3, 4), (1, 1), 8, 3, 1, 5.0),
    ((4, 6), (3, 4), 16, 7, 4, 5.0),
    ((8, 12), (6, 8), 24, 5, 20, 50.0),
    ((8, 8), (4, 4), 32, 9, 16, 2.0),
]


def _random_case(grid, cells, C, D, seed):
    g = torch.Generator().manual_seed(seed)
    N, M = grid[0] * grid[1], cells[0] * cells[1]
    z = torch.randn(2, N, C, generator=g)
    centers = torch.randn(2, M, C, generator=g) * 0.7
    values = torch.randn(2, M, D, generator=g)
    return z, centers, values


def _reference(z, centers, values, k, tau, norm, mask):
    layer = TokenReconstruction(k, tau, norm, mask)
    index, w = layer.weights(z, centers)
    return layer(values, index, w).numpy()


# ---- the .cuh math, built for the host ----------------------------------------------------------


@pytest.fixture(scope="module")
def host_program(tmp_path_factory):
    if NVCC is None and CXX is None:
        pytest.skip(
            "neither nvcc nor g++ is on PATH: cannot build the host test of the kernel math"
        )
    exe = tmp_path_factory.mktemp("native") / "topk_reconstruct_host"
    # nvcc compiles the __host__ __device__ qualifiers as CUDA does; g++ is the fallback.
    cmd = (
        [NVCC, "-x", "cu", "-std=c++17"] if NVCC else [CXX, "-std=c++17", "-O2", "-Wall", "-Werror"]
    )
    cmd += [f"-I{PLUGIN_DIR}", str(HOST_SOURCE), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


@pytest.mark.parametrize("masked", [False, True], ids=["all", "window"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("grid,cells,C,D,k,tau", KERNEL_CASES)
def test_kernel_math_matches_token_reconstruction(
    host_program, tmp_path, grid, cells, C, D, k, tau, norm, masked
):
    z, centers, values = _random_case(grid, cells, C, D, seed=C + k)
    mask = window_mask(grid, cells, (3, 3)) if masked else None
    if mask is not None:
        k = min(k, int(mask.sum(1).min()))  # as the method caps k by the window size
    expect = _reference(z, centers, values, k, tau, norm, mask)
    B, N, M = z.shape[0], z.shape[1], centers.shape[1]
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    with open(src, "wb") as f:
        for t in (z, centers, values):
            f.write(t.numpy().astype(np.float32).tobytes())
        if mask is not None:
            f.write(mask.numpy().astype(np.uint8).tobytes())
    args = [B, N, M, z.shape[2], D, k, repr(tau), NORMS.index(norm), int(mask is not None)]
    subprocess.run([str(host_program), str(src), str(dst), *map(str, args)], check=True)
    got = np.fromfile(dst, dtype=np.float32).reshape(B, N, D)
    assert max_abs(got, expect) <= KERNEL_TOL


# ---- the CPU implementation ---------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True], ids=["all", "window"])
@pytest.mark.parametrize("norm", NORMS)
def test_cpu_op_matches_token_reconstruction(norm, masked):
    grid, cells = (6, 8), (3, 4)
    z, centers, values = _random_case(grid, cells, 16, 6, seed=3)
    mask = window_mask(grid, cells, (3, 3)) if masked else None
    expect = _reference(z, centers, values, 5, 4.0, norm, mask)
    got = topk_masked_reconstruct(
        z.numpy(),
        centers.numpy(),
        values.numpy(),
        None if mask is None else mask.numpy(),
        k=5,
        tau=4.0,
        norm=NORMS.index(norm),
    )
    assert max_abs(got, expect) <= KERNEL_TOL


def test_cpu_op_rejects_k_above_clusters():
    z, centers, values = _random_case((2, 2), (1, 2), 4, 3, seed=0)
    with pytest.raises(ValueError, match="allowed 1..2"):
        topk_masked_reconstruct(z.numpy(), centers.numpy(), values.numpy(), k=3, tau=1.0)


# ---- graph surgery -------------------------------------------------------------------------------------


def _export(reduced, images, path):
    proto = export_onnx(reduced, path, tuple(images.shape))
    portable = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return proto, portable.run(None, {"images": images.numpy()})


def _check_plugin_graph(proto, expected_outputs, images, config, backend):
    plugin = use_topk_reconstruct_plugin(proto)
    onnx.checker.check_model(plugin)
    assert not [n for n in plugin.graph.node if n.op_type == "TopK"], (
        "reconstruction TopK left over"
    )
    nodes = [n for n in plugin.graph.node if n.op_type == TOPK_RECONSTRUCT]
    assert len(nodes) == 1 and nodes[0].domain == PLUGIN_DOMAIN
    attrs = {a.name: a for a in nodes[0].attribute}
    types = {name: onnx.AttributeProto.AttributeType.Name(a.type) for name, a in attrs.items()}
    assert types == {
        "k": "INT",
        "tau": "FLOAT",
        "norm": "INT",
        "has_mask": "INT",
        "plugin_version": "STRING",
        "plugin_namespace": "STRING",
    }
    values = {name: onnx.helper.get_attribute_value(a) for name, a in attrs.items()}
    assert values["plugin_version"] == b"1" and values["plugin_namespace"] == b""
    assert values["k"] == config["k"] and values["tau"] == pytest.approx(config["tau"])
    assert values["norm"] == NORMS.index(config["norm"])
    assert values["has_mask"] == int(config["neighbours"] == "window") == len(nodes[0].input) - 3
    assert plugin.ir_version == proto.ir_version
    got = run_plugin_graph(plugin, {"images": images.numpy()}, backend=backend)
    assert len(got) == len(expected_outputs)
    for a, b in zip(got, expected_outputs):
        assert a.shape == b.shape
        assert max_abs(a, b) <= GRAPH_TOL


@pytest.fixture(scope="module")
def vit_window_l2(tmp_path_factory):
    """Reconstruction at the backbone output, window neighbours, l2 norm: a fast small graph."""
    reduced = apply_method(
        tiny_vit(grid=(8, 8)),
        "expedite",
        {"hw": "4x4", "k": 6, "tau": 2.0, "norm": "l2", "neighbours": "window", "window": "3x3"},
    )
    images = images_for(reduced.model, batch=2)
    proto, outputs = _export(reduced, images, tmp_path_factory.mktemp("vit") / "model.onnx")
    return proto, outputs, images, reduced.method.config()


@pytest.mark.parametrize("backend", BACKENDS)
def test_plugin_graph_matches_portable_graph_vit(vit_window_l2, backend):
    _check_plugin_graph(*vit_window_l2, backend=backend)


@pytest.fixture(scope="module")
def segmenter_output(tmp_path_factory):
    """Segmenter reconstructs the class logits after the decoder: weights and gather far apart."""
    reduced = apply_method(tiny_segmenter(), "expedite", {"hw": "3x4", "k": 5})
    assert reduced.method.config()["restore"] == "output"
    images = images_for(reduced.model, batch=1)
    proto, outputs = _export(reduced, images, tmp_path_factory.mktemp("seg") / "model.onnx")
    return proto, outputs, images, reduced.method.config()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_plugin_graph_matches_portable_graph_segmenter(segmenter_output, backend):
    _check_plugin_graph(*segmenter_output, backend=backend)


def test_surgery_refuses_a_graph_without_reconstruction():
    node = onnx.helper.make_node("TopK", ["x", "k"], ["v", "i"], largest=0)
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("v", onnx.TensorProto.FLOAT, [1, 2])],
        [onnx.numpy_helper.from_array(np.array([2], dtype=np.int64), "k")],
    )
    model = onnx.helper.make_model(
        graph, ir_version=10, opset_imports=[onnx.helper.make_opsetid("", 18)]
    )
    with pytest.raises(PluginSurgeryError, match="TokenReconstruction"):
        use_topk_reconstruct_plugin(model)
