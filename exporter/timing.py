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
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from .methods import BASELINE, apply_method
from .models import create_model
from .onnx.lint import module_of
from .runtime import input_name, onnx_session

GFLOPS_CONVENTION = "multiply-accumulates of matmul/conv counted as FLOPs (mmcv/fvcore)"
# The build's own timing: few runs, so that it stays a small part of a default build; `vitexport
# bench OUT --runs N` measures longer.
BUILD_RUNS = 7
BUILD_WARMUP = 1
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


def interleaved_latency(
    sessions: dict, input_shape, runs: int = 10, warmup: int = 2, seed: int = 0
) -> dict:
    """Median and spread (ms) per session, runs interleaved so that noise hits all alike."""
    feeds = {name: random_feed(sess, input_shape, seed) for name, sess in sessions.items()}
    for name, sess in sessions.items():
        for _ in range(warmup):
            sess.run(None, feeds[name])
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, feeds[name])
            times[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        out[name] = {
            "median_ms": statistics.median(t),
            "p25_ms": q[0],
            "p75_ms": q[2],
            "min_ms": min(t),
            "runs": len(t),
        }
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
    onnx_path: Path, input_shape, runs: int = 3, threads: int | None = None, seed: int = 0
) -> dict:
    """Share of ONNX Runtime's kernel time spent in the method's own modules.

    Token operations are the nodes traced inside the method's submodules (scope `method.*`:
    clustering, reconstruction weights and gather, density-peaks selection, pooling, ...),
    told apart by the exporter's name-scope metadata. The graph is profiled with the same
    optimisations as it is timed with; a fused kernel is credited to the module of the node
    it is named after (`source_node`). Kernels that keep no source name (layout transposes
    the runtime inserts, some normalisation fusions) count in the total only, as does glue
    traced at the top level (slicing, concatenation of prefix tokens), so the share is a
    lower bound; `unattributed` says how much kernel time that is.
    """
    proto = onnx.load(str(onnx_path), load_external_data=False)
    scope = {n.name: module_of(n) for n in proto.graph.node}
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        feed = random_feed(sess, input_shape, seed)
        for _ in range(runs + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    token = total = unknown = 0.0
    suffix = "_kernel_time"
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith(suffix):
            total += e["dur"]
            node = source_node(e["name"][: -len(suffix)], scope)
            if node is None:
                unknown += e["dur"]
            elif scope[node].startswith("method."):
                token += e["dur"]
    n = runs + 1
    return {
        "share": token / total if total else None,
        "token_ms_per_run": token / 1e3 / n,
        "kernel_ms_per_run": total / 1e3 / n,
        "unattributed": unknown / total if total else None,
        "token_nodes": sum(s.startswith("method.") for s in scope.values()),
    }


def compare(
    paths: dict,
    gflops: dict,
    input_shape,
    tokens: dict,
    runs: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    seed: int = 0,
    profile_runs: int = 3,
    progress=lambda text: None,
) -> dict:
    """Time the ONNX files `paths` ({"baseline": ..., "reduced": ..., more}) interleaved and
    profile the reduced one's token operations: the report's "bench" entry."""
    progress(f"time them in ONNX Runtime, {runs} interleaved runs ...")
    sessions = {name: onnx_session(path, threads) for name, path in paths.items()}
    lat = interleaved_latency(sessions, input_shape, runs, warmup, seed)
    base_ms, red_ms = lat["baseline"]["median_ms"], lat["reduced"]["median_ms"]
    progress("profile the token operations ...")
    share = token_ops_share(paths["reduced"], input_shape, profile_runs, threads, seed)
    ratio = gflops["baseline"] / gflops["reduced"]
    return {
        "runtime": "onnxruntime-cpu",
        "threads": threads,
        "baseline_ms": base_ms,
        "reduced_ms": red_ms,
        "speedup": base_ms / red_ms,
        "spread_ms": {name: [v["p25_ms"], v["p75_ms"]] for name, v in lat.items()},
        "gflops": dict(gflops),
        "gflops_ratio": ratio,
        "speedup_vs_gflops_ratio": (base_ms / red_ms) / ratio,
        "gflops_convention": GFLOPS_CONVENTION,
        "token_ops_share": share["share"],
        "token_ops": share,
        "tokens": tokens,
        "latency": lat,
        "runs": runs,
        "warmup": warmup,
    }


def speed_stage(settings, folder: Path, record, progress=lambda text: None) -> dict | None:
    """The build's own speed-up: its model.onnx against the baseline.onnx the accuracy stage
    exported, timed in the same run (BUILD_RUNS interleaved runs), GFLOPs counted on the
    weightless models; None when the folder has no baseline to time against."""
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
    )
