"""The TensorRT stage: plugin graphs validated on the CPU, engine build skipped clearly without
TensorRT, build_engine.sh written in all cases."""

import json

import pytest

from exporter.errors import InputError
from exporter.trt.engine import EngineSettings, shapes_of, tensorrt_version, trtexec_command
from tests.helpers import TINY, run


def test_trtexec_command_has_plugins_and_profile():
    eng = EngineSettings(workspace_mib=512, opt_level=3, plugin_library="libvitexport_plugins.so")
    cmd = trtexec_command(
        "model.plugins.onnx", "model.engine", eng, shapes_of((2, 3, 64, 96), True)
    )
    assert "--onnx=model.plugins.onnx" in cmd and "--staticPlugins=libvitexport_plugins.so" in cmd
    assert "--minShapes=images:1x3x64x96" in cmd and "--optShapes=images:2x3x64x96" in cmd
    assert "--maxShapes=images:8x3x64x96" in cmd and "--memPoolSize=workspace:512M" in cmd
    assert "--builderOptimizationLevel=3" in cmd


@pytest.mark.parametrize(
    "kwargs,flag",
    [
        ({"precision": "int4"}, "--precision"),
        ({"opt_level": 7}, "--opt-level"),
        ({"workspace_mib": 0}, "--workspace"),
    ],
)
def test_engine_settings_are_checked(kwargs, flag):
    with pytest.raises(InputError) as err:
        EngineSettings(**kwargs).check()
    assert err.value.flag == flag


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,extra,plugin",
    [
        ("expedite", ["--hw", "3x4", "--k", "6"], "TopKMaskedReconstruct"),
        ("ailurus", ["--clusters", "8"], "DPCSelect"),
    ],
)
def test_plugin_graph_holds_the_plugin_nodes_and_validates(built, method, extra, plugin):
    import onnx

    out = built(method, *extra, "--plugins")  # the expedite folder is deploy's and doctor's too
    proto = onnx.load(str(out / "model.plugins.onnx"))
    custom = [n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")]
    assert custom == [plugin]
    report = json.loads((out / "report.json").read_text())
    (entry,) = [v for v in report["validation"] if v["runtime"] == "onnxruntime+plugins"]
    assert entry["passed"] and entry["outputs"]["logits"]["cosine"] >= 0.99999


@pytest.mark.slow
def test_build_with_plugins_and_engine(built):
    flags = ("--hw", "3x4", "--k", "6", "--plugins", "--engine")
    out, output = built("expedite", *flags), built.output("expedite", *flags)
    report = json.loads((out / "report.json").read_text())
    assert report["artifacts"]["onnx_plugins"] == "model.plugins.onnx"
    runtimes = {v["runtime"]: v for v in report["validation"]}
    assert runtimes["onnxruntime+plugins"]["passed"]
    assert runtimes["onnxruntime+plugins"]["outputs"]["logits"]["cosine"] >= 0.99999
    script = (out / "build_engine.sh").read_text()
    assert "trtexec --onnx=model.plugins.onnx" in script and "--staticPlugins=" in script
    if tensorrt_version() is None:
        assert not report["engine"]["built"]
        assert "TensorRT is not installed" in report["engine"]["skipped"]
        assert "TensorRT is not installed" in output


def test_plugins_refused_for_a_method_without_plugin_op(tmp_path):
    result = run(["build", *TINY, "--method", "none", "--plugins", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--plugins" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_engine_is_built_and_validated_with_tensorrt(tmp_path):
    pytest.importorskip(
        "tensorrt",
        reason="TensorRT is not installable on this machine (no wheel, "
        "no GPU); this runs where it is",
    )
    out = tmp_path / "out"
    result = run(
        ["build", *TINY, "--hw", "3x4", "--k", "6", "--engine", "--out", str(out)],
    )
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["built"] and (out / "model.engine").is_file()
    (trt,) = [v for v in report["validation"] if v["runtime"] == "tensorrt"]
    assert trt["passed"] and result.exit_code == 0


@pytest.mark.slow
def test_fp16_onnx_is_written_validated_and_used_for_the_engine(tmp_path):
    import onnx

    out = tmp_path / "out"
    result = run(
        ["build", *TINY, "--hw", "3x4", "--k", "6", "--precision", "fp16", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    (half,) = [v for v in report["validation"] if v["runtime"] == "onnxruntime-fp16"]
    assert half["passed"] and half["outputs"]["logits"]["cosine"] >= 0.999
    proto = onnx.load(str(out / "model.fp16.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    # the token operations stay float32: the clustering's distance products run in float
    types = {i.name: i.data_type for i in proto.graph.initializer}
    assert types["method.clustering.pool_h"] == onnx.TensorProto.FLOAT
    assert onnx.TensorProto.FLOAT16 in types.values()  # the model's weights
    assert "--onnx=model.fp16.onnx" in (out / "build_engine.sh").read_text()
