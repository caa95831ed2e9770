"""`vitexport sweep`: every method at a grid of settings on one model, each exported, validated
against its PyTorch reference, evaluated (mIoU retention, when there is evaluation data) and
timed against one baseline export; the trade-off as a markdown table, a JSON file and a plot of
retention against speed-up, the counterpart of the papers' trade-off figures for any model.

Rows are written as they finish (each file replaced whole), so an interrupted sweep keeps the
rows it finished and `--resume` continues it. Settings are fractions of the model's token grid
and depth, so any model fits.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .accuracy import evaluate_onnx
from .build import run_validation
from .config import BuildSettings, ModelSpec, format_pair
from .errors import InputError
from .methods import BASELINE, METHODS, apply_method, reducing
from .methods.spec import SweepInput, flag_of
from .models import method_defaults, weights_of
from .onnx.export import export_onnx
from .presets import DEFAULT_METHOD, resolve
from .folder import read_sweep, write_atomic, write_sweep
from .paths import PREFIX, read_text, write_file
from .record import Artifact
from .reference import eval_set, input_shape, patched_model
from .report import percent
from .onnx.fuse import optimize_onnx
from .timing import compare, count_gflops, limit_of, timing_inputs

NAME = "sweep"


@dataclass(frozen=True)
class Setting:
    method: str
    flags: dict  # the row's own flags; the model's tuned defaults fill the rest
    label: str

    @property
    def key(self) -> str:
        return f"{self.method} {json.dumps(self.flags, sort_keys=True)}"


def settings_grid(
    layout, tuned: dict | None = None, methods=None, full: bool = True
) -> list[Setting]:
    """Each registered method's rows (`MethodSpec.sweep`) for a model of `layout`, in registry
    order; `tuned`: {method: the flags the model tunes for it} (e.g. Expedite's cut)."""
    out = []
    for name, spec in METHODS.items():
        if spec.sweep is None or (methods is not None and name not in methods):
            continue
        at = SweepInput(
            layout.grid, layout.num_patches, layout.depth, (tuned or {}).get(name, {}), full
        )
        out.extend(Setting(name, flags, label) for flags, label in spec.sweep(at))
    unique = {s.key: s for s in out}
    return list(unique.values())


def parse_methods(text: str | None) -> set[str] | None:
    if text is None:
        return None
    names = {m.strip() for m in text.split(",") if m.strip()}
    unknown = sorted(names - set(METHODS))
    if not names or unknown or not names & set(reducing()):
        reason = f"unknown: {', '.join(unknown)}" if unknown else "no reduction method"
        raise InputError("--methods", text, ",".join(reducing()), reason)
    return names & set(reducing())


def build_command(spec: ModelSpec, settings: BuildSettings, method: str, flags: dict) -> str:
    """The `vitexport build` command that reproduces a row."""
    size = format_pair(spec.img_size) if spec.img_size else None
    given = {
        "model": spec.name,
        "checkpoint": spec.checkpoint,
        "img_size": size,
        "num_classes": spec.num_classes,
        "eval_data": settings.eval_data,
        "eval_count": settings.eval_count,
        "method": method,
        **flags,
    }
    parts = ["vitexport build"]
    for key, value in given.items():
        if value is not None and value != "":
            parts.append(flag_of(key) if value is True else f"{flag_of(key)} {value}")
    return " ".join(parts)


def validation_summary(checks: list) -> dict:
    """Passed, and the worst cosine and argmax agreement over the outputs of every check."""
    outs = [o for c in checks for o in c.outputs.values()]
    agree = [o["argmax_agreement"] for o in outs if o.get("argmax_agreement") is not None]
    return {
        "passed": all(c.passed for c in checks),
        "cosine": min((o.get("cosine", -1.0) for o in outs), default=None),
        "argmax_agreement": min(agree) if agree else None,
    }


def pareto(rows: list[dict]) -> set[int]:
    """Indices of the validated rows no other validated row beats on both speed-up and
    retention (on speed-up and GFLOPs ratio when there is no retention)."""
    y = "retention" if any(r.get("retention") is not None for r in rows) else "gflops_ratio"
    pts = [
        (i, r["speedup"], r[y])
        for i, r in enumerate(rows)
        if r["validated"] and r.get(y) is not None
    ]
    return {
        i
        for i, s, v in pts
        if not any(s2 >= s and v2 >= v and (s2 > s or v2 > v) for _, s2, v2 in pts)
    }


def best(rows: list[dict], target_speedup=None, min_retention=None) -> dict | None:
    """The validated row that meets the targets: the most retention at --target-speedup, the
    most speed-up at --min-retention (retention first when both are given)."""
    ok = [
        r
        for r in rows
        if r["validated"]
        and (target_speedup is None or r["speedup"] >= target_speedup)
        and (min_retention is None or (r.get("retention") or 0) >= min_retention)
    ]
    if not ok:
        return None
    if target_speedup is not None:
        return max(ok, key=lambda r: (r.get("retention") or 0, r["speedup"]))
    return max(ok, key=lambda r: (r["speedup"], r.get("retention") or 0))


def default_config(base: BuildSettings, method: str) -> dict | None:
    """The resolved config of `vitexport build --method M` with no other flag (None when
    the method needs a flag, as SViT its gates)."""
    try:
        args = resolve(None, base.model, method, {})[2]
        return patched_model(replace(base, method=method, method_args=args)).method.config()
    except InputError:
        return None


class Sweep:
    """The measurements of one sweep and the three files they are written to."""

    def __init__(self, out: Path, name: str = NAME):
        self.out, self.name = Path(out), name
        self.json, self.md, self.png = (self.out / f"{name}.{ext}" for ext in ("json", "md", "png"))

    def existing(self):
        """The sweep.json already there (record.SweepRecord; None when there is none); a
        corrupt or edited one is refused in one line."""
        return read_sweep(self.json)

    def write(self, result: dict) -> None:
        for i, r in enumerate(result["rows"]):
            r["pareto"] = i in pareto(result["rows"])
        write_sweep(self.json, result)
        write_atomic(self.md, render(result, self.png.name))
        plot(result, self.png)


def _written_here(json_path: Path, md: Path) -> bool:
    """Whether `md` is exactly what the sweep in `json_path` renders to: the tool's own file,
    not one a user wrote or edited (which only --force may replace)."""
    try:
        result = json.loads(read_text(json_path, "--out"))
        return read_text(md, "--out") == render(result, md.with_suffix(".png").name)
    except Exception:  # noqa: BLE001 - any unreadable or foreign file is simply not ours
        return False


def check_out(out: Path, name: str, force: bool, resume: bool) -> None:
    """Refuse to write over what the tool did not write: existing sweep files need --force,
    or --resume where they are a sweep's own (its .json, and the .md rendered from it)."""
    files = [Path(out) / f"{name}.{e}" for e in ("json", "md", "png")]
    for f in files:
        if f.is_symlink() or (f.exists() and not f.is_file()):
            raise InputError(
                "--out", str(out), f"a folder where {f.name} is a plain file", f"{f} is not one"
            )
    present = [f for f in files if f.exists()]
    if not present or force:
        return
    if not resume:
        raise InputError(
            "--out",
            str(out),
            "a folder without a sweep, or --resume to continue it, or --force to replace it",
            f"{' and '.join(f.name for f in present)} exist{'s' if len(present) == 1 else ''}",
        )
    json_path, md, png = files
    if not json_path.exists():
        raise InputError(
            "--resume",
            str(out),
            f"a folder holding a sweep's {json_path.name} (or --force to replace the files)",
            f"{' and '.join(f.name for f in present)} {'is' if len(present) == 1 else 'are'} "
            f"there without {json_path.name}: not a sweep's",
        )
    if md.exists() and not _written_here(json_path, md):
        raise InputError(
            "--resume",
            str(md),
            f"the {md.name} the sweep wrote (or --force to replace it)",
            f"it differs from what {json_path.name} renders to: edited or not a sweep's",
        )


def run_sweep(
    spec: ModelSpec,
    out: Path,
    eval_data=None,
    eval_count=None,
    methods=None,
    runs: int = 20,
    warmup: int = 1,
    threads=None,
    full: bool = True,
    force: bool = False,
    resume: bool = False,
    command: str = "",
    name: str = NAME,
    need_retention: bool = False,
    progress=lambda text: None,
) -> dict:
    """Measure every setting of the grid on `spec` against one baseline; write the files after
    each row. Returns the result (the JSON's content)."""
    chosen = parse_methods(methods) if isinstance(methods, str) else methods
    out = Path(out)
    check_out(out, name, force, resume)
    old = Sweep(out, name).existing() if resume else None  # a corrupt one: refused before work
    spec, _, _ = resolve(None, spec, BASELINE, {})
    base_settings = BuildSettings(
        model=spec, method=BASELINE, eval_data=eval_data, eval_count=eval_count
    )
    baseline = patched_model(base_settings)
    model = baseline.model
    data = eval_set(base_settings, model)
    if need_retention and data is None:
        raise InputError(
            "--min-retention",
            "",
            "only with evaluation data",
            f"{spec.name} has none; give --eval-data FILE",
        )
    shape = input_shape(base_settings, model)
    one = (1, *shape[1:])
    tuned = {m: method_defaults(spec.name, m) for m in METHODS}
    grid = settings_grid(model.layout, tuned, chosen, full)
    defaults = {m: default_config(base_settings, m) for m in {s.method for s in grid}}
    out.mkdir(parents=True, exist_ok=True)
    sweep = Sweep(out, name)
    result = {
        "model": spec.name,
        "weights": weights_of(spec),
        "grid": list(model.layout.grid),
        "tokens": model.layout.num_patches,
        "depth": model.layout.depth,
        "input": list(shape[2:]),
        "data": None if data is None else data.source,
        "images": None if data is None else len(data),
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "command": command,
        "default_method": DEFAULT_METHOD,
        "complete": False,
        "rows": [],
    }
    done = {}
    if old is not None:
        same = all(old.get(k) == result[k] for k in ("model", "weights", "input", "data", "images"))
        if not same:
            raise InputError(
                "--resume",
                str(sweep.json),
                "a sweep of the same model and data",
                f"it holds {old.get('model')} on {old.get('data')}",
            )
        # rows of older sweeps carry no sha256: only sealed rows are trusted, others measured again
        done = {r.key: r.to_dict() for r in old.rows if r.sealed}
    with tempfile.TemporaryDirectory(dir=out, prefix=f"{PREFIX}{name}-") as tmp:
        work = Path(tmp)
        progress("baseline: export" + ("" if data is None else f", evaluate on {len(data)} images"))
        base_path = work / "baseline.onnx"
        export_onnx(baseline, base_path, shape)
        classes = None if data is None else model.num_classes
        base_eval = None if data is None else evaluate_onnx(base_path, data, classes, 1)
        result["baseline_miou"] = None if base_eval is None else base_eval["miou"]
        result["baseline_gflops"] = count_gflops(baseline, one)
        base_opt = work / "baseline.optimized.onnx"
        optimize_onnx(base_path, base_opt)
        inputs, inputs_note = timing_inputs(shape, base_settings.seed, data, model.input_name)
        result["inputs"] = inputs_note
        for i, s in enumerate(grid, 1):
            tag = f"[{i}/{len(grid)}] {s.method} {s.label}"
            if s.key in done:
                result["rows"].append(done[s.key])
                progress(f"{tag}: kept from the earlier run")
                continue
            start = time.perf_counter()
            args = resolve(None, spec, s.method, dict(s.flags))[2]
            settings = replace(base_settings, method=s.method, method_args=args)
            reduced = apply_method(model, s.method, args)  # the loaded weights, not a reload
            path = work / f"{i:02d}-{s.method}.onnx"
            export_onnx(reduced, path, shape)
            check = validation_summary(
                run_validation(settings, reduced, work, [Artifact.plain(path.name)], shape, data)
            )
            ev = None if data is None else evaluate_onnx(path, data, classes, 1)
            gflops = {"baseline": result["baseline_gflops"], "reduced": count_gflops(reduced, one)}
            b = compare(
                {"baseline": base_path, "reduced": path, "baseline_optimized": base_opt},
                gflops,
                shape,
                {"full": reduced.method.full_tokens(), "reduced": reduced.method.reduced_tokens()},
                runs,
                warmup,
                threads,
                profile_runs=2,
                inputs=inputs,
                inputs_note=inputs_note,
                limit=limit_of(settings, reduced.method.cut, one),
            )
            path.unlink()
            row = {
                "key": s.key,
                "method": s.method,
                "setting": s.label,
                "flags": s.flags,
                "config": reduced.method.config(),
                "default": reduced.method.config() == defaults[s.method],
                "cut": reduced.method.cut,
                "tokens": reduced.method.reduced_tokens(),
                "gflops": gflops["reduced"],
                "gflops_ratio": b["gflops_ratio"],
                "baseline_ms": b["baseline_ms"],
                "reduced_ms": b["reduced_ms"],
                "spread_ms": b["spread_ms"]["reduced"],
                "speedup": b["speedup"],
                "ratio": b["ratio"],
                "speedup_plain": b["speedup_plain"],
                "structural_limit": b["structural_limit"],
                "suspect": b["suspect"],
                "warnings": b["warnings"],
                "load": b["load"],
                "cpu_ms": b["cpu_ms"]["reduced_optimized"],
                "token_ops_share": b["token_ops_share"],
                "miou": None if ev is None else ev["miou"],
                "retention": (ev["miou"] / base_eval["miou"] if ev and base_eval["miou"] else None),
                "validated": check["passed"],
                "cosine": check["cosine"],
                "argmax_agreement": check["argmax_agreement"],
                "command": build_command(spec, settings, s.method, s.flags),
                "seconds": None,
            }
            row["seconds"] = time.perf_counter() - start
            result["rows"].append(row)
            sweep.write(result)
            acc = "" if ev is None else f"retention {percent(row['retention'])}, "
            progress(
                f"{tag}: {acc}speed-up {row['speedup']:.2f}x (plain {row['speedup_plain']:.2f}x)"
                f"{' SUSPECT' if row['suspect'] else ''}, GFLOPs ratio "
                f"{row['gflops_ratio']:.2f}x, token ops {percent(row['token_ops_share'])}"
                f"{'' if row['validated'] else ', NOT validated'} "
                f"({row['seconds']:.0f} s)"
            )
    result["complete"] = True
    sweep.write(result)
    return result


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _speedup(row: dict) -> str:
    text = f"{row['speedup']:.2f}x"
    if row.get("speedup_plain") is not None:
        text += f" ({row['speedup_plain']:.2f}x)"
    return text + (" SUSPECT" if row.get("suspect") else "")


def render(result: dict, png: str) -> str:
    g = result["grid"]
    acc = result["data"] is not None
    lines = [
        f"# Trade-off sweep: {result['model']}, {result['input'][0]}x{result['input'][1]}",
        "",
        "Each method at several settings on the same model, each exported to ONNX, validated "
        "against its PyTorch reference"
        + (", evaluated in ONNX Runtime" if acc else "")
        + " and timed side by side with one `--method none` export.",
        "",
        f"- Model: `{result['model']}` (weights: {result['weights']}), {g[0]}x{g[1]} = "
        f"{result['tokens']} patch tokens, {result['depth']} blocks; baseline "
        f"{result['baseline_gflops']:.3f} GFLOPs"
        + (f", mIoU {100 * result['baseline_miou']:.2f}" if acc else ""),
    ]
    if acc:
        lines.append(f"- Data: {result['data']}; retention = reduced mIoU / baseline mIoU")
    threads = result.get("threads") or "ONNX Runtime's default number of"
    lines += [
        "- GFLOPs: multiply-accumulates of matrix products and convolutions (the papers' "
        "convention); speed-up: the median over interleaved rounds of the baseline's ONNX "
        "Runtime CPU latency over the reduced model's, both optimised for ONNX Runtime "
        "(attention fused, graph optimisations on; plain exports in brackets), "
        f"{result['runs']} rounds after {result['warmup']} warm-up on "
        f"{result.get('inputs', 'seeded noise')}, batch 1, {threads} intra-op threads; "
        "SUSPECT: above the structural limit (stem, blocks before the cut and head at full "
        "size in both models) or more than 10% above the GFLOPs ratio",
        "- token ops: share of the reduced model's kernel time spent in the method's own "
        "modules; SViT rows use seeded random gates (cost of the capacity, not trained accuracy)",
        "- default: the setting `vitexport build --method M` uses with no other flag; Pareto: "
        "no other validated row is both faster and more accurate",
    ]
    if result.get("command"):
        lines.append(f"- Regenerate: `{result['command']}`")
    if not result.get("complete"):
        lines.append(f"- **Incomplete**: {len(result['rows'])} rows so far")
    lines += [
        "",
        f"![retention against speed-up]({png})",
        "",
        "| method | setting | default | first reduced block | tokens | GFLOPs ratio | "
        "reduced ms (p25-p75) | speed-up | token ops | "
        + ("mIoU (%) | retention | " if acc else "cosine | ")
        + "validated | Pareto |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if acc else "---|") + "---|---|",
    ]
    for r in result["rows"]:
        lo, hi = r["spread_ms"]
        miou = None if r["miou"] is None else 100 * r["miou"]
        quality = (
            f"{_num(miou, '.2f')} | {percent(r['retention'])}" if acc else _num(r["cosine"], ".8f")
        )
        lines.append(
            f"| {r['method']} | {r['setting']} | {'yes' if r['default'] else ''} | "
            f"{'-' if r['cut'] is None else r['cut']} | {r['tokens']} | "
            f"{r['gflops_ratio']:.2f}x | {r['reduced_ms']:.1f} ({lo:.1f}-{hi:.1f}) | "
            f"{_speedup(r)} | {percent(r['token_ops_share'])} | {quality} | "
            f"{'yes' if r['validated'] else 'NO'} | {'yes' if r.get('pareto') else ''} |"
        )
    lines += ["", "Reproduce a row with its command in the JSON file (`rows[].command`)."]
    if acc:
        lines += ["", PAPERS]
    return "\n".join(lines) + "\n"


# Literal numbers of the papers (Segmenter ViT-L/16, ADE20K, 640x640: 51.82 mIoU, 659.0 GFLOPs);
# retention and GFLOPs ratio worked out from them.
PAPERS = """## What the papers report

Paper 001, Table 2 (Expedite, cluster size h x w of a 40x40 grid, alpha = 10 of 24 blocks):

| h x w | 8x8 | 12x12 | 16x16 | 20x20 | 24x24 | 28x28 | baseline* |
|---|---|---|---|---|---|---|---|
| GFLOPs | 274.0 | 290.9 | 315.1 | 347.2 | 388.2 | 438.9 | 659.0 |
| mIoU | 32.13 | 44.01 | 48.21 | 50.17 | 51.32 | 51.56 | 51.82 |
| retention | 62.0% | 84.9% | 93.0% | 96.8% | 99.0% | 99.5% | 100% |

\\* the paper's header says 32x32; the grid is 40x40 (N = 1,600, its section 4.3).

Paper 002, Table 1 (ADE20K; GFLOPs / mIoU / retention):

| method | slight | mild | extreme |
|---|---|---|---|
| ToMe | 516.2 / 51.66 / 99.7% | 448.7 / 50.96 / 98.3% | 321.3 / 47.12 / 90.9% |
| Expedite | 529.8 / 51.93 / 100.2% | 443.8 / 51.56 / 99.5% | 309.4 / 47.96 / 92.6% |
| AiluRus | 478.8 / 52.17 / 100.7% | 427.8 / 51.79 / 99.9% | 300.8 / 50.21 / 96.9% |
"""


def figure(result: dict):
    """Retention (or GFLOPs ratio without evaluation data) against speed-up: one marker per
    method, the Pareto front as a line, each method's default ringed, the build's labelled."""
    from matplotlib.figure import Figure  # deferred: matplotlib is heavy and only the plot uses it

    rows = result["rows"]
    acc = any(r.get("retention") is not None for r in rows)
    y_key, y_label = (
        ("retention", "mIoU retention (%)")
        if acc
        else ("gflops_ratio", "GFLOPs ratio (baseline / reduced)")
    )
    scale = 100 if acc else 1
    fig = Figure(figsize=(7.5, 5), dpi=120)
    ax = fig.add_subplot()
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == method and r.get(y_key) is not None]
        ax.scatter(
            [r["speedup"] for r in pts],
            [scale * r[y_key] for r in pts],
            marker=METHODS[method].marker if method in METHODS else "o",
            s=46,
            label=method,
            alpha=0.85,
            zorder=3,
        )
        bad = [r for r in pts if not r["validated"]]
        if bad:
            ax.scatter(
                [r["speedup"] for r in bad],
                [scale * r[y_key] for r in bad],
                marker="x",
                s=80,
                color="black",
                zorder=4,
            )
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["speedup"])
    if front:
        ax.plot(
            [r["speedup"] for r in front],
            [scale * r[y_key] for r in front],
            "-",
            color="0.3",
            lw=1.2,
            zorder=2,
            label="Pareto front",
        )
    defaults = [r for r in rows if r["default"] and r.get(y_key) is not None]
    ax.scatter(
        [r["speedup"] for r in defaults],
        [scale * r[y_key] for r in defaults],
        s=170,
        facecolors="none",
        edgecolors="black",
        lw=1.2,
        zorder=4,
        label="method default",
    )
    for r in defaults:
        if r["method"] == result.get("default_method"):
            ax.annotate(
                f"default: {r['method']} {r['setting']}",
                (r["speedup"], scale * r[y_key]),
                textcoords="offset points",
                xytext=(8, -14),
                fontsize=8,
            )
    ax.axvline(1.0, color="0.6", lw=0.8, ls="--", zorder=1)
    if acc:
        ax.axhline(100.0, color="0.6", lw=0.8, ls="--", zorder=1)
    ax.set_xlabel("speed-up over --method none (ONNX Runtime CPU)")
    ax.set_ylabel(y_label)
    ax.set_title(
        f"{result['model']} {result['input'][0]}x{result['input'][1]}: "
        f"{len(rows)} settings" + ("" if result.get("complete") else " (incomplete)"),
        fontsize=10,
    )
    ax.grid(True, color="0.9", zorder=0)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot(result: dict, path: Path) -> None:
    """The figure as a PNG, written under a temporary name and renamed."""
    write_file(path, lambda tmp: figure(result).savefig(tmp, format="png"))
