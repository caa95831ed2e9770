"""inputs.json and reference.json: a build's validation inputs and PyTorch outputs in
polygraphy's own formats, so any runtime can be compared with the reference by `polygraphy run`
without this package (e.g. the engine on the GPU host).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from polygraphy.comparator import Comparator
from polygraphy.json import save_json

from .trt.engine import PLUGIN_LIBRARY
from .validate import TorchRunner, feeds_for

INPUTS = "inputs.json"
REFERENCE = "reference.json"


def validation_feeds(shape, entry, data, name: str) -> list[dict]:
    """The feeds that validation `entry` compared on: the first eval images, else seeded noise."""
    return feeds_for(shape, entry.seed, entry.samples, data, name)[0]


def polygraphy_command(
    model: str, runtime: str, tolerances: dict, plugins: str | None = None, engine: bool = False
) -> str:
    """`polygraphy run` comparing `model` (in the build folder) with reference.json at the
    build's tolerances; the 99% quantile rule is the one the report's verdicts use."""
    cmd = ["polygraphy", "run", model, runtime]
    if engine:
        cmd += ["--model-type", "engine"]
    if plugins:
        cmd += ["--plugins", plugins]
    cmd += [
        "--load-inputs",
        INPUTS,
        "--load-outputs",
        REFERENCE,
        "--atol",
        str(tolerances["atol"]),
        "--rtol",
        str(tolerances["rtol"]),
        "--check-error-stat",
        "quantile",
        "--error-quantile",
        str(tolerances["error_quantile"]),
    ]
    return " ".join(shlex.quote(c) for c in cmd)


def commands(record, settings) -> list[dict]:
    """The commands to print in report.md: ONNX Runtime on model.onnx, TensorRT on the engine's
    source ONNX and, once it exists, on the engine itself; each at the tolerances its artifact
    was validated with (a half-precision one is held to looser numbers)."""
    onnx = record.onnx
    onnxrt = polygraphy_command(
        onnx.file, "--onnxrt", record.validation_of(onnx).tolerances.to_dict()
    )
    source = record.engine_source()
    trt_tol = record.validation_of(source).tolerances.to_dict()
    plugins = None
    if record.plugin_graph is not None:  # the engine is built with the plugin library
        plugins = settings.plugin_library or f"path/to/{PLUGIN_LIBRARY}"
    engine_file = record.engine_file.file if record.engine_file else "model.engine"
    engine = polygraphy_command(engine_file, "--trt", trt_tol, plugins, engine=True)
    return [
        {
            "runtime": "onnxrt",
            "what": "ONNX Runtime (any ONNX of the same model)",
            "command": onnxrt,
        },
        {
            "runtime": "trt",
            "what": "TensorRT on a GPU host, engine built by polygraphy",
            "command": polygraphy_command(source.file, "--trt", trt_tol, plugins),
        },
        {
            "runtime": "trt-engine",
            "what": "a saved engine (`vitexport engine` or build_engine.sh)",
            "command": engine,
        },
    ]


def write_comparison_data(folder: Path, reduced, shape, settings, data, record) -> None:
    """Write inputs.json and reference.json into `folder`, record them as artifacts (so they
    are hashed) and the polygraphy commands in the record."""
    name = reduced.model.input_name
    feeds = validation_feeds(shape, record.validation_of(record.onnx), data, name)
    runner = TorchRunner(reduced, shape, reduced.model.output_names, "pytorch", name)
    results = Comparator.run([runner], data_loader=feeds)
    save_json(feeds, str(Path(folder) / INPUTS))
    results.save(str(Path(folder) / REFERENCE))
    record.add("polygraphy_inputs", INPUTS)
    record.add("polygraphy_reference", REFERENCE)
    record.polygraphy = {
        "note": f"{INPUTS} holds the validation inputs and {REFERENCE} the PyTorch outputs, in "
        "polygraphy's JSON formats; run the commands in this folder.",
        "commands": commands(record, settings),
    }
