"""Where exported artifacts run: ONNX Runtime sessions and polygraphy runners for each artifact
kind (plain ONNX, a graph with plugin nodes, a float16 graph, a TensorRT engine).

The lowest layer that touches ONNX Runtime; validation, accuracy and timing sit above it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.common import BytesFromPath
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.backend.trt import EngineFromBytes, TrtRunner
from polygraphy.common import TensorMetadata

from .onnx.plugin_ops import ort_extensions_available, ort_session, run_plugin_graph


def onnx_session(
    path: Path, threads: int | None = None, flush_denormals: bool = False, profile=None
) -> ort.InferenceSession:
    """A CPU session of the ONNX file at `path` (`threads`: intra-op threads, None = ORT's).

    `flush_denormals`: treat denormal floats as zero, as timing does: trained attention
    produces many (on the digits model 4% of the baseline's attention weights after block 3
    on noise input, 0.7% of the reduced model's), and CPUs that take a slow path for them
    would time the two models unequally. `profile`: the profiler's file prefix, when given."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if flush_denormals:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def input_name(session) -> str:
    """The name of a session's (single) image input."""
    return session.get_inputs()[0].name


class FunctionRunner(BaseRunner):
    """Runs `fn(feed_dict) -> list of arrays` (e.g. the ONNX reference evaluator)."""

    def __init__(self, fn, input_name: str, input_shape, output_names, name):
        super().__init__(name=name)
        self.fn, self.input_name = fn, input_name
        self.input_shape, self.output_names = tuple(input_shape), list(output_names)

    def get_input_metadata_impl(self):
        return TensorMetadata().add(self.input_name, np.float32, self.input_shape)

    def infer_impl(self, feed_dict):
        start = time.perf_counter()
        outs = self.fn(dict(feed_dict))
        self.inference_time = time.perf_counter() - start
        return OrderedDict(zip(self.output_names, outs))


def plugin_graph_runner(path: Path, name: str) -> BaseRunner:
    """A runner for a graph with plugin nodes, backed by their CPU implementations."""
    proto = onnx.load(str(path))
    if ort_extensions_available():
        return OnnxrtRunner(lambda: ort_session(proto), name=name)
    outputs = [o.name for o in proto.graph.output]
    image = proto.graph.input[0]
    shape = [d.dim_value for d in image.type.tensor_type.shape.dim]
    return FunctionRunner(
        lambda feeds: run_plugin_graph(proto, feeds, "reference"), image.name, shape, outputs, name
    )


def half_precision_runner(path: Path, input_shape, output_names, name: str) -> BaseRunner:
    """Runs a float16 ONNX in ONNX Runtime on the same float32 inputs (cast in, cast out)."""
    session = onnx_session(path)
    image = input_name(session)

    def run(feeds):
        outs = session.run(None, {image: feeds[image].astype(np.float16)})
        return [o.astype(np.float32) for o in outs]

    return FunctionRunner(run, image, input_shape, output_names, name)


def tensorrt_runner(path: Path, name: str) -> BaseRunner:
    """Runs a serialized TensorRT engine (polygraphy imports TensorRT only when it is run)."""
    return TrtRunner(EngineFromBytes(BytesFromPath(str(path))), name=name)


class EngineSession:
    """A TensorRT engine with the two calls of an ONNX Runtime session that timing uses."""

    def __init__(self, path: Path, input_name: str):
        self.runner, self.name = tensorrt_runner(path, path.name), input_name
        self.runner.activate()

    def get_inputs(self):
        return [type("Input", (), {"name": self.name})()]

    def run(self, _outputs, feed):
        return self.runner.infer(feed)


def _plain(path: Path, input_shape, output_names, name: str) -> None:
    return None  # validation runs a plain ONNX itself, with its decisions exposed


# The runner of each runtime an artifact names (record.Artifact.runtime).
RUNNERS = {
    "onnxruntime": _plain,
    "onnxruntime-optimized": _plain,  # ONNX Runtime's own ops: plain to ONNX Runtime
    "onnxruntime+plugins": lambda path, shape, names, name: plugin_graph_runner(path, name),
    "onnxruntime-fp16": half_precision_runner,
    "tensorrt": lambda path, shape, names, name: tensorrt_runner(path, name),
}


def runner_for(artifact, path: Path, input_shape, output_names) -> BaseRunner | None:
    """The runner of `artifact` (a record.Artifact) at `path`; None: a plain ONNX graph, run
    by validation itself."""
    return RUNNERS[artifact.runtime](path, input_shape, output_names, artifact.runtime)
