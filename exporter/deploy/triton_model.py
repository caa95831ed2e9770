"""Triton python-backend model: runs a vitexport ONNX artifact with ONNX Runtime on the CPU.

Copied as-is into `<repo>/<name>_python/1/model.py` by `vitexport deploy triton`. The
artifact's file name comes from the model's config.pbtxt (parameter `onnx`). A graph holding
TensorRT plugin nodes (`plugin_nodes: "true"`) runs with vitexport's CPU implementations of
those plugins, so the `python3` that Triton's stub finds first on PATH must have vitexport
installed; otherwise numpy and onnxruntime are enough.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class _DLPack:
    """Hands a Triton tensor to numpy through DLPack. Tensors cross the stub by DLPack both
    ways: the stub's own numpy bridge (as_numpy, Tensor(name, array)) is compiled against
    numpy 1's array layout and, under numpy 2, reads inputs as zeros and sends empty outputs."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, **kwargs):
        return self.tensor.to_dlpack()

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


def to_numpy(tensor) -> np.ndarray:
    return np.from_dlpack(_DLPack(tensor)).copy()


def to_tensor(name: str, array: np.ndarray):
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / params["onnx"]
        self.run = None
        if params.get("plugin_nodes") == "true":
            # optional: only plugin graphs need onnx and vitexport in the stub's python
            import onnx
            from exporter.onnx.plugin_ops import (
                ort_extensions_available,
                ort_session,
                run_plugin_graph,
            )

            proto = onnx.load(str(path))
            if not ort_extensions_available():  # the ONNX reference evaluator: slow but exact
                self.run = lambda feeds: run_plugin_graph(proto, feeds, "reference")
                self.inputs = [i.name for i in proto.graph.input]
                self.outputs = [o.name for o in proto.graph.output]
                return
            session = ort_session(proto)
        else:
            options = ort.SessionOptions()
            threads = int(params.get("intra_op_threads", "0"))
            if threads:
                options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]
        self.run = lambda feeds: session.run(self.outputs, feeds)

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {
                name: to_numpy(pb_utils.get_input_tensor_by_name(request, name))
                for name in self.inputs
            }
            outs = self.run(feeds)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[to_tensor(n, o) for n, o in zip(self.outputs, outs)]
                )
            )
        return responses
