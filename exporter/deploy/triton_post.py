"""Triton python-backend model `<name>_post`: window logits -> a class map at the image's size.

Copied as-is into `<repo>/<name>_post/1/model.py` by `vitexport deploy triton`, beside
`tiling.py` and `triton_io.py` (numpy only). Inputs: `logits` [N, C, h, w] (the model's output
for the windows of `<name>_pre`), `origins` int32 [N, 2], `size` int32 [2]. Outputs: `classes`
uint8 [H, W] (the class of the overlap-averaged logits) and, when config.pbtxt's parameter
`confidences` is "true", `confidences` float32 [C, H, W] (their softmax).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiling.py, triton_io.py beside

from tiling import TilingError, classes, softmax, stitch  # noqa: E402
from triton_io import error_response, input_of, to_tensor  # noqa: E402

import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        self.confidences = params.get("confidences") == "true"

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                scores = stitch(
                    input_of(request, "logits"),
                    input_of(request, "origins"),
                    input_of(request, "size"),
                )
                out = [to_tensor("classes", classes(scores))]
            except (TilingError, ValueError) as err:
                responses.append(error_response(str(err)))
                continue
            if self.confidences:
                out.append(to_tensor("confidences", softmax(scores)))
            responses.append(pb_utils.InferenceResponse(out))
        return responses
