"""Latency and GFLOPs of the baseline and the reduced model, measured side by side in one run.

GFLOPs follow the papers' convention (mmcv / fvcore): one multiply-accumulate counts as one
FLOP, and only matrix products and convolutions are counted (elementwise ops, softmax, norms
are not). They are counted on the PyTorch model with torch's FlopCounterMode, with timm's fused
attention switched off during the count so that the attention matrix products are seen.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


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
    images = torch.zeros(tuple(input_shape))
    with torch.no_grad(), unfused_attention(module), FlopCounterMode(display=False) as counter:
        module(images)
    return counter.get_total_flops() / 2e9


def onnx_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved_latency(sessions: dict, input_shape, runs: int = 10, warmup: int = 2,
                        seed: int = 0) -> dict:
    """Median and spread (ms) per session, runs interleaved so that noise hits all alike."""
    feed = {"images": np.random.default_rng(seed).standard_normal(input_shape, dtype=np.float32)}
    for sess in sessions.values():
        for _ in range(warmup):
            sess.run(None, feed)
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, feed)
            times[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        out[name] = {"median_ms": statistics.median(t), "p25_ms": q[0], "p75_ms": q[2],
                     "min_ms": min(t), "runs": len(t)}
    return out


def token_ops_share(onnx_path: Path, input_shape, runs: int = 3, threads: int | None = None,
                    seed: int = 0) -> dict:
    """Share of ONNX Runtime's kernel time spent in the method's own modules.

    Token operations are the nodes traced inside the method's submodules (scope `method.*`:
    clustering, reconstruction weights and gather, density-peaks selection, pooling, ...),
    told apart by the exporter's name-scope metadata. Node fusions are limited to ONNX
    Runtime's basic level so that node names survive; glue traced at the top level (slicing,
    concatenation of prefix tokens) is not counted, so the share is a lower bound.
    """
    import json
    import tempfile

    import onnx
    import onnxruntime as ort

    from .onnx.lint import module_of

    proto = onnx.load(str(onnx_path), load_external_data=False)
    token_nodes = {n.name for n in proto.graph.node if module_of(n).startswith("method.")}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        feed = {"images": np.random.default_rng(seed).standard_normal(input_shape,
                                                                      dtype=np.float32)}
        for _ in range(runs + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    token = total = 0.0
    suffix = "_kernel_time"
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith(suffix):
            total += e["dur"]
            if e["name"][: -len(suffix)] in token_nodes:
                token += e["dur"]
    return {"share": token / total if total else None, "token_ms_per_run": token / 1e3 / (runs + 1),
            "kernel_ms_per_run": total / 1e3 / (runs + 1), "token_nodes": len(token_nodes)}


def baseline_settings(settings):
    """The same build with `--method none`."""
    from dataclasses import replace

    return replace(settings, method="none", method_args={})


def export_baseline(folder: Path, settings, shape, report: dict, baseline=None,
                    progress=lambda text: None) -> Path:
    """folder/baseline.onnx: the same model with `--method none`, exported once and kept;
    recorded in the report's artifacts and hashes."""
    from .build import patched_model
    from .onnx.export import export_onnx
    from .report import sha256

    path = Path(folder) / "baseline.onnx"
    if not path.is_file():
        progress("export the baseline (--method none) to baseline.onnx ...")
        if baseline is None:
            baseline = patched_model(baseline_settings(settings))
        tmp = path.with_name(".baseline.onnx.tmp")
        export_onnx(baseline, tmp, shape, settings.opset, settings.dynamic_batch)
        tmp.replace(path)
    report["artifacts"]["baseline_onnx"] = path.name
    report.setdefault("hashes", {})[path.name] = sha256(path)
    return path


def bench_folder(out: Path, runs: int = 10, warmup: int = 2, threads: int | None = None,
                 progress=lambda text: None) -> dict:
    """`vitexport bench OUT`: the folder's model.onnx against the same model with `--method none`.

    The baseline is exported once into OUT/baseline.onnx (kept for later runs).
    """
    from .build import patched_model, read_folder
    from .report import write_report

    report, settings = read_folder(out)
    out = Path(out)
    shape = tuple(report["model"]["input_shape"])
    baseline = patched_model(baseline_settings(settings))
    export_baseline(out, settings, shape, report, baseline, progress)
    progress("count GFLOPs ...")
    one = (1, *shape[1:])
    gflops = {"baseline": count_gflops(baseline, one),
              "reduced": count_gflops(patched_model(settings), one)}
    progress(f"time both in ONNX Runtime, {runs} interleaved runs ...")
    sessions = {"baseline": onnx_session(out / "baseline.onnx", threads),
                "reduced": onnx_session(out / report["artifacts"]["onnx"], threads)}
    lat = interleaved_latency(sessions, shape, runs, warmup, settings.seed)
    base_ms, red_ms = lat["baseline"]["median_ms"], lat["reduced"]["median_ms"]
    progress("profile the token operations ...")
    share = token_ops_share(out / report["artifacts"]["onnx"], shape, threads=threads,
                            seed=settings.seed)
    report["bench"] = {
        "runtime": "onnxruntime-cpu",
        "baseline_ms": base_ms, "reduced_ms": red_ms, "speedup": base_ms / red_ms,
        "gflops": gflops, "gflops_ratio": gflops["baseline"] / gflops["reduced"],
        "speedup_vs_gflops_ratio": (base_ms / red_ms) / (gflops["baseline"] / gflops["reduced"]),
        "gflops_convention": "multiply-accumulates of matmul/conv counted as FLOPs (mmcv/fvcore)",
        "token_ops_share": share["share"],
        "token_ops": share,
        "tokens": report["tokens"], "latency": lat, "runs": runs, "warmup": warmup,
    }
    write_report(out, report)
    return report
