"""`vitexport sweep`: the grid, the Pareto front, the best setting, and the table, JSON and plot
written from the rows (one end-to-end run on a tiny model, interrupted and resumed)."""

import json

import numpy as np
import pytest
from PIL import Image

from exporter.config import BuildSettings, ModelSpec
from exporter.sweep import Sweep, best, build_command, figure, pareto, run_sweep, settings_grid

from .helpers import tiny_segmenter, run


def row(method, setting, speedup, retention, validated=True, default=False):
    return {
        "key": f"{method} {setting}",
        "method": method,
        "setting": setting,
        "flags": {},
        "default": default,
        "cut": 1,
        "tokens": 4,
        "gflops": 1.0,
        "gflops_ratio": 1.5,
        "baseline_ms": 10.0,
        "reduced_ms": 10.0 / speedup,
        "spread_ms": [1.0, 2.0],
        "speedup": speedup,
        "token_ops_share": 0.05,
        "miou": 0.5 * retention,
        "retention": retention,
        "validated": validated,
        "cosine": 1.0,
        "argmax_agreement": 1.0,
        "command": f"vitexport build --method {method}",
    }


ROWS = [
    row("expedite", "a", 1.6, 0.98, default=True),  # front
    row("expedite", "b", 1.2, 0.97),  # beaten by a on both
    row("pool", "c", 2.0, 0.90),  # front: fastest
    row("pool", "d", 1.1, 0.995),  # front: most accurate
    row("tome", "e", 2.5, 0.999, validated=False),
]  # would win, but failed validation


def result_of(rows, complete=True):
    return {
        "model": "segmenter_tiny",
        "weights": "random",
        "grid": [4, 4],
        "tokens": 16,
        "depth": 12,
        "input": [64, 64],
        "data": "eval.npz",
        "images": 4,
        "runs": 2,
        "warmup": 1,
        "threads": None,
        "command": "vitexport sweep ...",
        "default_method": "expedite",
        "complete": complete,
        "baseline_miou": 0.5,
        "baseline_gflops": 1.5,
        "rows": rows,
    }


def test_grid_covers_every_method_at_two_settings_or_more():
    from exporter.methods import METHODS, apply_method

    model = tiny_segmenter(img=(128, 128))  # 8x8 grid, 12 blocks
    grid = settings_grid(model.layout, {"expedite": {"alpha": 5}})
    for name, spec in METHODS.items():
        if spec.sweep is not None:
            assert sum(s.method == name for s in grid) >= 2, name
    # Expedite: every cut of alpha-1..alpha+1 crossed with every cluster size
    assert {(s.flags["alpha"], s.flags["hw"]) for s in grid if s.method == "expedite"} == {
        (a, hw) for a in (4, 5, 6) for hw in ("6x6", "5x5", "4x4")
    }
    small = settings_grid(model.layout, {"expedite": {"alpha": 5}}, {"expedite"}, full=False)
    assert len(small) == 5 and {s.method for s in small} == {"expedite"}
    for s in grid:  # every setting is a valid configuration of its method
        apply_method(model, s.method, dict(s.flags))


def test_pareto_front_skips_dominated_and_unvalidated_rows():
    assert pareto(ROWS) == {0, 2, 3}


def test_best_setting_for_a_target():
    assert best(ROWS, target_speedup=1.5)["setting"] == "a"  # most retention at >= 1.5x
    assert best(ROWS, min_retention=0.95)["setting"] == "a"  # fastest keeping >= 95%
    assert best(ROWS, min_retention=0.99)["setting"] == "d"
    assert best(ROWS, target_speedup=1.5, min_retention=0.99) is None
    assert best(ROWS, target_speedup=3.0) is None  # the unvalidated 2.5x row does not count


def test_build_command_reproduces_the_row():
    spec = ModelSpec("segmenter_tiny", None, (64, 64), 3)
    settings = BuildSettings(model=spec, method="svit", eval_data="e.npz", eval_count=4)
    text = build_command(spec, settings, "svit", {"random_gates": True, "keep_ratio": 0.5})
    assert text == (
        "vitexport build --model segmenter_tiny --img-size 64x64 --num-classes 3 "
        "--eval-data e.npz --eval-count 4 --method svit --random-gates "
        "--keep-ratio 0.5"
    )


def test_table_json_and_plot_written_from_the_rows(tmp_path):
    sweep = Sweep(tmp_path, "s")
    sweep.write(result_of([dict(r) for r in ROWS], complete=False))
    data = json.loads(sweep.json.read_text())
    assert [r["pareto"] for r in data["rows"]] == [True, False, True, True, False]
    text = sweep.md.read_text()
    assert "![retention against speed-up](s.png)" in text and "**Incomplete**" in text
    lines = [line for line in text.splitlines() if line.startswith("| expedite | a |")]
    assert lines == [
        "| expedite | a | yes | 1 | 4 | 1.50x | 6.2 (1.0-2.0) | 1.60x | 5.0% | "
        "49.00 | 98.0% | yes | yes |"
    ]
    assert "| tome | e |" in text and "| NO |" in text
    with Image.open(sweep.png) as png:
        assert png.size == (900, 600)
        assert len(set(np.asarray(png.convert("RGB")).reshape(-1, 3).tobytes())) > 1


def test_plot_draws_each_method_the_front_and_the_default():
    ax = figure(result_of([dict(r, pareto=i in pareto(ROWS)) for i, r in enumerate(ROWS)])).axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["expedite", "pool", "tome", "Pareto front", "method default"]
    (front,) = ax.get_lines()[:1]
    assert list(front.get_xdata()) == [1.1, 1.6, 2.0]  # the front, left to right
    assert list(front.get_ydata()) == pytest.approx([99.5, 98.0, 90.0])
    assert [t.get_text() for t in ax.texts] == ["default: expedite a"]
    assert ax.get_ylabel() == "mIoU retention (%)"


def tiny_eval(path, n=3, size=64, classes=3):
    rng = np.random.default_rng(0)
    np.savez(
        path,
        images=rng.standard_normal((n, 3, size, size)).astype(np.float32),
        labels=rng.integers(0, classes, (n, size, size)),
    )
    return path


@pytest.mark.slow
def test_sweep_end_to_end_interrupted_and_resumed(tmp_path):
    # four exports of a 12-block model (two baselines, two rows): minutes on a busy machine
    data = tiny_eval(tmp_path / "eval.npz")
    out = tmp_path / "sweep"
    spec = ModelSpec("segmenter_tiny", None, (64, 64), 3)

    def stop_after_first_row(text):
        if text.startswith("[1/2]"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            spec, out, str(data), methods={"pool"}, runs=2, warmup=0, progress=stop_after_first_row
        )
    first = json.loads((out / "sweep.json").read_text())
    assert not first["complete"] and [r["setting"] for r in first["rows"]] == ["hw 3x3"]
    assert not list(out.glob(".sweep-*"))  # the scratch exports went with the interruption

    args = [
        "sweep",
        "--model",
        "segmenter_tiny",
        "--img-size",
        "64x64",
        "--num-classes",
        "3",
        "--eval-data",
        str(data),
        "--methods",
        "pool",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--out",
        str(out),
        "--min-retention",
        "0.01",
    ]
    result = run(args)
    assert result.exit_code == 2 and "--resume" in result.output  # the finished rows are kept
    result = run([*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "hw 3x3: kept from the earlier run" in result.output
    done = json.loads((out / "sweep.json").read_text())
    assert done["complete"] and done["rows"][0] == {
        **first["rows"][0],
        "pareto": done["rows"][0]["pareto"],
    }
    assert [(r["method"], r["setting"]) for r in done["rows"]] == [
        ("pool", "hw 3x3"),
        ("pool", "hw 2x2"),
    ]
    for r in done["rows"]:
        assert r["validated"] and r["tokens"] < 16 and r["gflops_ratio"] > 1
        assert r["ratio"]["p25"] <= r["speedup"] == r["ratio"]["median"] <= r["ratio"]["p75"]
        assert r["speedup_plain"] > 0 and isinstance(r["suspect"], list)
        assert 0 < r["retention"] and 0 <= r["token_ops_share"] < 1
        assert r["command"].startswith("vitexport build --model segmenter_tiny --img-size 64x64")
    assert any(r["pareto"] for r in done["rows"])
    text = (out / "sweep.md").read_text()
    assert "| pool | hw 2x2 |" in text and "Incomplete" not in text
    pick = best(done["rows"], min_retention=0.01)
    assert f"best for retention >= 1.0%: {pick['method']} {pick['setting']}" in result.output
    assert pick["command"] in result.output
    assert Image.open(out / "sweep.png").size == (900, 600)


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--methods", "pool,warp"], "--methods"),
        (["--methods", "none"], "--methods"),
        (["--min-retention", "0"], "--min-retention"),
        (["--target-speedup", "-1"], "--target-speedup"),
        (
            ["--model", "vit_tiny_patch16_224", "--img-size", "32x32", "--min-retention", "0.9"],
            "--min-retention",
        ),
    ],
)
def test_sweep_input_mistakes_exit_2_naming_the_flag(tmp_path, args, flag):
    result = run(["sweep", *args, "--out", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {flag}") and "Traceback" not in result.output
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_interrupted_sweep_says_its_rows_are_kept(tmp_path, monkeypatch):
    """A sweep keeps each finished row: its SIGINT line says so, not a build's "nothing was
    written"; the build's line is unchanged."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("exporter.sweep.run_sweep", interrupted)  # the command imports it when run
    out = tmp_path / "sweep"
    result = run(["sweep", "--out", str(out), "--name", "s"])
    assert result.exit_code == 130
    assert result.output.strip() == (
        f"SIGINT: stopped; the rows finished so far are in {out / 's.json'}; "
        "--resume goes on from them"
    )
    monkeypatch.setattr("exporter.build.build", interrupted)
    result = run(["build", "--out", str(tmp_path / "b")])
    assert result.exit_code == 130 and "nothing was written" in result.output
