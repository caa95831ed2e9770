"""The TensorRT stage: plugin graphs validated on the CPU, engine build skipped clearly without
TensorRT, build_engine.sh written in all cases."""

import json
from pathlib import Path

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


class StandInEngine:
    """TensorRT without a GPU: `build_engine` writes the source graph's bytes as the engine and
    the tensorrt runner runs those bytes as the half-precision ONNX they are (the numbers of
    an fp16 engine, within rounding). Counts the runs, so a test sees it was used."""

    def __init__(self, monkeypatch, *modules):
        import exporter.runtime as runtime

        self.runs = 0
        for module in modules:
            monkeypatch.setattr(module, "build_engine", self.build)
        monkeypatch.setitem(runtime.RUNNERS, "tensorrt", self.runner)

    def build(self, source, engine, settings, profile):
        Path(engine).write_bytes(Path(source).read_bytes())

    def runner(self, path, shape, names, name):
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

        from exporter.runtime import half_precision_runner, onnx_session

        self.runs += 1
        if onnx_session(path).get_inputs()[0].type == "tensor(float16)":
            return half_precision_runner(path, shape, names, name)
        return OnnxrtRunner(
            SessionFromOnnx(str(path), providers=["CPUExecutionProvider"]), name=name
        )


@pytest.mark.slow
def test_fp16_onnx_and_engine_are_validated_at_fp16_tolerances(tmp_path, monkeypatch):
    import onnx

    import exporter.build
    import exporter.doctor
    from exporter.folder import read_record
    from exporter.record import Tolerances

    trt = StandInEngine(monkeypatch, exporter.build, exporter.doctor)
    out = tmp_path / "out"
    args = ["build", *TINY, "--hw", "3x4", "--k", "6", "--precision", "fp16", "--engine"]
    result = run([*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    (half,) = [v for v in report["validation"] if v["runtime"] == "onnxruntime-fp16"]
    assert half["passed"] and half["outputs"]["logits"]["cosine"] >= 0.999
    # the engine (built from model.fp16.onnx) is held to the same fp16 tolerances, not fp32's
    (engine,) = [v for v in report["validation"] if v["runtime"] == "tensorrt"]
    fp16 = Tolerances().half().to_dict()
    assert engine["tolerances"] == half["tolerances"] == fp16 and fp16["atol"] == 0.05
    assert engine["passed"] and engine["artifact"] == "model.engine" and trt.runs == 1
    assert report["engine"] == {
        "requested": True,
        "built": True,
        "source": "model.fp16.onnx",
        "precision": "fp16",
    }
    proto = onnx.load(str(out / "model.fp16.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    # the token operations stay float32: the clustering's distance products run in float
    types = {i.name: i.data_type for i in proto.graph.initializer}
    assert types["method.clustering.pool_h"] == onnx.TensorProto.FLOAT
    assert onnx.TensorProto.FLOAT16 in types.values()  # the model's weights
    assert "--onnx=model.fp16.onnx" in (out / "build_engine.sh").read_text()

    # doctor validates its engines on the same path: model.fp16.engine at fp16 tolerances,
    # model.engine (from the float32 graph) at the build's own
    monkeypatch.setattr(exporter.doctor, "timing_step", lambda *a: exporter.doctor.Step("t", "x"))
    facts = {"gpu": {"name": "stand-in"}, "tensorrt": "stand-in"}
    steps = exporter.doctor.engine_steps(out, read_record(out), facts, None, lambda t: None)
    by_name = {s.name: s for s in steps}
    checked = by_name["engine model.fp16.engine"].data["validation"]
    assert checked["tolerances"] == fp16 and checked["passed"]
    plain = by_name["engine model.engine"].data["validation"]
    assert plain["tolerances"] == Tolerances().to_dict()
    assert by_name["engine model.plugins.engine"].status == "skipped"
