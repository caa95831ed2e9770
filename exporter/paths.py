"""Paths named by a file the tool reads (report.json, sweep.json) stay inside their folder.

A report someone shared or edited can name `../../x.onnx`, an absolute path or a symlink that
leads out of the folder; reading or copying such a file would reach outside what the user
named. `confine` is the one check every such path passes before it is opened.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import InputError

INSIDE = "a relative path inside the folder (no '..', not absolute, no symlink out of it)"


def confine(folder: Path, rel: str, field: str) -> Path:
    """`folder / rel`, refused (InputError naming `field`) unless it stays inside `folder`:
    `rel` a non-empty relative path without '..' parts, whose real path (symlinks followed)
    lies inside the folder's real path."""
    if not isinstance(rel, str) or rel.strip() == "":
        raise InputError(field, repr(rel), INSIDE, "not a file name")
    if "\0" in rel:
        raise InputError(field, repr(rel), INSIDE, "holds a NUL byte")
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or os.path.isabs(rel):
        raise InputError(field, repr(rel), INSIDE, "an absolute path")
    if ".." in parts or ".." in Path(rel).parts:
        raise InputError(field, repr(rel), INSIDE, "leaves the folder through '..'")
    path = Path(folder) / rel
    root = os.path.realpath(folder)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise InputError(field, repr(rel), INSIDE, "a symlink that leads out of the folder")
    if real == root:
        raise InputError(field, repr(rel), INSIDE, "names the folder itself")
    return path


__all__ = ["confine", "INSIDE"]
