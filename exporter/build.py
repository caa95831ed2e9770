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
from .folder import (
    OutputFolder,
    file_hashes,
    read_json,
    read_record,
    write_beside,
    write_report,
)
from .limits import check_build_memory, expected_size
from .methods import baseline_of
from .methods.base import ReducedModel
from .models import weights_of
from .onnx.export import export_onnx, save_onnx
from .onnx.fuse import optimize_onnx
from .onnx.lint import errors_of, lint, lint_folder
from .onnx.plugins import PLUGIN_METHODS, check_family, use_plugins
from .polygraphy_data import write_comparison_data
from .progress import Ready, StepDone
from .record import Accuracy, Artifact, BuildRecord, EngineInfo, ModelInfo, Timing, Validation
from .reference import eval_set, input_shape, patched_model
from .runtime import runner_for
from .timing import speed_stage
from .trt.engine import (
    TensorRTUnavailable,
    build_engine,
    engine_settings,
    shapes_of,
    tensorrt_version,
    write_build_script,
)
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


def lint_existing(out: Path, rehash: bool = False) -> BuildRecord:
    """`vitexport lint OUT`: lint every ONNX artifact again; the findings go to lint.json beside
    the report, which stays as built."""
    record = read_record(out, rehash)
    findings = lint_folder(out, record.graphs())
    record.lint = [{"artifact": n, **f.to_dict()} for n, fs in findings.items() for f in fs]
    _keep_beside(out, "lint.json", {"lint": record.lint}, record)
    return record


def _keep_beside(out: Path, name: str, data: dict, record: BuildRecord) -> None:
    """Write a read-only command's result beside the report; on a folder that cannot take it
    (read-only, full) the result is still returned, with why it was not kept in
    `record.unsaved` (the command prints it after its verdict)."""
    try:
        write_beside(out, name, data)
    except OSError as err:
        record.unsaved = f"{Path(out) / name} not written: {err.strerror or err}"


def _quiet(_: str) -> None:
    pass


@contextmanager
def _step(progress: Progress, text: str):
    start = time.perf_counter()
    progress(f"{text} ...")
    yield
    progress(StepDone(f"{text} done ({time.perf_counter() - start:.1f}s)"))


def build(
    settings: BuildSettings,
    out: Path,
    force: bool = False,
    progress: Progress = _quiet,
    bench: bool = True,
    max_memory: int | None = None,
) -> BuildRecord:
    """Run the pipeline; return the record (its validation entries say pass or fail).
    `bench`: time model.onnx against the accuracy stage's baseline.onnx when there is one."""
    folder = OutputFolder(out, force)  # a bad --out is refused before any work
    out = folder.path
    check_settings(settings)  # before any slow work
    check_build_memory(settings, max_memory)  # before the model is allocated at that size
    with _step(progress, f"load {settings.model.name} and apply {settings.method}"):
        reduced = patched_model(settings)
    if settings.plugins:
        check_family(settings.method, reduced.model.capabilities)
    shape = input_shape(settings, reduced.model)
    data = eval_set(settings, reduced.model)  # a bad --eval-data fails before anything is written
    tmp = folder.stage(expected_size(reduced.model, settings))
    progress(Ready(out))  # the checks are over: held progress lines may show
    try:
        with _step(progress, "export ONNX (torch.onnx, dynamo)"):
            proto = export_onnx(
                reduced, tmp / "model.onnx", shape, settings.opset, settings.dynamic_batch
            )
        check_rules({"model.onnx": lint(proto)})
        record = base_record(settings, reduced, shape)
        record.add("onnx", "model.onnx")
        if settings.plugins:
            with _step(progress, "replace irregular subgraphs by TensorRT plugin nodes"):
                write_plugin_graph(proto, tmp / "model.plugins.onnx", settings.method)
            record.add("onnx_plugins", "model.plugins.onnx")
        if settings.optimize:
            with _step(progress, "fuse attention and optimise for ONNX Runtime"):
                optimize_onnx(tmp / "model.onnx", tmp / "model.optimized.onnx")
            record.add("onnx_optimized", "model.optimized.onnx")
        if settings.precision == "fp16":
            with _step(progress, "export the half-precision model (token ops stay float32)"):
                export_half(reduced, tmp / "model.fp16.onnx", shape, settings)
            record.add("onnx_fp16", "model.fp16.onnx")
        record.lint = check_rules(lint_folder(tmp, record.graphs()))
        engine_stage(settings, tmp, record, shape, progress)
        with _step(progress, "validate the artifacts against PyTorch"):
            record.validation = run_validation(
                settings, reduced, tmp, record.validated(), shape, data
            )
        write_comparison_data(tmp, reduced, shape, settings, data, record)  # polygraphy's files
        baseline = baseline_of(reduced.model) if reduced.method.reduces else None
        if data is not None:
            record.accuracy = accuracy_stage(
                settings, reduced, baseline, tmp, record, shape, data, progress
            )
        if bench and record.baseline is not None:
            with _step(progress, "time model.onnx against baseline.onnx"):
                timing = speed_stage(settings, tmp, record, progress, data, reduced.method.cut)
                record.timing = None if timing is None else Timing.of(timing)
        record.set_hashes(file_hashes(tmp, record.files()))
        write_report(tmp, record)
        folder.commit()
    except BaseException:
        folder.discard()
        raise
    return record


def accuracy_stage(
    settings: BuildSettings,
    reduced: ReducedModel,
    baseline: ReducedModel | None,
    folder: Path,
    record: BuildRecord,
    shape,
    data,
    progress: Progress,
) -> Accuracy:
    """mIoU of baseline.onnx (`--method none`, from the same weights) and model.onnx in ONNX
    Runtime, and retention. `baseline` None: the model is its own baseline."""
    classes = reduced.model.num_classes
    batch = None if settings.dynamic_batch else settings.batch
    with _step(progress, f"evaluate mIoU on {len(data)} images in ONNX Runtime"):
        red = evaluate_onnx(folder / record.onnx.file, data, classes, batch, progress, "reduced")
        base = red
        if baseline is not None:
            path = export_baseline(folder, settings, shape, record, baseline, progress=progress)
            base = evaluate_onnx(path, data, classes, batch, progress, "baseline")
    return Accuracy(**accuracy_entry(base, red, data.source))


def check_settings(settings: BuildSettings) -> None:
    """Refuse the flags that can be judged without building anything."""
    if settings.plugins and settings.method not in PLUGIN_METHODS:
        raise InputError(
            "--plugins",
            "",
            f"only with --method {'|'.join(PLUGIN_METHODS)}",
            f"--method {settings.method} has no plugin op",
        )
    engine_settings(settings).check()


def base_record(settings: BuildSettings, reduced: ReducedModel, shape) -> BuildRecord:
    model, method = reduced.model, reduced.method
    return BuildRecord(
        model=ModelInfo(
            name=settings.model.name,
            weights=weights_of(settings.model),
            input_shape=tuple(shape),
            dynamic_batch=settings.dynamic_batch,
            layout={
                "grid": list(model.layout.grid),
                "num_prefix": model.layout.num_prefix,
                "dim": model.layout.dim,
                "depth": model.layout.depth,
            },
            output_kind=model.output_kind,
            outputs=list(model.output_names),
        ),
        method=settings.method,
        method_config=method.config(),
        tokens={"full": method.full_tokens(), "reduced": method.reduced_tokens()},
        settings=settings,
    )


def write_plugin_graph(proto, path: Path, method: str) -> None:
    """model.plugins.onnx: the portable graph with each irregular subgraph as one plugin node."""
    save_onnx(use_plugins(proto, method), path)


def export_half(reduced: ReducedModel, path: Path, shape, settings: BuildSettings) -> None:
    """model.fp16.onnx: the model's weights and activations in float16, the method's token
    operations (own buffers, float32 casts inside) in float32. TensorRT networks are strongly
    typed, so this file is what an fp16 engine is built from."""
    half = copy.deepcopy(reduced)
    half.model.half()
    export_onnx(half, path, shape, settings.opset, settings.dynamic_batch, dtype=torch.float16)


def engine_stage(
    settings: BuildSettings, folder: Path, record: BuildRecord, shape, progress
) -> EngineInfo:
    """Write build_engine.sh always; build the engine when asked and TensorRT is importable.
    The engine is recorded at its source's precision (an fp16 graph makes an fp16 engine)."""
    eng = engine_settings(settings)
    eng.check()
    source = record.engine_source()
    profile = shapes_of(shape, settings.dynamic_batch)
    write_build_script(folder, source.file, eng, profile)
    record.add("build_script", "build_engine.sh")
    record.engine = EngineInfo(
        requested=settings.engine, built=False, source=source.file, precision=eng.precision
    )
    if settings.engine:
        try:
            with _step(progress, "build TensorRT engine (polygraphy)"):
                build_engine(folder / source.file, folder / "model.engine", eng, profile)
            record.add_engine("model.engine")
            record.engine.built = True
        except TensorRTUnavailable as err:
            progress(f"engine skipped: {err}")
            record.engine.skipped = str(err)
    return record.engine


def run_validation(
    settings: BuildSettings,
    reduced: ReducedModel,
    folder: Path,
    artifacts: list[Artifact],
    shape,
    data=None,
) -> list[Validation]:
    """Each artifact against the PyTorch reference, on the build's first evaluation images
    when it has an eval set (`data`), else on seeded noise. The artifact says where it runs
    and at which precision: its runner and its tolerances follow from it."""
    name = reduced.model.input_name
    feeds, inputs = feeds_for(shape, settings.seed, VALIDATION_SAMPLES, data, name)
    base = Tolerances.of(settings)
    entries = []
    for art in artifacts:
        path = folder / art.file
        runner = runner_for(art, path, shape, reduced.model.output_names)
        entries.append(
            validate_artifact(
                reduced,
                path,
                feeds,
                inputs,
                art.tolerances(base),
                settings.seed,
                runner,
                art.runtime,
            )
        )
    return entries


def revalidate(
    out: Path, progress: Progress = _quiet, atol=None, rtol=None, rehash: bool = False
) -> BuildRecord:
    """`vitexport validate OUT`: rebuild the reference from report.json and compare again; the
    result goes to validation.json beside the report, which stays as built."""
    out = Path(out)
    record = read_record(out, rehash)
    settings = record.settings
    if atol is not None:
        settings.atol = atol
    if rtol is not None:
        settings.rtol = rtol
    with _step(progress, "rebuild the PyTorch reference"):
        reduced = patched_model(settings)
    shape = record.model.input_shape
    data = eval_set(settings, reduced.model)
    with _step(progress, "validate artifacts against PyTorch"):
        record.validation = run_validation(settings, reduced, out, record.validated(), shape, data)
    validation = {"validation": [v.to_dict() for v in record.validation]}
    _keep_beside(out, "validation.json", validation, record)
    record.accuracy = None  # measured at build time, not by this run
    return record


def engine_for_folder(
    out: Path,
    precision: str = "fp32",
    workspace_mib=None,
    opt_level=None,
    plugin_library=None,
    progress: Progress = _quiet,
    rehash: bool = False,
) -> BuildRecord:
    """`vitexport engine OUT`: build (and validate) the engine of an existing output folder.
    A refusal (no TensorRT here, a precision the folder has no model for) writes nothing."""
    out = Path(out)
    if rehash:  # before --rehash records anything
        _need_tensorrt(out)
        if (out / "report.json").is_file():
            built = read_json(out / "report.json").get("settings")
            _check_precision(precision, built.get("precision") if isinstance(built, dict) else None)
    record = read_record(out, rehash)
    settings = record.settings
    _check_precision(precision, settings.precision)
    _need_tensorrt(out)
    settings.engine, settings.precision = True, precision
    settings.workspace_mib, settings.opt_level = workspace_mib, opt_level
    settings.plugin_library = plugin_library or settings.plugin_library
    shape = record.model.input_shape
    engine_stage(settings, out, record, shape, progress)
    if record.engine.built:
        with _step(progress, "validate the engine against PyTorch"):
            reduced = patched_model(settings)
            engine = record.engine_file
            record.validation = [v for v in record.validation if v.artifact != engine.file]
            record.validation += run_validation(settings, reduced, out, [engine], shape)
    record.set_hashes(file_hashes(out, record.files()))  # build_engine.sh is new too
    write_report(out, record)
    return record


def _check_precision(asked: str, built) -> None:
    if built is not None and asked != built:
        raise InputError(
            "--precision",
            asked,
            f"{built}, the precision this folder was built with (its models carry it); build "
            "another folder for another precision",
            "no engine built",
        )


def _need_tensorrt(out: Path) -> None:
    if tensorrt_version() is None:
        raise InputError(
            "OUT",
            str(out),
            "a machine with TensorRT (pip install 'vitexport[gpu]'), or run the folder's "
            "build_engine.sh on one",
            "no engine built: TensorRT is not installed here; nothing was written",
        )


def passed(record: BuildRecord) -> bool:
    return record.passed
