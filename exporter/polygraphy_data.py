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


def validation_feeds(shape, entry: dict, data) -> list[dict]:
    """The feeds that validation `entry` compared on: the first eval images, else seeded noise."""
    return feeds_for(shape, entry["seed"], entry["samples"], data)[0]


def _entry(report: dict, artifact: str) -> dict:
    return next(v for v in report["validation"] if v["artifact"] == artifact)


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


def commands(report: dict, settings) -> list[dict]:
    """The commands to print in report.md: ONNX Runtime on model.onnx, TensorRT on the engine's
    source ONNX and, once it exists, on the engine itself; each at the tolerances its artifact
    was validated with (a half-precision one is held to looser numbers)."""
    arts = report["artifacts"]
    onnxrt = polygraphy_command(
        arts["onnx"], "--onnxrt", _entry(report, arts["onnx"])["tolerances"]
    )
    source = arts.get("onnx_fp16") or arts.get("onnx_plugins") or arts["onnx"]
    trt_tol = _entry(report, source)["tolerances"]
    plugins = None
    if "onnx_plugins" in arts:
        plugins = settings.plugin_library or f"path/to/{PLUGIN_LIBRARY}"
    engine = polygraphy_command(
        arts.get("engine", "model.engine"), "--trt", trt_tol, plugins, engine=True
    )
    return [
        {
            "runtime": "onnxrt",
            "what": "ONNX Runtime (any ONNX of the same model)",
            "command": onnxrt,
        },
        {
            "runtime": "trt",
            "what": "TensorRT on a GPU host, engine built by polygraphy",
            "command": polygraphy_command(source, "--trt", trt_tol, plugins),
        },
        {
            "runtime": "trt-engine",
            "what": "a saved engine (`vitexport engine` or build_engine.sh)",
            "command": engine,
        },
    ]


def write_comparison_data(folder: Path, reduced, shape, settings, data, report: dict) -> None:
    """Write inputs.json and reference.json into `folder`, record them as artifacts (so they
    are hashed) and the polygraphy commands in the report."""
    feeds = validation_feeds(shape, _entry(report, report["artifacts"]["onnx"]), data)
    runner = TorchRunner(reduced, shape, reduced.model.output_names, name="pytorch")
    results = Comparator.run([runner], data_loader=feeds)
    save_json(feeds, str(Path(folder) / INPUTS))
    results.save(str(Path(folder) / REFERENCE))
    report["artifacts"]["polygraphy_inputs"] = INPUTS
    report["artifacts"]["polygraphy_reference"] = REFERENCE
    report["polygraphy"] = {
        "note": f"{INPUTS} holds the validation inputs and {REFERENCE} the PyTorch outputs, in "
        "polygraphy's JSON formats; run the commands in this folder.",
        "commands": commands(report, settings),
    }
