"""report.json (for tools) and report.md (for people) in the output folder."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def percent(v) -> str:
    """A share as "12.3%", or "-" when there is none."""
    return "-" if v is None else f"{v:.1%}"


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{100 * v:.2f}"


def render_markdown(r: dict) -> str:
    m, meth, tok = r["model"], r["method"], r["tokens"]
    weights = "random weights" if m["weights"] == "random" else f"checkpoint `{m['weights']}`"
    lines = [
        f"# vitexport report: {m['name']} + {meth['name']}",
        "",
        f"- Model: `{m['name']}` ({weights}), input {m['input_shape']}",
        f"- Method: `{meth['name']}` {json.dumps(meth['config'])}",
        f"- Tokens: {tok['full']} patch tokens, {tok['reduced']} after reduction "
        f"({tok['reduced'] / tok['full']:.1%})",
        "",
        "## Validation",
        "",
    ]
    for v in r.get("validation", []):
        verdict = "PASSED" if v["passed"] else "FAILED"
        t = v["tolerances"]
        lines += [
            f"**{v['artifact']}** in {v['runtime']}: {verdict} "
            f"(atol {t['atol']} or rtol {t['rtol']} at quantile {t['error_quantile']}, "
            f"min cosine {t['min_cosine']}, min argmax agreement "
            f"{t['min_argmax_agreement']}; inputs: "
            f"{v.get('inputs', str(v['samples']) + ' seeded samples')})",
            "",
            "| output | max abs | max rel | mean abs | cosine | argmax agreement "
            "| outside tolerance |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, o in v["outputs"].items():
            lines.append(
                f"| {name} | {_fmt(o.get('max_abs'))} | {_fmt(o.get('max_rel'))} | "
                f"{_fmt(o.get('mean_abs'))} | {_fmt(o.get('cosine'))} | "
                f"{_fmt(o.get('argmax_agreement'))} | "
                f"{_fmt(o.get('mismatch_fraction'))} |"
            )
        if v.get("verdict"):  # decision-aware validation (validate.ValidationResult)
            lines += ["", f"Decisions: {v['verdict']} (near-tie bound {t.get('tie_bound')})."]
            lines += [
                f"- `{k}` ({d.get('tensor', 'not found')}): {d.get('flipped', 0)} of "
                f"{d.get('compared', 0)} flipped; largest margins {d.get('margins', [])}"
                for k, d in v.get("decisions", {}).items()
            ]
        lines.append("")
    a = r.get("accuracy")
    if a:
        ret = f"{a['retention']:.2%}" if a.get("retention") is not None else "-"
        lines += [
            f"## Accuracy ({a['data']}, {a['images']} images, {a['runtime']})",
            "",
            "| | baseline (`--method none`) | reduced |",
            "|---|---|---|",
            f"| {a['metric']} (%) | {_pct(a['baseline'])} | {_pct(a['reduced'])} |",
            f"| pixel accuracy (%) | {_pct(a['pixel_accuracy']['baseline'])} | "
            f"{_pct(a['pixel_accuracy']['reduced'])} |",
            "",
            f"Retention (reduced / baseline {a['metric']}): {ret}.",
            "",
        ]
        if r.get("bench"):
            lines += [f"In short: {speed_line(r['bench'], a)}.", ""]
    b = r.get("bench")
    if b:
        lines += ["## Speed (ONNX Runtime, CPU, same run, interleaved)", "", format_bench(b), ""]
    lint = r.get("lint", [])
    p = r.get("polygraphy")  # written by polygraphy_data.py
    if p:
        lines += ["## Compare with polygraphy", "", p["note"], ""]
        for c in p["commands"]:
            lines += [f"{c['what']}:", "", "```", c["command"], "```", ""]
    lines += ["## Lint", ""]
    lines += [
        f"- {f.get('artifact', 'model.onnx')}: {f['severity']}: {f['op']} in `{f['module']}`: "
        f"{f['message']}"
        for f in lint
    ] or ["No findings: standard ONNX ops only, no forbidden op."]
    if r.get("non_finite"):
        lines += [
            "",
            "## Non-finite numbers",
            "",
            "Written as null in report.json (JSON has no NaN): "
            + ", ".join(f"`{x}`" for x in r["non_finite"])
            + ".",
        ]
    lines += [
        "",
        "## Artifacts",
        "",
        "`vitexport validate`, `lint`, `bench`, `engine` and `visualize` check these sha256 "
        "(and report.sha256) before trusting a file; `validate` and `lint` leave this report "
        "as built and write validation.json and lint.json beside it.",
        "",
        "| artifact | file | sha256 |",
        "|---|---|---|",
    ]
    for name, path in r["artifacts"].items():
        lines.append(f"| {name} | {path} | `{r.get('hashes', {}).get(path, '-')}` |")
    return "\n".join(lines) + "\n"


def _spread(b: dict, name: str) -> str:
    lo, hi = b.get("spread_ms", {}).get(name, (None, None))
    return f"{lo:.1f}-{hi:.1f}" if lo is not None else "-"


def speed_line(b: dict, accuracy: dict | None = None) -> str:
    """A build's result in one phrase: speed-up, GFLOPs ratio, token-op share, retention."""
    text = (
        f"{b['speedup']:.2f}x faster than `--method none` (GFLOPs ratio "
        f"{b['gflops_ratio']:.2f}x, token ops {percent(b.get('token_ops_share'))} of the "
        "kernel time)"
    )
    if accuracy and accuracy.get("retention") is not None:
        text += f", {accuracy['retention']:.1%} of the {accuracy['metric']} kept"
    return text


def format_bench(b: dict) -> str:
    """The side-by-side table of `vitexport bench` (Markdown, also readable in a terminal)."""
    rows = [
        (
            "baseline (`--method none`)",
            "baseline",
            b["baseline_ms"],
            b["gflops"]["baseline"],
            b["tokens"]["full"],
            None,
        ),
        (
            "reduced",
            "reduced",
            b["reduced_ms"],
            b["gflops"]["reduced"],
            b["tokens"]["reduced"],
            b.get("token_ops_share"),
        ),
    ]
    a = b.get("authors_form")
    if a:
        flags = " ".join(f"--{k} {v}" for k, v in a["flags"].items() if k not in ("hw",))
        rows.append(
            (
                f"reduced, authors' form (`{flags}`)",
                "authors_form",
                a["ms"],
                a["gflops"],
                b["tokens"]["reduced"],
                a.get("token_ops_share"),
            )
        )
    lines = [
        "| model | median ms | p25-p75 ms | speed-up | GFLOPs (MACs) | tokens | token ops |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, key, ms, gf, tokens, tok in rows:
        lines.append(
            f"| {label} | {ms:.1f} | {_spread(b, key)} | {b['baseline_ms'] / ms:.2f}x | "
            f"{gf:.2f} | {tokens} | {percent(tok)} |"
        )
    lines += [
        "",
        f"Speed-up {b['speedup']:.2f}x; GFLOPs ratio {b['gflops_ratio']:.2f}x (the "
        f"speed-up reaches {b['speedup_vs_gflops_ratio']:.0%} of it); {b['runs']} interleaved "
        f"runs after {b['warmup']} warm-up. GFLOPs: {b['gflops_convention']}. Token ops: "
        "share of the model's ONNX Runtime kernel time spent in the method's own modules.",
    ]
    return "\n".join(lines)


def summary(record, out) -> list[str]:
    """What `vitexport build`, `validate` and `engine` print for a record.BuildRecord: the token
    counts, each artifact's verdict with its worst cosine and largest error, and accuracy and
    speed where measured."""
    tok = record.tokens
    lines = [
        f"{record.model.name} + {record.method}: "
        f"{tok['full']} -> {tok['reduced']} tokens; weights: {record.model.weights}"
    ]
    for v in record.validation:
        outputs = v.outputs.values()
        worst = min((o.get("cosine", 0.0) for o in outputs), default=0.0)
        agree = [o["argmax_agreement"] for o in outputs if o.get("argmax_agreement") is not None]
        extra = f", argmax agreement {min(agree):.6f}" if agree else ""
        max_abs = max((o.get("max_abs", float("inf")) for o in outputs), default=0.0)
        bad = [
            n
            for n, o in v.outputs.items()
            if any(
                not math.isfinite(x)
                for x in (o.get("max_abs"), o.get("cosine"))
                if isinstance(x, float)
            )
        ]
        extra += f", NaN or infinite values in {', '.join(bad)}" if bad else ""
        extra += f"; {v.verdict}" if v.verdict else ""
        lines.append(
            f"  {v.artifact} ({v.runtime}): "
            f"{'PASSED' if v.passed else 'FAILED'} cosine {worst:.8f}, "
            f"max abs {max_abs:.3g}{extra}"
        )
    a = record.accuracy.to_dict() if record.accuracy else None
    if a:
        ret = f"{a['retention']:.2%}" if a.get("retention") is not None else "-"
        lines.append(
            f"  mIoU on {a['images']} images: baseline {a['baseline']:.4f}, reduced "
            f"{a['reduced']:.4f}, retention {ret}"
        )
    if record.timing is not None:
        lines.append(f"  {speed_line(record.timing.to_dict(), a)}")
    lines.append(f"report: {Path(out) / 'report.md'}")
    return lines
