"""The typed build record: report.json and sweep.json read with every field checked (a hostile
or hand-edited file is one line naming the field, never a traceback), paths confined to their
folder, and validation tolerances that follow the artifact's precision."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import BuildSettings
from exporter.errors import InputError
from exporter.folder import read_record, read_sweep
from exporter.paths import confine
from exporter.record import Artifact, BuildRecord, Tolerances
from exporter.sweep import Sweep
from tests.helpers import copy_of, one_line, run
from tests.test_sweep import ROWS, result_of

FEW = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def folder(built, tmp_path):
    return copy_of(built("none"), tmp_path)


def write_edited(folder: Path, text: str) -> None:
    """report.json replaced by `text`, with its sha256 recorded as the build would (a shared
    folder whose report was edited and re-hashed): only the typed reading stands in the way."""
    (folder / "report.json").write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    (folder / "report.sha256").write_text(f"{digest}  report.json\n")


def report_of(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def edited(report: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(report)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


# ---- the record reads what builds write, unchanged -------------------------------------------


def test_record_round_trips_report_json(built):
    folder = built("none")
    record = read_record(folder)
    assert json.loads(json.dumps(record.to_dict())) == report_of(folder)
    assert record.onnx.file == "model.onnx" and record.onnx.sha256 == record.hashes["model.onnx"]
    assert [a.runtime for a in record.validated()] == ["onnxruntime"]


def test_artifact_precision_decides_the_tolerances():
    base = Tolerances.of(BuildSettings())
    graph = Artifact.of("onnx_fp16", "model.fp16.onnx")
    assert graph.precision == "fp16" and graph.tolerances(base) == base.half()
    # an engine built from the fp16 graph is fp16 too, as the graph is
    assert graph.engine("model.engine").tolerances(base) == base.half()
    assert Artifact.plain("model.onnx").engine("model.engine").tolerances(base) == base
    assert base.half().atol == 5e-2 and base.half().min_cosine == 0.999


# ---- issue 23's hand-edited reports ------------------------------------------------------------

CASES = [
    (("model", "input_shape"), "abc", "model.input_shape"),
    (("model", "input_shape"), [1, 3, -64, 96], "model.input_shape[2]"),
    (("settings", "batch"), "1", "settings.batch"),
    (("settings", "seed"), -1, "settings.seed"),
    (("engine",), "x", "engine"),
    (("engine", "source"), "/etc/hostname", "engine.source"),
    (("engine", "source"), "../../x.onnx", "engine.source"),
    (("artifacts", "onnx"), "../../x.onnx", "artifacts.onnx"),
    (("artifacts", "onnx"), "/etc/hostname", "artifacts.onnx"),
    (("settings", "min_cosine"), -5, "settings.min_cosine"),
    (("validation", 0, "tolerances", "min_cosine"), -5, "min_cosine"),
    (("validation", 0, "tolerances", "atol"), "1e999", "atol"),
    (("hashes", "../../x.onnx"), "0" * 64, "hashes"),
]


@pytest.mark.parametrize("path,value,field", CASES, ids=[c[2] for c in CASES])
def test_edited_field_is_refused_naming_it(folder, path, value, field):
    report = edited(report_of(folder), path, value)
    text = json.dumps(report).replace('"1e999"', "1e999")  # JSON's own infinity spelling
    write_edited(folder, text)
    with pytest.raises(InputError) as err:
        read_record(folder)
    assert field in str(err.value) and "\n" not in str(err.value)
    one_line(run(["lint", folder]), 2, field)


def test_tolerance_1e999_reads_as_infinity_and_is_refused(folder):
    text = (folder / "report.json").read_text().replace('"atol": 0.001', '"atol": 1e999', 1)
    assert "1e999" in text
    write_edited(folder, text)
    one_line(run(["validate", folder]), 2, "settings.atol")


def test_engine_source_outside_the_folder_is_not_deployed(folder, tmp_path):
    report = edited(report_of(folder), ("engine", "source"), "/etc/hostname")
    write_edited(folder, json.dumps(report))
    result = run(["deploy", "triton", folder, "--repo", tmp_path / "repo"])
    one_line(result, 2, "engine.source")
    assert not (tmp_path / "repo").exists()


def test_symlink_artifact_leaving_the_folder_is_refused(folder, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((folder / "model.onnx").read_bytes())
    os.symlink(outside, folder / "link.onnx")
    report = edited(report_of(folder), ("artifacts", "onnx"), "link.onnx")
    write_edited(folder, json.dumps(report))
    one_line(run(["lint", folder]), 2, "artifacts.onnx")


def test_confine_refuses_every_way_out(tmp_path):
    (tmp_path / "a.onnx").write_text("x")
    os.symlink("/etc", tmp_path / "etc")
    assert confine(tmp_path, "a.onnx", "f") == tmp_path / "a.onnx"
    for rel in ("../x", "/etc/hostname", "etc/hostname", "", ".", "a/../../b", 3, None, "a\0"):
        with pytest.raises(InputError) as err:
            confine(tmp_path, rel, "artifacts.onnx")
        assert str(err.value).startswith("artifacts.onnx ")


# ---- fuzz: any mutation of any field reads cleanly or is one InputError ----------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["abc", "", "../../x.onnx", "/etc/hostname", "model.onnx", "fp16", "x" * 300]),
    st.lists(st.integers(-5, 5), max_size=5),
    st.dictionaries(st.sampled_from(["a", "atol", "file"]), st.integers(), max_size=2),
    st.sampled_from([10**400, -(10**400), [[[[[[[[[[1]]]]]]]]]], {"a": {"b": {"c": [None]}}}]),
)


def _paths(value, prefix=()):
    """Every key path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@pytest.fixture(scope="module")
def pristine(built):
    folder = built("none")
    report = report_of(folder)
    return folder, report, [p for p in _paths(report) if p]


@FEW
@given(data=st.data())
def test_fuzzed_report_reads_or_is_one_line(pristine, data):
    folder, report, paths = pristine
    path = data.draw(st.sampled_from(paths))
    if data.draw(st.booleans()):
        mutated = edited(report, path, data.draw(VALUES))
    else:  # a field deleted
        mutated = edited(report, path, None)
        node = mutated
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1])
    try:
        record = BuildRecord.read(mutated, folder)
    except InputError as err:
        assert "\n" not in str(err) and str(err).startswith(str(folder / "report.json"))
        return
    # read cleanly: every number it holds is finite, every tolerance can fail
    for v in record.validation:
        t = v.tolerances
        assert all(math.isfinite(x) for x in (t.atol, t.rtol, t.min_cosine, t.tie_bound))
        assert 0 < t.min_cosine <= 1 and 0 < t.min_argmax <= 1
    assert record.settings.seed >= 0 and all(n > 0 for n in record.model.input_shape)
    for a in record.artifacts.values():
        assert os.path.realpath(folder / a.file).startswith(os.path.realpath(folder) + os.sep)
    json.dumps(record.to_dict(), allow_nan=False)


# ---- sweep.json --------------------------------------------------------------------------------


@pytest.fixture
def sweep(tmp_path):
    s = Sweep(tmp_path, "s")
    s.write(result_of([dict(r) for r in ROWS], complete=False))
    return s


def test_sweep_rows_are_sealed_and_read_back(sweep):
    record = read_sweep(sweep.json)
    assert [r.key for r in record.rows] == [r["key"] for r in ROWS]
    assert all(r.sealed for r in record.rows)
    assert record.get("model") == "segmenter_tiny"


def _edit_sweep(sweep, change):
    data = json.loads(sweep.json.read_text())
    change(data)
    sweep.json.write_text(json.dumps(data).replace('"INF"', "1e999"))


@pytest.mark.parametrize(
    "change,field",
    [
        (lambda d: d["rows"][0].update(speedup=1000.0), "rows[0]"),
        (lambda d: d["rows"][1].pop("key"), "rows[1].key"),
        (lambda d: d.update(rows="abc"), "rows"),
        (lambda d: d["rows"][2].update(speedup="INF"), "rows[2].speedup"),
        (lambda d: d["rows"].append(dict(d["rows"][0])), "rows"),
    ],
    ids=["speed-up 1000, old hash", "no key", "rows a string", "infinite", "a row twice"],
)
def test_hand_edited_sweep_is_refused_naming_the_row(sweep, change, field):
    _edit_sweep(sweep, change)
    with pytest.raises(InputError) as err:
        read_sweep(sweep.json)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_corrupt_sweep_is_refused_not_ignored(sweep):
    sweep.json.write_text('{"rows": [')
    with pytest.raises(InputError) as err:
        Sweep(sweep.out, "s").existing()
    assert "s.json" in str(err.value)


def test_rows_of_older_sweeps_without_a_seal_read_unsealed(sweep):
    _edit_sweep(sweep, lambda d: [r.pop("sha256") for r in d["rows"]])
    assert not any(r.sealed for r in read_sweep(sweep.json).rows)


# ---- the progress protocol is typed ------------------------------------------------------------


def test_held_progress_is_released_by_events_not_by_wording(capsys):
    from exporter.cli import _Held
    from exporter.progress import Ready, StepDone

    held = _Held("banner")
    held("load done (1.0s)")  # a plain line that reads like a finished step
    assert not held.open and capsys.readouterr().err == ""
    held(StepDone("load done (1.0s)"))
    assert held.open and "load done" in capsys.readouterr().err
    ready = _Held("vitexport build", until_done=False)
    ready("export ...")
    ready(StepDone("export done (2.0s)"))
    assert not ready.open
    ready(Ready("/tmp/out"))
    err = capsys.readouterr().err
    assert ready.open and err.startswith("vitexport build -> /tmp/out") and "export done" in err


# ---- the artifact keys live in the record ----------------------------------------------------


def _conditional_strings(tree):
    """(line, text) of each string constant compared, tested for membership or looked up with
    .get() anywhere in a module: what a conditional on a key would use."""
    import ast

    for node in ast.walk(tree):
        parts = []
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
        ):
            parts = node.args[:1]
        for part in parts:
            for leaf in ast.walk(part):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                    yield leaf.lineno, leaf.value


# Strings that spell a method's name but mean something else there.
HOMONYMS = {("onnx/lint.py", "none")}  # ScatterElements' `reduction` attribute


def test_no_artifact_key_or_method_name_in_a_conditional_outside_its_module():
    import ast

    import exporter
    from exporter.methods import METHODS
    from exporter.record import KINDS

    root = Path(exporter.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text())
        for line, text in _conditional_strings(tree):
            if text in KINDS and rel != "record.py":
                found.append(f"{rel}:{line}: artifact key {text!r}")
            if text in METHODS and not rel.startswith("methods/") and (rel, text) not in HOMONYMS:
                found.append(f"{rel}:{line}: method name {text!r}")
    assert not found, found
