"""Start the Triton server bundled in PyPI's nvidia-pytriton on this host (CPU, python backend).

The wheel ships a real `tritonserver` with only the python backend. Three things make it start
outside pytriton: a backend folder holding the python backend with the stub for this Python
copied in; this interpreter's bin folder first on PATH (the stub imports numpy and onnxruntime
from the first `python3`); and this interpreter's libpython first on LD_LIBRARY_PATH (the stub
loads it by name, and a system libpython of another build would be found otherwise).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


class ServerUnavailable(Exception):
    """nvidia-pytriton (the bundled tritonserver) is not installed."""


class ServerFailed(Exception):
    """The server exited at start or did not become ready in time."""


def bundled_server() -> Path:
    """The folder of the bundled server (`bin/`, `backends/`, `python_backend_stubs/`)."""
    # Located, not imported: only the server binary is used, not pytriton's Python API (whose
    # own dependencies pin numpy below 2).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerUnavailable(
            "no tritonserver: pip install --no-deps nvidia-pytriton==0.7.0 "
            "brings the bundled server"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ServerUnavailable(f"nvidia-pytriton has no server binary under {root}")
    return root


def backend_folder(dest: Path) -> Path:
    """A copy of the bundled backends with this Python's stub inside the python backend."""
    root = bundled_server()
    backends = Path(dest) / "backends"
    if not backends.exists():
        shutil.copytree(root / "backends", backends)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise ServerUnavailable(
                f"the bundled server has no python backend stub for Python {version}"
            )
        shutil.copy2(stub, backends / "python" / stub.name)
    return backends


def server_env() -> dict:
    root = bundled_server()
    libs = root.parent.parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (sysconfig.get_config_var("LIBDIR"), str(libs), env.get("LD_LIBRARY_PATH")) if p
    )
    return env


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports (held open together while chosen: ports chosen one at
    a time can repeat)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    """A running tritonserver on loopback; `stop()` ends it and everything it started."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log: Path
    log_start: int = 0  # where this server's lines begin in `log` (an older log is kept)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_text(self) -> str:
        """What this server wrote to its log."""
        with open(self.log, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return when /v2/health/ready answers 200; raise if the server exits or the time ends."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"exited with {self.process.returncode} at start ({self.last_error()}); "
                    f"log: {self.log}"
                )
            if self.ready():
                return
            time.sleep(0.25)
        raise ServerFailed(f"not ready after {timeout:.0f} s; log: {self.log}")

    def last_error(self) -> str:
        """The server's last error line, for a one-line message."""
        lines = [ln.strip() for ln in self.log_text().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("E") or "rror" in ln]
        text = (errors or lines or ["no output"])[-1]
        return text if len(text) < 300 else text[:300] + "..."

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's process group (it and its python-backend stubs), SIGKILL
        after `timeout`."""
        if self.process.poll() is not None:
            return
        pgid = self.process.pid  # started with start_new_session: its own group
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()


def start(repo: Path, workdir: Path, models: list[str] | None = None) -> Server:
    """Start tritonserver on free loopback ports serving `models` of `repo` (all when None);
    `workdir` holds the backend copy and server.log."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backends = backend_folder(workdir)
    http, grpc, metrics = free_ports(3)
    cmd = [
        str(bundled_server() / "bin" / "tritonserver"),
        f"--model-repository={Path(repo).resolve()}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        "--log-verbose=0",
    ]
    if models is not None:
        cmd += ["--model-control-mode=explicit"] + [f"--load-model={m}" for m in models]
    log = workdir / "server.log"
    with open(log, "ab") as f:  # appended: an earlier server's log is kept
        start = f.tell()
        process = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=server_env(), start_new_session=True
        )
    return Server(process, http, grpc, log, start)


def check_models(repo: Path, models: list[str] | None) -> list[str]:
    """The models to load: given ones must be model folders of REPO by name (never a path);
    none given: `default_models`."""
    repo = Path(repo)
    if not (repo / ".vitexport-repository").is_file():
        raise InputError("REPO", str(repo), "a repository written by `vitexport deploy triton`")
    available = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    if models is None:
        return default_models(repo)
    for m in models:
        if m not in available:
            raise InputError("--model", repr(m), ", ".join(available) or "(none in REPO)")
    return list(models)


@contextlib.contextmanager
def serve_started(repo: Path, models: list[str], workdir=None, timeout: float = 60.0):
    """A ready server on `repo` for the block; stopped (its whole process group) after it."""
    try:
        bundled_server()
    except ServerUnavailable as err:
        raise InputError("tritonserver", "(missing)", "nvidia-pytriton installed", str(err))
    repo = Path(repo)
    server = start(repo, Path(workdir) if workdir else repo.parent / ".triton-work", models)
    try:
        try:
            server.wait_ready(timeout)
        except ServerFailed as err:
            raise InputError(
                "REPO", str(repo), "models this host's tritonserver loads", f"tritonserver {err}"
            ) from None
        yield server
    finally:
        server.stop()


def default_models(repo: Path) -> list[str]:
    """What `deploy serve` loads without --model: the ensembles (Triton loads their steps) and
    the python models."""
    ensembles, python = [], []
    for p in sorted(repo.iterdir()):
        config = p / "config.pbtxt"
        if not config.is_file():
            continue
        text = config.read_text(errors="replace")
        if 'platform: "ensemble"' in text:
            ensembles.append(p.name)
        elif p.name.endswith(("_python", "_python_plugins")):
            python.append(p.name)
    return ensembles + python


def serve_models(repo, models: list[str] | None = None, workdir=None, timeout: float = 60.0):
    """`vitexport deploy serve`: start, report the URLs (yielded lines), wait until interrupted
    or the server ends, and stop it in every case."""
    repo = Path(repo)
    models = check_models(repo, models)
    with serve_started(repo, models, workdir, timeout) as server:
        yield f"serving {', '.join(models)}"
        yield f"HTTP {server.http_url}  gRPC {server.grpc_url}  log {server.log}"
        yield "Ctrl-C stops the server"
        server.process.wait()
        yield f"tritonserver exited with {server.process.returncode}; log: {server.log}"
