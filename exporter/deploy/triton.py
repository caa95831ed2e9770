"""`vitexport deploy triton`: a Triton Inference Server model repository from a build folder.

Three models, each named `<name>_<kind>`:
- `_python`: the python backend running model.onnx (and `_python_plugins`, the plugin graph,
  when the build has one) in ONNX Runtime; serves on any CPU host;
- `_onnx`: the onnxruntime backend on the portable model.onnx;
- `_trt`: the TensorRT backend on the engine (`1/model.plan`: the build's engine, or built on
  the GPU host by the model's `build_plan.sh`).
Input and output names, types and dims are read from the ONNX graph, never assumed. The
repository is written into a temporary folder beside the target and renamed at the end.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..errors import InputError
from ..folder import read_record
from ..trt.engine import PLUGIN_LIBRARY, engine_settings, shapes_of, trtexec_command

# ONNX TensorProto element types -> Triton's model-config data types.
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}
MARKER = ".vitexport-repository"  # --force replaces only a folder holding this file
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MODEL_FILE = Path(__file__).with_name("triton_model.py")


@dataclass
class Tensor:
    name: str
    dtype: str  # Triton's TYPE_*
    shape: list[int]  # -1 where the graph leaves a dimension open


@dataclass
class Repository:
    """What `write_repository` wrote: the folder and each model's name, kind and notes."""

    path: Path
    models: dict[str, str] = field(default_factory=dict)  # name -> platform/backend
    max_batch_size: int = 0
    notes: list[str] = field(default_factory=list)


def graph_io(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """The graph inputs and outputs of an ONNX file (external weights are not read)."""
    proto = onnx.load(str(path), load_external_data=False)

    def tensors(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            if t.elem_type not in TRITON_TYPES:
                raise InputError(
                    "OUT",
                    str(path),
                    "ONNX tensors of a type Triton serves",
                    f"{v.name} has ONNX type {onnx.TensorProto.DataType.Name(t.elem_type)}",
                )
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out.append(Tensor(v.name, TRITON_TYPES[t.elem_type], dims))
        return out

    return tensors(proto.graph.input), tensors(proto.graph.output)


def _tensor_block(kind: str, tensors: list[Tensor], batched: bool) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        dims = t.shape[1:] if batched else t.shape  # max_batch_size > 0: dims leave out the batch
        lines += [
            "  {",
            f'    name: "{t.name}"',
            f"    data_type: {t.dtype}",
            f"    dims: [ {', '.join(str(d) for d in dims)} ]",
            "  }" + ("," if i < len(tensors) - 1 else ""),
        ]
    return lines + ["]"]


def config_text(
    name: str, head: list[str], inputs, outputs, max_batch: int, dynamic: bool, tail: list[str] = ()
) -> str:
    """config.pbtxt in protobuf text format (comments say why where a setting is a choice)."""
    lines = [f'name: "{name}"', *head, f"max_batch_size: {max_batch}"]
    lines += _tensor_block("input", inputs, max_batch > 0)
    lines += _tensor_block("output", outputs, max_batch > 0)
    if dynamic:
        lines += [
            "# Requests are batched up to max_batch_size (the artifact's batch is dynamic).",
            "dynamic_batching { max_queue_delay_microseconds: 100 }",
        ]
    return "\n".join([*lines, *tail, ""])


ORT_TRT_BLOCK = [
    "# TensorRT execution provider: off. Turn it on (remove the '#'s) on a GPU host whose",
    "# onnxruntime backend was built with TensorRT, for model.onnx only (no plugin nodes); the",
    "# first load then builds an engine, which takes minutes. Without it the model runs on",
    "# ONNX Runtime's CUDA or CPU provider.",
    "# optimization { execution_accelerators {",
    "#   gpu_execution_accelerator: [ {",
    '#     name: "tensorrt"',
    '#     parameters { key: "precision_mode" value: "FP32" }',
    "#   } ]",
    "# } }",
]


def _copy_onnx(src_folder: Path, name: str, dest: Path, as_name: str | None = None) -> None:
    """Copy an ONNX file and its external weights (`<name>.data`), which must keep their name."""
    shutil.copy2(src_folder / name, dest / (as_name or name))
    data = src_folder / (name + ".data")
    if data.is_file():
        shutil.copy2(data, dest / data.name)


def _batching(record, inputs: list[Tensor], max_batch: int | None, dynamic: bool):
    """max_batch_size: 0 for a fixed-batch artifact, else --max-batch (default: the engine
    profile's max, which build_engine.sh builds for)."""
    open_batch = bool(inputs) and inputs[0].shape[:1] == [-1]
    if not open_batch:
        fixed = f"this build's batch is fixed at {record.model.input_shape[0]}"
        if max_batch is not None:
            raise InputError(
                "--max-batch", max_batch, "only for a build with --dynamic-batch", fixed
            )
        if dynamic:
            raise InputError("--dynamic-batch", "", "only for a build with --dynamic-batch", fixed)
        return 0
    limit = shapes_of(record.model.input_shape, True)[2][0]
    if max_batch is None:
        return limit
    if not 1 <= max_batch <= limit:
        raise InputError(
            "--max-batch", max_batch, f"1..{limit}", "the engine's optimisation profile stops there"
        )
    return max_batch


def check_target(repo: Path, out: Path, force: bool) -> None:
    repo = Path(repo)
    if repo.resolve() == out.resolve() or out.resolve() in repo.resolve().parents:
        raise InputError("--repo", str(repo), "a folder outside the build folder")
    if repo.exists() and not repo.is_dir():
        raise InputError("--repo", str(repo), "a folder", "is a file")
    if repo.exists() and any(repo.iterdir()):
        if not force:
            raise InputError(
                "--repo",
                str(repo),
                "a new or empty folder, or --force to replace "
                "a repository written by `vitexport deploy`",
                "exists and is not empty",
            )
        if not (repo / MARKER).is_file():
            raise InputError(
                "--repo",
                str(repo),
                "with --force, a repository written by `vitexport deploy`",
                f"no {MARKER} in it; not replacing it",
            )


def _read_build(out: Path):
    return read_record(out)  # checks the files against their recorded hashes


def write_repository(
    out,
    repo,
    name: str | None = None,
    max_batch: int | None = None,
    dynamic_batch: bool = False,
    force: bool = False,
) -> Repository:
    """Write a Triton model repository for build folder `out` into `repo`.

    >>> r = write_repository("vitexport-out/segmenter_digits-expedite", "triton-repo")  # doctest: +SKIP
    >>> sorted(r.models)  # doctest: +SKIP
    ['segmenter_digits_expedite_onnx', 'segmenter_digits_expedite_python', 'segmenter_digits_expedite_trt']
    """
    out, repo = Path(out), Path(repo)
    record = _read_build(out)  # every build has model.onnx (the record refuses one without)
    onnx_file = record.onnx.file
    plugin_graph = record.plugin_graph
    name = name or f"{record.model.name}_{record.method}".replace("-", "_")
    if not NAME.match(name):
        raise InputError("--name", name, "letters, digits, '_', '-', '.' (a Triton model name)")
    check_target(repo, out, force)
    inputs, outputs = graph_io(out / onnx_file)
    batch = _batching(record, inputs, max_batch, dynamic_batch)
    dynamic = dynamic_batch and batch > 0

    result = Repository(repo, max_batch_size=batch)
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = repo.parent / f".{repo.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _python_model(
            tmp,
            result,
            f"{name}_python",
            out,
            onnx_file,
            inputs,
            outputs,
            batch,
            dynamic,
            plugin_nodes=False,
        )
        if plugin_graph is not None:
            p_in, p_out = graph_io(out / plugin_graph.file)
            _python_model(
                tmp,
                result,
                f"{name}_python_plugins",
                out,
                plugin_graph.file,
                p_in,
                p_out,
                batch,
                dynamic,
                plugin_nodes=True,
            )
        _onnx_model(tmp, result, f"{name}_onnx", out, onnx_file, inputs, outputs, batch, dynamic)
        _trt_model(tmp, result, f"{name}_trt", out, record, batch, dynamic)
        (tmp / MARKER).write_text(f"written by `vitexport deploy triton` from {out.name}\n")
        (tmp / "README.md").write_text(readme(result, name, out))
        if repo.exists():
            shutil.rmtree(repo)
        os.replace(tmp, repo)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _python_model(
    tmp, result, model, out, artifact, inputs, outputs, batch, dynamic, plugin_nodes: bool
) -> None:
    version = tmp / model / "1"
    version.mkdir(parents=True)
    _copy_onnx(out, artifact, version)
    shutil.copy2(MODEL_FILE, version / "model.py")
    head = [
        'backend: "python"',
        "# One CPU instance: ONNX Runtime already uses every core for one request.",
        "instance_group [ { kind: KIND_CPU, count: 1 } ]",
        f'parameters {{ key: "onnx" value {{ string_value: "{artifact}" }} }}',
        f'parameters {{ key: "plugin_nodes" value {{ string_value: '
        f'"{"true" if plugin_nodes else "false"}" }} }}',
    ]
    (tmp / model / "config.pbtxt").write_text(
        config_text(model, head, inputs, outputs, batch, dynamic)
    )
    result.models[model] = "python"


def _onnx_model(tmp, result, model, out, artifact, inputs, outputs, batch, dynamic) -> None:
    version = tmp / model / "1"
    version.mkdir(parents=True)
    _copy_onnx(out, artifact, version, "model.onnx")
    head = [
        'platform: "onnxruntime_onnx"',
        "# No instance_group: Triton puts the model on every GPU, or on the CPU without one.",
    ]
    (tmp / model / "config.pbtxt").write_text(
        config_text(model, head, inputs, outputs, batch, dynamic, ORT_TRT_BLOCK)
    )
    result.models[model] = "onnxruntime_onnx"


def _trt_model(tmp, result, model, out, record, batch, dynamic) -> None:
    """The engine's own I/O is the ONNX it is built from (names, types, dims)."""
    source_art = record.file_of(record.engine.source) if record.engine else record.onnx
    source = source_art.file
    inputs, outputs = graph_io(out / source)
    version = tmp / model / "1"
    version.mkdir(parents=True)
    eng = engine_settings(record.settings)
    plugins = source_art.plugins
    if record.engine_file is not None:
        shutil.copy2(out / record.engine_file.file, version / "model.plan")
        result.notes.append(
            f"{model}: 1/model.plan is the build's {record.engine_file.file} (an engine "
            "runs only on the GPU model and TensorRT version it was built with)"
        )
    else:
        _copy_onnx(out, source, tmp / model)
        profile = shapes_of(record.model.input_shape, batch > 0)
        if eng.plugin_library is None and plugins:
            eng.plugin_library = PLUGIN_LIBRARY
        script = [
            "#!/usr/bin/env bash",
            "# Builds 1/model.plan on the GPU host that serves it (TensorRT engines are",
            "# specific to a GPU model and TensorRT version).",
            "set -euo pipefail",
            'cd "$(dirname "$0")"',
            trtexec_command(source, "1/model.plan", eng, profile),
            "",
        ]
        (tmp / model / "build_plan.sh").write_text("\n".join(script))
        (tmp / model / "build_plan.sh").chmod(0o755)
        result.notes.append(
            f"{model}: no engine in the build; run {model}/build_plan.sh on the "
            "GPU host to write 1/model.plan"
        )
    head = ['platform: "tensorrt_plan"', "instance_group [ { kind: KIND_GPU, count: 1 } ]"]
    if plugins:
        head.insert(
            1,
            f"# Plugin nodes: start tritonserver with LD_PRELOAD={PLUGIN_LIBRARY} or "
            f"--backend-config=tensorrt,plugins=/path/to/{PLUGIN_LIBRARY}",
        )
    (tmp / model / "config.pbtxt").write_text(
        config_text(model, head, inputs, outputs, batch, dynamic)
    )
    result.models[model] = "tensorrt_plan"


def readme(result: Repository, name: str, out: Path) -> str:
    """The repository's README: which model runs where, and how to start the server."""
    rows = "\n".join(f"| `{m}` | {kind} |" for m, kind in result.models.items())
    notes = "\n".join(f"- {n}" for n in result.notes)
    return f"""# Triton model repository for `{out.name}`

Written by `vitexport deploy triton`. Names, data types and dims of every model come from the
ONNX graphs of the build; `max_batch_size` is {result.max_batch_size} (0: the batch is part of
the dims, fixed at export).

| model | platform / backend |
|---|---|
{rows}

- `{name}_python` runs model.onnx with ONNX Runtime in Triton's python backend and serves on
  any CPU host. The `python3` first on PATH must have numpy and onnxruntime (and vitexport for
  `{name}_python_plugins`, whose TensorRT plugin nodes run with vitexport's CPU code).
- `{name}_onnx` needs Triton's onnxruntime backend (in NGC's tritonserver containers); its
  TensorRT execution-provider block is present in config.pbtxt but commented out.
- `{name}_trt` needs Triton's TensorRT backend and a GPU. A graph with plugin nodes needs
  libvitexport_plugins.so in the server process: either
  `LD_PRELOAD=/path/to/libvitexport_plugins.so tritonserver ...` or
  `tritonserver --backend-config=tensorrt,plugins=/path/to/libvitexport_plugins.so ...`.

{notes}

Serve only the models this host can run, e.g. on a CPU host:

```
tritonserver --model-repository $PWD --model-control-mode explicit --load-model {name}_python
```

and on a GPU host with the NGC container, every model:

```
tritonserver --model-repository $PWD
```
"""
