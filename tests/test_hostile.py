"""Hostile inputs, round two (issue 23): the data-loss cases and each kind of misbehaviour as a
test, and hypothesis fuzzing of the readers of numbers, eval data and checkpoints. Every case
ends with the contract's exit code and one line, and no file outside the named folders changes.
Output folders come from conftest's session-scoped `built` (copied before any change)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from exporter.cli import main
from exporter.config import parse_float, parse_int
from exporter.errors import InputError
from exporter.folder import OutputFolder
from exporter.models.checkpoint import load_into, read_state_dict
from exporter.paths import MARKER, PREFIX, write_marker

from .helpers import TINY, copy_of

EXIT_CODES = {0, 1, 2, 130, 143}
BASE = ("none",)
WEIGHTS = Path(__file__).resolve().parent.parent / "exporter/demo/weights"
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def cli(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result, code: int, *words: str) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in lines[0], result.output
    return lines[0]


def tree(path: Path) -> dict:
    """Every entry under `path` (symlinks not followed) with the sha256 of each file."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = None
    return out


@pytest.fixture
def folder(built, tmp_path):
    return copy_of(built(*BASE), tmp_path)


# ---- the data-loss cases ----------------------------------------------------------------------


def test_case1_force_never_deletes_a_project_that_holds_a_report_json(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "report.json").write_text('{"mine": true}\n')
    (proj / "src" / "main.py").write_text("print('hi')\n")
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    line = one_line(cli(["build", *TINY, "--out", proj, "--force"]), 2, "--out")
    assert "report.json" in line and "did not write" in line
    assert tree(tmp_path) == before


def test_force_refuses_a_built_folder_holding_a_users_file_and_names_it(folder):
    (folder / "notes.txt").write_text("mine\n")
    before = tree(folder.parent)
    one_line(cli(["build", *TINY, "--out", folder, "--force"]), 2, "notes.txt", "--out")
    assert tree(folder.parent) == before


def test_force_refuses_a_built_folder_where_a_file_became_a_symlink(folder, tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("user's\n")
    (folder / "report.md").unlink()
    (folder / "report.md").symlink_to(target)
    before = tree(tmp_path)
    one_line(cli(["build", *TINY, "--out", folder, "--force"]), 2, "report.md")
    assert tree(tmp_path) == before


def test_force_replaces_a_folder_the_tool_wrote(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    write_marker(out)
    f = OutputFolder(out, force=True)
    (f.stage() / "model.onnx").write_text("new")
    f.commit()
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "model.onnx"]


def test_case3_a_symlinked_visualize_folder_is_refused_not_followed(folder, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "tokens.png").write_bytes(b"holiday")
    (folder / "visualize").symlink_to(pictures)
    before = tree(tmp_path)
    one_line(cli(["visualize", folder]), 2, "visualize", "symlink")
    assert tree(tmp_path) == before


def test_visualize_folder_that_is_a_file_is_refused(folder):
    (folder / "visualize").write_text("a file\n")
    before = tree(folder.parent)
    one_line(cli(["visualize", folder]), 2, "visualize")
    assert tree(folder.parent) == before


@pytest.mark.parametrize("extra", [[], ["--resume"]])
def test_case5_sweep_never_overwrites_a_users_sweep_md(tmp_path, extra):
    res = tmp_path / "res"
    res.mkdir()
    (res / "sweep.md").write_text("# my notes\n")
    before = tree(tmp_path)
    result = cli(["sweep", *TINY, "--out", res, *extra])
    one_line(result, 2, "sweep.md")
    assert tree(tmp_path) == before


def test_case8_a_users_lock_named_file_is_never_overwritten_or_removed(tmp_path):
    (tmp_path / ".run1.lock").write_text("user's\n")
    (tmp_path / f"{PREFIX}run1.lock").write_text("also user's\n")
    before = tree(tmp_path)
    line = one_line(cli(["build", *TINY, "--method", "none", "--out", tmp_path / "run1"]), 2)
    assert f"{PREFIX}run1.lock" in line and "not written by vitexport" in line
    assert tree(tmp_path) == before
    (tmp_path / f"{PREFIX}run1.lock").unlink()  # the tool's name free: the build goes ahead
    f = OutputFolder(tmp_path / "run1")
    (f.stage() / "model.onnx").write_text("x")
    f.commit()
    assert (tmp_path / ".run1.lock").read_text() == "user's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run1.lock", "run1"]


def test_case2_an_artifact_path_leaving_the_folder_is_refused(folder, tmp_path):
    (tmp_path / "x.onnx").write_bytes((folder / "model.onnx").read_bytes())
    report = json.loads((folder / "report.json").read_text())
    report["artifacts"]["onnx"] = "../x.onnx"
    text = json.dumps(report)
    (folder / "report.json").write_text(text)
    (folder / "report.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "  r\n")
    before = tree(tmp_path)
    for command in ("lint", "validate", "bench"):
        result = cli([command, folder])
        one_line(result, 2, "x.onnx")
    assert tree(tmp_path) == before


# ---- the kinds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,flag",
    [
        (["--img-size", "²"], "--img-size"),
        (["--img-size", "٣x٣"], "--img-size"),
        (["--hw", "①"], "--hw"),
        (["--alpha", "²"], "--alpha"),
        (["--k", "²"], "--k"),
        (["--method", "tome", "--r", "²"], "--r"),
        (["--method", "ailurus", "--clusters", "²"], "--clusters"),
        (["--batch", "٣"], "--batch"),
        (["--seed", "1_0"], "--seed"),
        (["--atol", "٠.1"], "--atol"),
    ],
)
def test_unicode_digits_are_one_line_naming_the_flag(tmp_path, flags, flag):
    one_line(cli(["build", *flags, "--out", tmp_path / "o"]), 2, flag)
    assert list(tmp_path.iterdir()) == []


def _run(args, timeout=120, **kwargs):
    cmd = [sys.executable, "-c", "from exporter.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def test_a_fifo_report_does_not_hang_a_reader(folder):
    (folder / "report.json").unlink()
    os.mkfifo(folder / "report.json")
    proc = _run(["lint", folder], timeout=60)  # a hang fails here (every reader shares sha256)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "report.json" in proc.stderr


def test_a_report_linked_to_dev_zero_is_refused(folder):
    (folder / "report.json").unlink()
    (folder / "report.json").symlink_to("/dev/zero")
    proc = _run(["lint", folder], timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_an_image_that_is_a_special_file_is_refused(folder, tmp_path):
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)
    for image in (fifo, "/dev/zero"):
        one_line(cli(["visualize", folder, "--image", image]), 2, "--image")
    assert not (folder / "visualize").exists()


def test_bench_does_not_trust_a_planted_baseline(folder):
    (folder / "baseline.onnx").write_bytes((folder / "model.onnx").read_bytes())
    before = tree(folder.parent)
    one_line(cli(["bench", folder, "--runs", "1"]), 2, "baseline.onnx", "does not record")
    assert tree(folder.parent) == before


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_engine_refusal_writes_nothing(folder, precision):
    try:
        import tensorrt  # noqa: F401

        if precision == "fp32":
            pytest.skip("TensorRT is installed: the engine is built")
    except ImportError:
        pass
    before = tree(folder.parent)
    for extra in ([], ["--rehash"]):
        result = cli(["engine", folder, "--precision", precision, *extra])
        one_line(result, 2, "no engine built")
    assert tree(folder.parent) == before


def _npz(path: Path, n: int, h: int = 64, w: int = 96, label: int = 1) -> Path:
    np.savez(
        path,
        images=np.zeros((n, 3, h, w), np.float32),
        labels=np.full((n, h, w), label, np.int64),
    )
    return path


def test_eval_count_is_bounded_by_the_file_and_named(tmp_path):
    data = _npz(tmp_path / "ok.npz", 3)
    args = ["build", *TINY, "--method", "none", "--eval-data", data, "--out", tmp_path / "o"]
    one_line(cli([*args, "--eval-count", "1000000"]), 2, "--eval-count", "holds 3 images")
    assert not (tmp_path / "o").exists()


def test_eval_count_is_bounded_by_the_models_own_set(tmp_path):
    line = one_line(cli(["build", "--eval-count", "100000", "--out", tmp_path / "o"]), 2)
    assert line.startswith("Error: --eval-count 100000") and "holds 500" in line


def test_eval_data_whose_every_label_is_ignored_is_refused(tmp_path):
    data = _npz(tmp_path / "void.npz", 2, label=255)
    args = ["build", *TINY, "--method", "none", "--eval-data", data, "--out", tmp_path / "o"]
    one_line(cli(args), 2, "--eval-data", "every label is 255")


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_checkpoint_that_is_a_special_file_names_the_flag(tmp_path, special):
    if special == "fifo":
        special = tmp_path / "w.pth"
        os.mkfifo(special)
    result = cli(["build", *TINY, "--checkpoint", special, "--out", tmp_path / "o"])
    one_line(result, 2, "--checkpoint", "character device" if special == "/dev/zero" else "FIFO")


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.complex64])
def test_checkpoint_tensors_of_another_kind_are_refused_not_cast(tmp_path, dtype):
    state = load_file(str(WEIGHTS / "segmenter_digits.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    state[key] = state[key].to(dtype)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    result = cli(["build", "--checkpoint", path, "--out", tmp_path / "o"])
    one_line(result, 2, "--checkpoint", str(dtype).replace("torch.", ""))
    assert not (tmp_path / "o").exists()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return proc.returncode == 0


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of its own (needs mount rights: root in a container), unmounted afterwards."""
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "64m"):  # a built folder is about 26 MB
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_validate_on_a_read_only_folder_prints_its_verdict(built, small_fs):
    out = copy_of(built(*BASE), small_fs)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    before = tree(small_fs)
    result = cli(["validate", out])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "Traceback" not in result.output
    assert "validation.json not written" in result.output
    assert tree(small_fs) == before


def test_a_full_disk_names_the_flag(built, small_fs, tmp_path):
    out = copy_of(built(*BASE), small_fs)
    filler = small_fs / "filler"
    with open(filler, "wb") as f:  # fill the filesystem to its last block
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    result = cli(["lint", out])
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    assert "lint.json not written" in result.output
    filler.unlink()


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    cmd = [sys.executable, "-c", "from exporter.cli import main; main()"]
    proc = subprocess.Popen(
        [*cmd, "build", "--method", "none", "--out", str(tmp_path / "o")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # SIGINT once torch's library is mapped: inside the imports (torch's Python modules load for
    # a while after it); should they be over, main() answers the same one line
    maps = Path(f"/proc/{proc.pid}/maps")  # Linux; elsewhere the signal goes at once
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            if "libtorch" in maps.read_text():
                break
        except OSError:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("SIGINT"), stderr
    assert not (tmp_path / "o").exists()


# ---- fuzzing the readers ----------------------------------------------------------------------

DIGITS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.text(alphabet="0123456789²³①٣٠७߃１ ._+-eE", min_size=0, max_size=12),
    st.text(max_size=8),
)


@FUZZ
@given(DIGITS)
def test_parse_int_takes_only_ascii_digits_in_range(text):
    plain = re.fullmatch(r"[+-]?[0-9]+", text.strip()) is not None
    try:
        n = parse_int("--x", text, 0, 1000)
    except InputError as err:
        assert str(err).startswith("--x ")
        assert not plain or not 0 <= int(text) <= 1000
    else:
        assert plain and n == int(text) and 0 <= n <= 1000


@FUZZ
@given(DIGITS)
def test_parse_float_takes_only_ascii_finite_numbers_in_range(text):
    try:
        v = parse_float("--x", text, 0, 10, low_open=True)
    except InputError as err:
        assert str(err).startswith("--x ")
    else:
        assert text.strip().isascii() and 0 < v <= 10 and v == float(text)


@FUZZ
@given(DIGITS, st.sampled_from(["--batch", "--opset", "--seed", "--atol", "--img-size"]))
def test_cli_numbers_end_by_the_contract(tmp_path_factory, text, flag):
    """Any spelling of a number: exit 2 with one line, naming the flag when it is the flag's
    fault; nothing written (the model name is wrong on purpose: no build starts)."""
    root = tmp_path_factory.mktemp("n")
    result = cli(["build", "--model", "no_such_model", flag, text, "--out", root / "o"])
    assert result.exit_code in EXIT_CODES and "Traceback" not in result.output
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert list(root.iterdir()) == []


NPZ_ARRAYS = st.fixed_dictionaries(
    {},
    optional={
        "images": st.tuples(
            st.sampled_from([np.float32, np.float64, np.int8, np.uint8, np.bool_, np.complex64]),
            st.sampled_from([(1, 3, 8, 8), (2, 3, 8, 8), (0, 3, 8, 8), (2, 8, 8), (2, 3, 4, 8)]),
            st.sampled_from([0.0, 1.0, np.nan, np.inf]),
        ),
        "labels": st.tuples(
            st.sampled_from([np.int64, np.uint8, np.int8, np.float32]),
            st.sampled_from([(1, 8, 8), (2, 8, 8), (2, 4, 8), (3, 8, 8)]),
            st.sampled_from([0, 4, 5, 255, -1]),
        ),
        "extra": st.just((np.float32, (1,), 0.0)),
    },
)


@FUZZ
@given(NPZ_ARRAYS, st.one_of(st.none(), st.integers(-2, 5)), st.binary(max_size=64))
def test_eval_data_reader_refuses_with_input_error_only(tmp_path_factory, arrays, count, junk):
    from exporter.accuracy import load_eval_set

    root = tmp_path_factory.mktemp("npz")
    path = root / "d.npz"
    if arrays:
        with np.errstate(invalid="ignore"):  # NaN cast to an integer type: any value will do
            np.savez(path, **{k: np.full(s, v).astype(t) for k, (t, s, v) in arrays.items()})
    else:
        path.write_bytes(junk)
    before = tree(root)
    try:
        data = load_eval_set(path, 5, (8, 8), count)
    except InputError as err:
        assert str(err).split()[0] in ("--eval-data", "--eval-count")
    else:
        assert np.isfinite(data.images).all() and (data.labels != 255).any()
    assert tree(root) == before


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.register_buffer("index", torch.zeros(2, dtype=torch.int64))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["fc.weight", "fc.bias", "index", "other"]),
        st.tuples(
            st.sampled_from(
                [torch.float32, torch.float16, torch.int8, torch.int64, torch.bool, torch.complex64]
            ),
            st.sampled_from([(2, 2), (2,), (3,)]),
        ),
        max_size=4,
    ),
    st.binary(max_size=32),
)
def test_checkpoint_reader_refuses_with_input_error_only(tmp_path_factory, tensors, junk):
    root = tmp_path_factory.mktemp("ckpt")
    path = root / "w.safetensors"
    if tensors:
        save_file({k: torch.zeros(s).to(t) for k, (t, s) in tensors.items()}, str(path))
    else:
        path.write_bytes(junk)
    before = tree(root)
    module = Tiny()
    try:
        load_into(module, str(path), layout=None)
    except InputError as err:
        assert str(err).startswith("--checkpoint ")
    else:
        state = read_state_dict(str(path))
        assert set(state) == {"fc.weight", "fc.bias", "index"}
        assert state["fc.weight"].is_floating_point() and not state["index"].is_floating_point()
    assert tree(root) == before


@pytest.mark.parametrize("code", [28, 30])  # ENOSPC, EROFS
def test_an_os_error_on_out_names_the_flag(tmp_path, monkeypatch, code):
    def failing(self, out, force=False):  # as the first write would fail on such a filesystem
        raise OSError(code, os.strerror(code), str(Path(out) / "model.onnx"))

    monkeypatch.setattr(OutputFolder, "__init__", failing)
    line = one_line(cli(["build", *TINY, "--method", "none", "--out", tmp_path / "o"]), 2)
    assert line.startswith(f"Error: --out {tmp_path / 'o'}: "), line
    assert os.strerror(code) in line and "allowed:" in line
