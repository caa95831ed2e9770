"""Reference-vs-runtime comparison: the numbers in the report's "validation" list.

Runners follow polygraphy's interface, and polygraphy's Comparator runs them and checks the
tolerances. The PyTorch side has its own small runner because polygraphy's `PytRunner`
moves inputs to CUDA and treats a single output tensor as a sequence of outputs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator, IterationResult, RunResults, SimpleCompareFunc
from polygraphy.logger import G_LOGGER

from .onnx.plugin_ops import PLUGIN_DOMAIN, ort_session
from .onnx.plugins import hidden_decisions
from .models.base import INPUT_NAME
from .ops.decisions import Decisions
from .record import Tolerances, Validation

# The report carries the numbers; polygraphy would print its own verdict lines to stdout.
G_LOGGER.module_severity = G_LOGGER.CRITICAL
G_LOGGER.colors = False


class TorchRunner(BaseRunner):
    """Runs a PyTorch module on the CPU under no_grad."""

    def __init__(
        self, model: torch.nn.Module, input_shape, output_names, name="pytorch", input_name=None
    ):
        super().__init__(name=name)
        self.model, self.input_shape, self.output_names = (
            model,
            tuple(input_shape),
            list(output_names),
        )
        self.input_name = input_name or _input_of(model)

    def get_input_metadata_impl(self):
        return TensorMetadata().add(self.input_name, np.float32, self.input_shape)

    def infer_impl(self, feed_dict):
        images = torch.from_numpy(np.ascontiguousarray(feed_dict[self.input_name]))
        with torch.no_grad():
            start = time.perf_counter()
            out = self.model(images)
            self.inference_time = time.perf_counter() - start
        outs = out if isinstance(out, (tuple, list)) else (out,)
        # polygraphy views outputs as flat arrays: a transposed feature map must be copied
        return OrderedDict(
            (n, o.float().contiguous().numpy()) for n, o in zip(self.output_names, outs)
        )


def _input_of(reference) -> str:
    """The image input's name of a reference (a ReducedModel or a DenseModel)."""
    model = getattr(reference, "model", reference)
    return getattr(model, "input_name", INPUT_NAME)


def seeded_inputs(shape, seed: int, count: int, name: str = INPUT_NAME) -> list[dict]:
    """`count` feed dicts of standard-normal images, the same for every runner and every run."""
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape, dtype=np.float32)} for _ in range(count)]


def image_inputs(images: np.ndarray, shape, count: int, name: str = INPUT_NAME) -> list[dict]:
    """Up to `count` feed dicts of batch shape[0] from the first of `images` [N, 3, H, W]."""
    batch = shape[0]
    count = min(count, len(images) // batch)
    return [
        {name: np.ascontiguousarray(images[i * batch : (i + 1) * batch], dtype=np.float32)}
        for i in range(count)
    ]


def error_metrics(
    ref: np.ndarray, out: np.ndarray, argmax_axis: int | None, atol: float, rtol: float
) -> dict:
    """max/mean absolute error, max relative error, cosine, argmax agreement, and the share of
    elements outside both tolerances."""
    r, o = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    diff = np.abs(o - r)
    outside = (diff > atol) & (diff > rtol * np.abs(r))
    denom = np.linalg.norm(r) * np.linalg.norm(o)
    agree = None
    if argmax_axis is not None:
        agree = float(np.mean(ref.argmax(argmax_axis) == out.argmax(argmax_axis)))
    return {
        "max_abs": float(diff.max(initial=0.0)),
        "max_rel": float((diff / np.maximum(np.abs(r), 1e-6)).max(initial=0.0)),
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "cosine": float(r @ o / denom) if denom > 0 else float(np.array_equal(r, o)),
        "argmax_agreement": agree,
        "mismatch_fraction": float(outside.mean()) if diff.size else 0.0,
    }


# Margins listed per decision in the report (the largest first).
MARGINS_SHOWN = 5


def _compare(
    ref_iters: list[dict], run_iters: list[dict], names, output_kind: str, tol: Tolerances
) -> tuple[bool, dict]:
    """polygraphy's quantile check plus cosine and argmax agreement, over all iterations."""
    results = RunResults(
        [
            ("reference", [IterationResult(dict(r), runner_name="reference") for r in ref_iters]),
            ("runtime", [IterationResult(dict(r), runner_name="runtime") for r in run_iters]),
        ]
    )
    accuracy = Comparator.compare_accuracy(
        results,
        compare_func=SimpleCompareFunc(
            atol=tol.atol,
            rtol=tol.rtol,
            check_shapes=True,
            check_error_stat="quantile",
            error_quantile=tol.error_quantile,
        ),
    )
    ok = bool(accuracy)
    axis = 1 if output_kind == "segmentation" else None
    outputs = {}
    for name in names:
        ref = np.concatenate([np.asarray(it[name]) for it in ref_iters])
        out = np.concatenate([np.asarray(it[name]) for it in run_iters])
        if ref.shape != out.shape:
            outputs[name] = {"shape_reference": list(ref.shape), "shape_runtime": list(out.shape)}
            ok = False
            continue
        outputs[name] = error_metrics(ref, out, axis, tol.atol, tol.rtol)
    ok = ok and all(o.get("cosine", -1.0) >= tol.min_cosine for o in outputs.values())
    ok = ok and all((o.get("argmax_agreement") or 1.0) >= tol.min_argmax for o in outputs.values())
    return ok, outputs


def _run_reference(reference, feeds: dict, names, imposed: dict | None = None):
    """(outputs by name, the Decisions record) of one reference run."""
    images = torch.from_numpy(np.ascontiguousarray(feeds[_input_of(reference)]))
    with torch.no_grad(), Decisions(imposed) as record:
        out = reference(images)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {n: o.float().contiguous().numpy() for n, o in zip(names, outs)}, record


class ExposedRun:
    """Runs an ONNX artifact in ONNX Runtime with its integer intermediate tensors as extra
    outputs, so that the runtime's own decisions can be read off the same run that produced
    its outputs. Plugin nodes run with their CPU implementations, float16 graphs take cast
    inputs."""

    def __init__(self, path: Path, names, options=None):
        proto = onnx.load(str(path))
        self.hidden = hidden_decisions(proto)
        typed = onnx.shape_inference.infer_shapes(proto)
        kinds = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
        ints = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
        outputs = {o.name for o in proto.graph.output}
        self.extra = [
            t
            for n in proto.graph.node
            for t in n.output
            if kinds.get(t) in ints and t not in outputs
        ]
        proto.graph.output.extend(
            onnx.helper.make_tensor_value_info(t, kinds[t], None) for t in self.extra
        )
        self.names = list(names)
        image = proto.graph.input[0]
        self.input = image.name
        self.half = image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
        if any(n.domain == PLUGIN_DOMAIN for n in proto.graph.node):
            self.session = ort_session(proto, options)
        else:
            self.session = ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )

    def __call__(self, feeds: dict) -> tuple[dict, dict]:
        (x,) = feeds.values()  # the one image input, whatever the graph calls it
        outs = self.session.run(None, {self.input: x.astype(np.float16) if self.half else x})
        main = {n: o.astype(np.float32) for n, o in zip(self.names, outs)}
        return main, dict(zip(self.extra, outs[len(self.names) :]))


def _same(a: np.ndarray, b: np.ndarray, is_set: bool = False) -> np.ndarray:
    """Where two choices agree: per element, or for index sets (top-k rows [B, N, k], or a
    decision declared a set) per row: their order is not a decision."""
    if a.ndim >= 3 or (is_set and a.ndim >= 2):
        return (np.sort(a, -1) == np.sort(b, -1)).all(-1)
    return a == b


def _match(own: list[dict], found: list[dict], sets: set[str]) -> dict[str, str]:
    """For each decision key, the runtime tensor holding it: same shape in every sample, the
    best agreement, and agreeing on at least half of the rows (else it is not there)."""
    chosen, taken = {}, set()
    for key in own[0]:
        best, best_share = None, 0.5
        for name, value in found[0].items():
            if name in taken or np.shape(value) != own[0][key].shape:
                continue
            share = np.mean(
                [_same(o[key], f[name], key in sets).mean() for o, f in zip(own, found)]
            )
            if share > best_share or (best is None and share >= best_share):
                best, best_share = name, share
        if best is not None:
            chosen[key] = best
            taken.add(best)
    return chosen


def validate_artifact(
    reference: torch.nn.Module,
    artifact: Path,
    data: list[dict],
    inputs: str,
    tol: Tolerances,
    seed: int,
    runner: BaseRunner | None = None,
    runtime: str = "onnxruntime",
    options=None,
) -> Validation:
    """Compare one artifact with the PyTorch reference on `data` (feed dicts), decision-aware.

    The runtime's decisions come from the artifact itself (an ONNX file run with its integer
    tensors exposed); a runtime that cannot expose them (a TensorRT engine) is compared on
    its outputs alone. A swapped or wrong model holds none of the reference's decisions, or
    fails with the runtime's decisions imposed: it fails either way. `options`: ONNX Runtime
    SessionOptions of the exposed run (threads, graph optimisation level)."""
    names = list(reference.output_names)
    output_kind = reference.model.output_kind
    method = getattr(reference, "method", None)
    declared = method.decisions() if method is not None else ()
    exposed = None
    # A graph with external weights (past 2 GB) cannot be rewritten in memory: outputs only.
    if declared and str(artifact).endswith(".onnx") and not Path(f"{artifact}.data").exists():
        exposed = ExposedRun(artifact, names, options)
    ref_iters, own, sets = [], [], set()
    for feeds in data:
        out, record = _run_reference(reference, feeds, names)
        ref_iters.append(out)
        own.append(record.own)
        sets |= record.sets
    run_iters, found = [], []
    if exposed is not None:
        for feeds in data:
            out, ints = exposed(feeds)
            run_iters.append(out)
            found.append(ints)
    else:
        runner = runner or OnnxrtRunner(
            SessionFromOnnx(str(artifact), providers=["CPUExecutionProvider"]), name=runtime
        )
        with runner:
            for feeds in data:
                out = runner.infer(dict(feeds))
                run_iters.append({n: np.asarray(out[n], dtype=np.float32) for n in names})
    plain_ok, outputs = _compare(ref_iters, run_iters, names, output_kind, tol)
    result = Validation(
        runtime, Path(artifact).name, plain_ok, "", tol, len(data), seed, inputs, outputs
    )
    if not declared:
        result.verdict = "no decisions"
        return result
    if exposed is None or not own[0]:
        result.verdict = "decisions not exposed"
        return result
    where = _match(own, found, sets)
    inside = {k for k in own[0] if k not in where and k.split("#")[0] in exposed.hidden}
    missing = sorted(set(own[0]) - set(where) - inside)
    if missing:
        result.decisions = {k: {"found": False} for k in missing}
        result.passed = False
        result.verdict = f"the artifact holds none of the decisions {', '.join(missing)}"
        return result
    if not where:  # every decision is made inside plugin nodes: outputs only
        result.decisions = {k: {"found": False, "inside_plugin": True} for k in sorted(inside)}
        result.verdict = "decisions inside plugin nodes"
        return result
    runtime_choice = [{k: f[where[k]] for k in where} for f in found]
    flipped = sum(
        int((~_same(o[k], r[k], k in sets)).sum())
        for o, r in zip(own, runtime_choice)
        for k in where
    )
    if flipped == 0:
        result.decisions = {
            k: {"tensor": where[k], "compared": int(own[0][k].size), "flipped": 0} for k in where
        }
        result.verdict = "decisions equal"
        return result
    # Teacher forcing: the reference with the runtime's decisions imposed, one sample at a
    # time; each decision's margin is judged where the reference itself decides it (after
    # the earlier decisions were imposed).
    forced_iters, margins = [], {k: [] for k in where}
    for feeds, choice in zip(data, runtime_choice):
        out, record = _run_reference(reference, feeds, names, imposed=choice)
        forced_iters.append(out)
        for k in where:
            fn = record.margins.get(k)
            m = fn(record.own[k], choice[k]) if fn is not None else np.full(1, np.inf)
            margins[k].extend(m.tolist())
    forced_ok, forced = _compare(forced_iters, run_iters, names, output_kind, tol)
    flips = sum(len(m) for m in margins.values())
    worst = max((max(m) for m in margins.values() if m), default=0.0)
    result.decisions = {
        k: {
            "tensor": where[k],
            "compared": int(own[0][k].size) * len(data),
            "flipped": len(m),
            "margins": sorted(m, reverse=True)[:MARGINS_SHOWN],
        }
        for k, m in margins.items()
    }
    result.forced_outputs = forced
    near_ties = worst <= tol.tie_bound
    result.passed = near_ties and forced_ok
    if result.passed:
        result.verdict = f"near-tie flips: {flips}"
    elif not near_ties:
        result.verdict = (
            f"decisions flipped beyond rounding: {flips} flips, largest margin "
            f"{worst:.3g} > {tol.tie_bound:g}"
        )
    else:
        result.verdict = (
            f"near-tie flips: {flips}, but the outputs differ with the runtime's decisions imposed"
        )
    return result


def feeds_for(
    input_shape, seed: int, samples: int, data=None, name: str = INPUT_NAME
) -> tuple[list[dict], str]:
    """The validation inputs (keyed by the model's input `name`) and their description: the
    first images of a build's evaluation set `data` when given, else seeded standard-normal
    samples."""
    feeds = image_inputs(data.images, input_shape, samples, name) if data is not None else []
    if feeds:
        return feeds, f"the first {len(feeds) * input_shape[0]} images of {data.source}"
    return (
        seeded_inputs(input_shape, seed, samples, name),
        f"{samples} seeded standard-normal samples (seed {seed})",
    )
