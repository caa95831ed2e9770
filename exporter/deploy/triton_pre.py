"""Triton python-backend model `<name>_pre`: an image of any size -> the model's windows.

Copied as-is into `<repo>/<name>_pre/1/model.py` by `vitexport deploy triton`, beside
`tiling.py` and `triton_io.py` (numpy only). Input `image`: uint8 [H, W, 3]. Outputs: `tiles`
float32 [N, 3, h, w] normalised with the model's own mean and std, `origins` int32 [N, 2] and
`size` int32 [2] for `<name>_post`. Window, stride, normalisation and the most windows one
image may need (the model's max_batch_size) are parameters of config.pbtxt.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiling.py, triton_io.py beside

import numpy as np  # noqa: E402
from tiling import TilingError, count, norm_value, tile  # noqa: E402
from triton_io import error_response, to_numpy, to_tensor  # noqa: E402

import triton_python_backend_utils as pb_utils  # noqa: E402


def pair(text: str) -> tuple[int, int]:
    h, w = text.split("x")
    return int(h), int(w)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        self.window, self.stride = pair(params["window"]), pair(params["stride"])
        self.mean, self.std = norm_value(params["mean"]), norm_value(params["std"])
        self.max_windows = int(params["max_windows"])

    def check_size(self, shape) -> None:
        n = count(shape[:2], self.window, self.stride) if len(shape) == 3 else 0
        if n > self.max_windows:
            raise TilingError(
                f"image of {shape[0]} x {shape[1]} pixels needs {n} windows of "
                f"{self.window[0]}x{self.window[1]} at stride {self.stride[0]}x{self.stride[1]}; "
                f"allowed: at most {self.max_windows} (a smaller image, or deploy triton "
                "--max-batch or --stride)"
            )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, "image")
                self.check_size(tensor.shape())  # before copying a huge image
                image = to_numpy(tensor)
                tiles, origins = tile(
                    image, self.window, self.stride, self.mean, self.std, self.max_windows
                )
            except (TilingError, ValueError) as err:
                responses.append(error_response(str(err)))
                continue
            size = np.array(image.shape[:2], np.int32)
            out = [to_tensor("tiles", tiles), to_tensor("origins", origins)]
            responses.append(pb_utils.InferenceResponse(out + [to_tensor("size", size)]))
        return responses
