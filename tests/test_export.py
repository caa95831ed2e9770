"""Export: deterministic bytes, dynamic batch, and the lint that names forbidden ops."""

import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from exporter.errors import InputError
from exporter.methods import apply_method
from exporter.onnx.export import export_onnx
from exporter.onnx.lint import errors_of, lint
from tests.helpers import images_for, max_abs, tiny_vit


def small_expedite():
    model = tiny_vit((6, 10), num_prefix=1)
    return apply_method(model, "expedite", {"alpha": 2, "hw": "4x7", "k": 6, "tau": 5})


def test_same_inputs_same_bytes(tmp_path):
    reduced = small_expedite()
    export_onnx(reduced, tmp_path / "a.onnx", (1, 3, 24, 40))
    export_onnx(small_expedite(), tmp_path / "b.onnx", (1, 3, 24, 40))
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_dynamic_batch_runs_other_batches(tmp_path):
    reduced = small_expedite()
    proto = export_onnx(reduced, tmp_path / "d.onnx", (1, 3, 24, 40), dynamic_batch=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    sess = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    images = images_for(reduced.model, batch=3)
    (out,) = sess.run(None, {"images": images.numpy()})
    with torch.no_grad():
        assert max_abs(out, reduced(images)) <= 1e-4


def test_exported_expedite_uses_standard_ops_only(tmp_path):
    proto = export_onnx(small_expedite(), tmp_path / "m.onnx", (1, 3, 24, 40), opset=17)
    assert proto.opset_import[0].version >= 17
    assert lint(proto) == []
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)


def test_opset_out_of_range(tmp_path):
    with pytest.raises(InputError, match="--opset"):
        export_onnx(small_expedite(), tmp_path / "m.onnx", (1, 3, 24, 40), opset=11)


class Picker(torch.nn.Module):
    def forward(self, x):
        return torch.topk(x.flatten(1), 4000, dim=1).values


class WithPicker(torch.nn.Module):
    output_names = ("out",)

    def __init__(self):
        super().__init__()
        self.head = Picker()

    def forward(self, images):
        return self.head(images)


def test_lint_names_op_and_module_of_traced_graph(tmp_path):
    proto = export_onnx(WithPicker(), tmp_path / "p.onnx", (1, 3, 64, 64))
    found = errors_of(lint(proto))
    assert len(found) == 1
    assert found[0].op == "TopK" and found[0].module == "head"
    assert "3840" in str(found[0]) and "head" in str(found[0])


def _node(op, inputs, outputs, scope, **attrs):
    node = helper.make_node(op, inputs, outputs, name=f"n_{op}", **attrs)
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", str(["", *scope.split("/"), op.lower()])
    return node


def test_lint_flags_every_forbidden_kind():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    nodes = [
        _node("NonZero", ["x"], ["nz"], "method.select"),
        _node("ScatterElements", ["x", "i", "x"], ["sc"], "method.merge", reduction="add"),
        _node("ScatterElements", ["x", "i", "x"], ["ok"], "method.write"),
        _node("RandomUniformLike", ["x"], ["r"], "gates"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [x],
        [helper.make_tensor_value_info("ok", TensorProto.FLOAT, [4])],
        initializer=[helper.make_tensor("i", TensorProto.INT64, [4], [0, 1, 2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    found = {(f.op, f.module) for f in errors_of(lint(model))}
    assert found == {
        ("NonZero", "method.select"),
        ("ScatterElements", "method.merge"),
        ("RandomUniformLike", "gates"),
    }


def _plugin_model(op, **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    node = helper.make_node(
        op, ["x"], ["y"], domain="trt.plugins", plugin_version="1", plugin_namespace="", **attrs
    )
    graph = helper.make_graph([node], "g", [x], [y])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("trt.plugins", 1)]
    )


def test_lint_of_plugin_nodes():
    known = ("TopKMaskedReconstruct",)
    assert lint(_plugin_model("TopKMaskedReconstruct", k=4, tau=2.0), plugins=known) == []
    unknown = errors_of(lint(_plugin_model("Mystery"), plugins=known))
    assert [f.message for f in unknown] == [
        "custom op in domain 'trt.plugins' with no vitexport plugin"
    ]
    listed = errors_of(lint(_plugin_model("TopKMaskedReconstruct", ks=[1, 2]), plugins=known))
    assert len(listed) == 1 and "'ks'" in listed[0].message and "INTS" in listed[0].message
    clash = errors_of(lint(_plugin_model("TopK"), plugins=("TopK",)))
    assert any("standard ONNX op" in f.message for f in clash)


def test_lint_refuses_unsorted_topk():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("v",)]
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], sorted=0)
    graph = helper.make_graph(
        [node], "g", [x], outs, initializer=[helper.make_tensor("k", TensorProto.INT64, [1], [2])]
    )
    found = errors_of(lint(helper.make_model(graph)))
    assert len(found) == 1 and "sorted=0" in found[0].message
