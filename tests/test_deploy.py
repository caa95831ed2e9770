"""`vitexport deploy triton`: every config.pbtxt parses with Triton's model-config protobuf and
matches the ONNX graph; bad input writes nothing; the python model served by the real Triton
server (nvidia-pytriton's bundled binary) answers what ONNX Runtime answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers import run

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "samples" / "triton" / "client.py"
EXPEDITE = ("expedite", "--hw", "3x4", "--k", "6")  # the build test_cli.py uses too


def triton_type(elem_type: int) -> str:
    """ONNX element type -> Triton's TYPE_* by way of numpy and tritonclient's own table."""
    from tritonclient.utils import np_to_triton_dtype

    return "TYPE_" + np_to_triton_dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_against_onnx(config, onnx_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    for declared, values in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [v.name for v in values]
        for t, v in zip(declared, values):
            tt = v.type.tensor_type
            assert model_config_pb2.DataType.Name(t.data_type) == triton_type(tt.elem_type)
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            assert list(t.dims) == (dims[1:] if config.max_batch_size > 0 else dims)


def deploy(out, repo, *flags):
    return run(["deploy", "triton", str(out), "--repo", str(repo), *flags])


def test_every_config_parses_and_matches_the_onnx(built, tmp_path):
    out = built(*EXPEDITE)
    repo = tmp_path / "repo"
    result = deploy(out, repo)
    assert result.exit_code == 0, result.output
    name = "segmenter_tiny_expedite"
    kinds = {
        name: "ensemble",
        f"{name}_onnx": "onnxruntime_onnx",
        f"{name}_post": "python",
        f"{name}_pre": "python",
        f"{name}_python": "python",
        f"{name}_trt": "tensorrt_plan",
    }
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == sorted(kinds)
    platforms = {}
    for config_path in repo.glob("*/config.pbtxt"):
        config = parse_config(config_path)
        assert config.name == config_path.parent.name
        platforms[config.name] = config.platform or config.backend
        folder = config_path.parent
        if config.name in (name, f"{name}_pre", f"{name}_post"):
            continue  # the ensemble's own tensors: checked below
        # the python model is batched by Triton (it runs the fixed batch in chunks); the
        # onnxruntime and TensorRT models take the artifact's fixed batch as it is
        assert config.max_batch_size == (64 if config.backend == "python" else 0)
        assert config.HasField("dynamic_batching") == (config.backend == "python")
        onnx_path = (
            folder / "1" / "model.onnx"
            if (folder / "1" / "model.onnx").exists()
            else folder / "model.onnx"
        )  # the TensorRT model keeps the ONNX its plan is built from
        check_against_onnx(config, onnx_path)
        assert onnx_path.read_bytes() == (out / "model.onnx").read_bytes()
    assert platforms == kinds
    ensemble = parse_config(repo / name / "config.pbtxt")
    steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
    assert steps == [f"{name}_pre", f"{name}_python", f"{name}_post"]
    assert [(t.name, list(t.dims)) for t in ensemble.input] == [("image", [-1, -1, 3])]
    assert [(t.name, list(t.dims)) for t in ensemble.output] == [("classes", [-1, -1])]
    pre = parse_config(repo / f"{name}_pre" / "config.pbtxt")
    params = {k: v.string_value for k, v in pre.parameters.items()}
    # the tiny model's window, 2/3 of it as stride, its entry's normalisation
    assert params == {
        "window": "64x96",
        "stride": "43x64",
        "mean": "0.5",
        "std": "0.5",
        "max_windows": "64",
    }
    for step in ("pre", "post"):
        files = sorted(p.name for p in (repo / f"{name}_{step}" / "1").iterdir())
        assert files == ["model.py", "tiling.py", "triton_io.py"]
    # The execution-provider block is there for a GPU host, but off.
    text = (repo / f"{name}_onnx" / "config.pbtxt").read_text()
    assert "# optimization { execution_accelerators {" in text
    assert not parse_config(repo / f"{name}_onnx" / "config.pbtxt").HasField("optimization")
    script = (repo / f"{name}_trt" / "build_plan.sh").read_text()
    assert "trtexec --onnx=model.onnx --saveEngine=1/model.plan" in script
    assert (repo / f"{name}_python" / "1" / "model.py").is_file()
    readme = (repo / "README.md").read_text()
    assert "LD_PRELOAD" in readme and "vitexport deploy serve" in readme
    assert "_python_plugins" not in readme  # this build has no plugin graph


def test_instances_stride_and_confidences(built, tmp_path):
    repo = tmp_path / "repo"
    flags = ["--instances", "2", "--threads", "1", "--stride", "32x48", "--confidences"]
    result = deploy(built(*EXPEDITE), repo, *flags)
    assert result.exit_code == 0, result.output
    name = "segmenter_tiny_expedite"
    for model in (name + "_python", name + "_pre", name + "_post", name + "_onnx", name + "_trt"):
        assert [g.count for g in parse_config(repo / model / "config.pbtxt").instance_group] == [2]
    python = parse_config(repo / f"{name}_python" / "config.pbtxt")
    assert python.parameters["intra_op_threads"].string_value == "1"
    pre = parse_config(repo / f"{name}_pre" / "config.pbtxt")
    assert pre.parameters["stride"].string_value == "32x48"
    ensemble = parse_config(repo / name / "config.pbtxt")
    assert [t.name for t in ensemble.output] == ["classes", "confidences"]


@pytest.mark.parametrize(
    "flags, flag",
    [
        (["--dynamic-batch"], "--dynamic-batch"),
        (["--name", "two words"], "--name"),
        (["--name", "abc\n"], "--name"),  # `$` would match before the newline
        (["--stride", "65x10"], "--stride"),  # past the 64x96 window
        (["--backend", "onnx"], "--backend"),  # the fixed batch cannot take an image's windows
    ],
)
def test_bad_flags_exit_2_and_write_nothing(built, tmp_path, flags, flag):
    repo = tmp_path / "repo"
    result = deploy(built(*EXPEDITE), repo, *flags)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {flag} ") and result.output.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_not_a_build_and_existing_folders(built, tmp_path):
    assert deploy(tmp_path / "missing", tmp_path / "repo").exit_code == 2
    assert deploy(tmp_path, tmp_path / "repo").exit_code == 2  # no report.json
    assert not (tmp_path / "repo").exists()
    mine = tmp_path / "mine"
    (mine / "my_model" / "1").mkdir(parents=True)
    (mine / "my_model" / "config.pbtxt").write_text("keep me")
    out = built(*EXPEDITE)
    result = deploy(out, mine)  # not empty: needs --force
    assert result.exit_code == 2 and "--repo" in result.output
    # --force adds beside the user's model, never replaces it
    assert deploy(out, mine, "--force").exit_code == 0
    assert (mine / "my_model" / "config.pbtxt").read_text() == "keep me"
    result = deploy(out, mine, "--force", "--name", "my_model")  # the ensemble's own name
    assert result.exit_code == 2 and "my_model:" in result.output, result.output
    assert (mine / "my_model" / "config.pbtxt").read_text() == "keep me"
    (mine / "taken_python").mkdir()  # a folder of the user's under a name we would write
    result = deploy(out, mine, "--force", "--name", "taken")
    assert result.exit_code == 2 and "taken_python" in result.output
    assert not (mine / "taken").exists()
    # a second deploy under our own names replaces our folders only
    before = (mine / "segmenter_tiny_expedite_python" / "config.pbtxt").stat().st_ino
    assert deploy(out, mine, "--force").exit_code == 0
    assert (mine / "segmenter_tiny_expedite_python" / "config.pbtxt").stat().st_ino != before
    assert (mine / "my_model" / "config.pbtxt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in mine.iterdir() if p.name.startswith(".")] == [".vitexport-repository"]


def test_the_current_folder_and_its_parents_are_refused_before_any_work(built, tmp_path):
    out = built(*EXPEDITE)
    repo = tmp_path / "repo"
    (repo / "mine").mkdir(parents=True)
    (repo / ".vitexport-repository").write_text("{}")
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        for target in (".", "..", str(repo)):
            result = deploy(out, target, "--force")
            assert result.exit_code == 2 and result.output.startswith("Error: --repo ")
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in repo.iterdir()) == [".vitexport-repository", "mine"]


def tampered(out, change):
    """Edit out/report.json with `change(report)` and record its hash, as in a folder shared
    by someone who recomputed it."""
    import json

    from exporter.folder import REPORT_HASH, sha256

    report = json.loads((out / "report.json").read_text())
    change(report)
    (out / "report.json").write_text(json.dumps(report))
    (out / REPORT_HASH).write_text(sha256(out / "report.json") + "  report.json\n")


def test_a_failed_build_is_refused_unless_allowed(built, tmp_path):
    from tests.helpers import copy_of

    out = copy_of(built(*EXPEDITE), tmp_path / "b")
    tampered(out, lambda r: r["validation"][0].update(passed=False))
    repo = tmp_path / "repo"
    result = deploy(out, repo)
    assert result.exit_code == 2 and "--allow-failed" in result.output
    assert "FAILED" in result.output and result.output.count("\n") == 1
    assert not repo.exists()
    assert deploy(out, repo, "--allow-failed").exit_code == 0


@pytest.mark.parametrize("where", ["artifact", "engine source"])
def test_report_paths_leaving_the_build_are_refused(built, tmp_path, where):
    from tests.helpers import copy_of

    out = copy_of(built(*EXPEDITE), tmp_path / "b" / "c")
    outside = tmp_path / "x.onnx"
    outside.write_bytes((out / "model.onnx").read_bytes())  # a valid ONNX, outside OUT
    if where == "artifact":
        tampered(out, lambda r: r["artifacts"].update(onnx="../../x.onnx"))
    else:
        tampered(out, lambda r: r.update(engine={"source": "../../x.onnx"}))
    repo = tmp_path / "b" / "repo"
    result = deploy(out, repo)
    assert result.exit_code == 2 and "x.onnx" in result.output, result.output
    assert not repo.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b", "x.onnx"]


def test_serve_refuses_a_folder_deploy_did_not_write(tmp_path):
    result = run(["deploy", "serve", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("Error: REPO ") and result.output.count("\n") == 1


@pytest.mark.slow
def test_dynamic_batch_configs(built, tmp_path):
    out = built(*EXPEDITE, "--dynamic-batch")
    repo = tmp_path / "repo"
    assert deploy(out, repo, "--max-batch", "9").exit_code == 2  # past the engine profile (8)
    assert not repo.exists()
    result = deploy(out, repo, "--dynamic-batch", "--max-batch", "4")
    assert result.exit_code == 0, result.output
    name = "segmenter_tiny_expedite"
    for config_path in repo.glob(f"{name}_*/config.pbtxt"):
        if config_path.parent.name.endswith(("_pre", "_post")):
            continue  # one image per request: not batched
        config = parse_config(config_path)
        assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
        folder = config_path.parent
        check_against_onnx(
            config,
            folder / "1" / "model.onnx"
            if config.backend == "python" or config.platform == "onnxruntime_onnx"
            else folder / "model.onnx",
        )
    script = (repo / f"{name}_trt" / "build_plan.sh").read_text()
    assert "--minShapes=images:1x3x64x96" in script and "--maxShapes=images:8x3x64x96" in script
    # Without --dynamic-batch Triton still takes batches up to max_batch_size, unqueued, on
    # the onnxruntime and TensorRT models; the python model always gathers requests.
    again = deploy(out, tmp_path / "plain")
    assert again.exit_code == 0, again.output
    plain = parse_config(tmp_path / "plain" / f"{name}_onnx" / "config.pbtxt")
    assert plain.max_batch_size == 8 and not plain.HasField("dynamic_batching")
    python = parse_config(tmp_path / "plain" / f"{name}_python" / "config.pbtxt")
    assert python.max_batch_size == 64 and python.HasField("dynamic_batching")


@pytest.mark.slow
def test_plugin_graph_configs(built, tmp_path):
    out = built(*EXPEDITE, "--plugins")
    repo = tmp_path / "repo"
    assert deploy(out, repo).exit_code == 0
    name = "segmenter_tiny_expedite"
    plugins = parse_config(repo / f"{name}_python_plugins" / "config.pbtxt")
    check_against_onnx(plugins, repo / f"{name}_python_plugins" / "1" / "model.plugins.onnx")
    assert 'string_value: "true"' in (repo / f"{name}_python_plugins" / "config.pbtxt").read_text()
    trt_text = (repo / f"{name}_trt" / "config.pbtxt").read_text()
    check_against_onnx(
        parse_config(repo / f"{name}_trt" / "config.pbtxt"),
        repo / f"{name}_trt" / "model.plugins.onnx",
    )  # the engine's source
    assert "LD_PRELOAD=libvitexport_plugins.so" in trt_text
    script = (repo / f"{name}_trt" / "build_plan.sh").read_text()
    assert "--staticPlugins=libvitexport_plugins.so" in script


# --- the real server -----------------------------------------------------------------------


@pytest.fixture
def server_factory(tmp_path):
    """`start(repo, models)` -> a running bundled tritonserver; stopped (its whole process
    group) after the test whatever happens."""
    server_mod = pytest.importorskip("exporter.deploy.server")
    pytest.importorskip("tritonclient.http")
    try:
        server_mod.bundled_server()
    except server_mod.ServerUnavailable as err:
        pytest.skip(str(err))
    started = []

    def start(repo, models):
        server = server_mod.start(repo, tmp_path / "server", models)
        started.append(server)
        server.wait_ready(60)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
            assert server.process.poll() is not None
            assert group_gone(server.process.pid), "a process of the server's group is left"


def group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """True once no process is left in group `pgid` (the python-backend stubs end just after
    the server)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)  # signal 0: only asks whether the group exists
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def client(url: str, model: str, image: Path, save: Path, *flags) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            str(CLIENT),
            "--url",
            url,
            "--model",
            model,
            "--image",
            str(image),
            "--png",
            str(save.with_suffix(".png")),
            "--save",
            str(save),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def canvas_png(tmp_path) -> Path:
    """A digits canvas cut to the tiny model's 64x96 input, as a PNG."""
    from PIL import Image

    from exporter.datasets.digits import make_split

    pixels = make_split("val", 1, size=96)[0][0][16:80]
    path = tmp_path / "canvas.png"
    Image.fromarray(pixels).save(path)
    return path


def serve_and_compare(out, repo, models, answer, server_factory, tmp_path) -> None:
    """Serve `models`, send the canvas through the sample client, compare with `answer[model]`
    (the same artifact in ONNX Runtime)."""
    server = server_factory(repo, models)
    image = canvas_png(tmp_path)
    for model in models:
        save = tmp_path / f"{model}.npz"
        text = client(server.http_url, model, image, save)
        assert text.startswith("image 0: ") and "(class " in text and "px (" in text
        got = np.load(save)
        want = answer[model](got["inputs"])
        assert got["logits"].shape == want.shape == (1, 5, 64, 96)
        # the served model is the same artifact in the same runtime: equal to rounding
        np.testing.assert_allclose(got["logits"], want, rtol=1e-5, atol=1e-5)
        assert save.with_suffix(".png").stat().st_size > 0
        grpc = tmp_path / f"{model}.grpc.npz"
        client(server.grpc_url, model, image, grpc, "--protocol", "grpc")
        np.testing.assert_allclose(np.load(grpc)["logits"], got["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_triton_serves_onnxruntime_answers(built, tmp_path, server_factory):
    import onnxruntime as ort

    out = built(*EXPEDITE)
    repo = tmp_path / "repo"
    assert deploy(out, repo).exit_code == 0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    model = "segmenter_tiny_expedite_python"
    serve_and_compare(
        out,
        repo,
        [model],
        {model: lambda x: session.run(None, {"images": x})[0]},
        server_factory,
        tmp_path,
    )


@pytest.mark.slow
def test_triton_serves_the_plugin_graph(built, tmp_path, server_factory):
    from exporter.onnx.plugin_ops import run_plugin_graph

    out = built(*EXPEDITE, "--plugins")
    repo = tmp_path / "repo"
    assert deploy(out, repo).exit_code == 0
    graph = onnx.load(str(out / "model.plugins.onnx"))
    model = "segmenter_tiny_expedite_python_plugins"
    serve_and_compare(
        out,
        repo,
        [model],
        {model: lambda x: run_plugin_graph(graph, {"images": x})[0]},
        server_factory,
        tmp_path,
    )
