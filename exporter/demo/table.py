"""The method table: every method at several settings, GFLOPs, speed-up, token-op share,
validation, and (when the model has evaluation data) mIoU retained.

    python -m exporter.demo.table --out docs/accuracy.md
    python -m exporter.demo.table --model segmenter_base --out docs/perf/segmenter_base.md

The counterpart of paper 001 Table 2 (cluster size vs GFLOPs and mIoU) and paper 002 Table 1
(slight / mild / extreme reduction) for this tool: the same model is exported once with
`--method none` and once per row, every row's ONNX is validated against its PyTorch reference,
both are evaluated in ONNX Runtime on the same images, and both are timed side by side.
Settings are fractions of the model's token grid, so any model fits; without evaluation data
(random weights, depth models) the accuracy columns are left out.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from ..config import BuildSettings, ModelSpec, format_pair
from ..errors import InputError
from ..presets import resolve
from ..report import percent

DEFAULT_MODEL = "segmenter_digits"


def side(grid, share):
    return format_pair((max(1, round(grid[0] * share)), max(1, round(grid[1] * share))))


def rows_for(layout, alpha: int | None = None) -> list[tuple[str, dict, str]]:
    """(method, flags, what the setting is) for every row, from the model's token grid;
    `alpha` is Expedite's default cut for the model (round(depth * 10/24) when None)."""
    from ..methods.expedite import default_alpha

    grid, n = layout.grid, layout.num_patches
    alpha = default_alpha(layout.depth) if alpha is None else alpha
    rows = [("none", {}, "baseline")]
    for share in (0.7, 0.5, 0.35):  # paper 001 Table 2 sweeps h x w from 0.2 to 0.8 of a side
        rows.append(("expedite", {"hw": side(grid, share)}, f"hw {side(grid, share)}"))
    if grid[0] > 24 and grid[1] > 24:  # the headline build, and the cut one block earlier
        for a in (alpha - 1, alpha):
            if 1 <= a < layout.depth:
                rows.append(("expedite", {"hw": "24x24", "alpha": a}, f"hw 24x24, alpha {a}"))
    for share in (0.7, 0.5):  # paper 001 Table 3: pooling at the same sizes
        rows.append(("pool", {"hw": side(grid, share)}, f"hw {side(grid, share)}"))
    for share, name in ((0.5, "slight"), (0.25, "mild"), (0.125, "extreme")):  # paper 002 Table 1
        m = max(1, round(n * share))
        rows.append(("ailurus", {"clusters": m}, f"clusters {m} ({name})"))
    for ratio in (0.3, 0.5):  # paper 003's default, and a heavier cut
        rows.append(("token-adapter", {"rows_ratio": ratio, "cols_ratio": ratio},
                      f"rows/cols ratio {ratio}"))
    depth = layout.depth
    for share in (0.25, 0.5):  # tokens merged away by the last block
        r = max(1, round(n * share / depth))
        rows.append(("tome", {"r": r}, f"r {r} ({share:.0%} merged)"))
    for keep in (0.7, 0.5):
        rows.append(("svit", {"random_gates": True, "keep_ratio": keep},
                      f"keep {keep}, random gates"))
    return rows


def validation_summary(checks: list[dict]) -> dict:
    """Passed, and the worst cosine and argmax agreement over the outputs of every check."""
    outs = [o for c in checks for o in c["outputs"].values()]
    agree = [o["argmax_agreement"] for o in outs if o.get("argmax_agreement") is not None]
    return {"passed": all(c["passed"] for c in checks),
            "cosine": min((o.get("cosine", -1.0) for o in outs), default=None),
            "argmax_agreement": min(agree) if agree else None}


def measure(model_spec: ModelSpec, eval_data, count, runs, work: Path, progress,
            methods=None, threads=None, warmup=2) -> dict:
    """Every row of `rows_for` (only `methods` when given): export, validate, evaluate (when
    there is evaluation data), count, time against the baseline, profile the token ops."""
    from ..accuracy import evaluate_onnx
    from ..bench import count_gflops, interleaved_latency, onnx_session, token_ops_share
    from ..build import eval_set, input_shape, patched_model, run_validation
    from ..onnx.export import export_onnx

    base_settings = BuildSettings(model=model_spec, method="none", eval_data=eval_data,
                                  eval_count=count)
    baseline = patched_model(base_settings)
    model = baseline.model
    data = eval_set(base_settings, model)  # None without --eval-data for most models
    classes = None if data is None else getattr(model, "num_classes", None) or model.decoder.n_cls
    shape = input_shape(base_settings, model)
    one = (1, *shape[1:])
    progress("baseline: export" + ("" if data is None else f", evaluate on {len(data)} images"))
    export_onnx(baseline, work / "baseline.onnx", shape)
    base_eval = None if data is None else evaluate_onnx(work / "baseline.onnx", data, classes, 1)
    base_session = onnx_session(work / "baseline.onnx", threads)
    base_gflops = count_gflops(baseline, one)
    alpha = resolve(None, model_spec, "expedite", {})[2].get("alpha")
    chosen = [r for r in rows_for(model.layout, alpha) if methods is None or r[0] in methods]
    rows = []
    for i, (method, args, label) in enumerate(chosen):
        start = time.perf_counter()
        # the model's tuned defaults fill what the row leaves unset, as in `vitexport build`
        settings = replace(base_settings, method=method,
                           method_args=resolve(None, model_spec, method, args)[2])
        if method == "none":
            reduced, path, ev = baseline, work / "baseline.onnx", base_eval
            check = {"passed": True, "cosine": 1.0, "argmax_agreement": None}
        else:
            reduced = patched_model(settings)
            path = work / f"{i:02d}-{method}.onnx"
            export_onnx(reduced, path, shape)
            check = validation_summary(run_validation(settings, reduced, work,
                                                      {"onnx": path.name}, shape, data))
            ev = None if data is None else evaluate_onnx(path, data, classes, 1)
        lat = interleaved_latency({"baseline": base_session, "reduced": onnx_session(path, threads)},
                                  shape, runs, warmup, seed=0)
        share = None if method == "none" else token_ops_share(path, shape, threads=threads)["share"]
        gflops = count_gflops(reduced, one)
        row = {"method": method, "setting": label, "flags": args,
               "cut": reduced.method.cut, "tokens": reduced.method.reduced_tokens(),
               "gflops": gflops,
               "gflops_ratio": base_gflops / gflops,
               "speedup": lat["baseline"]["median_ms"] / lat["reduced"]["median_ms"],
               "baseline_ms": lat["baseline"]["median_ms"],
               "reduced_ms": lat["reduced"]["median_ms"],
               "spread_ms": [lat["reduced"]["p25_ms"], lat["reduced"]["p75_ms"]],
               "token_ops_share": share,
               "miou": None if ev is None else ev["miou"],
               "retention": ev["miou"] / base_eval["miou"] if ev and base_eval["miou"] else None,
               "validated": check["passed"], "cosine": check["cosine"],
               "argmax_agreement": check["argmax_agreement"]}
        rows.append(row)
        acc = "" if ev is None else f"mIoU {row['miou']:.4f} ({row['retention']:.1%}), "
        progress(f"{method} {label}: {acc}{gflops:.3f} GFLOPs, speed-up {row['speedup']:.2f}x "
                 f"({time.perf_counter() - start:.0f}s)")
    return {"model": model_spec.name, "weights": model_spec.checkpoint or None,
            "tokens": model.layout.num_patches, "grid": model.layout.grid,
            "depth": model.layout.depth, "input": list(shape[2:]),
            "images": None if data is None else len(data),
            "data": None if data is None else data.source,
            "baseline_miou": None if base_eval is None else base_eval["miou"],
            "baseline_gflops": base_gflops, "runs": runs, "warmup": warmup, "threads": threads,
            "rows": rows}


def _cosine(x):
    return "-" if x is None else f"{x:.8f}"


def render(result: dict, trained: bool, command: str) -> str:
    if result["data"] is None:
        return render_speed(result, command)
    g = result["grid"]
    weights = (f"trained weights: {result['weights']}" if trained else
               "**random weights: the checkpoint was not available when this table was made, "
               "so the mIoU numbers below measure agreement with an untrained model, not "
               "accuracy**")
    lines = [
        "# Accuracy retention",
        "",
        "Every method in `vitexport methods` at two or three settings on the same model, each "
        "exported to ONNX, validated against its PyTorch reference, evaluated in ONNX Runtime "
        "(CPU) and timed side by side with the `--method none` export: this tool's counterpart "
        "of paper 001 Table 2 (cluster size against GFLOPs and mIoU) and paper 002 Table 1 "
        "(slight, mild and extreme reduction).",
        "",
        f"- Model: `{result['model']}` ({weights}), {g[0]}x{g[1]} = {result['tokens']} patch "
        f"tokens, {result['depth']} blocks",
        f"- Data: {result['data']}"
        + ("" if "images" in result["data"] else f", {result['images']} images")
        + f"; baseline mIoU {100 * result['baseline_miou']:.2f}, "
        f"{result['baseline_gflops']:.3f} GFLOPs",
        "- mIoU: one confusion matrix over all pixels of all images, mean over the classes "
        "present; retention = reduced mIoU / baseline mIoU",
        *common_notes(result),
        f"- Regenerate: `{command}`",
        "",
        "| method | setting | first reduced block | patch tokens after reduction | GFLOPs | "
        "GFLOPs ratio | speed-up | token ops | mIoU (%) | retention | validated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cut = "-" if r["cut"] is None else r["cut"]
        lines.append(f"| {r['method']} | {r['setting']} | {cut} | {r['tokens']} | "
                     f"{r['gflops']:.3f} | "
                     f"{r['gflops_ratio']:.2f}x | {r['speedup']:.2f}x | "
                     f"{percent(r.get('token_ops_share'))} | {100 * r['miou']:.2f} | "
                     f"{percent(r['retention'])} | {'yes' if r['validated'] else 'NO'} |")
    lines += ["", PAPERS]
    if result["model"] == DEFAULT_MODEL:
        lines += [DIGITS_NOTE]
    return "\n".join(lines) + "\n"


def common_notes(result: dict) -> list[str]:
    threads = result.get("threads") or "ONNX Runtime's default number of"
    return [
        "- GFLOPs: multiply-accumulates of matrix products and convolutions (the papers' "
        "convention, see [performance.md](performance.md)); speed-up: median ONNX Runtime CPU "
        f"latency of the baseline over the reduced model, {result['runs']} interleaved runs at "
        f"batch 1, {threads} intra-op threads, on a shared 2-core machine; the `none` row times "
        "the baseline against itself and so shows the noise of the measurement",
        "- token ops: share of the reduced model's ONNX Runtime kernel time spent in the "
        "method's own modules (`vitexport bench`'s profile)",
        "- SViT rows use seeded random gates (no trained gates exist for this model), so they "
        "show the cost of the capacity, not the accuracy trained gates would keep",
    ]


def render_speed(result: dict, command: str) -> str:
    """The table of a model without evaluation data: speed and validation only."""
    g, size = result["grid"], result["input"]
    lines = [
        f"# Methods on {result['model']}, {size[0]}x{size[1]}",
        "",
        "Every selected method at two or three settings, each exported to ONNX, validated "
        "against its PyTorch reference and timed side by side with the `--method none` export.",
        "",
        f"- Model: `{result['model']}` (weights: {result['weights'] or 'random'}), "
        f"{g[0]}x{g[1]} = {result['tokens']} patch tokens, {result['depth']} blocks; "
        f"baseline {result['baseline_gflops']:.2f} GFLOPs",
        *common_notes(result),
        "- validation: ONNX Runtime against the PyTorch reference on 2 seeded inputs; the "
        "worst cosine and argmax agreement over the outputs ([validation.md](validation.md))",
        f"- Regenerate: `{command}`",
        "",
        "| method | setting | first reduced block | patch tokens | GFLOPs | GFLOPs ratio | "
        "reduced ms (p25-p75) | speed-up | of GFLOPs ratio | token ops | cosine | "
        "argmax agreement | validated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cut = "-" if r["cut"] is None else r["cut"]
        lo, hi = r["spread_ms"]
        agree = "-" if r["argmax_agreement"] is None else f"{r['argmax_agreement']:.6f}"
        lines.append(f"| {r['method']} | {r['setting']} | {cut} | {r['tokens']} | "
                     f"{r['gflops']:.2f} | {r['gflops_ratio']:.2f}x | "
                     f"{r['reduced_ms']:.0f} ({lo:.0f}-{hi:.0f}) | {r['speedup']:.2f}x | "
                     f"{r['speedup'] / r['gflops_ratio']:.0%} | {percent(r['token_ops_share'])} | "
                     f"{_cosine(r['cosine'])} | {agree} | {'yes' if r['validated'] else 'NO'} |")
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

DIGITS_NOTE = """What differs here: the model is a 4-block, 96-wide Segmenter on 32x32 tokens instead of a
24-block ViT-L on 40x40, so every method cuts after block 0 to 3, and its convolutional stem
(0.50 of the baseline's 1.76 GFLOPs) runs before any reduction; the share of the cost a
reduction can remove is therefore small. Expedite's rows cut after block 3, the model's tuned
alpha (the 24x24 rows show why: 97.1% retention at alpha 3, 93.4% at 2): one block runs on
the clusters, which saves less than clustering and reconstruction cost, so Expedite is slower
than the baseline on this model (speed-up below 1.0x); on Segmenter ViT-B/16 it is faster (see
[performance.md](performance.md)). The task and the model are small (baseline mIoU above), so a
retention here measures how much of the prediction survives the reduction, not a forecast of
the papers' numbers. The GFLOPs ratio of a row is comparable to the papers' (same counting
convention); the speed-up is ONNX Runtime on the CPU, not a GPU. A row marked "NO" under
validated exported a model that differs from its PyTorch reference beyond the tolerances
([validation.md](validation.md)); its mIoU is the exported model's.
"""


def parse_methods(text: str) -> set[str]:
    from ..methods import METHODS

    names = {m.strip() for m in text.split(",") if m.strip()}
    unknown = sorted(names - set(METHODS))
    if not names or unknown:
        raise InputError("--methods", text, ",".join(METHODS),
                         f"unknown: {', '.join(unknown)}" if unknown else "empty")
    return names | {"none"}


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Markdown file.")
@click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True)
@click.option("--checkpoint", default=None, help="Weights for --model (default: the model's).")
@click.option("--img-size", default=None, help="Input HxW (default: the model's).")
@click.option("--num-classes", type=int, default=None)
@click.option("--eval-data", default=None, help="An .npz as for `vitexport build --eval-data`.")
@click.option("--eval-count", type=int, default=None, help="First N images (default: all).")
@click.option("--runs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="ONNX Runtime intra-op threads (default: ONNX Runtime's).")
@click.option("--methods", default=None, help="Only these methods, comma-separated "
              "(default: every method).")
def main(out, model_name, checkpoint, img_size, num_classes, eval_data, eval_count, runs,
         threads, methods):
    """Write the table of every method (retention too, when there is evaluation data) to OUT."""

    def progress(text):
        click.echo(f"  {text}", err=True)

    command = " ".join(["python -m exporter.demo.table", *sys.argv[1:]])
    try:
        spec = model_spec(model_name, checkpoint, img_size, num_classes)
        text, result = make_table(spec, eval_data, eval_count, runs, threads, methods, command,
                                  progress)
    except InputError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(2)
    write_table(Path(out), text, result)
    click.echo(f"wrote {out}")


def model_spec(name, checkpoint=None, img_size=None, num_classes=None) -> ModelSpec:
    from ..config import parse_pair

    size = parse_pair("--img-size", img_size) if img_size else None
    return ModelSpec(name, checkpoint, size, num_classes)


def make_table(spec: ModelSpec, eval_data=None, eval_count=None, runs=10, threads=None,
               methods: str | None = None, command="", progress=lambda text: None, warmup=2):
    """(markdown, measurements) of the selected methods on `spec`; InputError on bad input."""
    import tempfile

    from ..models import weights_of
    from ..report import sha256

    chosen = None if methods is None else parse_methods(methods)
    with tempfile.TemporaryDirectory() as work:
        result = measure(spec, eval_data, eval_count, runs, Path(work), progress, chosen, threads,
                         warmup)
    weights = weights_of(spec)
    trained = weights != "random"
    if trained:  # which weights the numbers belong to
        path = Path(weights.removesuffix(" (shipped)"))
        result["weights"] = f"{path.name}, sha256 {sha256(path)[:16]}"
    return render(result, trained, command), result


def write_table(out: Path, text: str, result: dict) -> None:
    """OUT (markdown) and OUT with .json beside it, each written whole or not at all."""
    import json

    from ..report import write_atomic

    write_atomic(out, text)
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
