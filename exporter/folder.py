"""Output folders that never lose data, and reading them back only when their files are intact.

Writing (`OutputFolder`): `--out` is resolved to a real path and refused when it could hold
something other than a build's own output; a build stages everything in a sibling temporary
folder under an exclusive lock, then moves the old folder aside, renames the new one in and
only then removes the old one. Temporaries of dead processes are cleaned at the next build.

Reading (`read_record`): every sha256 recorded in report.json is checked before any file of
the folder is trusted; `--rehash` accepts the files as they are and records their new hashes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import onnx

from .errors import InputError
from .paths import (
    MARKER,
    PREFIX,
    Lock,
    foreign,
    open_regular,
    read_text,
    write_marker,
    write_text,
)
from .record import BuildRecord, SweepRecord, seal_rows
from .report import render_markdown

FLAG = "--out"
# Longest file name most filesystems take (ext4, xfs, tmpfs, APFS); the staging name adds to it.
NAME_MAX = 255
STAGING_EXTRA = len(".vitexport-") + len(".tmp-") + 10 + len("-") + 8
# a staging folder's own mark, so that only the tool's are ever cleaned up
STAGED = ".vitexport-staging"
SOURCE_TREE = Path(__file__).resolve().parent.parent


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def resolve_out(out) -> Path:
    """`out` as an absolute real path, refused (InputError, exit 2) where replacing it could
    destroy something that is not this tool's output."""
    text = str(out)
    if text.strip() == "" or Path(text).name in ("", ".", ".."):
        raise InputError(
            FLAG,
            text,
            "a folder name of its own, e.g. vitexport-out/run1",
            "names the current or a parent folder",
        )
    try:
        path = Path(os.path.realpath(os.path.abspath(os.path.expanduser(text))))
    except ValueError as err:  # an embedded NUL byte
        raise InputError(FLAG, repr(text), "a path", str(err)) from None
    if len(path.name) + STAGING_EXTRA > NAME_MAX:
        raise InputError(
            FLAG,
            text[:60] + "...",
            f"a name of at most {NAME_MAX - STAGING_EXTRA} characters",
            f"the last name has {len(path.name)}",
        )
    cwd = Path(os.path.realpath(os.getcwd()))
    for guarded, what in ((cwd, "the working directory"), (SOURCE_TREE, "the source tree")):
        if path == guarded or path in guarded.parents:
            raise InputError(
                FLAG,
                text,
                "a folder that is not the working directory, the source "
                "tree or one of their parents",
                f"it is {what} or holds it",
            )
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(
                    FLAG, text, "a path whose parents are folders", f"{parent} is a file"
                )
            if not os.access(parent, os.W_OK | os.X_OK):  # EROFS shows here even for root
                raise InputError(
                    FLAG, text, "a folder on a writable filesystem", f"{parent} is not writable"
                )
            break
    if path.exists() and not path.is_dir():
        raise InputError(FLAG, text, "a folder", "it is a file")
    return path


def foreign_entries(path: Path) -> list[str]:
    """What in `path` stands in the way of --force: everything the tool did not record in the
    folder's marker (all of it when there is none). An empty folder has nothing to lose."""
    return foreign(path)


def _refuse_foreign(out, path: Path, found: list[str]) -> InputError:
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return InputError(
        FLAG,
        str(out),
        "a new folder, an empty one or a folder vitexport wrote (its "
        f"{MARKER} lists every file in it); --force replaces only those",
        f"holds what vitexport did not write: {shown}",
    )


class OutputFolder:
    """The destination of one build: check -> stage() -> commit() or discard().

    The constructor does every check that needs no work (a bad --out costs nothing); stage()
    takes the lock, cleans stale temporaries, checks free space and makes the staging folder.
    """

    _lock = None  # also when the constructor refused the folder before setting it (__del__)

    def __init__(self, out, force: bool = False):
        self.tmp: Path | None = None
        self._lock = None
        self.path = resolve_out(out)
        self.force = force
        if self.path.exists():
            if not force:
                raise InputError(FLAG, str(out), "a new folder, or --force to replace it", "exists")
            found = foreign_entries(self.path)
            if found:
                raise _refuse_foreign(out, self.path, found)

    def _pattern(self) -> re.Pattern:
        return re.compile(re.escape(f"{PREFIX}{self.path.name}.") + r"(tmp|old)-(\d+)-\w+$")

    def lock(self) -> None:
        """An exclusive lock beside the destination; a second build to it is refused."""
        lock = Lock(self.path, FLAG)
        lock.acquire()
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.release()

    def clean_stale(self) -> None:
        """Remove temporaries left by dead builds (only folders this tool made: the tool's
        prefix, a dead pid and its marker inside); put back an old folder a killed build had
        moved aside before its new one was in place."""
        pattern = self._pattern()
        for entry in self.path.parent.iterdir():
            m = pattern.match(entry.name)
            if not m or _pid_alive(int(m.group(2))) or entry.is_symlink() or not entry.is_dir():
                continue
            if not (entry / (STAGED if m.group(1) == "tmp" else MARKER)).is_file():
                continue
            if m.group(1) == "old" and not self.path.exists():
                os.replace(entry, self.path)
            else:
                shutil.rmtree(entry, ignore_errors=True)

    def stage(self, expected_bytes: int = 0) -> Path:
        """Lock, clean, check free space; return a fresh staging folder beside the destination."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._lock is None:
                self.lock()
            self.clean_stale()
            free = shutil.disk_usage(self.path.parent).free
            if expected_bytes > free:
                raise InputError(
                    FLAG,
                    str(self.path),
                    f"a filesystem with {_size(expected_bytes)} free",
                    f"only {_size(free)} free",
                )
            self.tmp = Path(
                tempfile.mkdtemp(
                    prefix=f"{PREFIX}{self.path.name}.tmp-{os.getpid()}-", dir=self.path.parent
                )
            )
            os.chmod(self.tmp, 0o755)  # mkdtemp's 0700 would hide the result from others
            (self.tmp / STAGED).write_text(f"staged by vitexport, pid {os.getpid()}\n")
        except BaseException:
            self.discard()
            raise
        return self.tmp

    def commit(self) -> None:
        """Put the staged folder in place; an existing one is removed only once the new one is
        there, and only when --force allowed it and it still holds only what the tool wrote."""
        try:
            if self.path.exists() and not self.force:
                raise InputError(
                    FLAG,
                    str(self.path),
                    "a folder nobody else writes to during the build",
                    "appeared while building; nothing was replaced",
                )
            if self.path.exists():
                found = foreign_entries(self.path)
                if found:
                    raise _refuse_foreign(self.path, self.path, found)
            (self.tmp / STAGED).unlink()
            write_marker(self.tmp)
            old = Path(
                tempfile.mkdtemp(
                    prefix=f"{PREFIX}{self.path.name}.old-{os.getpid()}-", dir=self.path.parent
                )
            )
            # The renames run with SIGINT/SIGTERM held back: no interruption between them.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                moved = self.path.exists()
                if moved:
                    os.replace(self.path, old)  # onto the empty folder just made
                try:
                    os.replace(self.tmp, self.path)
                except BaseException:
                    if moved:  # the new folder could not go in: the old one goes back
                        os.replace(old, self.path)
                    raise
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            self.tmp = None
            if moved:
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.rmdir()
        except BaseException:
            self.discard()
            raise
        self.unlock()

    def discard(self) -> None:
        """Remove the staging folder (a failed or interrupted build); the destination is untouched."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        self.unlock()

    def __del__(self):
        self.unlock()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


# ---- files inside a folder -------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path, "OUT") as f:  # never a FIFO, a device or a symlink
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(folder: Path, names) -> dict:
    """sha256 of each named file in `folder`, and of its external weights (`<name>.data`, written
    beside models past protobuf's 2 GB limit) when there are any."""
    out = {}
    for name in names:
        out[name] = sha256(Path(folder) / name)
        weights = Path(folder) / (name + ".data")
        if weights.is_file():
            out[weights.name] = sha256(weights)
    return out


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name, flush, then rename: readers never see half a file."""
    write_text(path, text)


def finite(value, flags: list | None = None, where: str = ""):
    """`value` with every non-finite float replaced by None (JSON has no NaN); the places where
    that happened are appended to `flags`."""
    if isinstance(value, float) and not math.isfinite(value):
        if flags is not None:
            flags.append(f"{where or '.'}: {value}")
        return None
    if isinstance(value, dict):
        return {k: finite(v, flags, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v, flags, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def to_json(data: dict) -> str:
    """Strict JSON: non-finite numbers become null and are listed under "non_finite"."""
    flags: list = []
    clean = finite(data, flags)
    if flags:
        clean["non_finite"] = sorted(set(clean.get("non_finite") or []) | set(flags))
    return json.dumps(clean, indent=2, allow_nan=False) + "\n"


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, to_json(data))


REPORT_HASH = "report.sha256"  # sha256sum's format, so `sha256sum -c report.sha256` checks it


def write_report(out: Path, record: BuildRecord) -> None:
    """report.json (with its sha256 in report.sha256) and report.md, each replaced atomically."""
    text = to_json(record.to_dict())
    digest = hashlib.sha256(text.encode()).hexdigest()
    write_atomic(Path(out) / "report.json", text)
    write_atomic(Path(out) / REPORT_HASH, f"{digest}  report.json\n")
    # rendered from the written JSON, so report.md shows what report.json holds (NaN flagged)
    write_atomic(Path(out) / "report.md", render_markdown(json.loads(text)))


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def read_json(path: Path, flag: str = "OUT") -> dict:
    """A JSON object from `path`; anything else is one InputError naming the file."""
    path = Path(path)
    try:
        data = json.loads(read_text(path, flag), parse_constant=_reject_constant)
    except IsADirectoryError:
        raise InputError(flag, str(path), "a JSON file", "is a folder") from None
    except InputError as err:  # a special file, a symlink, too big: named as report.json
        raise InputError(flag, str(path), "a JSON file written by vitexport", err.reason) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InputError(
            flag,
            str(path),
            "valid JSON written by vitexport",
            f"unreadable ({str(err).splitlines()[0][:120]})",
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            flag, str(path), "a JSON object written by vitexport", f"a JSON {type(data).__name__}"
        )
    return data


def check_report_hash(out: Path) -> None:
    """Refuse a report.json that differs from the sha256 the build recorded beside it."""
    recorded = Path(out) / REPORT_HASH
    try:
        digest = read_text(recorded, "OUT", limit=4096).split()[0]
    except (InputError, OSError, UnicodeDecodeError, IndexError):
        raise InputError(
            "OUT",
            str(recorded),
            "the sha256 of report.json as the build wrote it (--rehash to record it now)",
            "missing or unreadable",
        ) from None
    if sha256(Path(out) / "report.json") != digest:
        raise InputError(
            "OUT",
            str(Path(out) / "report.json"),
            "the report as vitexport wrote it (--rehash if the change is intended)",
            f"its sha256 differs from {REPORT_HASH}: edited or truncated",
        )


def check_hashes(out: Path, record: BuildRecord) -> None:
    """Refuse a folder whose recorded files are missing or differ from their sha256 (the
    names were confined to the folder when the record was read)."""
    unhashed = [n for n in record.files() if n not in record.hashes]
    if unhashed:
        raise InputError(
            "OUT",
            str(out),
            "a folder whose report.json records the sha256 of its "
            "files (or --rehash to record them now)",
            f"no sha256 for {unhashed[0]}",
        )
    for name, digest in record.hashes.items():
        path = Path(out) / name
        if not path.is_file():
            raise InputError(
                "OUT",
                str(path),
                "the file report.json records (--rehash to accept the folder as it is)",
                "missing",
            )
        if sha256(path) != digest:
            raise InputError(
                "OUT",
                str(path),
                "the file as the build wrote it (--rehash if the change is intended)",
                "its sha256 differs from report.json: changed or truncated",
            )


def check_readable(out: Path, names) -> None:
    """Before --rehash records them: every artifact is there and every ONNX file parses."""
    for name in names:
        path = Path(out) / name
        if not path.is_file():
            raise InputError("OUT", str(path), "the files report.json names", "missing")
        if name.endswith(".onnx"):
            try:
                onnx.load(str(path), load_external_data=False)
            except Exception as err:  # noqa: BLE001 - protobuf raises several types on bad bytes
                raise InputError(
                    "OUT", str(path), "an ONNX file", f"does not parse ({type(err).__name__})"
                ) from None


def read_record(out: Path, rehash: bool = False) -> BuildRecord:
    """The record of an output folder written by `vitexport build`, every field checked
    (record.BuildRecord.read), after checking its files against their recorded sha256
    (`rehash`: record the files as they are now). Readers trust the record this returns and
    do not hash the folder again."""
    out = Path(out)
    if not out.exists():
        raise InputError("OUT", str(out), "a folder written by `vitexport build`", "no such folder")
    if not out.is_dir():
        raise InputError(
            "OUT", str(out), "a folder written by `vitexport build`", "is a file, not a folder"
        )
    if not (out / "report.json").exists():
        raise InputError("OUT", str(out), "a folder written by `vitexport build`", "no report.json")
    if not rehash:
        check_report_hash(out)
    record = BuildRecord.read(read_json(out / "report.json"), out)
    if rehash:
        check_readable(out, record.files())
        # measured on the files as they were
        record.accuracy, record.timing, record.validation = None, None, []
        record.rehashed = True
        record.set_hashes(file_hashes(out, record.files()))
        write_report(out, record)
    else:
        check_hashes(out, record)
    return record


def read_sweep(path: Path, flag: str = "--resume") -> SweepRecord | None:
    """The sweep.json at `path`, rows and fields checked (None when there is none); a corrupt
    or edited one is refused in one line, not ignored."""
    path = Path(path)
    if not path.exists():
        return None
    return SweepRecord.read(read_json(path, flag), str(path))


def write_sweep(path: Path, result: dict) -> None:
    """sweep.json, each row sealed with the sha256 of its content."""
    seal_rows(result["rows"])
    write_atomic(path, json.dumps(result, indent=2) + "\n")


def write_beside(out: Path, name: str, data: dict) -> Path:
    """A read-only command's result (validation.json, lint.json), next to an untouched report."""
    path = Path(out) / name
    write_json(path, data)
    return path


__all__ = [
    "OutputFolder",
    "resolve_out",
    "read_record",
    "read_sweep",
    "write_sweep",
    "write_report",
    "write_beside",
    "file_hashes",
    "sha256",
    "write_atomic",
    "to_json",
]
