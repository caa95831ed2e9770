"""Timing against the best baseline: attention fused for ONNX Runtime, the structural limit
of a speed-up and the checks that flag an impossible one."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporter.config import ModelSpec
from exporter.models import create_model
from exporter.onnx.export import export_onnx
from exporter.onnx.fuse import MS_DOMAIN, count_fused, fuse_attention, optimize_onnx
from exporter.onnx.lint import errors_of, lint_folder
from exporter.record import Artifact
from exporter.timing import (
    interleaved_latency,
    round_ratio,
    structural_limit,
    suspects,
)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """ViT-Ti Segmenter (12 blocks, 3 heads) at 64x96, exported plain."""
    model = create_model(ModelSpec("segmenter_tiny", None, (64, 96), 5)).eval()
    path = tmp_path_factory.mktemp("fuse") / "model.onnx"
    export_onnx(model, path, (1, 3, 64, 96))
    return path


def run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_every_attention_is_fused_and_the_outputs_stay(tiny_onnx, tmp_path):
    proto = onnx.load(str(tiny_onnx))
    fused, made = fuse_attention(proto)
    assert made == 14  # 12 encoder blocks and the mask transformer's 2 layers
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("MultiHeadAttention") == 14 and "Softmax" not in ops
    heads = {a.i for n in fused.graph.node for a in n.attribute if a.name == "num_heads"}
    assert heads == {3}
    path = tmp_path / "fused.onnx"
    onnx.save(fused, str(path))
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96), dtype=np.float32)
    plain, out = run(tiny_onnx, x), run(path, x)
    assert np.abs(plain - out).max() < 1e-4 * np.abs(plain).max()


def test_optimized_file_keeps_scopes_and_passes_its_lint_only_as_optimized(tiny_onnx, tmp_path):
    path = tmp_path / "model.optimized.onnx"
    assert optimize_onnx(tiny_onnx, path) == 14 == count_fused(path)
    proto = onnx.load(str(path))
    assert any(n.domain == MS_DOMAIN for n in proto.graph.node)
    # the module scopes are back on the nodes (the token-op profile reads them)
    assert sum(bool(n.metadata_props) for n in proto.graph.node) > len(proto.graph.node) // 2
    as_optimized = Artifact.of("onnx_optimized", path.name)
    assert as_optimized.runtime == "onnxruntime-optimized"  # validated like every artifact
    assert not errors_of(lint_folder(tmp_path, [as_optimized])[path.name])
    # the same file as a portable model.onnx is refused: TensorRT knows no com.microsoft op
    assert errors_of(lint_folder(tmp_path, [Artifact.plain(path.name)])[path.name])


def test_a_graph_without_the_pattern_is_left_alone():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Softmax", ["x"], ["y"])], "g", [x], [y])
    proto = onnx.helper.make_model(graph)
    same, made = fuse_attention(proto)
    assert made == 0 and same is proto


def test_structural_limit_counts_the_shared_blocks_stem_and_head():
    # 8 blocks of 2 GFLOPs and 1 GFLOP of stem and head; cut after 3 blocks: the reduced model
    # runs at least 1 + 3 * 2 = 7 of the baseline's 17
    assert structural_limit(17.0, 2.0, 8, 3) == pytest.approx(17 / 7)
    assert structural_limit(17.0, 2.0, 8, 0) == pytest.approx(17.0)
    assert structural_limit(17.0, 2.0, 8, None) is None


def test_suspect_speedups_are_named():
    assert suspects(1.5, 1.76, 2.4) == []
    above_limit = suspects(3.11, 3.0, 2.4)
    assert len(above_limit) == 1 and "structural limit 2.40x" in above_limit[0]
    above_gflops = suspects(2.0, 1.76, 2.4)  # 2.0 > 1.1 * 1.76
    assert len(above_gflops) == 1 and "GFLOPs ratio 1.76x" in above_gflops[0]
    assert len(suspects(3.11, 1.76, 2.4)) == 2  # the README's old figure: both


def test_ratio_is_taken_round_by_round():
    lat = {"a": {"times_ms": [10.0, 20.0, 30.0, 40.0]}, "b": {"times_ms": [5.0, 5.0, 10.0, 10.0]}}
    r = round_ratio(lat, "a", "b")  # per round: 2, 4, 3, 4
    assert r["median"] == pytest.approx(3.5)
    assert r["p25"] <= 3.0 and r["p75"] >= 4.0


class Fake:
    """A session whose run time follows its input (the test tells which input each run got)."""

    def __init__(self):
        self.seen = []

    def get_inputs(self):
        return [type("I", (), {"name": "images"})()]

    def run(self, _, feeds):
        self.seen.append(float(feeds["images"][0]))


def test_interleaved_rounds_feed_the_same_image_to_every_session():
    a, b = Fake(), Fake()
    inputs = [np.full(1, i, dtype=np.float32) for i in range(3)]
    lat = interleaved_latency({"a": a, "b": b}, (1,), runs=5, warmup=1, inputs=inputs)
    assert a.seen == b.seen == [0.0, 0.0, 1.0, 2.0, 0.0, 1.0]  # warm-up, then rounds in turn
    assert len(lat["a"]["times_ms"]) == 5 and lat["a"]["cpu_ms"] >= 0
