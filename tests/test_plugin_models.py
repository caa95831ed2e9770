"""`--plugins` on every model family: the plugin graph of each method that has a plugin
equals its portable graph, on tiny configurations of each family."""

import numpy as np
import onnxruntime as ort
import pytest

from exporter.methods import apply_method
from exporter.onnx.export import export_onnx
from exporter.onnx.plugin_ops import PLUGIN_DOMAIN, run_plugin_graph
from exporter.onnx.plugins import PLUGINS, plugin_methods, use_plugins

from .helpers import TINY_MODELS, one_line, images_for, max_abs, run, tiny_vit

MODELS = {k: v for k, v in TINY_MODELS.items() if k in ("vit-32x32", "dpt", "segmenter")}
CASES = [(family, method) for family in MODELS for method in plugin_methods()]


@pytest.mark.parametrize("family,method", CASES)
def test_plugin_graph_equals_portable_graph(tmp_path, family, method):
    reduced = apply_method(MODELS[family](), method, {})
    images = images_for(reduced.model, batch=1)
    proto = export_onnx(reduced, tmp_path / "model.onnx", tuple(images.shape))
    portable = ort.InferenceSession(
        str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = portable.run(None, {"images": images.numpy()})
    plugin = use_plugins(proto, method)
    ops = [n.op_type for n in plugin.graph.node if n.domain == PLUGIN_DOMAIN]
    record = next(p for p in PLUGINS if method in p.methods)
    assert ops and set(ops) == {record.name}
    got = run_plugin_graph(plugin, {"images": images.numpy()})
    for a, b in zip(got, expected):
        assert a.shape == b.shape and max_abs(a, b) <= 1e-5 * max(1.0, np.abs(b).max())


def test_plugin_record_finds_modules_by_their_class():
    """The finder names the module class as the exporter's metadata does; renaming or moving
    the class moves the finder with it."""
    for plugin in PLUGINS:
        path = f"{plugin.module.__module__}.{plugin.module.__qualname__}"
        assert path.startswith("exporter.ops.")
        assert plugin.cpu.__module__ == "exporter.onnx.plugin_ops"


@pytest.mark.parametrize("method", plugin_methods())
def test_plugin_graph_with_dynamic_batch(tmp_path, method):
    """A dynamic batch adds shape arithmetic (Shape -> Gather ...) in front of the lowering:
    the surgery leaves it out of the plugin's inputs, and the graph runs at any batch."""
    reduced = apply_method(tiny_vit(grid=(8, 8), depth=3, dim=16), method, {})
    images = images_for(reduced.model, batch=2)
    proto = export_onnx(reduced, tmp_path / "model.onnx", tuple(images.shape), dynamic_batch=True)
    portable = ort.InferenceSession(
        str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    plugin = use_plugins(proto, method)
    for batch in (1, 3):
        feed = {"images": images_for(reduced.model, batch=batch).numpy()}
        for a, b in zip(run_plugin_graph(plugin, feed), portable.run(None, feed)):
            assert a.shape == b.shape and max_abs(a, b) <= 1e-5 * max(1.0, np.abs(b).max())


def test_plugins_refused_for_swin_before_export(tmp_path):
    """Swin's reconstruction works on window tensors the plugin does not take: one line, exit 2,
    nothing written."""
    result = run(
        [
            "build",
            "--model",
            "swin_tiny_patch4_window7_224",
            "--img-size",
            "224x224",
            "--method",
            "expedite",
            "--plugins",
            "--out",
            tmp_path / "swin",
        ]
    )
    one_line(result, 2, "--plugins")
    assert "windowed stages" in result.output and not (tmp_path / "swin").exists()
