"""The pipeline of `vitexport build`: load -> patch -> export -> lint -> validate -> report.

Everything is written into a temporary folder beside the output folder and renamed at the
end, so a failed or interrupted build leaves nothing half-written behind.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from .accuracy import accuracy_entry, evaluate_onnx
from .bench import export_baseline
from .config import BuildSettings
from .errors import InputError
from .folder import OutputFolder, file_hashes, read_folder, write_beside, write_report
from .limits import check_build_memory, expected_size
from .methods import ReducedModel
from .models import weights_of
from .onnx.export import export_onnx, save_onnx
from .onnx.fuse import optimize_onnx
from .onnx.lint import errors_of, lint, lint_folder
from .onnx.plugins import PLUGIN_METHODS, check_family, use_plugins
from .polygraphy_data import write_comparison_data
from .reference import eval_set, input_shape, patched_model
from .trt.engine import (
    PLUGIN_LIBRARY,
    EngineSettings,
    TensorRTUnavailable,
    build_engine,
    shapes_of,
    write_build_script,
)
from .runtime import half_precision_runner, plugin_graph_runner, tensorrt_runner
from .timing import speed_stage
from .validate import Tolerances, feeds_for, validate_artifact

Progress = Callable[[str], None]
VALIDATION_SAMPLES = 2


class ExportRuleError(Exception):
    """The exported graph breaks an export rule (a forbidden op); the message names it."""


def check_rules(findings: dict) -> list[dict]:
    """Raise ExportRuleError on any lint error; return every finding for the report."""
    bad = [f"{name}: {f}" for name, fs in findings.items() for f in errors_of(fs)]
    if bad:
        raise ExportRuleError("; ".join(bad[:5]))
    return [{"artifact": name, **f.to_dict()} for name, fs in findings.items() for f in fs]


def lint_existing(out: Path, rehash: bool = False) -> dict:
    """`vitexport lint OUT`: lint every ONNX artifact again; the findings go to lint.json beside
    the report, which stays as built."""
    report, _ = read_folder(out, rehash)
    findings = lint_folder(out, report["artifacts"])
    report["lint"] = [{"artifact": n, **f.to_dict()} for n, fs in findings.items() for f in fs]
    write_beside(out, "lint.json", {"lint": report["lint"]})
    return report


def _quiet(_: str) -> None:
    pass


@contextmanager
def _step(progress: Progress, text: str):
    start = time.perf_counter()
    progress(f"{text} ...")
    yield
    progress(f"{text} done ({time.perf_counter() - start:.1f}s)")


def build(
    settings: BuildSettings,
    out: Path,
    force: bool = False,
    progress: Progress = _quiet,
    bench: bool = True,
    max_memory: int | None = None,
) -> dict:
    """Run the pipeline; return the report (its validation entries say pass or fail).
    `bench`: time model.onnx against the accuracy stage's baseline.onnx when there is one."""
    folder = OutputFolder(out, force)  # a bad --out is refused before any work
    out = folder.path
    check_settings(settings, out, force)  # before any slow work
    check_build_memory(settings, max_memory)  # before the model is allocated at that size
    with _step(progress, f"load {settings.model.name} and apply {settings.method}"):
        reduced = patched_model(settings)
    if settings.plugins:
        check_family(settings.method, reduced.model.family)
    shape = input_shape(settings, reduced.model)
    data = eval_set(settings, reduced.model)  # a bad --eval-data fails before anything is written
    tmp = folder.stage(expected_size(reduced.model, settings))
    getattr(progress, "release", _quiet)(out)  # the checks are over: held progress lines may show
    try:
        with _step(progress, "export ONNX (torch.onnx, dynamo)"):
            proto = export_onnx(
                reduced, tmp / "model.onnx", shape, settings.opset, settings.dynamic_batch
            )
        check_rules({"model.onnx": lint(proto)})
        report = base_report(settings, reduced, shape)
        report["artifacts"] = {"onnx": "model.onnx"}
        if settings.plugins:
            with _step(progress, "replace irregular subgraphs by TensorRT plugin nodes"):
                write_plugin_graph(proto, tmp / "model.plugins.onnx", settings.method)
            report["artifacts"]["onnx_plugins"] = "model.plugins.onnx"
        if settings.optimize:
            with _step(progress, "fuse attention and optimise for ONNX Runtime"):
                optimize_onnx(tmp / "model.onnx", tmp / "model.optimized.onnx")
            report["artifacts"]["onnx_optimized"] = "model.optimized.onnx"
        if settings.precision == "fp16":
            with _step(progress, "export the half-precision model (token ops stay float32)"):
                export_half(reduced, tmp / "model.fp16.onnx", shape, settings)
            report["artifacts"]["onnx_fp16"] = "model.fp16.onnx"
        report["lint"] = check_rules(lint_folder(tmp, report["artifacts"]))
        report["engine"] = engine_stage(settings, tmp, report, shape, progress)
        with _step(progress, "validate the artifacts against PyTorch"):
            report["validation"] = run_validation(
                settings, reduced, tmp, report["artifacts"], shape, data
            )
        write_comparison_data(tmp, reduced, shape, settings, data, report)  # polygraphy's files
        if data is not None:
            report["accuracy"] = accuracy_stage(
                settings, reduced, tmp, report, shape, data, progress
            )
        if bench and "baseline_onnx" in report["artifacts"]:
            with _step(progress, "time model.onnx against baseline.onnx"):
                report["bench"] = speed_stage(
                    settings, tmp, report, progress, data, reduced.method.cut
                )
        report["hashes"] = file_hashes(tmp, report["artifacts"].values())
        write_report(tmp, report)
        folder.commit()
    except BaseException:
        folder.discard()
        raise
    return report


def accuracy_stage(
    settings: BuildSettings,
    reduced: ReducedModel,
    folder: Path,
    report: dict,
    shape,
    data,
    progress: Progress,
) -> dict:
    """mIoU of baseline.onnx (`--method none`) and model.onnx in ONNX Runtime, and retention."""
    classes = reduced.model.num_classes
    batch = None if settings.dynamic_batch else settings.batch
    with _step(progress, f"evaluate mIoU on {len(data)} images in ONNX Runtime"):
        red = evaluate_onnx(
            folder / report["artifacts"]["onnx"], data, classes, batch, progress, "reduced"
        )
        if settings.method == "none":
            base = red  # the model is its own baseline
        else:
            path = export_baseline(folder, settings, shape, report, progress=progress)
            base = evaluate_onnx(path, data, classes, batch, progress, "baseline")
    return accuracy_entry(base, red, data.source)


def check_settings(settings: BuildSettings, out: Path, force: bool) -> None:
    """Refuse the flags that can be judged without building anything."""
    if settings.plugins and settings.method not in PLUGIN_METHODS:
        raise InputError(
            "--plugins",
            "",
            f"only with --method {'|'.join(PLUGIN_METHODS)}",
            f"--method {settings.method} has no plugin op",
        )
    engine_settings(settings).check()


def base_report(settings: BuildSettings, reduced: ReducedModel, shape) -> dict:
    model, method = reduced.model, reduced.method
    return {
        "tool": "vitexport",
        "model": {
            "name": settings.model.name,
            "weights": weights_of(settings.model),
            "input_shape": list(shape),
            "dynamic_batch": settings.dynamic_batch,
            "layout": {
                "grid": list(model.layout.grid),
                "num_prefix": model.layout.num_prefix,
                "dim": model.layout.dim,
                "depth": model.layout.depth,
            },
            "output_kind": model.output_kind,
            "outputs": list(model.output_names),
        },
        "method": {"name": settings.method, "config": method.config()},
        "tokens": {"full": method.full_tokens(), "reduced": method.reduced_tokens()},
        "settings": settings.to_dict(),
    }


def write_plugin_graph(proto, path: Path, method: str) -> None:
    """model.plugins.onnx: the portable graph with each irregular subgraph as one plugin node."""
    save_onnx(use_plugins(proto, method), path)


# A half-precision model is held to looser numbers than float32 (10-bit mantissa): the
# bounds of Tolerances.half(), read off the strictest tolerances.
FP16_TOLERANCES = {
    k: getattr(Tolerances(0.0, 0.0, 1.0, 1.0, 1.0).half(), k)
    for k in ("atol", "rtol", "min_cosine", "min_argmax")
}


def export_half(reduced: ReducedModel, path: Path, shape, settings: BuildSettings) -> None:
    """model.fp16.onnx: the model's weights and activations in float16, the method's token
    operations (own buffers, float32 casts inside) in float32. TensorRT networks are strongly
    typed, so this file is what an fp16 engine is built from."""
    half = copy.deepcopy(reduced)
    half.model.half()
    export_onnx(half, path, shape, settings.opset, settings.dynamic_batch, dtype=torch.float16)


def engine_settings(settings: BuildSettings) -> EngineSettings:
    lib = settings.plugin_library or (PLUGIN_LIBRARY if settings.plugins else None)
    return EngineSettings(
        precision=settings.precision,
        workspace_mib=settings.workspace_mib,
        opt_level=settings.opt_level,
        plugin_library=lib,
    )


def engine_stage(settings: BuildSettings, folder: Path, report: dict, shape, progress) -> dict:
    """Write build_engine.sh always; build the engine when asked and TensorRT is importable."""
    eng = engine_settings(settings)
    eng.check()
    arts = report["artifacts"]
    source = arts.get("onnx_fp16") or arts.get("onnx_plugins") or arts["onnx"]
    profile = shapes_of(shape, settings.dynamic_batch)
    write_build_script(folder, source, eng, profile)
    report["artifacts"]["build_script"] = "build_engine.sh"
    result = {
        "requested": settings.engine,
        "built": False,
        "source": source,
        "precision": eng.precision,
    }
    if settings.engine:
        try:
            with _step(progress, "build TensorRT engine (polygraphy)"):
                build_engine(folder / source, folder / "model.engine", eng, profile)
            report["artifacts"]["engine"] = "model.engine"
            result["built"] = True
        except TensorRTUnavailable as err:
            progress(f"engine skipped: {err}")
            result["skipped"] = str(err)
    return result


def run_validation(
    settings: BuildSettings, reduced: ReducedModel, folder: Path, artifacts: dict, shape, data=None
) -> list[dict]:
    """Each artifact against the PyTorch reference, on the build's first evaluation images
    when it has an eval set (`data`), else on seeded noise."""
    feeds, inputs = feeds_for(shape, settings.seed, VALIDATION_SAMPLES, data)
    entries = []
    for key, runtime in (
        ("onnx", "onnxruntime"),
        ("onnx_optimized", "onnxruntime-optimized"),
        ("onnx_plugins", "onnxruntime+plugins"),
        ("onnx_fp16", "onnxruntime-fp16"),
        ("engine", "tensorrt"),
    ):
        if key not in artifacts:
            continue
        path = folder / artifacts[key]
        runner = None
        tol = Tolerances.of(settings)
        if key == "onnx_plugins":
            runner = plugin_graph_runner(path, runtime)
        elif key == "onnx_fp16":
            runner = half_precision_runner(path, shape, reduced.model.output_names, runtime)
            tol = tol.half()
        elif key == "engine":
            runner = tensorrt_runner(path, runtime)
        result = validate_artifact(
            reduced, path, feeds, inputs, tol, settings.seed, runner, runtime
        )
        entries.append(result.to_dict())
    return entries


def revalidate(
    out: Path, progress: Progress = _quiet, atol=None, rtol=None, rehash: bool = False
) -> dict:
    """`vitexport validate OUT`: rebuild the reference from report.json and compare again; the
    result goes to validation.json beside the report, which stays as built."""
    out = Path(out)
    report, settings = read_folder(out, rehash)
    if atol is not None:
        settings.atol = atol
    if rtol is not None:
        settings.rtol = rtol
    with _step(progress, "rebuild the PyTorch reference"):
        reduced = patched_model(settings)
    shape = tuple(report["model"]["input_shape"])
    data = eval_set(settings, reduced.model)
    with _step(progress, "validate artifacts against PyTorch"):
        report["validation"] = run_validation(
            settings, reduced, out, report["artifacts"], shape, data
        )
    write_beside(out, "validation.json", {"validation": report["validation"]})
    report.pop("accuracy", None)  # measured at build time, not by this run
    return report


def engine_for_folder(
    out: Path,
    precision: str = "fp32",
    workspace_mib=None,
    opt_level=None,
    plugin_library=None,
    progress: Progress = _quiet,
    rehash: bool = False,
) -> dict:
    """`vitexport engine OUT`: build (and validate) the engine of an existing output folder."""
    out = Path(out)
    report, settings = read_folder(out, rehash)
    settings.engine, settings.precision = True, precision
    settings.workspace_mib, settings.opt_level = workspace_mib, opt_level
    settings.plugin_library = plugin_library or settings.plugin_library
    shape = tuple(report["model"]["input_shape"])
    report["engine"] = engine_stage(settings, out, report, shape, progress)
    if report["engine"]["built"]:
        with _step(progress, "validate the engine against PyTorch"):
            reduced = patched_model(settings)
            keep = {"engine": report["artifacts"]["engine"]}
            report["validation"] = [v for v in report["validation"] if v["runtime"] != "tensorrt"]
            report["validation"] += run_validation(settings, reduced, out, keep, shape)
    report["hashes"] = file_hashes(out, report["artifacts"].values())  # build_engine.sh is new too
    write_report(out, report)
    return report


def passed(report: dict) -> bool:
    return all(v["passed"] for v in report.get("validation", []))
