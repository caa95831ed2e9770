"""Triton python-backend model: runs a vitexport ONNX artifact with ONNX Runtime on the CPU.

Copied as-is into `<repo>/<name>_python/1/model.py` by `vitexport deploy triton`, beside
`triton_io.py`. The artifact's file name comes from the model's config.pbtxt (parameter `onnx`).
The config is batched (`max_batch_size` > 0) whatever the artifact's batch: the requests of one
`execute` call (Triton's dynamic batcher gathers them) are concatenated and run in chunks of the
artifact's own batch (a fixed-batch export; the last chunk padded) or at once (a dynamic one).
A graph holding TensorRT plugin nodes (`plugin_nodes: "true"`) runs with vitexport's CPU
implementations of those plugins, so the `python3` that Triton's stub finds first on PATH must
have vitexport installed; otherwise numpy and onnxruntime are enough.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # triton_io.py lies beside this file

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from triton_io import error_response, input_of, to_tensor  # noqa: E402

import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / params["onnx"]
        if params.get("plugin_nodes") == "true":
            # optional: only plugin graphs need onnx and vitexport in the stub's python
            import onnx
            from exporter.onnx.plugin_ops import (
                ort_extensions_available,
                ort_session,
                run_plugin_graph,
            )

            proto = onnx.load(str(path))
            self.inputs = [i.name for i in proto.graph.input]
            self.outputs = [o.name for o in proto.graph.output]
            dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
            self.batch = dim.dim_value if dim.HasField("dim_value") else None
            if not ort_extensions_available():  # the ONNX reference evaluator: slow but exact
                self.run = lambda feeds: run_plugin_graph(proto, feeds, "reference")
                return
            session = ort_session(proto)
        else:
            options = ort.SessionOptions()
            threads = int(params.get("intra_op_threads", "0"))
            if threads:
                options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            first = session.get_inputs()[0].shape[0]
            self.batch = first if isinstance(first, int) else None
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]
        self.run = lambda feeds: session.run(self.outputs, feeds)

    def run_batch(self, feeds: dict) -> list:
        """Run concatenated inputs: at once, or in chunks of the artifact's fixed batch."""
        n = len(next(iter(feeds.values())))
        if self.batch is None or self.batch == n:
            return self.run(feeds)
        parts = []
        for start in range(0, n, self.batch):
            chunk = {}
            for k, v in feeds.items():
                c = v[start : start + self.batch]
                if len(c) < self.batch:  # pad the last chunk with its own last row
                    c = np.concatenate([c, np.repeat(c[-1:], self.batch - len(c), 0)])
                chunk[k] = c
            parts.append(self.run(chunk))
        return [np.concatenate([p[i] for p in parts])[:n] for i in range(len(self.outputs))]

    def execute(self, requests):
        feeds, sizes, bad = {n: [] for n in self.inputs}, [], {}
        for i, request in enumerate(requests):
            try:
                got = {n: input_of(request, n) for n in self.inputs}
            except ValueError as err:
                bad[i] = str(err)
                continue
            for n in self.inputs:
                feeds[n].append(got[n])
            sizes.append(len(got[self.inputs[0]]))
        outs = []
        if sizes:
            try:
                outs = self.run_batch({n: np.concatenate(v) for n, v in feeds.items()})
            except Exception as err:  # the client gets the runtime's message, the server goes on
                return [error_response(f"{type(err).__name__}: {err}") for _ in requests]
        responses, at = [], 0
        for i in range(len(requests)):
            if i in bad:
                responses.append(error_response(bad[i]))
                continue
            n = sizes.pop(0)
            tensors = [to_tensor(name, o[at : at + n]) for name, o in zip(self.outputs, outs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            at += n
        return responses
