"""Fixtures shared by the test files: built output folders, each built once per session."""

from __future__ import annotations

import os

# Under pytest-xdist (.ci/run: two workers on two cores) each worker's torch keeps to one
# thread: two processes of two OpenMP threads each spin-wait on each other's cores. Set before
# the first import of torch (tests.helpers imports it).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from tests.helpers import TINY, run  # noqa: E402
from tests.retention import Retention  # noqa: E402


class Built:
    """`built(method, *flags)` -> the folder of `vitexport build TINY --method METHOD FLAGS`,
    built once per distinct argument list in a session; `built.output(method, *flags)` -> what
    that build printed. Treat a folder as read-only: tests that change one take a copy with
    `helpers.copy_of(folder, tmp_path)`."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.folders: dict[tuple, object] = {}
        self.outputs: dict[tuple, str] = {}

    def __call__(self, method: str, *flags: str):
        key = (method, *map(str, flags))
        if key not in self.folders:
            out = self.tmp.mktemp("built") / "out"
            result = run(["build", *TINY, "--method", method, *flags, "--out", out])
            assert result.exit_code == 0, result.output
            self.folders[key], self.outputs[key] = out, result.output
        return self.folders[key]

    def output(self, method: str, *flags: str) -> str:
        self(method, *flags)
        return self.outputs[(method, *map(str, flags))]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    return Built(tmp_path_factory)


@pytest.fixture(scope="session")
def digits_retention():
    """Retention on the shipped default model (tests/retention.py): the baseline is evaluated
    once per session (once per xdist worker that runs a retention test)."""
    return Retention()
