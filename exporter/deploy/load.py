"""`vitexport deploy load`: how much one Triton server holds, measured from a client.

perf_analyzer (Triton's own load generator) is not installable from PyPI (it ships in NGC's
SDK container), so this is a client of its own: for each concurrency level, that many threads
each hold one tritonclient connection and send the same request back to back for the given
seconds. Every request has a timeout, so a level ends within `seconds + timeout`. Per level:
requests, errors (with the first message), throughput, latency percentiles, and the batch sizes
the server's statistics counted for each model during the level (Triton's dynamic batcher at
work shows as sizes above 1).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field

from pathlib import Path

import numpy as np


@dataclass
class Level:
    concurrency: int
    seconds: float
    requests: int
    errors: int
    throughput: float  # answered requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    first_error: str | None = None
    batch_sizes: dict = field(default_factory=dict)  # model -> {batch size: executions}

    def line(self) -> str:
        return (
            f"c={self.concurrency:<3} {self.throughput:8.1f} req/s  p50 {self.p50_ms:7.1f} ms  "
            f"p95 {self.p95_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  "
            f"requests {self.requests}  errors {self.errors}"
        )


def client_module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    return tc


def request_for(tc, client, model: str, protocol: str, image: np.ndarray | None):
    """The inputs of one request: `image` for a uint8 H x W x 3 input (an ensemble), else
    zeros of the input's declared shape (batch 1)."""
    if protocol == "grpc":
        meta = client.get_model_metadata(model, as_json=True)
        config = client.get_model_config(model, as_json=True)["config"]
    else:
        meta, config = client.get_model_metadata(model), client.get_model_config(model)
    inputs = []
    for spec in meta["inputs"]:
        shape = [int(d) for d in spec["shape"]]
        if spec["datatype"] == "UINT8" and image is not None:
            data = image
        else:
            if int(config.get("max_batch_size", 0)) > 0 and shape and shape[0] == -1:
                shape = [1, *shape[1:]]
            shape = [1 if d < 0 else d for d in shape]
            data = np.zeros(shape, dtype=_numpy_type(spec["datatype"]))
        x = tc.InferInput(spec["name"], list(data.shape), spec["datatype"])
        x.set_data_from_numpy(np.ascontiguousarray(data))
        inputs.append(x)
    return inputs


def _numpy_type(datatype: str):
    from tritonclient.utils import triton_to_np_dtype

    return triton_to_np_dtype(datatype)


def batch_counts(client, protocol: str) -> dict:
    """{model: {batch size: executions}} from the server's statistics, over all models."""
    stats = client.get_inference_statistics(**({"as_json": True} if protocol == "grpc" else {}))
    out = {}
    for model in stats.get("model_stats", []):
        sizes = {}
        for b in model.get("batch_stats", []):
            n = int(b.get("compute_infer", {}).get("count", 0))
            if n:
                sizes[int(b["batch_size"])] = n
        if sizes:
            out[model["name"]] = sizes
    return out


def _diff(after: dict, before: dict) -> dict:
    out = {}
    for model, sizes in after.items():
        d = {b: n - before.get(model, {}).get(b, 0) for b, n in sizes.items()}
        d = {b: n for b, n in sorted(d.items()) if n > 0}
        if d:
            out[model] = d
    return out


def run_level(
    url: str,
    model: str,
    concurrency: int,
    seconds: float,
    image: np.ndarray | None,
    protocol: str = "http",
    timeout: float = 30.0,
) -> Level:
    """`concurrency` clients sending back to back for `seconds`."""
    tc = client_module(protocol)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    kwargs = {"network_timeout": timeout} if protocol == "http" else {}
    main = tc.InferenceServerClient(url=url, **kwargs)
    try:
        request_for(tc, main, model, protocol, image)  # fails here, once, on a bad model
        before = batch_counts(main, protocol)
        times = {}
        ready = threading.Barrier(  # the clock starts when every client is connected
            concurrency + 1, action=lambda: times.update(end=time.monotonic() + seconds)
        )

        def work():
            # one client per thread, made in it: the HTTP client's gevent loop is per thread
            client = tc.InferenceServerClient(url=url, **kwargs)
            extra = {"client_timeout": timeout} if protocol == "grpc" else {}
            try:
                inputs = request_for(tc, client, model, protocol, image)
                ready.wait()
                while time.monotonic() < times["end"]:
                    t0 = time.perf_counter()
                    try:
                        client.infer(model, inputs, **extra)
                    except Exception as err:  # noqa: BLE001 - any failure is counted, not raised
                        with lock:
                            errors.append(" ".join(str(err).split())[:300])
                        continue
                    with lock:
                        latencies.append(time.perf_counter() - t0)
            finally:
                client.close()

        threads = [threading.Thread(target=work, daemon=True) for _ in range(concurrency)]
        for t in threads:
            t.start()
        ready.wait(timeout)
        start = times["end"] - seconds
        for t in threads:
            t.join(seconds + timeout + 5)
        elapsed = time.monotonic() - start
        after = batch_counts(main, protocol)
    finally:
        main.close()
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    return Level(
        concurrency,
        round(elapsed, 3),
        len(latencies) + len(errors),
        len(errors),
        round(len(latencies) / elapsed, 2),
        round(p50, 2),
        round(p95, 2),
        round(p99, 2),
        errors[0] if errors else None,
        _diff(after, before),
    )


def load_test(
    url: str,
    model: str,
    levels: list[int],
    seconds: float,
    image: np.ndarray | None,
    protocol: str = "http",
    progress=lambda text: None,
) -> list[Level]:
    out = []
    for c in levels:
        level = run_level(url, model, c, seconds, image, protocol)
        progress(level.line())
        out.append(level)
    return out


def as_json(levels: list[Level], **about) -> dict:
    return {**about, "levels": [asdict(level) for level in levels]}


def measure(
    repo,
    model: str,
    levels: list[int],
    seconds: float,
    image_path=None,
    url: str | None = None,
    protocol: str = "http",
    workdir=None,
    progress=lambda text: None,
) -> dict:
    """`vitexport deploy load`: against the server at `url`, or one started here on `repo`
    (loading only `model`, stopped afterwards whatever happens). The image: `image_path` at
    its own size, else a synthetic one of the ensemble's window."""
    from ..visualize import load_image, synthetic_image
    from .server import check_models, serve_started

    repo = Path(repo)
    if image_path is not None:
        image = load_image(image_path)
    else:
        image = synthetic_image(window_of(repo, model))
    about = {"model": model, "seconds": seconds, "protocol": protocol}
    if url is not None:
        return as_json(load_test(url, model, levels, seconds, image, protocol, progress), **about)
    check_models(repo, [model])
    with serve_started(repo, [model], workdir) as server:
        progress(f"server ready: HTTP {server.http_url}  gRPC {server.grpc_url}")
        target = server.grpc_url if protocol == "grpc" else server.http_url
        levels_out = load_test(target, model, levels, seconds, image, protocol, progress)
        tracebacks = server.log_text().count("Traceback")
    return as_json(levels_out, server_log_tracebacks=tracebacks, **about)


def window_of(repo: Path, model: str) -> tuple[int, int]:
    """The ensemble's window (its _pre step's parameter), else 224x224."""
    config = Path(repo) / f"{model}_pre" / "config.pbtxt"
    if config.is_file():
        text = config.read_text(errors="replace")
        m = re.search(r'key: "window" value \{ string_value: "([0-9]+)x([0-9]+)"', text)
        if m:
            return int(m.group(1)), int(m.group(2))
    return 224, 224
