"""Fixtures shared by the test files: built output folders, each built once per session."""

from __future__ import annotations

import pytest

from tests.helpers import TINY, run


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """`built(method, *flags)` -> the folder of `vitexport build TINY --method METHOD FLAGS`,
    built once per distinct argument list in a session. Treat it as read-only: tests that
    change a folder take a copy with `helpers.copy_of(folder, tmp_path)`."""
    folders = {}

    def build(method: str, *flags: str):
        key = (method, *map(str, flags))
        if key not in folders:
            out = tmp_path_factory.mktemp("built") / "out"
            result = run(["build", *TINY, "--method", method, *flags, "--out", out])
            assert result.exit_code == 0, result.output
            folders[key] = out
        return folders[key]

    return build
