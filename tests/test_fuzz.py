"""Property-based fuzzing (hypothesis) of the CLI's parsers and of the readers of report.json,
.npz eval sets and checkpoints: whatever the input, the exit code is in the contract's set, no
traceback is printed, nothing outside --out is touched, and an existing --out is either intact
or replaced whole."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.paths import MARKER, recorded, write_marker
from exporter.accuracy import load_eval_set
from tests.helpers import run
from exporter.config import MAX_PAIR, parse_pair
from exporter.errors import InputError
from exporter.folder import OutputFolder
from exporter.limits import parse_size
from exporter.models.checkpoint import read_state_dict


EXIT_CODES = {0, 1, 2, 130, 143}
FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text a user or a script might pass: numbers in many spellings, separators, junk, huge values.
NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.tuples(
        st.integers(-(10**25), 10**25), st.sampled_from("xX*, "), st.integers(-(10**25), 10**25)
    ).map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
    st.text(alphabet="0123456789xX.-+eE naif", max_size=24),
    st.text(max_size=12),
)


def tree(path: Path) -> dict:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def assert_contract(result):
    assert result.exit_code in EXIT_CODES, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 2:
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:"), result.output


# ---- the parsers ------------------------------------------------------------------------------


@FAST
@given(NUMBERS)
def test_parse_pair_returns_a_bounded_pair_or_an_input_error(text):
    try:
        pair = parse_pair("--hw", text)
    except InputError as err:
        assert str(err).startswith("--hw ")
        return
    assert all(isinstance(v, int) and 1 <= v <= MAX_PAIR for v in pair)


@FAST
@given(NUMBERS)
def test_parse_size_returns_bounded_bytes_or_an_input_error(text):
    try:
        size = parse_size("--max-memory", text)
    except InputError as err:
        assert str(err).startswith("--max-memory ")
        return
    assert 1 << 20 <= size <= 1 << 50


FLAGS = [
    "--img-size",
    "--hw",
    "--window",
    "--atol",
    "--rtol",
    "--seed",
    "--batch",
    "--opset",
    "--num-classes",
    "--eval-count",
    "--max-memory",
    "--alpha",
    "--k",
    "--tau",
]


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(FLAGS), NUMBERS), min_size=1, max_size=3),
    st.one_of(
        st.just("out"),
        st.text(min_size=0, max_size=12),
        st.sampled_from(
            [".", "..", "./", "keep.txt", "keep.txt/x", "sub/..", "a" * 300, "out/../.."]
        ),
    ),
)
def test_build_flags_never_break_the_contract(tmp_path_factory, flags, out):
    """Any flag value and --out: the contract holds and the working directory is untouched.
    `--precision int8` is refused before any model is built, so a valid value costs nothing."""
    work = tmp_path_factory.mktemp("work")
    (work / "keep.txt").write_text("x")
    (work / "sub").mkdir()
    (work / "sub" / "mine.txt").write_text("y")
    before = tree(work)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        args = ["build", "--model", "segmenter_tiny", "--precision", "int8", "--out", out]
        for flag, value in flags:
            args += [flag, value]
        result = run(args)
    finally:
        os.chdir(cwd)
    assert_contract(result)
    assert result.exit_code == 2
    assert tree(work) == before


# ---- output folders: intact or replaced whole -------------------------------------------------

FILES = st.dictionaries(
    st.sampled_from(["report.json", "model.onnx", "a.txt", "b/c.bin"]),
    st.binary(max_size=64),
    min_size=1,
)


@FAST
@given(
    old=st.one_of(st.none(), FILES),
    new=FILES,
    force=st.booleans(),
    fail_at=st.sampled_from([None, "stage", "write", "commit"]),
)
def test_out_is_intact_or_replaced_whole(tmp_path_factory, old, new, force, fail_at):
    root = tmp_path_factory.mktemp("root")
    out = root / "out"
    if old is not None:
        old = {**old, "report.json": old.get("report.json", b"{}")}  # a build's own folder
        for name, data in old.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        write_marker(out)  # what a build leaves: the list of everything it wrote
    before = tree(out) if old is not None else None
    try:
        f = OutputFolder(out, force)
        if fail_at == "stage":
            raise KeyboardInterrupt
        staged = f.stage()
        try:
            for name, data in new.items():
                (staged / name).parent.mkdir(parents=True, exist_ok=True)
                (staged / name).write_bytes(data)
            if fail_at == "write":
                raise KeyboardInterrupt
            if fail_at == "commit":
                os.rename(staged, staged.with_name("gone"))  # the staging folder vanished
                shutil.rmtree(staged.with_name("gone"))
            f.commit()
        except BaseException:
            f.discard()
            raise
    except (InputError, KeyboardInterrupt, OSError):
        assert (tree(out) if out.exists() else None) == before
    else:
        after = tree(out)
        assert after.pop(MARKER)  # the new folder's own list of what it holds
        assert after == {
            **{str(Path(n).parent): None for n in new if "/" in n},
            **{n: d for n, d in new.items()},
        }
    assert sorted(p.name for p in root.iterdir()) in ([], ["out"])


# ---- readers -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
PATHS = [
    ("settings",),
    ("settings", "model"),
    ("settings", "model", "name"),
    ("settings", "model", "img_size"),
    ("settings", "batch"),
    ("artifacts",),
    ("artifacts", "onnx"),
    ("hashes",),
    ("hashes", "model.onnx"),
    ("model",),
    ("model", "input_shape"),
    ("method",),
    ("tokens",),
    ("lint",),
    ("validation",),
    (),
]


@pytest.fixture(scope="module")
def base_folder(built):
    return built("none")


@FEW
@given(st.lists(st.tuples(st.sampled_from(PATHS), JSON), min_size=1, max_size=3))
def test_edited_report_never_breaks_lint(base_folder, tmp_path_factory, edits):
    """report.json edited anywhere (its sha256 updated, as a careful attacker would): `lint`
    exits by the contract and changes nothing but lint.json."""
    out = Path(shutil.copytree(base_folder, tmp_path_factory.mktemp("f") / "out"))
    report = json.loads((out / "report.json").read_text())
    for path, value in edits:
        if not path:
            report = value
            continue
        node = report
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[path[-1]] = value
    text = json.dumps(report)
    (out / "report.json").write_text(text)
    (out / "report.sha256").write_text(
        hashlib.sha256(text.encode()).hexdigest() + "  report.json\n"
    )
    before = tree(out)
    result = run(["lint", out])
    assert_contract(result)
    after = tree(out)
    after.pop("lint.json", None)
    after.pop(MARKER), before.pop(MARKER)  # the tool's list of its files may gain lint.json
    assert after == before
    assert recorded(out) <= set(before) | {"lint.json"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


VALID_NPZ = _npz_bytes(
    {"images": np.zeros((2, 3, 8, 8), np.float32), "labels": np.zeros((2, 8, 8), np.int64)}
)
ARRAYS = st.dictionaries(
    st.sampled_from(["images", "labels", "other"]),
    st.tuples(
        st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.float16]),
        st.lists(st.integers(0, 9), max_size=4),
    ),
    max_size=3,
)


@FAST
@given(
    st.one_of(
        ARRAYS.map(lambda d: _npz_bytes({k: np.zeros(s, t) for k, (t, s) in d.items()})),
        st.tuples(st.integers(0, len(VALID_NPZ) - 1), st.integers(0, 255)).map(
            lambda t: VALID_NPZ[: t[0]] + bytes([t[1]]) + VALID_NPZ[t[0] + 1 :]
        ),
        st.integers(0, len(VALID_NPZ)).map(lambda n: VALID_NPZ[:n]),
        st.binary(max_size=300),
    )
)
def test_npz_reader_returns_an_eval_set_or_an_input_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("npz") / "eval.npz"
    path.write_bytes(data)
    try:
        result = load_eval_set(path, 5, (8, 8))
    except InputError as err:
        assert str(err).startswith("--eval-data ")
        return
    assert result.images.shape[1:] == (3, 8, 8) and np.isfinite(result.images).all()
    assert ((result.labels == 255) | ((result.labels >= 0) & (result.labels < 5))).all()


def _safetensors_bytes() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.zeros(4, 4), "b": torch.ones(4)})


def _torch_bytes() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4, 4)}, buf)
    return buf.getvalue()


CHECKPOINTS = {".safetensors": _safetensors_bytes(), ".pth": _torch_bytes()}


@FAST
@given(
    st.sampled_from(sorted(CHECKPOINTS)),
    st.one_of(
        st.tuples(st.integers(0, 10**6), st.integers(0, 255)).map(lambda t: ("flip", t)),
        st.integers(0, 10**6).map(lambda n: ("cut", n)),
        st.binary(max_size=200).map(lambda b: ("raw", b)),
    ),
)
def test_checkpoint_reader_returns_tensors_or_an_input_error(tmp_path_factory, suffix, change):
    data = CHECKPOINTS[suffix]
    kind, arg = change
    if kind == "flip":
        at, byte = arg[0] % len(data), arg[1]
        data = data[:at] + bytes([byte]) + data[at + 1 :]
    elif kind == "cut":
        data = data[: arg % (len(data) + 1)]
    else:
        data = arg
    path = tmp_path_factory.mktemp("ckpt") / f"weights{suffix}"
    path.write_bytes(data)
    try:
        state = read_state_dict(str(path))
    except InputError as err:
        assert str(err).startswith("--checkpoint ")
        return
    assert isinstance(state, dict)


def test_npz_members_of_a_real_zip_are_bounded(tmp_path):
    """A zip whose directory declares more members than an eval set has."""
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(40):
            zf.writestr(f"a{i}.npy", b"")
    with pytest.raises(InputError, match="members"):
        load_eval_set(path, 5, (8, 8))
