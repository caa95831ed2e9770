"""The path guard: names read from a folder stay inside it; readers open regular files only."""

from __future__ import annotations

import os

import pytest

from exporter.errors import InputError
from exporter.paths import confine, out_dir, read_bytes, read_text


@pytest.mark.parametrize(
    "rel",
    [
        "../x.onnx",
        "../../x.onnx",
        "a/../../x",
        "/etc/hostname",
        "~/x",
        "",
        " ",
        "a\x00b",
        ".",
        "x" * 400,  # longer than a file name may be: one line, not an OSError (found by fuzzing)
    ],
)
def test_confine_refuses_names_that_leave_the_folder(tmp_path, rel):
    with pytest.raises(InputError) as err:
        confine(tmp_path, rel, "report.json artifacts.onnx")
    assert str(err.value).startswith("report.json artifacts.onnx ")


def test_confine_refuses_a_symlink_on_the_way(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.onnx").write_text("x")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "sub").symlink_to(outside)
    (folder / "link.onnx").symlink_to(outside / "x.onnx")
    for rel in ("sub/x.onnx", "link.onnx"):
        with pytest.raises(InputError, match="symlink"):
            confine(folder, rel, "field")


def test_confine_accepts_a_plain_name(tmp_path):
    (tmp_path / "a").mkdir()
    assert confine(tmp_path, "a/model.onnx", "f") == tmp_path / "a" / "model.onnx"
    assert confine(tmp_path, "model.onnx", "f") == tmp_path / "model.onnx"


def test_readers_refuse_fifos_devices_symlinks_and_big_files(tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        read_text(fifo, "OUT")
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="symlink"):
        read_text(zero, "OUT")
    with pytest.raises(InputError, match="character device"):
        read_bytes(zero, "OUT", follow=True)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    with pytest.raises(InputError, match="at most 10 bytes"):
        read_bytes(big, "OUT", limit=10)
    assert read_bytes(big, "OUT", limit=11) == b"x" * 11


def test_out_dir_refuses_a_symlinked_or_file_sub_folder(tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "visualize").symlink_to(pictures)
    with pytest.raises(InputError, match="symlink"):
        out_dir(out, "visualize", "OUT/visualize")
    (out / "other").write_text("x")
    with pytest.raises(InputError, match="regular file|not a folder|is "):
        out_dir(out, "other", "OUT/other")
    assert out_dir(out, "new", "OUT/new").is_dir()
