"""The one timing and profiling path: interleaved latency in ONNX Runtime, the share of kernel
time spent in token operations, and GFLOPs. `vitexport bench`, the build's speed stage and
`vitexport sweep` all measure through `compare`.

GFLOPs follow the papers' convention (mmcv / fvcore): one multiply-accumulate counts as one
FLOP, and only matrix products and convolutions are counted (elementwise ops, softmax, norms
are not). They are counted on the PyTorch model with torch's FlopCounterMode, with timm's fused
attention switched off during the count so that the attention matrix products are seen.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
from torch.utils.flop_counter import FlopCounterMode

from .methods import BASELINE, apply_method
from .models import create_model
from .models.base import INPUT_NAME
from .onnx.fuse import count_fused, optimize_onnx
from .onnx.lint import module_of
from .runtime import input_name, onnx_session
from .validate import feeds_for

GFLOPS_CONVENTION = "multiply-accumulates of matmul/conv counted as FLOPs (mmcv/fvcore)"
# At least 20 interleaved rounds for every headline figure (the build's, bench's, sweep's).
BUILD_RUNS = 20
BUILD_WARMUP = 2
BUILD_PROFILE_RUNS = 2


@contextmanager
def unfused_attention(module: torch.nn.Module):
    """Temporarily run timm attention as explicit matmuls (the fused kernel is not counted)."""
    changed = [m for m in module.modules() if getattr(m, "fused_attn", False)]
    for m in changed:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in changed:
            m.fused_attn = True


def count_gflops(module: torch.nn.Module, input_shape) -> float:
    """Multiply-accumulates (in G) of one forward pass at `input_shape` (batch 1 recommended)."""
    # on the module's device: "meta" modules count without allocating or computing anything
    device = next(module.parameters()).device
    images = torch.zeros(tuple(input_shape), device=device)
    with torch.no_grad(), unfused_attention(module), FlopCounterMode(display=False) as counter:
        module(images)
    return counter.get_total_flops() / 2e9


def count_settings_gflops(settings, input_shape=None) -> float:
    """GFLOPs of a build's model without its weights: built on the "meta" device, so even
    ViT-L at 768x768 counts in seconds and no memory (the count depends on shapes only)."""
    with torch.device("meta"):
        model = create_model(replace(settings.model, checkpoint=None), settings.seed)
    # the method's index tables are built on the CPU (they are computed), then moved
    reduced = apply_method(model, settings.method, dict(settings.method_args)).to("meta")
    if input_shape is None:
        input_shape = (1, 3, *model.layout.image_size)
    return count_gflops(reduced, input_shape)


def random_feed(session, input_shape, seed: int = 0) -> dict:
    return {
        input_name(session): np.random.default_rng(seed).standard_normal(
            tuple(input_shape), dtype=np.float32
        )
    }


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def interleaved_latency(
    sessions: dict,
    input_shape,
    runs: int = 10,
    warmup: int = 2,
    seed: int = 0,
    inputs: list | None = None,
) -> dict:
    """Median and spread (ms) per session, runs interleaved so that noise hits all alike.

    `inputs`: arrays fed in turn (round r takes inputs[r % len]; every session of a round gets
    the same one); seeded standard-normal noise when None. Each run's wall time and the
    process's CPU time (all of the runtime's threads) are kept per round, so that ratios can be
    taken round by round and contention shows as CPU time below wall time x threads."""
    if inputs is None:
        inputs = [np.random.default_rng(seed).standard_normal(tuple(input_shape), dtype=np.float32)]
    names = {name: input_name(sess) for name, sess in sessions.items()}
    for name, sess in sessions.items():
        for i in range(warmup):
            sess.run(None, {names[name]: inputs[i % len(inputs)]})
    times = {name: [] for name in sessions}
    cpu = {name: [] for name in sessions}
    for r in range(runs):
        x = inputs[r % len(inputs)]
        for name, sess in sessions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            sess.run(None, {names[name]: x})
            times[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    out = {}
    for name, t in times.items():
        lo, mid, hi = _quartiles(t)
        out[name] = {
            "median_ms": mid,
            "p25_ms": lo,
            "p75_ms": hi,
            "min_ms": min(t),
            "cpu_ms": statistics.median(cpu[name]),
            "runs": len(t),
            "times_ms": t,
        }
    return out


def round_ratio(latency: dict, slow: str, fast: str) -> dict:
    """slow/fast latency taken round by round (each round runs both back to back): median and
    p25-p75 of the per-round ratios, less sensitive to slow drifts of the machine than the
    ratio of medians."""
    ratios = [a / b for a, b in zip(latency[slow]["times_ms"], latency[fast]["times_ms"])]
    lo, mid, hi = _quartiles(ratios)
    return {"median": mid, "p25": lo, "p75": hi}


def form_speed(latency: dict, slow: str, fast: str) -> dict:
    """One form's figures: both medians and the speed-up as the per-round ratio's median."""
    r = round_ratio(latency, slow, fast)
    return {
        "baseline_ms": latency[slow]["median_ms"],
        "reduced_ms": latency[fast]["median_ms"],
        "speedup": r["median"],
        "ratio": r,
    }


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_load() -> dict:
    """Load averages (1, 5, 15 min) and cores now; `busy` when the 1-minute load exceeds the
    cores (a ratio measured under contention is not the quiet ratio)."""
    cores = os.cpu_count() or 1
    try:
        load = list(os.getloadavg())
    except OSError:  # not on every platform
        return {"load_average": None, "cores": cores, "busy": None}
    return {"load_average": load, "cores": cores, "busy": load[0] > cores}


def structural_limit(baseline_gflops: float, block_gflops: float, depth: int, cut) -> float | None:
    """The largest speed-up a method that runs the first `cut` blocks at full size can show:
    even if every block after the cut were free, the reduced model still runs the stem, the
    first `cut` blocks and the head at full size. Everything but the blocks after the cut is
    counted as shared (an upper bound). None when the method has no single cut."""
    if cut is None or not block_gflops or depth <= 0:
        return None
    shared = baseline_gflops - (depth - cut) * block_gflops
    return baseline_gflops / shared if shared > 0 else None


# A CPU speed-up above the GFLOPs ratio by more than this is flagged: on a CPU latency follows
# the multiply-accumulates within a few percent (cache effects measured 6-9% on the digits
# model's 1601-token attention).
GFLOPS_MARGIN = 1.10


def suspects(speedup: float, gflops_ratio: float, limit: float | None) -> list[str]:
    """Why a speed-up cannot be taken at face value (empty when it can)."""
    out = []
    if limit is not None and speedup > limit:
        out.append(
            f"speed-up {speedup:.2f}x above the structural limit {limit:.2f}x (the stem, the "
            "blocks before the cut and the head run at full size in both models)"
        )
    if gflops_ratio and speedup > GFLOPS_MARGIN * gflops_ratio:
        out.append(
            f"speed-up {speedup:.2f}x more than {GFLOPS_MARGIN - 1:.0%} above the GFLOPs ratio "
            f"{gflops_ratio:.2f}x"
        )
    return out


def source_node(name: str, known) -> str | None:
    """The exported node an ONNX Runtime kernel came from, or None.

    Runtime fusions name their node after the first node they absorb, followed by the fusion:
    "node_MatMul_70/MatMulAddFusion" is node_MatMul_70 fused with its Add.
    """
    if name in known:
        return name
    head = name.split("/", 1)[0]
    return head if head in known else None


def token_ops_share(
    onnx_path: Path,
    input_shape,
    runs: int = 3,
    threads: int | None = None,
    seed: int = 0,
    inputs: list | None = None,
) -> dict:
    """Share of ONNX Runtime's kernel time spent in the method's own modules.

    Token operations are the nodes traced inside the method's submodules (scope `method.*`:
    clustering, reconstruction weights and gather, density-peaks selection, pooling, ...),
    told apart by the exporter's name-scope metadata. The graph is profiled with the same
    session settings as it is timed with; a fused kernel is credited to the module of the node
    it is named after (`source_node`). Kernels that keep no source name (layout transposes
    the runtime inserts, some normalisation fusions) count in the total only, as does glue
    traced at the top level (slicing, concatenation of prefix tokens), so the share is a
    lower bound; `unattributed` says how much kernel time that is. `by_op`: the token
    operations' kernel time per op type (ms a run), largest first.
    """
    proto = onnx.load(str(onnx_path), load_external_data=False)
    scope = {n.name: module_of(n) for n in proto.graph.node}
    with tempfile.TemporaryDirectory() as tmp:
        sess = onnx_session(onnx_path, threads, flush_denormals=True, profile=Path(tmp) / "p")
        x = inputs[0] if inputs else random_feed(sess, input_shape, seed)[input_name(sess)]
        for _ in range(runs + 1):
            sess.run(None, {input_name(sess): x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    token = total = unknown = 0.0
    by_op: dict[str, float] = {}
    suffix = "_kernel_time"
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith(suffix):
            total += e["dur"]
            node = source_node(e["name"][: -len(suffix)], scope)
            if node is None:
                unknown += e["dur"]
            elif scope[node].startswith("method."):
                token += e["dur"]
                op = e.get("args", {}).get("op_name", "?")
                by_op[op] = by_op.get(op, 0.0) + e["dur"]
    n = runs + 1
    return {
        "share": token / total if total else None,
        "token_ms_per_run": token / 1e3 / n,
        "kernel_ms_per_run": total / 1e3 / n,
        "unattributed": unknown / total if total else None,
        "token_nodes": sum(s.startswith("method.") for s in scope.values()),
        "by_op": {op: us / 1e3 / n for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])},
    }


# The names under which `compare` times each form of the two models.
FORMS = {
    "optimized": ("baseline_optimized", "reduced_optimized"),
    "plain": ("baseline", "reduced"),
}
FLUSH_NOTE = (
    "denormal floats flushed to zero in every timed session (ONNX Runtime's "
    "session.set_denormal_as_zero), so that a CPU's slow path for them cannot favour either side"
)


def optimized_forms(paths: dict, folder: Path) -> dict:
    """`paths` with an optimised form (`optimize_onnx`) of its baseline and reduced model
    added where it lacks one, written into `folder`; the number of attention nodes fused in
    each, under "fused"."""
    paths, fused = dict(paths), {}
    for name in ("baseline", "reduced"):
        key = f"{name}_optimized"
        if key not in paths:
            paths[key] = Path(folder) / f"{name}.optimized.onnx"
            fused[name] = optimize_onnx(paths[name], paths[key])
        else:
            fused[name] = count_fused(paths[key])
    return paths, fused


def compare(
    paths: dict,
    gflops: dict,
    input_shape,
    tokens: dict,
    runs: int = 20,
    warmup: int = 2,
    threads: int | None = None,
    seed: int = 0,
    profile_runs: int = 3,
    progress=lambda text: None,
    inputs: list | None = None,
    inputs_note: str | None = None,
    limit: float | None = None,
) -> dict:
    """Time the ONNX files `paths` ({"baseline": ..., "reduced": ..., more}) interleaved, each
    model in its plain export and in its optimised form (attention fused, ONNX Runtime's graph
    optimisations applied: what a user would deploy), and profile the reduced one's token
    operations: the report's "bench" entry.

    The headline `speedup` is the optimised baseline against the optimised reduced model,
    the median of the per-round ratios (p25-p75 in `ratio`); the plain exports' ratio is
    beside it. `inputs`: the arrays to feed (real images; seeded noise when None). `limit`:
    the structural limit of the speed-up; a speed-up above it, or more than 10% above the
    GFLOPs ratio, is listed in `suspect`. The machine's load before and after, its CPU model,
    the threads and the CPU time of each run are recorded: a ratio measured on a busy machine
    says so in `warnings`."""
    load_before = machine_load()
    with tempfile.TemporaryDirectory() as tmp:
        progress("fuse attention and optimise both models for ONNX Runtime ...")
        paths, fused = optimized_forms(paths, Path(tmp))
        progress(f"time them in ONNX Runtime, {runs} interleaved runs ...")
        sessions = {
            name: onnx_session(path, threads, flush_denormals=True) for name, path in paths.items()
        }
        lat = interleaved_latency(sessions, input_shape, runs, warmup, seed, inputs)
        del sessions
        progress("profile the token operations ...")
        share = token_ops_share(paths["reduced"], input_shape, profile_runs, threads, seed, inputs)
        share_opt = token_ops_share(
            paths["reduced_optimized"], input_shape, profile_runs, threads, seed, inputs
        )
    load_after = machine_load()
    ratio = gflops["baseline"] / gflops["reduced"]
    forms = {}
    for form, (base, red) in FORMS.items():
        speed = form_speed(lat, base, red)
        forms[form] = {**speed, "suspect": suspects(speed["speedup"], ratio, limit)}
    mixed = round_ratio(lat, "baseline_optimized", "reduced")
    best = forms["optimized"]
    warnings = [f"{form}: {text}" for form, f in forms.items() for text in f["suspect"]]
    busy = [x for x in (load_before, load_after) if x["busy"]]
    if busy:
        warnings.append(
            f"machine busy while timing (load average {busy[0]['load_average'][0]:.2f} on "
            f"{busy[0]['cores']} cores): the ratio is not the quiet one"
        )
    return {
        "runtime": "onnxruntime-cpu",
        "threads": threads,
        "threads_used": threads or f"ONNX Runtime's default (one per core; {os.cpu_count()} cores)",
        "cpu": cpu_model(),
        "load": {"before": load_before, "after": load_after},
        "inputs": inputs_note or f"seeded standard-normal noise (seed {seed})",
        "denormals": FLUSH_NOTE,
        "baseline_ms": best["baseline_ms"],
        "reduced_ms": best["reduced_ms"],
        "speedup": best["speedup"],
        "ratio": best["ratio"],
        "speedup_plain": forms["plain"]["speedup"],
        "speedup_plain_reduced_vs_optimized_baseline": mixed["median"],
        "forms": forms,
        "attention_fused": fused,
        "structural_limit": limit,
        "suspect": best["suspect"] + forms["plain"]["suspect"],
        "warnings": warnings,
        "spread_ms": {name: [v["p25_ms"], v["p75_ms"]] for name, v in lat.items()},
        "cpu_ms": {name: v["cpu_ms"] for name, v in lat.items()},
        "gflops": dict(gflops),
        "gflops_ratio": ratio,
        "speedup_vs_gflops_ratio": best["speedup"] / ratio,
        "gflops_convention": GFLOPS_CONVENTION,
        "token_ops_share": share["share"],
        "token_ops": share,
        "token_ops_share_optimized": share_opt["share"],
        "token_ops_optimized": share_opt,
        "tokens": tokens,
        "latency": lat,
        "runs": runs,
        "warmup": warmup,
    }


def block_gflops(model, input_shape) -> float:
    """GFLOPs of one full-size block of a plain ViT `model` (0 for other families)."""
    lay = model.layout
    if getattr(model, "family", "vit") != "vit":
        return 0.0
    n = lay.num_patches + lay.num_prefix
    return count_gflops(model.blocks[0], (input_shape[0], n, lay.dim))


def limit_of(settings, cut, input_shape) -> float | None:
    """The structural limit of a build's speed-up (`structural_limit`), from GFLOPs counted on
    the weightless baseline."""
    if cut is None:
        return None
    base = replace(settings, model=replace(settings.model, checkpoint=None), method=BASELINE)
    with torch.device("meta"):
        model = create_model(base.model, settings.seed)
    whole = count_gflops(model, input_shape)
    return structural_limit(whole, block_gflops(model, input_shape), model.layout.depth, cut)


def speed_stage(
    settings, folder: Path, record, progress=lambda text: None, data=None, cut=None
) -> dict | None:
    """The build's own speed-up: its model against the baseline.onnx the accuracy stage
    exported, both also in their optimised forms, timed in the same run (BUILD_RUNS
    interleaved rounds on the build's evaluation images `data` when it has some), GFLOPs
    counted on the weightless models; `cut`: the method's first reduced block (for the
    structural limit). None when the folder has no baseline to time against."""
    if record.baseline is None:
        return None
    shape = record.model.input_shape
    one = (1, *shape[1:])
    base = replace(settings, method=BASELINE, method_args={})
    gflops = {
        "baseline": count_settings_gflops(base, one),
        "reduced": count_settings_gflops(settings, one),
    }
    paths = {
        "baseline": Path(folder) / record.baseline.file,
        "reduced": Path(folder) / record.onnx.file,
    }
    if record.optimized is not None:
        paths["reduced_optimized"] = Path(folder) / record.optimized.file
    inputs, note = timing_inputs(shape, settings.seed, data)
    return compare(
        paths,
        gflops,
        shape,
        record.tokens,
        BUILD_RUNS,
        BUILD_WARMUP,
        seed=settings.seed,
        profile_runs=BUILD_PROFILE_RUNS,
        progress=progress,
        inputs=inputs,
        inputs_note=note,
        limit=limit_of(settings, cut, one),
    )


# Real images fed in turn while timing (as many as there are, up to this).
TIMING_IMAGES = 8


def timing_inputs(shape, seed: int, data=None, name: str = INPUT_NAME) -> tuple[list, str]:
    """The arrays to time on and their description: the build's first evaluation images when
    it has an evaluation set, else one seeded noise input."""
    feeds, note = feeds_for(shape, seed, TIMING_IMAGES if data is not None else 1, data, name)
    return [f[name] for f in feeds], note
