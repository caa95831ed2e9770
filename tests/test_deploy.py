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
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == [
        f"{name}_onnx",
        f"{name}_python",
        f"{name}_trt",
    ]
    platforms = {}
    for config_path in repo.glob("*/config.pbtxt"):
        config = parse_config(config_path)
        assert config.name == config_path.parent.name
        assert config.max_batch_size == 0  # this build's batch is fixed
        platforms[config.name] = config.platform or config.backend
        folder = config_path.parent
        onnx_path = (
            folder / "1" / "model.onnx"
            if (folder / "1" / "model.onnx").exists()
            else folder / "model.onnx"
        )  # the TensorRT model keeps the ONNX its plan is built from
        check_against_onnx(config, onnx_path)
        assert onnx_path.read_bytes() == (out / "model.onnx").read_bytes()
    assert platforms == {
        f"{name}_onnx": "onnxruntime_onnx",
        f"{name}_python": "python",
        f"{name}_trt": "tensorrt_plan",
    }
    # The execution-provider block is there for a GPU host, but off.
    text = (repo / f"{name}_onnx" / "config.pbtxt").read_text()
    assert "# optimization { execution_accelerators {" in text
    assert not parse_config(repo / f"{name}_onnx" / "config.pbtxt").HasField("optimization")
    script = (repo / f"{name}_trt" / "build_plan.sh").read_text()
    assert "trtexec --onnx=model.onnx --saveEngine=1/model.plan" in script
    assert (repo / f"{name}_python" / "1" / "model.py").is_file()
    assert "LD_PRELOAD" in (repo / "README.md").read_text()


@pytest.mark.parametrize(
    "flags, flag",
    [
        (["--max-batch", "4"], "--max-batch"),
        (["--dynamic-batch"], "--dynamic-batch"),
        (["--name", "two words"], "--name"),
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
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    out = built(*EXPEDITE)
    for flags in ([], ["--force"]):  # not a repository vitexport wrote: never replaced
        result = deploy(out, mine, *flags)
        assert result.exit_code == 2 and "--repo" in result.output
        assert (mine / "notes.txt").read_text() == "keep me"
    repo = tmp_path / "repo"
    assert deploy(out, repo).exit_code == 0
    assert deploy(out, repo).exit_code == 2  # exists: needs --force
    assert deploy(out, repo, "--force", "--name", "again").exit_code == 0
    assert sorted(p.name for p in repo.iterdir() if p.is_dir())[0] == "again_onnx"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


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
    for config_path in repo.glob("*/config.pbtxt"):
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
    # Without --dynamic-batch Triton still takes batches up to max_batch_size, unqueued.
    again = deploy(out, tmp_path / "plain")
    assert again.exit_code == 0, again.output
    plain = parse_config(tmp_path / "plain" / f"{name}_python" / "config.pbtxt")
    assert plain.max_batch_size == 8 and not plain.HasField("dynamic_batching")


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
        assert text.startswith("image 0: class ") and "px (" in text
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
