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
    """A build's result in one phrase: speed-up against the optimised baseline (the plain
    exports' beside it), GFLOPs ratio, token-op share, retention, and any doubt about it."""
    if "speedup_plain" in b:
        r = b["ratio"]
        text = (
            f"{b['speedup']:.2f}x faster than `--method none` optimised for ONNX Runtime "
            f"(p25-p75 {r['p25']:.2f}-{r['p75']:.2f}x over {b['runs']} rounds; plain exports "
            f"{b['speedup_plain']:.2f}x; GFLOPs ratio {b['gflops_ratio']:.2f}x, token ops "
            f"{percent(b.get('token_ops_share'))} of the kernel time)"
        )
    else:  # a report written before the optimised forms were timed
        text = (
            f"{b['speedup']:.2f}x faster than `--method none` (GFLOPs ratio "
            f"{b['gflops_ratio']:.2f}x, token ops {percent(b.get('token_ops_share'))} of the "
            "kernel time)"
        )
    if accuracy and accuracy.get("retention") is not None:
        text += f", {accuracy['retention']:.1%} of the {accuracy['metric']} kept"
    for warning in b.get("warnings", []):
        text += f"; WARNING: {warning}"
    return text


def _load(entry: dict) -> str:
    avg = entry.get("load_average")
    if not avg:
        return "unknown"
    return f"{avg[0]:.2f} / {avg[1]:.2f} / {avg[2]:.2f} on {entry['cores']} cores"


def format_bench(b: dict) -> str:
    """The side-by-side table of `vitexport bench` (Markdown, also readable in a terminal)."""
    forms = "forms" in b
    base_key = "baseline_optimized" if forms else "baseline"
    lat = b.get("latency", {})
    rows = []
    for side, label, tokens in (
        ("baseline", "baseline (`--method none`)", "full"),
        ("reduced", "reduced", "reduced"),
    ):
        share = None if side == "baseline" else b.get("token_ops_share")
        rows.append((label, side, b["gflops"][side], b["tokens"][tokens], share))
        if forms:
            share = None if side == "baseline" else b.get("token_ops_share_optimized")
            rows.append(
                (
                    f"{side}, optimised",
                    f"{side}_optimized",
                    b["gflops"][side],
                    b["tokens"][tokens],
                    share,
                )
            )
    a = b.get("authors_form")
    if a:
        flags = " ".join(f"--{k} {v}" for k, v in a["flags"].items() if k not in ("hw",))
        rows.append(
            (
                f"reduced, authors' form (`{flags}`)",
                "authors_form",
                a["gflops"],
                b["tokens"]["reduced"],
                a.get("token_ops_share"),
            )
        )
    base_ms = lat.get(base_key, {}).get("median_ms", b["baseline_ms"])
    lines = [
        "| model | median ms | p25-p75 ms | CPU ms | speed-up | GFLOPs (MACs) | tokens | token ops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, key, gf, tokens, tok in rows:
        entry = lat.get(key)
        if entry is None:  # an older report: only the two medians
            entry = {"median_ms": b["reduced_ms"] if key == "reduced" else b["baseline_ms"]}
        ms = entry["median_ms"]
        cpu = entry.get("cpu_ms")
        lines.append(
            f"| {label} | {ms:.1f} | {_spread(b, key)} | {'-' if cpu is None else f'{cpu:.1f}'} "
            f"| {base_ms / ms:.2f}x | {gf:.2f} | {tokens} | {percent(tok)} |"
        )
    lines += [""]
    if forms:
        plain, opt = b["forms"]["plain"], b["forms"]["optimized"]
        lines += [
            f"Speed-up against the optimised baseline (attention fused into ONNX Runtime's "
            f"MultiHeadAttention, graph optimisations on; both models in that form): "
            f"**{b['speedup']:.2f}x**, per-round ratio p25-p75 {opt['ratio']['p25']:.2f}-"
            f"{opt['ratio']['p75']:.2f}x; plain exports: {plain['speedup']:.2f}x "
            f"({plain['ratio']['p25']:.2f}-{plain['ratio']['p75']:.2f}x); the plain reduced "
            f"model against the optimised baseline: "
            f"{b['speedup_plain_reduced_vs_optimized_baseline']:.2f}x. Speed-ups are medians "
            "of the per-round ratios (the table's column divides medians).",
            "",
            f"GFLOPs ratio {b['gflops_ratio']:.2f}x (the speed-up reaches "
            f"{b['speedup_vs_gflops_ratio']:.0%} of it)"
            + (
                f"; structural limit {b['structural_limit']:.2f}x (stem, blocks before the cut "
                "and head at full size in both)"
                if b.get("structural_limit")
                else ""
            )
            + f". Attention nodes fused: baseline {b['attention_fused']['baseline']}, reduced "
            f"{b['attention_fused']['reduced']}.",
            "",
            f"Machine: {b['cpu']}; threads: {b['threads_used']}; load average (1/5/15 min) "
            f"before {_load(b['load']['before'])}, after {_load(b['load']['after'])}. "
            f"{b['runs']} interleaved rounds after {b['warmup']} warm-up on {b['inputs']}; "
            f"{b['denormals']}. CPU ms: the process's CPU time per run (all threads).",
        ]
        for w in b.get("warnings", []):
            lines += ["", f"**WARNING**: {w}"]
        by_op = b.get("token_ops", {}).get("by_op")
        if by_op:
            top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(by_op.items())[:8])
            lines += ["", f"Token ops of the plain reduced model by op (ms a run): {top}."]
    else:
        lines.append(
            f"Speed-up {b['speedup']:.2f}x; GFLOPs ratio {b['gflops_ratio']:.2f}x (the "
            f"speed-up reaches {b['speedup_vs_gflops_ratio']:.0%} of it); {b['runs']} interleaved "
            f"runs after {b['warmup']} warm-up."
        )
    lines += [
        "",
        f"GFLOPs: {b['gflops_convention']}. Token ops: share of the model's ONNX Runtime "
        "kernel time spent in the method's own modules.",
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
