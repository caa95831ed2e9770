"""The `vitexport` command: parse flags, call the library, print. No logic lives here.

Each command group may live in a module of this package that attaches its commands to `main`
(`from . import main` then `@main.command()`); `COMMAND_MODULES` lists them. A command imports
its pipeline (torch, ONNX, timm) inside its function, when it runs: --help, --version,
`methods` and `models` read only the registries' declarations and answer in about a second.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _early_stop(signum, frame):
    """SIGINT/SIGTERM while the heavy imports below load: one line, not a traceback."""
    sys.stderr.write(
        f"{signal.Signals(signum).name}: stopped during start-up; nothing was written\n"
    )
    sys.stderr.flush()
    os._exit(128 + signum)


# Only for the time of this module's imports (torch takes seconds); `main` installs its own.
_EARLY = {}
if threading.current_thread() is threading.main_thread():
    _EARLY = {s: signal.signal(s, _early_stop) for s in (signal.SIGINT, signal.SIGTERM)}

import contextlib  # noqa: E402
import errno  # noqa: E402
import importlib  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

from ..errors import InputError, PluginSurgeryError  # noqa: E402
from ..progress import Ready, StepDone  # noqa: E402
from ..record import BuildRecord  # noqa: E402

DEFAULT_OUT = Path("vitexport-out")


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


def _progress(text: str) -> None:
    click.echo(f"  {text}", err=True)


class Stopped(BaseException):
    """SIGINT or SIGTERM: unwinds like any error (staging folders are removed, locks released)
    without being caught as an Exception on the way."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 400 else text[:400] + "..."


# What an interrupted command leaves behind, unless it says otherwise (`stop_note`).
STOPPED = "nothing was written (an existing output folder is unchanged)"


@contextlib.contextmanager
def stop_note(text: str):
    """Say `text` instead of STOPPED when SIGINT/SIGTERM stops the command inside this block."""
    try:
        yield
    except (Stopped, KeyboardInterrupt) as err:
        err.note = text
        raise


# What an OS error on a path means a user may do instead, by errno.
_OS_ALLOWED = {
    errno.ENOSPC: "a filesystem with free space",
    errno.EDQUOT: "a filesystem with free space",
    errno.EROFS: "a writable filesystem",
    errno.EACCES: "a path you may read and write",
    errno.EPERM: "a path you may read and write",
    errno.ENOENT: "an existing path",
    errno.ENOTDIR: "a path whose parents are folders",
    errno.EISDIR: "a file, not a folder",
    errno.ENAMETOOLONG: "a shorter path",
    errno.ELOOP: "a path without a symlink loop",
}


def _flag_of(ctx: click.Context, filename) -> tuple[str, str] | None:
    """The flag (or argument) whose path value holds `filename`: the longest that does."""
    if not filename:
        return None
    try:
        target = os.path.realpath(os.fsdecode(filename))
    except (TypeError, ValueError):
        return None
    best = None
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if not isinstance(value, (str, Path)) or str(value) == "":
            continue
        try:
            real = os.path.realpath(os.path.expanduser(str(value)))
        except ValueError:
            continue
        if target == real or target.startswith(real.rstrip(os.sep) + os.sep):
            name = param.opts[0] if isinstance(param, click.Option) else param.name.upper()
            if best is None or len(real) > best[2]:
                best = (name, str(value), len(real))
    return None if best is None else best[:2]


class Command(click.Command):
    """A command whose OS errors (full disk, read-only folder, a device where a file belongs)
    name the flag whose path they hit, the value and what is allowed."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OSError as err:
            found = _flag_of(ctx, err.filename)
            if found is None:
                raise
            name = errno.errorcode.get(err.errno, type(err).__name__)
            where = (
                ""
                if os.fsdecode(err.filename) == os.path.expanduser(found[1])
                else (f"{os.fsdecode(err.filename)}: ")
            )
            raise InputError(
                found[0],
                found[1],
                _OS_ALLOWED.get(err.errno, "a path the tool can use"),
                f"{where}{err.strerror or err} ({name})",
            ) from None


class OneLineErrors(click.Group):
    """Every mistake in the input prints one line on stderr and exits with 2 (no usage dump, no
    traceback); 1 is left to a validation that ran and failed; SIGINT/SIGTERM exit 130/143."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        held = {}
        if threading.current_thread() is threading.main_thread():
            held = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as err:
            _echo_err(f"Error: {_one_line(err.format_message())}")
            sys.exit(2)
        except InputError as err:
            _echo_err(f"Error: {_one_line(err)}")
            sys.exit(2)
        except PluginSurgeryError as err:
            _echo_err(
                f"Error: --plugins: {_one_line(err)}; allowed: a model and method whose "
                "graph has the subgraph the plugin replaces"
            )
            sys.exit(2)
        except (Stopped, KeyboardInterrupt, click.exceptions.Abort) as err:
            signum = getattr(err, "signum", signal.SIGINT)
            # click turns a KeyboardInterrupt into Abort; the note stays on the original
            note = getattr(err, "note", None) or getattr(err.__context__, "note", STOPPED)
            _echo_err(f"{signal.Signals(signum).name}: stopped; {note}")
            sys.exit(128 + signum)
        except MemoryError:
            _echo_err(
                "Error: out of memory; allowed: a smaller --img-size or --batch (see --max-memory)"
            )
            sys.exit(2)
        except OSError as err:  # a full, read-only or missing filesystem; a name too long
            name = errno.errorcode.get(err.errno, type(err).__name__)
            where = f"{err.filename}: " if err.filename else ""
            _echo_err(f"Error: {where}{err.strerror or _one_line(err)} ({name})")
            sys.exit(2)
        finally:
            for s, handler in held.items():
                signal.signal(s, handler)
        sys.exit(rv or 0)


class _Held:
    """Progress held back until the input checks pass (the pipeline's `Ready` event) or the
    first step is done (a `StepDone` event): an input mistake then prints its one line alone."""

    def __init__(self, banner: str | None = None, until_done: bool = True):
        self.lines, self.banner, self.open, self.until_done = [], banner, False, until_done

    def __call__(self, text: str) -> None:
        if isinstance(text, Ready):
            if not self.open:
                self.release(text.out)
            return
        if self.open:
            _progress(text)
            return
        self.lines.append(text)
        if self.until_done and isinstance(text, StepDone):
            self.release()

    def release(self, out=None) -> None:
        self.open = True
        if self.banner:
            _echo_err(f"{self.banner} -> {out}" if out is not None else self.banner)
        for text in self.lines:
            _progress(text)


def _verified(out: Path, rehash: bool) -> BuildRecord:
    """The folder's record; a folder whose files differ from their recorded sha256 is refused
    (--rehash: accept them)."""
    from ..folder import read_record

    return read_record(out, rehash)


@click.group(cls=OneLineErrors)
@click.version_option(package_name="vitexport")
def main():
    """Export token-reduced Vision Transformers for dense prediction to ONNX / TensorRT."""


def _print_summary(record: BuildRecord, out: Path) -> None:
    from ..report import summary

    for line in summary(record, out):
        click.echo(line)


# Modules of this package that attach commands to `main` (imported for that effect).
COMMAND_MODULES: tuple[str, ...] = (
    "build",
    "validate",
    "engine",
    "bench",
    "lint",
    "visualize",
    "train_demo",
    "listing",
    "sweep",
    "deploy",
    "doctor",
)


def _attach() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


class _Subgroup(click.Group):
    """A command group under `main` (deploy): its commands name the flag of an OS error too."""

    command_class = Command


main.command_class = Command
main.group_class = _Subgroup
_attach()
for _signum, _handler in _EARLY.items():  # start-up is over: main() handles signals from here
    signal.signal(_signum, _handler)

if __name__ == "__main__":
    main()
