"""`vitexport doctor`: what a host can prove about the TensorRT side, step by step.

The host first (GPU, CUDA, TensorRT, CMake, the plugin library), then for one build folder:
the plugin library built with CMake, the kernel harness run on the GPU, engines for
model.onnx and model.plugins.onnx (fp32) and model.fp16.onnx (fp16) built and validated
against the PyTorch reference with the build's tolerances, and their latency against the
baseline engine. A step that cannot run here is a skip with its reason and the command that
would fix it, so the same command is useful on a laptop, a bare CUDA machine and a TensorRT host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .bench import export_baseline
from .build import build, run_validation
from .config import BuildSettings, ModelSpec
from .record import BuildRecord
from .errors import InputError
from .folder import read_record, write_atomic, write_json, write_report
from .gpu_speed import INSTALL_ORT_GPU, cuda_backend, measure, ort_providers, speed_text
from .models.base import INPUT_NAME
from .methods import baseline_of
from .presets import resolve
from .reference import eval_set, patched_model
from .runtime import EngineSession
from .timing import interleaved_latency, round_ratio
from .trt.engine import (
    PLUGIN_LIBRARY,
    EngineSettings,
    TensorRTUnavailable,
    build_engine,
    shapes_of,
    tensorrt_version,
)

PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
TIMEOUT_S = 600  # one CMake build or harness run
GPU_HOST = "run `vitexport doctor` on a host with an NVIDIA GPU and its driver"
INSTALL_TRT = "pip install 'vitexport[gpu]' (TensorRT 10+, on a GPU host)"
# The engines built from a folder: one per graph an engine can be built from, named after it
# (model.onnx -> model.engine, model.fp16.onnx -> model.fp16.engine), at the graph's precision.
ENGINE_NAMES = ("model.engine", "model.plugins.engine", "model.fp16.engine")


def engine_name(source) -> str:
    return source.file.removesuffix(".onnx") + ".engine"


@dataclass
class Step:
    """One check: done, failed or skipped; a skip says why and which command would fix it."""

    name: str
    status: str
    detail: str = ""
    fix: str = ""
    data: dict = field(default_factory=dict)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def gpu_info() -> dict | None:
    """Name, driver and compute capability of the first GPU, or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = _run(
            ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"]
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = _first_line(result.stdout)
    if result.returncode != 0 or not line:
        return None
    name, driver, cap = (part.strip() for part in (line.split(",") + ["", ""])[:3])
    return {"name": name, "driver": driver, "compute_capability": cap}


def nvcc_version() -> str | None:
    if shutil.which("nvcc") is None:
        return None
    match = re.search(r"release ([\d.]+)", _run(["nvcc", "--version"]).stdout)
    return match.group(1) if match else "unknown"


def tensorrt_headers() -> Path | None:
    """The folder holding NvInferRuntime.h (TensorRT_ROOT, then the usual install places)."""
    roots = [os.environ.get("TensorRT_ROOT"), "/usr", "/usr/local/tensorrt", "/opt/tensorrt"]
    for root in filter(None, roots):
        for sub in ("include", "include/x86_64-linux-gnu"):
            if (Path(root) / sub / "NvInferRuntime.h").is_file():
                return Path(root) / sub
    return None


def host_facts() -> dict:
    headers = tensorrt_headers()
    return {
        "gpu": gpu_info(),
        "nvcc": nvcc_version(),
        "torch_cuda": torch.version.cuda,
        "tensorrt": tensorrt_version(),
        "tensorrt_headers": str(headers) if headers else None,
        "cmake": shutil.which("cmake"),
        "compute_sanitizer": shutil.which("compute-sanitizer"),
        "trtexec": shutil.which("trtexec"),
    }


def _cmake_configure(build_dir: Path, facts: dict) -> subprocess.CompletedProcess:
    cap = (facts["gpu"] or {}).get("compute_capability", "").replace(".", "")
    cmd = ["cmake", "-S", str(PLUGINS_DIR), "-B", str(build_dir)]
    if cap.isdigit():
        cmd.append(f"-DCMAKE_CUDA_ARCHITECTURES={cap}")  # this GPU only: a quicker build
    if facts["tensorrt_headers"]:
        cmd.append(f"-DTensorRT_ROOT={Path(facts['tensorrt_headers']).parent}")
    return _run(cmd)


def _missing_toolchain(facts: dict) -> Step | None:
    if facts["cmake"] is None:
        return Step("CMake", "skipped", "cmake is not on PATH", "pip install cmake")
    if facts["nvcc"] is None:
        return Step(
            "CUDA compiler",
            "skipped",
            "nvcc is not on PATH",
            "install the CUDA toolkit and put its bin/ on PATH",
        )
    return None


def library_step(build_dir: Path, facts: dict, given: str | None) -> Step:
    """libvitexport_plugins.so: the one given, or built with the plugins' CMake."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise InputError("--plugin-lib", given, "an existing libvitexport_plugins.so")
        return Step("plugin library", "done", f"given: {path}", data={"path": str(path)})
    missing = _missing_toolchain(facts)
    if missing:
        return replace(missing, name="plugin library")
    if facts["tensorrt_headers"] is None:
        return Step(
            "plugin library",
            "skipped",
            "TensorRT headers (NvInferRuntime.h) not found",
            "TensorRT_ROOT=<TensorRT folder with include/> vitexport doctor",
        )
    configure = _cmake_configure(build_dir, facts)
    result = (
        configure
        if configure.returncode
        else _run(["cmake", "--build", str(build_dir), "--target", "vitexport_plugins", "-j"])
    )
    path = build_dir / PLUGIN_LIBRARY
    if result.returncode or not path.is_file():
        return Step("plugin library", "failed", _tail(result), f"cmake --build {build_dir}")
    return Step("plugin library", "done", f"built with CMake: {path}", data={"path": str(path)})


def harness_step(build_dir: Path, facts: dict) -> Step:
    """The CUDA kernel harness (plugins/tests) through ctest, on this host's GPU."""
    missing = _missing_toolchain(facts)
    if missing:
        return replace(missing, name="kernel harness")
    if facts["gpu"] is None:
        return Step("kernel harness", "skipped", "no CUDA GPU (nvidia-smi found none)", GPU_HOST)
    if not (build_dir / "CMakeCache.txt").is_file():
        configure = _cmake_configure(build_dir, facts)
        if configure.returncode:
            return Step("kernel harness", "failed", _tail(configure))
    built = _run(["cmake", "--build", str(build_dir), "--target", "kernel_harness", "-j"])
    if built.returncode:
        return Step("kernel harness", "failed", _tail(built))
    tests = _run(["ctest", "--test-dir", str(build_dir), "--output-on-failure"])
    lines = [
        line for line in tests.stdout.splitlines() if line.startswith(("PASS", "FAIL", "SKIP"))
    ]
    summary = _first_line("\n".join(reversed(tests.stdout.splitlines())))
    return Step(
        "kernel harness", "failed" if tests.returncode else "done", summary, data={"lines": lines}
    )


def _tail(result: subprocess.CompletedProcess, lines: int = 5) -> str:
    return " | ".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


# The headline's clusters (`vitexport build --method expedite --hw 24x24`) on the default model.
HEADLINE_ARGS = {"hw": "24x24"}


def default_settings(model: str | None, img_size) -> BuildSettings:
    """The default model's Expedite build (the headline's clusters when neither a model nor a
    size is given), with the plugin graph and the fp16 model."""
    given = HEADLINE_ARGS if model is None and img_size is None else {}
    spec, method, args = resolve(None, ModelSpec(model, None, img_size, None), "expedite", given)
    return BuildSettings(
        model=spec, method=method, method_args=args, plugins=True, precision="fp16"
    )


def folder_step(
    out: Path | None, scratch: Path, model: str | None, img_size, progress
) -> tuple[Step, Path, BuildRecord]:
    """An existing build folder (checked against its hashes), or a fresh default build."""
    if out is not None:
        record = read_record(out)
        return Step("build folder", "done", f"given: {out}"), Path(out), record
    settings = default_settings(model, img_size)
    folder = scratch / f"{settings.model.name}-{settings.method}"
    record = build(settings, folder, bench=False, progress=progress)
    folder_text = f"{folder} (temporary, removed after the run)"
    return (
        Step(
            "build folder",
            "done" if record.passed else "failed",
            f"built {settings.model.name} + {settings.method} in {folder_text} "
            f"(artifacts: {', '.join(sorted(record.artifacts))})",
        ),
        folder,
        record,
    )


def engine_steps(
    folder: Path, record: BuildRecord | None, facts: dict, library: str | None, progress
) -> list[Step]:
    """Build, validate and time the folder's engines; every missing piece is a skip. Each
    engine is validated as `vitexport build --engine` validates one: at its precision's
    tolerances (an engine of model.fp16.onnx at the fp16 ones)."""
    missing = None
    if facts["gpu"] is None:
        missing = ("no CUDA GPU (nvidia-smi found none)", GPU_HOST)
    elif facts["tensorrt"] is None:
        missing = ("TensorRT is not installed", INSTALL_TRT)
    if missing:
        return [Step(f"engine {name}", "skipped", *missing) for name in ENGINE_NAMES] + [
            Step("timing", "skipped", f"no engine was built: {missing[0]}", missing[1])
        ]
    settings = record.settings
    shape = record.model.input_shape
    profile = shapes_of(shape, settings.dynamic_batch)
    reduced = patched_model(settings)
    data = eval_set(settings, reduced.model)
    sources = {engine_name(a): a for a in record.engine_sources()}
    steps, built = [], {}
    for name in ENGINE_NAMES:
        source = sources.get(name)
        if source is None:
            steps.append(
                Step(
                    f"engine {name}",
                    "skipped",
                    f"the folder has no {name.removesuffix('.engine')}.onnx",
                    "vitexport build --plugins --precision fp16",
                )
            )
            continue
        if source.plugins and library is None:
            steps.append(
                Step(
                    f"engine {name}",
                    "skipped",
                    "no plugin library (see above)",
                    "TensorRT_ROOT=<TensorRT> vitexport doctor",
                )
            )
            continue
        engine = source.engine(name)
        eng = EngineSettings(
            precision=engine.precision,
            plugin_library=library if source.plugins else None,
            timing_cache=str(folder / "timing.cache"),
        )
        try:
            progress(f"build {name}")
            build_engine(folder / source.file, folder / name, eng, profile)
        except TensorRTUnavailable as err:
            steps.append(Step(f"engine {name}", "skipped", str(err), INSTALL_TRT))
            continue
        except Exception as err:  # noqa: BLE001 - TensorRT's own errors; reported, then on
            steps.append(Step(f"engine {name}", "failed", f"{type(err).__name__}: {err}"))
            continue
        (entry,) = run_validation(settings, reduced, folder, [engine], shape, data)
        built[name] = folder / name
        steps.append(
            Step(
                f"engine {name}",
                "done" if entry.passed else "failed",
                f"validated against PyTorch: {'passed' if entry.passed else 'FAILED'}",
                data={"validation": entry.to_dict()},
            )
        )
    base = baseline_of(reduced.model)  # from the loaded weights, not a second load
    steps.append(timing_step(folder, record, built, shape, profile, progress, base))
    return steps


def timing_step(
    folder: Path, record: BuildRecord, built: dict, shape, profile, progress, base=None
) -> Step:
    """Latency of each engine against the baseline engine (`--method none`, the model `base`
    when given), interleaved."""
    if not built:
        return Step("timing", "skipped", "no engine was built")
    recorded = record.baseline
    baseline = folder / recorded.file if recorded else None
    if baseline is None or not baseline.is_file():
        baseline = export_baseline(folder, record.settings, shape, record, base, progress=progress)
        write_report(folder, record)  # recorded, so that a later bench trusts the file
    try:
        build_engine(
            baseline,
            folder / "baseline.engine",
            EngineSettings(timing_cache=str(folder / "timing.cache")),
            profile,
        )
    except Exception as err:  # noqa: BLE001 - TensorRT's own errors
        return Step("timing", "failed", f"baseline engine: {type(err).__name__}: {err}")
    sessions = {"baseline.engine": EngineSession(folder / "baseline.engine", INPUT_NAME)}
    sessions.update({name: EngineSession(path, INPUT_NAME) for name, path in built.items()})
    latency = interleaved_latency(sessions, shape, runs=20, warmup=3, seed=record.settings.seed)
    return Step("timing", "done", engine_timing_text(latency), data=latency)


def engine_timing_text(latency: dict) -> str:
    """Each engine's median and its speed-up over baseline.engine: the median of the per-round
    ratios with p25-p75, as exporter.timing reports a speed-up."""
    base = latency["baseline.engine"]["median_ms"]
    parts = []
    for name, v in latency.items():
        if name != "baseline.engine":
            r = round_ratio(latency, "baseline.engine", name)
            parts.append(
                f"{name} {v['median_ms']:.3f} ms ({r['median']:.2f}x, "
                f"p25-p75 {r['p25']:.2f}-{r['p75']:.2f})"
            )
    return f"baseline.engine {base:.3f} ms; " + ", ".join(parts)


def gpu_speed_step(
    folder: Path, record: BuildRecord, facts: dict, scratch: Path, progress, wanted: bool = True
) -> Step:
    """The folder's model against its baseline on the GPU, beside the GFLOPs ratio, the
    structural limit and the paper estimate (exporter.gpu_speed); a skip says why not."""
    if not wanted:
        return Step("gpu speed", "skipped", "left out (--no-gpu-speed)", "vitexport doctor")
    backend, why = cuda_backend(facts["gpu"], facts["tensorrt"], ort_providers())
    if backend is None:
        fix = GPU_HOST if facts["gpu"] is None else INSTALL_ORT_GPU
        return Step("gpu speed", "skipped", f"{why}: the GPU speed-up was not measured", fix)
    try:
        device = facts["gpu"].get("name") or "GPU"
        result = measure(folder, record, backend, device, scratch, progress)
    except Exception as err:  # noqa: BLE001 - the runtime's own errors; reported, then on
        return Step("gpu speed", "failed", f"{backend}: {type(err).__name__}: {err}")
    return Step("gpu speed", "done", speed_text(result), data=result)


def run_doctor(
    out: Path | None = None,
    model: str | None = None,
    img_size=None,
    plugin_library: str | None = None,
    progress=lambda text: None,
    build: bool = False,
    gpu_speed: bool = True,
) -> dict:
    """Every step in order; returns {"host": facts, "steps": [...]} (each step a dict).

    The host facts come first (seconds). Without OUT the default build (minutes) is made
    only where an engine can be built or the GPU speed measured (a GPU with TensorRT or
    ONNX Runtime's CUDA provider), or with `build`. `gpu_speed`: time the model against its
    baseline on the GPU (the "gpu speed" step)."""
    facts = host_facts()
    for key, value in facts.items():
        progress(f"{key}: {value if value else 'not found'}")
    usable, _ = cuda_backend(facts["gpu"], facts["tensorrt"], ort_providers())
    if out is None and not build and not (facts["gpu"] and (facts["tensorrt"] or usable)):
        missing = " and ".join(k for k in ("gpu", "tensorrt") if not facts[k])
        step = Step(
            "build folder",
            "skipped",
            f"no {missing} here: no engine can be built, so no default build was made",
            "vitexport doctor --build (the default build and its CPU checks, minutes), or "
            "vitexport doctor OUT for a build folder you have",
        )
        # here no runtime can use a GPU (or there is none): the step says which in one line
        steps = [step, gpu_speed_step(None, None, facts, None, progress, gpu_speed)]
        return {
            "host": facts,
            "folder": "none (no build made)",
            "steps": [asdict(s) for s in steps],
        }
    with tempfile.TemporaryDirectory(prefix="vitexport-doctor-") as scratch:
        scratch = Path(scratch)
        build_dir = scratch / "plugins-build"
        progress("plugin library")
        library = library_step(build_dir, facts, plugin_library)
        progress("kernel harness")
        steps = [library, harness_step(build_dir, facts)]
        progress("build folder")
        step, folder, record = folder_step(out, scratch, model, img_size, progress)
        steps.append(step)
        lib = library.data.get("path")
        steps += engine_steps(folder, record, facts, lib, progress)
        progress("gpu speed")
        speed_scratch = scratch / "gpu-speed"
        speed_scratch.mkdir()
        steps.append(gpu_speed_step(folder, record, facts, speed_scratch, progress, gpu_speed))
    return {
        "host": facts,
        "folder": str(out) if out else "a temporary default build",
        "steps": [asdict(s) for s in steps],
    }


def to_markdown(result: dict) -> str:
    host = result["host"]
    gpu = host["gpu"]
    gpu_text = (
        f"{gpu['name']}, driver {gpu['driver']}, sm {gpu['compute_capability']}" if gpu else "none"
    )
    lines = [
        "# vitexport doctor",
        "",
        "## Host",
        "",
        f"- GPU: {gpu_text}",
        f"- CUDA: nvcc {host['nvcc'] or 'absent'}, PyTorch built for CUDA {host['torch_cuda'] or 'none'}",
        f"- TensorRT: {host['tensorrt'] or 'not installed'} (headers: {host['tensorrt_headers'] or 'not found'})",
        f"- cmake: {host['cmake'] or 'absent'}; compute-sanitizer: {host['compute_sanitizer'] or 'absent'}; "
        f"trtexec: {host['trtexec'] or 'absent'}",
        "",
        f"## Steps ({result['folder']})",
        "",
        "| step | status | detail | fix |",
        "|---|---|---|---|",
    ]
    for s in result["steps"]:
        cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
        lines.append(f"| {s['name']} | {s['status']} | {cell(s['detail'])} | {cell(s['fix'])} |")
    return "\n".join(lines) + "\n"


def check_report_dir(folder: Path, force: bool = False) -> tuple[Path, Path]:
    """The two report paths; an earlier report there is replaced only with `force`."""
    folder = Path(folder)
    md, js = folder / "doctor.md", folder / "doctor.json"
    if not force and (md.exists() or js.exists()):
        raise InputError(
            "--report-dir",
            str(folder),
            "a folder without doctor.md/doctor.json (or --force)",
            "holds an earlier report",
        )
    if folder.exists() and not folder.is_dir():
        raise InputError("--report-dir", str(folder), "a folder", "is a file")
    return md, js


def write_doctor_report(folder: Path, result: dict, force: bool = False) -> tuple[Path, Path]:
    """doctor.md and doctor.json in `folder`."""
    md, js = check_report_dir(folder, force)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(js, result)
    write_atomic(md, to_markdown(result))
    return md, js
