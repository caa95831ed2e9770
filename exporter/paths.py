"""The one path guard: every file a command reads or writes goes through here.

- `confine` turns a name read from a folder's own files (report.json, sweep.json) into a path
  that stays inside that folder: no absolute path, no `..`, no symlink on the way.
- `read_bytes` / `read_text` open regular files only (never a FIFO, a device or a symlink to
  one), with a size bound, so a planted `/dev/zero` or FIFO cannot hang or exhaust a reader.
- `out_dir` refuses output sub-folders that are symlinks or files instead of writing through them.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
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
        try:
            link = step.is_symlink()
        except OSError as e:  # a name too long for the file system, among others
            raise InputError(field, repr(rel), INSIDE, e.strerror or str(e)) from None
        if link:
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


def out_dir(folder: Path, name: str, field: str, make: bool = True) -> Path:
    """The sub-folder `name` of `folder` to write into, made if missing (`make`); refused when
    it is a symlink (writing through it would reach the folder it points to) or anything but a
    folder. `make=False` only checks, for a command that has other checks still to pass."""
    path = confine(folder, name, field)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if make:
            path.mkdir()
        return path
    except NotADirectoryError:  # `folder` is no folder: the folder's own check says so
        if make:
            raise
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


# ---- what the tool wrote ---------------------------------------------------------------------

PREFIX = ".vitexport-"  # every temporary, lock and staging name the tool makes starts with it
MARKER = ".vitexport-folder"  # in a folder the tool wrote: the names of everything it put there
MARKER_HEAD = "vitexport output folder"
LOCK_HEAD = "vitexport lock"


def temporary(path: Path) -> Path:
    """A new, empty temporary file beside `path`, created exclusively (never an existing file)
    under the tool's prefix; the caller renames it onto `path` or removes it."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f"{PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_file(path: Path, fill, mode: int = 0o644) -> None:
    """`fill(tmp)` writes an exclusive temporary beside `path`, which is then renamed onto it:
    readers never see half a file, and no file but `path` is ever replaced."""
    path = Path(path)
    tmp = temporary(path)
    try:
        fill(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """`text` written whole (flushed to disk) by `write_file`; recorded in the folder's marker."""

    def fill(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_file(path, fill, mode)
    note_written(path)


def _entries(folder: Path) -> list[str]:
    """Every entry under `folder` (not following symlinks), relative, '/'-separated, sorted."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out += [(rel / n).as_posix() for n in dirs + files]
    return sorted(out)


def write_marker(folder: Path) -> None:
    """Record everything now in `folder` as the tool's own (a build calls it on its staging
    folder just before putting it in place)."""
    names = [n for n in _entries(folder) if n != MARKER]
    _write_names(Path(folder), names)


def _write_names(folder: Path, names) -> None:
    text = json.dumps({"written_by": MARKER_HEAD, "entries": sorted(set(names))}, indent=1)
    tmp = temporary(folder / MARKER)
    try:
        tmp.write_text(text + "\n")
        os.replace(tmp, folder / MARKER)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def recorded(folder: Path) -> set | None:
    """The names the tool recorded in `folder`'s marker; None when it has no valid marker."""
    try:
        data = json.loads(read_text(Path(folder) / MARKER, "OUT", limit=16 << 20))
    except (InputError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != MARKER_HEAD:
        return None
    entries = data.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return None
    return set(entries)


def note_written(path: Path) -> None:
    """Add `path` (just written) to the marker of the output folder it lies in (its folder or
    the one above, as OUT/visualize/x.png), so that --force may later replace it."""
    path = Path(path)
    for folder in (path.parent, path.parent.parent):
        names = recorded(folder)
        if names is not None:
            rel = path.relative_to(folder).as_posix()
            parts = rel.split("/")
            new = {"/".join(parts[: i + 1]) for i in range(len(parts))}
            if not new <= names:
                _write_names(folder, names | new)
            return


def foreign(folder: Path) -> list[str]:
    """What in `folder` the tool did not write: every entry absent from its marker, and every
    symlink or special file (all entries when there is no marker). [] means --force may go."""
    folder = Path(folder)
    entries = _entries(folder)
    names = recorded(folder)
    if names is None:
        return entries
    out = []
    for rel in entries:
        if rel == MARKER:
            continue
        mode = os.lstat(folder / rel).st_mode
        if rel not in names or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            out.append(rel)
    return out


class Lock:
    """An exclusive lock file `.vitexport-<name>.lock` beside `target`: created with O_EXCL and
    the tool's own first line, so that a user's file is never taken for it, overwritten or
    removed. A lock left by a dead process (flock released) is taken over."""

    def __init__(self, target: Path, field: str):
        self.target, self.field = Path(target), field
        self.path = self.target.parent / f"{PREFIX}{self.target.name}.lock"
        self.fd: int | None = None

    def _foreign(self, why: str):
        return InputError(
            self.field,
            str(self.target),
            f"a destination whose lock name {self.path.name} is free or the tool's own",
            f"{self.path} {why}; move it away",
        )

    def acquire(self) -> None:
        head = f"{LOCK_HEAD} ".encode()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
                except FileNotFoundError:
                    continue  # its holder removed it in between
                except OSError:
                    raise self._foreign("is not a regular file the tool wrote") from None
                created = False
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise self._foreign("is not a regular file")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 64, 0).decode(errors="replace")
                    pid = holder[len(head) :].strip() if holder.startswith(head.decode()) else "?"
                    raise InputError(
                        self.field,
                        str(self.target),
                        "a folder no other build is writing",
                        f"another vitexport build (pid {pid or '?'}) is writing it",
                    ) from None
                if not created and not os.pread(fd, 64, 0).startswith(head):
                    raise self._foreign("was not written by vitexport")
                try:  # unlinked by its last holder between our open and our lock: start over
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, head + f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Remove the lock file (only the one this process holds) and close it."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if os.fstat(fd).st_ino == os.lstat(self.path).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


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
    "PREFIX",
    "MARKER",
    "temporary",
    "write_text",
    "write_marker",
    "recorded",
    "note_written",
    "foreign",
    "Lock",
]
