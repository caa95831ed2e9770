"""Latency and GFLOPs of the baseline and the reduced model, measured side by side in one run.

GFLOPs follow the papers' convention (mmcv / fvcore): one multiply-accumulate counts as one
FLOP, and only matrix products and convolutions are counted (elementwise ops, softmax, norms
are not). They are counted on the PyTorch model with torch's FlopCounterMode, with timm's fused
attention switched off during the count so that the attention matrix products are seen.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .runtime import onnx_session


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
    from dataclasses import replace

    from .methods import apply_method
    from .models import create_model

    with torch.device("meta"):
        model = create_model(replace(settings.model, checkpoint=None), settings.seed)
    # the method's index tables are built on the CPU (they are computed), then moved
    reduced = apply_method(model, settings.method, dict(settings.method_args)).to("meta")
    if input_shape is None:
        input_shape = (1, 3, *model.layout.image_size)
    return count_gflops(reduced, input_shape)


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


def source_node(name: str, known) -> str | None:
    """The exported node an ONNX Runtime kernel came from, or None.

    Runtime fusions name their node after the first node they absorb, followed by the fusion:
    "node_MatMul_70/MatMulAddFusion" is node_MatMul_70 fused with its Add.
    """
    if name in known:
        return name
    head = name.split("/", 1)[0]
    return head if head in known else None


def token_ops_share(onnx_path: Path, input_shape, runs: int = 3, threads: int | None = None,
                    seed: int = 0) -> dict:
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
    import json
    import tempfile

    import onnx
    import onnxruntime as ort

    from .onnx.lint import module_of

    proto = onnx.load(str(onnx_path), load_external_data=False)
    scope = {n.name: module_of(n) for n in proto.graph.node}
    options = ort.SessionOptions()
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
    return {"share": token / total if total else None, "token_ms_per_run": token / 1e3 / n,
            "kernel_ms_per_run": total / 1e3 / n,
            "unattributed": unknown / total if total else None,
            "token_nodes": sum(s.startswith("method.") for s in scope.values())}


def baseline_settings(settings):
    """The same build with `--method none`."""
    from dataclasses import replace

    return replace(settings, method="none", method_args={})


def export_variant(folder: Path, name: str, settings, shape, report: dict, model=None,
                   progress=lambda text: None) -> Path:
    """folder/<name>.onnx: the folder's model built with other `settings`, exported once and
    kept; recorded in the report's artifacts and hashes."""
    from .build import patched_model
    from .onnx.export import export_onnx
    from .report import file_hashes

    path = Path(folder) / f"{name}.onnx"
    if not path.is_file():
        progress(f"export {name} ({settings.method} {settings.method_args}) to {path.name} ...")
        model = patched_model(settings) if model is None else model
        # Exported under its final name in a scratch folder, so that external weights (models
        # past 2 GB) are named `<name>.onnx.data` as the graph refers to them; then moved in,
        # weights first, so a half-written model never sits under the final name.
        with tempfile.TemporaryDirectory(dir=folder, prefix=f".{name}-") as tmp:
            export_onnx(model, Path(tmp) / path.name, shape, settings.opset,
                        settings.dynamic_batch)
            for part in sorted(Path(tmp).iterdir(), key=lambda f: f.suffix == ".onnx"):
                part.replace(Path(folder) / part.name)
    report["artifacts"][f"{name}_onnx"] = path.name
    report.setdefault("hashes", {}).update(file_hashes(folder, [path.name]))
    return path


def export_baseline(folder: Path, settings, shape, report: dict, baseline=None,
                    progress=lambda text: None) -> Path:
    """folder/baseline.onnx: the same model with `--method none`."""
    return export_variant(folder, "baseline", baseline_settings(settings), shape, report,
                          baseline, progress)


def authors_settings(settings):
    """The same build with the method's own flags for the authors' formulation, or None."""
    from dataclasses import replace

    from .methods import METHODS

    form = getattr(METHODS.get(settings.method), "authors_form", None)
    if not form or all(settings.method_args.get(k) == v for k, v in form.items()):
        return None
    return replace(settings, method_args={**settings.method_args, **form})


def bench_folder(out: Path, runs: int = 10, warmup: int = 2, threads: int | None = None,
                 progress=lambda text: None) -> dict:
    """`vitexport bench OUT`: the folder's model.onnx against the same model with `--method none`.

    The baseline is exported once into OUT/baseline.onnx (kept for later runs). When the method
    has an authors' formulation that differs from the build's (Expedite's dense clustering), it
    is exported into OUT/authors_form.onnx and timed and profiled in the same run.
    """
    from .build import patched_model, read_folder
    from .report import write_report

    report, settings = read_folder(out)
    out = Path(out)
    shape = tuple(report["model"]["input_shape"])
    variants = {"baseline": baseline_settings(settings)}
    authors = authors_settings(settings)
    if authors is not None:
        variants["authors_form"] = authors
    models = {name: patched_model(s) for name, s in variants.items()}
    paths = {name: export_variant(out, name, variants[name], shape, report, models[name], progress)
             for name in variants}
    paths["reduced"] = out / report["artifacts"]["onnx"]
    reduced = patched_model(settings)
    progress("count GFLOPs ...")
    one = (1, *shape[1:])
    gflops = {"baseline": count_gflops(models["baseline"], one),
              "reduced": count_gflops(reduced, one)}
    progress(f"time them in ONNX Runtime, {runs} interleaved runs ...")
    sessions = {name: onnx_session(path, threads) for name, path in paths.items()}
    lat = interleaved_latency(sessions, shape, runs, warmup, settings.seed)
    base_ms, red_ms = lat["baseline"]["median_ms"], lat["reduced"]["median_ms"]
    progress("profile the token operations ...")
    share = token_ops_share(paths["reduced"], shape, threads=threads, seed=settings.seed)
    report["bench"] = {
        "runtime": "onnxruntime-cpu",
        "baseline_ms": base_ms, "reduced_ms": red_ms, "speedup": base_ms / red_ms,
        "spread_ms": {name: [v["p25_ms"], v["p75_ms"]] for name, v in lat.items()},
        "gflops": gflops, "gflops_ratio": gflops["baseline"] / gflops["reduced"],
        "speedup_vs_gflops_ratio": (base_ms / red_ms) / (gflops["baseline"] / gflops["reduced"]),
        "gflops_convention": "multiply-accumulates of matmul/conv counted as FLOPs (mmcv/fvcore)",
        "token_ops_share": share["share"],
        "token_ops": share,
        "tokens": report["tokens"], "latency": lat, "runs": runs, "warmup": warmup,
    }
    if authors is not None:
        progress("profile the token operations of the authors' formulation ...")
        a_share = token_ops_share(paths["authors_form"], shape, threads=threads, seed=settings.seed)
        report["bench"]["authors_form"] = {
            "flags": variants["authors_form"].method_args, "ms": lat["authors_form"]["median_ms"],
            "gflops": count_gflops(models["authors_form"], one),
            "token_ops_share": a_share["share"], "token_ops": a_share}
    write_report(out, report)
    return report
