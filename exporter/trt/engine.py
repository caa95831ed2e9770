"""Build a TensorRT engine from an exported ONNX file, through polygraphy's TensorRT loaders.

TensorRT is imported only when an engine is actually built: where it is missing (no GPU, or
the wheel is not installable) `TensorRTUnavailable` says so, and the rest of a build goes on.
`build_engine.sh` with the equivalent `trtexec` command is written in every case, so the
engine can be finished on a machine with TensorRT.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from polygraphy.backend.trt import (
    CreateConfig,
    EngineFromNetwork,
    LoadPlugins,
    NetworkFromOnnxPath,
    Profile,
    SaveEngine,
)

from ..errors import InputError
from ..paths import note_written, write_text
from ..models.base import INPUT_NAME

PLUGIN_LIBRARY = "libvitexport_plugins.so"
PRECISIONS = ("fp32", "fp16")


class TensorRTUnavailable(Exception):
    """TensorRT cannot be imported here."""


@dataclass
class EngineSettings:
    """Engine build options. None means TensorRT's default."""

    precision: str = "fp32"
    workspace_mib: int | None = None
    opt_level: int | None = None  # TensorRT builder optimisation level 0..5
    timing_cache: str = "timing.cache"
    plugin_library: str | None = None  # path of libvitexport_plugins.so when plugin nodes are used

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError("--precision", self.precision, "|".join(PRECISIONS))
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise InputError("--opt-level", self.opt_level, "0..5")
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise InputError("--workspace", self.workspace_mib, "a positive number of MiB")


def engine_settings(settings) -> EngineSettings:
    """The engine options of a build's settings (BuildSettings): its precision, workspace,
    optimisation level, and the plugin library when the build has plugin nodes."""
    lib = settings.plugin_library or (PLUGIN_LIBRARY if settings.plugins else None)
    return EngineSettings(
        precision=settings.precision,
        workspace_mib=settings.workspace_mib,
        opt_level=settings.opt_level,
        plugin_library=lib,
    )


def tensorrt_version() -> str | None:
    try:
        import tensorrt  # optional: TensorRT is only on GPU hosts
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", "unknown")


def shapes_of(input_shape, dynamic_batch: bool, max_batch: int = 8):
    """(min, opt, max) shapes of the `images` input for an optimisation profile."""
    if not dynamic_batch:
        return None
    rest = list(input_shape[1:])
    return ([1, *rest], [int(input_shape[0]), *rest], [max(max_batch, int(input_shape[0])), *rest])


def trtexec_command(onnx_name: str, engine_name: str, settings: EngineSettings, profile) -> str:
    """The `trtexec` command equivalent to `build_engine`."""
    cmd = [
        "trtexec",
        f"--onnx={onnx_name}",
        f"--saveEngine={engine_name}",
        f"--timingCacheFile={settings.timing_cache}",
    ]
    if settings.plugin_library:
        cmd.append(f"--staticPlugins={settings.plugin_library}")
    if settings.workspace_mib:
        cmd.append(f"--memPoolSize=workspace:{settings.workspace_mib}M")
    if settings.opt_level is not None:
        cmd.append(f"--builderOptimizationLevel={settings.opt_level}")
    if profile:
        fmt = lambda s: f"{INPUT_NAME}:" + "x".join(str(v) for v in s)  # noqa: E731
        cmd += [
            f"--minShapes={fmt(profile[0])}",
            f"--optShapes={fmt(profile[1])}",
            f"--maxShapes={fmt(profile[2])}",
        ]
    return " ".join(shlex.quote(c) for c in cmd)


def write_build_script(folder: Path, onnx_name: str, settings: EngineSettings, profile) -> Path:
    engine = "model.engine"
    script = folder / "build_engine.sh"
    lines = [
        "#!/usr/bin/env bash",
        "# Builds the TensorRT engine of this folder on a machine with TensorRT and a GPU.",
        f"# {settings.precision}: the ONNX file already carries the precision (TensorRT networks",
        "# are strongly typed).",
    ]
    if settings.plugin_library:
        lines.append(
            "# Build the plugin library first: cmake -S plugins -B build/plugins "
            "-DTensorRT_ROOT=<TensorRT> && cmake --build build/plugins"
        )
    lines += [
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        trtexec_command(onnx_name, engine, settings, profile),
        "",
    ]
    write_text(script, "\n".join(lines), mode=0o755)
    return script


def build_engine(
    onnx_path: Path, engine_path: Path, settings: EngineSettings, profile=None
) -> Path:
    """Build and save an engine with polygraphy's loaders (NetworkFromOnnxPath -> EngineFromNetwork).

    Raises:
        TensorRTUnavailable: `tensorrt` cannot be imported.
    """
    if tensorrt_version() is None:
        raise TensorRTUnavailable(
            "TensorRT is not installed here, so no engine was built; run build_engine.sh in the "
            "output folder on a machine with TensorRT (pip install 'vitexport[gpu]')"
        )
    import tensorrt as trt  # optional: TensorRT is only on GPU hosts

    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    if settings.plugin_library:
        network = LoadPlugins(plugins=[settings.plugin_library], obj=network)
    profiles = None
    if profile:
        profiles = [Profile().add(INPUT_NAME, min=profile[0], opt=profile[1], max=profile[2])]
    pool = None
    if settings.workspace_mib:
        pool = {trt.MemoryPoolType.WORKSPACE: settings.workspace_mib << 20}
    cache = str(
        Path(engine_path).parent / settings.timing_cache
    )  # as build_engine.sh: in the folder
    config = CreateConfig(
        profiles=profiles,
        load_timing_cache=cache,
        builder_optimization_level=settings.opt_level,
        memory_pool_limits=pool,
    )
    build = EngineFromNetwork(network, config=config, save_timing_cache=cache)
    SaveEngine(build, str(engine_path))()
    for written in (Path(engine_path), Path(cache)):
        if written.is_file():
            note_written(written)
    return engine_path
