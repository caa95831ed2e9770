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
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.comparator import Comparator, SimpleCompareFunc
from polygraphy.logger import G_LOGGER

# The report carries the numbers; polygraphy would print its own verdict lines to stdout.
G_LOGGER.module_severity = G_LOGGER.CRITICAL
G_LOGGER.colors = False


class TorchRunner(BaseRunner):
    """Runs a PyTorch module on the CPU under no_grad."""

    def __init__(self, model: torch.nn.Module, input_shape, output_names, name="pytorch"):
        super().__init__(name=name)
        self.model, self.input_shape, self.output_names = model, tuple(input_shape), list(output_names)

    def get_input_metadata_impl(self):
        from polygraphy.common import TensorMetadata
        return TensorMetadata().add("images", np.float32, self.input_shape)

    def infer_impl(self, feed_dict):
        images = torch.from_numpy(np.ascontiguousarray(feed_dict["images"]))
        with torch.no_grad():
            start = time.perf_counter()
            out = self.model(images)
            self.inference_time = time.perf_counter() - start
        outs = out if isinstance(out, (tuple, list)) else (out,)
        # polygraphy views outputs as flat arrays: a transposed feature map must be copied
        return OrderedDict((n, o.float().contiguous().numpy())
                           for n, o in zip(self.output_names, outs))


def seeded_inputs(shape, seed: int, count: int) -> list[dict]:
    """`count` feed dicts of standard-normal images, the same for every runner and every run."""
    rng = np.random.default_rng(seed)
    return [{"images": rng.standard_normal(shape, dtype=np.float32)} for _ in range(count)]


def image_inputs(images: np.ndarray, shape, count: int) -> list[dict]:
    """Up to `count` feed dicts of batch shape[0] from the first of `images` [N, 3, H, W]."""
    batch = shape[0]
    count = min(count, len(images) // batch)
    return [{"images": np.ascontiguousarray(images[i * batch:(i + 1) * batch], dtype=np.float32)}
            for i in range(count)]


def error_metrics(ref: np.ndarray, out: np.ndarray, argmax_axis: int | None, atol: float,
                  rtol: float) -> dict:
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


def validate_onnx(reference: torch.nn.Module, onnx_path: Path, input_shape, output_names,
                  output_kind: str, seed: int, samples: int, atol: float, rtol: float,
                  min_cosine: float, error_quantile: float, min_argmax: float, runtime_runner: BaseRunner | None = None,
                  runtime: str = "onnxruntime", images: np.ndarray | None = None,
                  images_source: str = "") -> dict:
    """Compare an artifact with the PyTorch reference on seeded inputs, or on the first of
    `images` (a build's evaluation images) when given.

    Real images are preferred where a build has them: on standard-normal noise a trained
    model's token scores can nearly tie (gaps of 1e-5 relative), and a discrete choice (a
    top-k or an argmax over scores) may then go either way between two runtimes' roundings,
    which says nothing about the export. On its own data the gaps are orders larger.

    Passes when, for every output, polygraphy's check holds at `error_quantile` (that quantile
    of |diff| is <= atol, or of the relative error <= rtol), the cosine similarity is at least
    `min_cosine`, and for segmentation logits the argmax agrees on at least `min_argmax` of
    the pixels. A quantile rather than the maximum: top-k reconstruction is discontinuous where
    the k-th and (k+1)-th distances nearly tie, and two runtimes' float rounding may pick
    differently there; the report keeps the maximum and the share of such elements.
    """
    runner = runtime_runner or OnnxrtRunner(
        SessionFromOnnx(str(onnx_path), providers=["CPUExecutionProvider"]), name=runtime)
    torch_runner = TorchRunner(reference, input_shape, output_names)
    data = image_inputs(images, input_shape, samples) if images is not None else []
    if data:
        inputs = f"the first {len(data) * input_shape[0]} images of {images_source}"
    else:
        data = seeded_inputs(input_shape, seed, samples)
        inputs = f"{samples} seeded standard-normal samples (seed {seed})"
    results = Comparator.run([torch_runner, runner], data_loader=data)
    accuracy = Comparator.compare_accuracy(
        results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol, check_shapes=True,
                                                check_error_stat="quantile",
                                                error_quantile=error_quantile))
    tolerance_ok = bool(accuracy)
    axis = 1 if output_kind == "segmentation" else None
    ref_iters, run_iters = results[torch_runner.name], results[runner.name]
    outputs = {}
    for name in output_names:
        ref = np.concatenate([np.asarray(it[name]) for it in ref_iters])
        out = np.concatenate([np.asarray(it[name]) for it in run_iters])
        if ref.shape != out.shape:
            outputs[name] = {"shape_reference": list(ref.shape), "shape_runtime": list(out.shape)}
            tolerance_ok = False
            continue
        outputs[name] = error_metrics(ref, out, axis, atol, rtol)
    cosine_ok = all(o.get("cosine", -1.0) >= min_cosine for o in outputs.values())
    argmax_ok = all((o.get("argmax_agreement") or 1.0) >= min_argmax for o in outputs.values())
    return {
        "runtime": runtime, "artifact": Path(onnx_path).name,
        "passed": tolerance_ok and cosine_ok and argmax_ok,
        "tolerances": {"atol": atol, "rtol": rtol, "error_quantile": error_quantile,
                       "min_cosine": min_cosine, "min_argmax_agreement": min_argmax},
        "samples": len(data), "seed": seed, "inputs": inputs, "outputs": outputs,
    }
