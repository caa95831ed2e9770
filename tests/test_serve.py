"""The deployment ensemble served by the real Triton server (nvidia-pytriton's bundled binary,
loopback only): answers equal to the local pipeline (`exporter.api.predict`, the same windows
in ONNX Runtime), a short load test with batching seen, and faults that leave the server
serving. One server serves the whole file; it is stopped by its process group in every case,
and any traceback in its log fails the file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from exporter.api import predict
from exporter.deploy import server as server_mod
from exporter.visualize import synthetic_image
from tests.helpers import run

pytestmark = pytest.mark.slow
EXPEDITE = ("expedite", "--hw", "3x4", "--k", "6")  # the build test_deploy.py uses too
NAME = "segmenter_tiny_expedite"
OTHER = "other"


def group_gone(pgid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    """(build folder, repository, running server) with two deployments of one build: NAME
    (with confidences) and OTHER."""
    pytest.importorskip("tritonclient.http")
    try:
        server_mod.bundled_server()
    except server_mod.ServerUnavailable as err:
        pytest.skip(str(err))
    out = built(*EXPEDITE)
    tmp = tmp_path_factory.mktemp("serve")
    repo = tmp / "repo"
    result = run(["deploy", "triton", out, "--repo", repo, "--confidences"])
    assert result.exit_code == 0, result.output
    result = run(["deploy", "triton", out, "--repo", repo, "--force", "--name", OTHER])
    assert result.exit_code == 0, result.output
    server = server_mod.start(repo, tmp / "work", [NAME, OTHER])
    try:
        server.wait_ready(90)
        yield out, repo, server
    finally:
        server.stop()
        assert group_gone(server.process.pid), "a process of the server's group is left"
    log = server.log_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 200 :][:3000]


def infer(server, model, image, dtype="UINT8", outputs=("classes",)):
    import tritonclient.http as th

    client = th.InferenceServerClient(server.http_url, network_timeout=120)
    try:
        x = th.InferInput("image", list(image.shape), dtype)
        x.set_data_from_numpy(image)
        r = client.infer(model, [x], outputs=[th.InferRequestedOutput(o) for o in outputs])
        return {o: r.as_numpy(o) for o in outputs}
    finally:
        client.close()


def error_of(server, model, image, dtype="UINT8") -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as err:
        infer(server, model, image, dtype)
    return str(err.value)


def canvas() -> np.ndarray:
    from exporter.datasets.digits import make_split

    return make_split("val", 1, size=80)[0][0]  # a digits canvas, 80x80


def still_serving(server, model=NAME) -> None:
    image = synthetic_image((64, 96))
    got = infer(server, model, image)["classes"]
    assert got.shape == (64, 96) and got.dtype == np.uint8


@pytest.mark.parametrize("size", [(80, 80), (130, 200)])
def test_the_ensemble_answers_what_the_local_pipeline_does(served, size):
    out, _, server = served
    image = canvas() if size == (80, 80) else synthetic_image(size)
    got = infer(server, NAME, image, outputs=("classes", "confidences"))
    want = predict(out, image)
    assert want.windows == (2 if size == (80, 80) else 9)  # windows 64x96 at stride 43x64
    assert got["classes"].shape == size and got["classes"].dtype == np.uint8
    assert np.array_equal(got["classes"], want.classes)  # the same pixels
    # the same ONNX in the same runtime: within the build's validation tolerance (1e-3)
    np.testing.assert_allclose(got["confidences"], want.confidences, atol=1e-3, rtol=1e-3)


def test_visualize_draws_the_servers_class_map_for_a_large_image(served, tmp_path):
    from PIL import Image

    from tests.helpers import copy_of

    out, _, server = served
    image = synthetic_image((130, 200))
    path = tmp_path / "large.png"
    Image.fromarray(image).save(path)
    folder = copy_of(out, tmp_path)
    result = run(["visualize", folder, "--image", path])
    assert result.exit_code == 0, result.output
    assert "sliding windows: 9 windows of 64x96" in result.output
    drawn = np.asarray(Image.open(folder / "visualize" / "classes.png"))
    assert np.array_equal(drawn, infer(server, NAME, image)["classes"])
    assert (folder / "visualize" / "windows.png").stat().st_size > 0


def test_load_at_concurrency_1_and_4_batches_and_has_no_errors(served, tmp_path):
    _, repo, server = served
    image = tmp_path / "window.png"
    from PIL import Image

    Image.fromarray(synthetic_image((64, 96))).save(image)  # one window per request
    path = tmp_path / "load.json"
    result = run(
        ["deploy", "load", repo, "--model", NAME, "--url", server.http_url,
         "--concurrency", "1,4", "--seconds", "2", "--image", image, "--json", path]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    levels = {level["concurrency"]: level for level in data["levels"]}
    assert sorted(levels) == [1, 4]
    for level in levels.values():
        assert level["errors"] == 0, level["first_error"]
        assert level["requests"] > 0 and level["throughput"] > 0
        assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        assert f"c={level['concurrency']} " in result.output
    sizes = levels[4]["batch_sizes"][f"{NAME}_python"]
    assert max(int(b) for b in sizes) > 1, sizes  # the dynamic batcher gathered requests
    assert set(levels[1]["batch_sizes"][f"{NAME}_python"]) == {"1"}  # one client: no company


@pytest.mark.parametrize(
    "image, dtype, says",
    [
        (np.zeros((64, 96, 3), np.float32), "FP32", "data-type is 'FP32'"),
        (np.zeros((64, 96, 4), np.uint8), "UINT8", "shape"),
        (np.zeros((0, 0, 3), np.uint8), "UINT8", "empty image"),
    ],
    ids=["wrong-dtype", "wrong-shape", "empty"],
)
def test_bad_requests_get_a_clear_error_and_the_server_goes_on(served, image, dtype, says):
    _, _, server = served
    assert says in error_of(server, NAME, image, dtype)
    still_serving(server)


def test_a_20000_pixel_square_is_refused_by_its_window_count(served):
    _, _, server = served
    image = np.zeros((20000, 20000, 3), np.uint8)  # 1.2 GB: refused before it is copied
    text = error_of(server, NAME, image)
    assert "20000 x 20000 pixels needs" in text and "at most 64" in text
    del image
    still_serving(server)


def test_a_client_leaving_mid_request_leaves_the_server_serving(served):
    _, _, server = served
    host, port = server.http_url.split(":")
    body = json.dumps(
        {"inputs": [{"name": "image", "shape": [64, 96, 3], "datatype": "UINT8",
                     "data": [0] * (64 * 96 * 3)}]}
    ).encode()  # fmt: skip
    head = (
        f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:  # half a body, then gone
        s.sendall(head + body[: len(body) // 2])
    with socket.create_connection((host, int(port)), timeout=10) as s:  # gone before the answer
        s.sendall(head + body)
    still_serving(server)


def test_a_model_folder_removed_while_serving(served):
    from tritonclient.utils import InferenceServerException
    import tritonclient.http as th

    _, repo, server = served
    for step in ("", "_pre", "_post", "_python"):
        shutil.rmtree(repo / f"{OTHER}{step}")
    client = th.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(InferenceServerException) as err:
            client.load_model(OTHER)  # a reload finds no folder: said so
        assert OTHER in str(err.value)
        client.unload_model(OTHER)
    finally:
        client.close()
    assert "unknown model" in error_of(server, OTHER, synthetic_image((64, 96)))
    still_serving(server)  # the other deployment goes on


def test_a_server_that_exits_at_start_is_one_line_and_keeps_the_log(served, tmp_path):
    out, _, _ = served
    repo = tmp_path / "repo"
    assert run(["deploy", "triton", out, "--repo", repo]).exit_code == 0
    config = repo / f"{NAME}_python" / "config.pbtxt"
    config.write_text(config.read_text().replace('backend: "python"', 'backend: "nonesuch"'))
    work = tmp_path / "work"
    work.mkdir()
    (work / "server.log").write_text("an earlier log\n")
    for _ in range(2):
        result = run(["deploy", "serve", repo, "--model", f"{NAME}_python", "--workdir", work])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("Error: REPO ") and "exited with" in result.output
    log = (work / "server.log").read_text()
    assert log.startswith("an earlier log\n") and log.count("nonesuch") >= 2
    result = run(["deploy", "serve", repo, "--model", "../other/model"])
    assert result.exit_code == 2 and result.output.startswith("Error: --model ")


def test_ctrl_c_stops_deploy_serve_with_its_own_line(served, tmp_path):
    import signal
    import subprocess
    import sys

    _, repo, _ = served
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "deploy", "serve", str(repo),
         "--model", f"{NAME}_pre", "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    try:
        lines = []
        for line in proc.stdout:  # bounded by the server's readiness timeout (60 s)
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        assert lines and lines[-1].startswith("Ctrl-C"), lines
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip() == "SIGINT: stopped; the server was stopped; REPO is unchanged"
    assert "nothing was written" not in err
