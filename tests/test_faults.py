"""Faults and hostile inputs (issue 13): each ends as one line on stderr with the contract's exit
code, and no user file is lost. Output folders come from conftest's session-scoped `built`."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from exporter.errors import InputError
from exporter.folder import STAGED, OutputFolder, read_record, write_report
from exporter.paths import MARKER, PREFIX, recorded, write_marker

from .helpers import TINY, copy_of, one_line, run

# The cheapest build to stand for "an existing output folder" (method none: no token op).
BASE = ("none",)


def tree(path: Path) -> dict:
    """Every file under `path` with its sha256: to show that nothing changed."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A working directory holding a user's files, as in the issue's first case."""
    work = tmp_path / "s"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("x\n")
    (work / "sub" / "notes.txt").write_text("mine\n")
    (work / "d" / "inner").mkdir(parents=True)
    (work / "d" / "inner" / "f.txt").write_text("f\n")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def folder(built, tmp_path):
    """A private copy of a built output folder."""
    return copy_of(built(*BASE), tmp_path)


# ---- 1. deleting the user's files -------------------------------------------------------------


@pytest.mark.parametrize("out", [".", "d/inner/..", "..", "", "sub/..", "d/inner/../.."])
def test_out_naming_the_working_directory_or_a_parent_is_refused(user_dir, out):
    before = tree(user_dir.parent)
    one_line(run(["build", *TINY, "--out", out, "--force"]), 2, "--out")
    assert tree(user_dir.parent) == before


@pytest.mark.parametrize(
    "out,word", [("keep.txt", "file"), ("keep.txt/sub", "file"), ("a" * 300, "characters")]
)
def test_out_that_cannot_be_a_folder_is_refused_before_any_work(user_dir, out, word):
    before = tree(user_dir)
    one_line(run(["build", *TINY, "--out", out, "--force"]), 2, "--out", word)
    assert tree(user_dir) == before


def test_force_does_not_replace_a_folder_the_tool_did_not_write(user_dir):
    before = tree(user_dir)
    one_line(run(["build", *TINY, "--out", "sub", "--force"]), 2, "--out", "did not write")
    assert tree(user_dir) == before


def test_source_tree_is_refused():
    import exporter

    src = Path(exporter.__file__).resolve().parent.parent
    one_line(run(["build", *TINY, "--out", src, "--force"]), 2, "--out", "source tree")


def test_folder_that_appears_during_a_build_is_kept(tmp_path):
    out = tmp_path / "out"
    f = OutputFolder(out)
    staged = f.stage()
    (staged / "model.onnx").write_text("new")
    out.mkdir()
    (out / "mine.txt").write_text("user's")
    with pytest.raises(InputError, match="appeared"):
        f.commit()
    assert (out / "mine.txt").read_text() == "user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # staging and lock gone


def test_second_build_to_the_same_out_is_refused(tmp_path):
    out = tmp_path / "out"
    first = OutputFolder(out)
    first.stage()
    try:
        line = one_line(run(["build", *TINY, "--out", out]), 2, "--out", "another vitexport build")
        assert str(os.getpid()) in line
    finally:
        first.discard()
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_whole_and_old_survives_until_then(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "old.onnx").write_text("old")
    write_marker(out)  # as a build leaves it: the tool's own folder
    f = OutputFolder(out, force=True)
    staged = f.stage()
    (staged / "report.json").write_text("{}")
    (staged / "new.onnx").write_text("new")
    assert (out / "old.onnx").read_text() == "old"  # untouched while the build runs
    f.commit()
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new.onnx", "report.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_builds_are_cleaned_and_a_moved_aside_folder_restored(tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    staged = tmp_path / f"{PREFIX}out.tmp-{dead}-abc"  # a SIGKILLed build's staging folder
    staged.mkdir()
    (staged / STAGED).write_text("staged\n")
    old = tmp_path / f"{PREFIX}out.old-{dead}-def"  # killed between its two renames
    old.mkdir()
    (old / "report.json").write_text("{}")
    write_marker(old)
    # not the tool's: a user's folders named like temporaries, one without the staging mark
    kept = [f".out.tmp-{dead}", f"{PREFIX}out.tmp-{dead}-ghi", f"{PREFIX}other.tmp-{dead}-x"]
    for name in kept:
        (tmp_path / name).mkdir()
    f = OutputFolder(out, force=True)
    f.stage()
    f.discard()
    assert (out / "report.json").is_file()  # put back
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "out"])


@pytest.mark.slow
def test_sigterm_during_a_forced_build_keeps_the_old_folder(built, tmp_path):
    """A real SIGTERM to a real build that replaces an existing folder with --force: exit 143,
    one line, the old folder intact, no temporary left."""
    out = copy_of(built(*BASE), tmp_path)
    before = tree(out)
    cmd = [
        sys.executable,
        "-c",
        "from exporter.cli import main; main()",
        "build",
        *TINY,
        "--method",
        "none",
        "--force",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not any(p.name.startswith(f"{PREFIX}{out.name}.tmp-") for p in tmp_path.iterdir()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(
                f"the build ended or stalled before staging: {proc.communicate()[1][-2000:]}"
            )
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("SIGTERM")
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_sigint_is_one_line_and_exit_130(tmp_path, monkeypatch):
    def interrupted(self, out, force=False):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this returns

    monkeypatch.setattr(OutputFolder, "__init__", interrupted)
    one_line(run(["build", *TINY, "--method", "none", "--out", tmp_path / "o"]), 130, "SIGINT")
    assert list(tmp_path.iterdir()) == []


# ---- 2. validation cannot be switched off or fooled ------------------------------------------


@pytest.mark.parametrize(
    "flags,flag",
    [
        (["--atol", "nan"], "--atol"),
        (["--rtol", "nan"], "--rtol"),
        (["--atol", "-1"], "--atol"),
        (["--rtol", "inf"], "--rtol"),
        (["--atol", "0"], "--atol"),
    ],
)
def test_tolerances_must_be_finite_and_positive(folder, flags, flag):
    before = tree(folder)
    one_line(run(["validate", folder, *flags]), 2, flag)
    one_line(run(["build", *TINY, *flags, "--out", folder.parent / "new"]), 2, flag)
    assert tree(folder) == before and not (folder.parent / "new").exists()


def _flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "command", [["validate"], ["lint"], ["bench", "--runs", "1"], ["engine"], ["visualize"]]
)
@pytest.mark.parametrize("change", ["flip", "truncate", "missing"])
def test_changed_model_is_refused_naming_the_file(folder, command, change):
    path = folder / "model.onnx"
    if change == "flip":
        _flip_byte(path, path.stat().st_size - 100)
    elif change == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    before = tree(folder)
    one_line(run([command[0], folder, *command[1:]]), 2, "model.onnx")
    assert tree(folder) == before


def test_edited_report_is_refused(folder):
    report = json.loads((folder / "report.json").read_text())
    report["model"]["input_shape"] = [1, 3, 4096, 4096]  # an img_size edited by hand
    (folder / "report.json").write_text(json.dumps(report))
    one_line(run(["validate", folder]), 2, "report.json", "differs")


@pytest.mark.parametrize("text", ["{}", "[]", "{not json", "", "NaN", '{"a": NaN}'])
def test_corrupt_or_empty_report_is_one_line(folder, text):
    (folder / "report.json").write_text(text)
    for command in ("validate", "lint", "visualize"):
        for extra in ([], ["--rehash"]):
            one_line(run([command, folder, *extra]), 2, "report.json")


def test_unknown_model_in_report_is_one_line(folder):
    record = read_record(folder)
    record.settings.model.name = "no_such_model"
    write_report(folder, record)
    one_line(run(["validate", folder]), 2, "--model", "no_such_model")


def test_validate_and_lint_leave_the_report_as_built(folder):
    before = tree(folder)
    assert run(["validate", folder]).exit_code == 0
    assert run(["lint", folder]).exit_code == 0
    after = tree(folder)
    # the marker is the tool's record of what it wrote: it gains the two new names
    assert {k: v for k, v in after.items() if k in before and k != MARKER} == {
        k: v for k, v in before.items() if k != MARKER
    }
    assert set(after) - set(before) == {"validation.json", "lint.json"}
    assert {"validation.json", "lint.json"} <= recorded(folder)
    assert json.loads((folder / "validation.json").read_text())["validation"][0]["passed"]


def test_rehash_accepts_an_intended_change(folder):
    path = folder / "model.onnx"
    _flip_byte(path, path.stat().st_size - 100)  # inside the weights: the file still parses
    assert run(["lint", folder]).exit_code == 2
    assert run(["lint", folder, "--rehash"]).exit_code == 0
    assert run(["lint", folder]).exit_code == 0  # recorded now
    record = read_record(folder)
    assert record.hashes["model.onnx"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.onnx.sha256 == record.hashes["model.onnx"]
    assert record.rehashed and record.accuracy is None
    assert "accuracy" not in json.loads((folder / "report.json").read_text())


@pytest.mark.parametrize("change", ["truncate", "missing"])
def test_rehash_of_a_broken_model_is_one_line(folder, change):
    path = folder / "model.onnx"
    if change == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:1000])
    for command in ("validate", "lint", "bench"):
        one_line(run([command, folder, "--rehash"]), 2, "model.onnx")


def test_report_with_nan_is_valid_json_and_flags_it(tmp_path, folder):
    record = read_record(folder)
    record.validation[0].outputs["logits"]["max_abs"] = float("nan")
    write_report(folder, record)
    text = (folder / "report.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert data["validation"][0]["outputs"]["logits"]["max_abs"] is None
    assert any("max_abs" in f for f in data["non_finite"])
    assert "Non-finite" in (folder / "report.md").read_text()


# ---- 3. resources bounded before allocation ---------------------------------------------------


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_img_size_500_on_the_default_model_is_refused_with_the_estimate(tmp_path):
    line = one_line(
        run(["build", "--img-size", "500", "--out", tmp_path / "o"]),
        2,
        "--img-size",
        "needs about",
        "GiB",
    )
    assert "--max-memory" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flags,flag",
    [
        (["--img-size", "100000x100000"], "--img-size"),
        (["--img-size", "4096x4096"], "--img-size"),
        (["--hw", "99999999999999999999x2"], "--hw"),
        (["--window", "99999x99999", "--hw", "5000x5000"], "--window"),
        (["--seed", "-1"], "--seed"),
        (["--batch", "0"], "--batch"),
        (["--opset", "99"], "--opset"),
        (["--eval-count", "0"], "--eval-count"),
        (["--max-memory", "lots"], "--max-memory"),
    ],
)
def test_out_of_range_numbers_are_refused(tmp_path, flags, flag):
    start = _rss_mib()
    one_line(run(["build", "--model", "segmenter_tiny", *flags, "--out", tmp_path / "o"]), 2, flag)
    assert _rss_mib() - start < 1024
    assert list(tmp_path.iterdir()) == []


def test_max_memory_overrides_the_estimate(tmp_path):
    one_line(
        run(["build", *TINY, "--max-memory", "1M", "--out", tmp_path / "o"]),
        2,
        "needs about",
        "--max-memory",
    )


def _npy_header(shape, dtype="<f4") -> bytes:
    from numpy.lib import format as npy

    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_npz_whose_header_claims_a_million_images_is_refused_unread(tmp_path):
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("images.npy", _npy_header((10**6, 3, 64, 96)) + bytes(1000))
        zf.writestr("labels.npy", _npy_header((10**6, 64, 96), "<i8") + bytes(1000))
    start = _rss_mib()
    one_line(
        run(["build", *TINY, "--eval-data", path, "--out", tmp_path / "o"]),
        2,
        "--eval-data",
        "images.npy",
    )
    assert _rss_mib() - start < 512
    assert not (tmp_path / "o").exists()


def _zeros_npz(path: Path, name: str, shape) -> None:
    """A zip holding one array of zeros: a few KB that unpack to the full array size."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(name, "w") as f:
            f.write(_npy_header(shape))
            chunk = bytes(1 << 22)
            for _ in range(int(np.prod(shape)) * 4 // len(chunk)):
                f.write(chunk)


def test_zip_bomb_is_refused_before_unpacking(tmp_path, monkeypatch):
    """Zeros that unpack to 72 MiB; the bound is lowered to 64 MiB so that the test stays small."""
    import exporter.accuracy

    path = tmp_path / "bomb.npz"
    _zeros_npz(path, "images.npy", (1024, 3, 64, 96))
    assert path.stat().st_size < 1 << 20
    monkeypatch.setattr(exporter.accuracy, "MAX_EVAL_BYTES", 64 << 20)
    start = _rss_mib()
    one_line(
        run(["build", *TINY, "--eval-data", path, "--out", tmp_path / "o"]),
        2,
        "--eval-data",
        "unpack to",
    )
    assert _rss_mib() - start < 60


def test_npz_without_labels_is_refused_before_its_images_are_read(tmp_path):
    path = tmp_path / "images_only.npz"
    _zeros_npz(path, "images.npy", (1024, 3, 64, 96))
    start = _rss_mib()
    one_line(
        run(["build", *TINY, "--eval-data", path, "--out", tmp_path / "o"]),
        2,
        "--eval-data",
        "needs images and labels",
    )
    assert _rss_mib() - start < 60


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: enough for Pillow to judge the size."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_image_is_one_line(folder, tmp_path):
    png = tmp_path / "huge.png"
    png.write_bytes(_png_header(20000, 20000))
    one_line(run(["visualize", folder, "--image", png]), 2, "--image", "pixels")


@pytest.mark.parametrize("flag", ["--checkpoint", "--eval-data"])
def test_folder_given_for_a_file_says_so(tmp_path, flag):
    one_line(run(["build", *TINY, flag, tmp_path, "--out", tmp_path / "o"]), 2, flag, "is a folder")


def test_folder_given_for_an_image_says_so(folder, tmp_path):
    one_line(run(["visualize", folder, "--image", tmp_path]), 2, "--image", "is a folder")


# ---- 4. filesystems and exit codes ------------------------------------------------------------


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.parametrize("options,words", [("size=1m", ("free",)), ("ro,size=1m", ("writable",))])
def test_full_or_read_only_filesystem_is_one_line(tmp_path, options, words):
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, options):
        pytest.skip("mounting a tmpfs needs root and a mount command")
    try:
        one_line(run(["build", *TINY, "--method", "none", "--out", mnt / "o"]), 2, "--out", *words)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG])
def test_os_errors_during_a_build_are_one_line(tmp_path, monkeypatch, code):
    def failing(self, out, force=False):  # as the first write would fail on such a filesystem
        raise OSError(code, os.strerror(code), str(out))

    monkeypatch.setattr(OutputFolder, "__init__", failing)
    one_line(
        run(["build", *TINY, "--method", "none", "--out", tmp_path / "o"]), 2, errno.errorcode[code]
    )


def test_engine_without_tensorrt_exits_non_zero(folder):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed: the engine is built")
    except ImportError:
        pass
    one_line(run(["engine", folder]), 2, "no engine built")


# ---- 5. clear messages ------------------------------------------------------------------------


def test_preset_conflict_names_the_preset(tmp_path):
    one_line(
        run(
            [
                "build",
                "--preset",
                "segmenter-ade20k",
                "--model",
                "segmenter_digits",
                "--out",
                tmp_path / "o",
            ]
        ),
        2,
        "--preset segmenter-ade20k",
    )


def test_num_classes_on_the_digits_model_says_how_many_it_has(tmp_path):
    import torch

    from exporter.config import ModelSpec
    from exporter.models import entry_of

    with torch.device("meta"):
        classes = entry_of("segmenter_digits").build(ModelSpec("segmenter_digits")).num_classes
    one_line(
        run(["build", "--num-classes", "5", "--out", tmp_path / "o"]),
        2,
        "--num-classes",
        f"has {classes} fixed classes",
    )


def test_no_banner_before_an_input_error(tmp_path):
    line = one_line(
        run(["build", *TINY, "--eval-data", tmp_path / "none.npz", "--out", tmp_path / "o"]),
        2,
        "--eval-data",
    )
    assert line.startswith("Error:")


def test_npz_that_is_not_a_zip_is_one_line(tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.zeros((2, 3, 64, 96), np.float32))
    one_line(
        run(["build", *TINY, "--eval-data", path, "--out", tmp_path / "o"]),
        2,
        "--eval-data",
        "not an .npz",
    )
