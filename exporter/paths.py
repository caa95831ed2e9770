"""The one path guard: every file a command reads or writes goes through here.

- `confine` turns a name read from a folder's own files (report.json, sweep.json) into a path
  that stays inside that folder: no absolute path, no `..`, no symlink on the way.
- `read_bytes` / `read_text` open regular files only (never a FIFO, a device or a symlink to
  one), with a size bound, so a planted `/dev/zero` or FIFO cannot hang or exhaust a reader.
- `out_dir` refuses output sub-folders that are symlinks or files instead of writing through them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from .errors import InputError

# Large enough for any JSON or Markdown file the tool writes; small enough to read at once.
TEXT_LIMIT = 64 << 20


def _real(path) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(str(path)))))


INSIDE = "a relative path inside the folder (no '..', not absolute, no symlink)"


def confine(folder: Path, rel: str, field: str) -> Path:
    """`folder / rel`, refused (InputError naming `field`) unless `rel` is a non-empty relative
    path without '..' parts, none of whose components is a symlink (a folder the tool wrote
    holds none), whose real path lies inside the folder's real path."""
    if not isinstance(rel, str) or rel.strip() == "":
        raise InputError(field, repr(rel), INSIDE, "not a file name")
    if "\0" in rel:
        raise InputError(field, repr(rel), INSIDE, "holds a NUL byte")
    if PurePosixPath(rel).is_absolute() or os.path.isabs(rel) or rel.startswith("~"):
        raise InputError(field, repr(rel), INSIDE, "an absolute path")
    parts = PurePosixPath(rel).parts
    if ".." in parts or ".." in Path(rel).parts or "\\" in rel:
        raise InputError(field, repr(rel), INSIDE, "leaves the folder through '..'")
    path = Path(folder) / rel
    step = Path(folder)
    for part in Path(rel).parts:
        step = step / part
        if step.is_symlink():
            raise InputError(field, repr(rel), INSIDE, f"{step} is a symlink")
    root = os.path.realpath(folder)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise InputError(field, repr(rel), INSIDE, "resolves outside the folder")
    if real == root:
        raise InputError(field, repr(rel), INSIDE, "names the folder itself")
    return path


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: Path, field: str, limit: int | None = None, follow: bool = True) -> int:
    """The size of `path`, refused unless it is a regular file (not a FIFO, device, folder;
    not a symlink unless `follow`) of at most `limit` bytes. Costs one stat, never opens it."""
    path = Path(path)
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise InputError(field, str(path), "an existing regular file", "no such file") from None
    except OSError as err:
        raise InputError(field, str(path), "a readable regular file", err.strerror) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(field, str(path), "a regular file", f"is {_kind(st.st_mode)}")
    if limit is not None and st.st_size > limit:
        raise InputError(
            field, str(path), f"a file of at most {limit} bytes", f"has {st.st_size} bytes"
        )
    return st.st_size


def open_regular(path: Path, field: str, limit: int | None = None, follow: bool = False):
    """A binary file object of `path`, opened without blocking (a FIFO never hangs) and checked
    on the opened descriptor to be a regular file of at most `limit` bytes."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(field, str(path), "an existing regular file", "no such file") from None
    except OSError as err:
        if os.path.islink(path):
            raise InputError(field, str(path), "a regular file", "is a symlink") from None
        raise InputError(field, str(path), "a readable regular file", err.strerror) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(field, str(path), "a regular file", f"is {_kind(st.st_mode)}")
        if limit is not None and st.st_size > limit:
            raise InputError(
                field, str(path), f"a file of at most {limit} bytes", f"has {st.st_size} bytes"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path, field: str, limit: int = TEXT_LIMIT, follow: bool = False) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see `open_regular`)."""
    with open_regular(path, field, limit, follow) as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise InputError(field, str(path), f"a file of at most {limit} bytes", "grew past it")
    return data


def read_text(path: Path, field: str, limit: int = TEXT_LIMIT, follow: bool = False) -> str:
    data = read_bytes(path, field, limit, follow)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InputError(field, str(path), "a UTF-8 text file", "not UTF-8") from None


def out_dir(folder: Path, name: str, field: str) -> Path:
    """The sub-folder `name` of `folder` to write into, made if missing; refused when it is a
    symlink (writing through it would reach the folder it points to) or anything but a folder."""
    path = confine(folder, name, field)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.mkdir()
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(
            field,
            str(path),
            "a folder the tool writes into (or nothing there yet)",
            f"is {_kind(st.st_mode)}; move it away first",
        )
    return path


def not_ancestor(path: Path, field: str, text: str | None = None) -> Path:
    """`path` resolved, refused when it is the working directory or one of its parents."""
    real = _real(path)
    cwd = _real(os.getcwd())
    if real == cwd or real in cwd.parents:
        raise InputError(
            field,
            text if text is not None else str(path),
            "a folder that is not the working directory or one of its parents",
            "it is the working directory or holds it",
        )
    return real


__all__ = [
    "confine",
    "INSIDE",
    "check_regular",
    "open_regular",
    "read_bytes",
    "read_text",
    "out_dir",
    "not_ancestor",
    "TEXT_LIMIT",
]
