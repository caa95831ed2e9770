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

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..errors import InputError
from ..folder import read_record
from ..models import entry_of, label_of
from ..paths import check_regular, confine, not_ancestor
from ..tiling import default_stride, norm_text
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
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # fullmatch: `$` would allow a newline
MODEL_FILE = Path(__file__).with_name("triton_model.py")
PRE_FILE = Path(__file__).with_name("triton_pre.py")
POST_FILE = Path(__file__).with_name("triton_post.py")
IO_FILE = Path(__file__).with_name("triton_io.py")
TILING_FILE = Path(__file__).resolve().parent.parent / "tiling.py"


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
    max_batch_size: int = 0  # of the onnxruntime and TensorRT models
    notes: list[str] = field(default_factory=list)
    ensemble: str | None = None  # the image-in, class-map-out model, where there is one
    window: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (0, 0)


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


def batching_block(max_batch: int, delay_us: int) -> list[str]:
    """Triton's dynamic batcher: gather concurrent requests up to max_batch_size, waiting at
    most `delay_us` for more once a preferred size cannot be formed."""
    preferred = [b for b in (4, 8) if b <= max_batch]
    lines = ["# Concurrent requests are gathered into one execution (Triton's dynamic batcher)."]
    lines.append("dynamic_batching {")
    if preferred:
        lines.append(f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]")
    return lines + [f"  max_queue_delay_microseconds: {delay_us}", "}"]


def config_text(
    name: str,
    head: list[str],
    inputs,
    outputs,
    max_batch: int,
    dynamic: bool,
    tail: list[str] = (),
    delay_us: int = 1000,
) -> str:
    """config.pbtxt in protobuf text format (comments say why where a setting is a choice)."""
    lines = [f'name: "{name}"', *head, f"max_batch_size: {max_batch}"]
    lines += _tensor_block("input", inputs, max_batch > 0)
    lines += _tensor_block("output", outputs, max_batch > 0)
    if dynamic and max_batch > 0:
        lines += batching_block(max_batch, delay_us)
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
    src = confined(src_folder, name, "OUT")
    shutil.copy2(src, dest / (as_name or Path(name).name))
    data = src.with_name(src.name + ".data")
    if data.is_file() and not data.is_symlink():
        shutil.copy2(data, dest / data.name)


def confined(folder: Path, name, flag: str) -> Path:
    """`folder/name` for a path a report names: inside `folder` (paths.confine) and a regular
    file."""
    path = confine(folder, name, f"{flag} {Path(folder) / 'report.json'}: artifact")
    check_regular(path, flag)
    return path


def _batching(record, inputs: list[Tensor], max_batch: int | None, dynamic: bool):
    """max_batch_size of the onnxruntime and TensorRT models: 0 for a fixed-batch artifact,
    else --max-batch (default: the engine profile's max, which build_engine.sh builds for)."""
    open_batch = bool(inputs) and inputs[0].shape[:1] == [-1]
    if not open_batch:
        fixed = f"this build's batch is fixed at {record.model.input_shape[0]}"
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


@dataclass
class Options:
    """What `vitexport deploy triton` takes besides OUT and --repo (see its --help)."""

    name: str | None = None
    max_batch: int | None = None  # python model: windows per execution; others: see _batching
    dynamic_batch: bool = False  # dynamic_batching on the onnxruntime and TensorRT models
    force: bool = False
    backend: str = "python"  # the model inside the ensemble
    stride: tuple[int, int] | None = None  # None: tiling.default_stride(window)
    instances: int = 1
    threads: int = 0  # ONNX Runtime intra-op threads of the python model; 0: its default
    confidences: bool = False
    allow_failed: bool = False
    queue_delay_us: int = 1000


BACKENDS = {"python": "_python", "onnx": "_onnx", "trt": "_trt"}
PYTHON_MAX_BATCH = 64  # windows one execution of the python model takes unless --max-batch


def check_target(repo: Path, out: Path) -> None:
    """Refusals that need no work: the repository is never the build, inside it, or a folder
    the user stands in or above."""
    repo = Path(repo)
    if str(repo).strip() == "":
        raise InputError("--repo", str(repo), "a folder of its own, e.g. triton-repo")
    not_ancestor(repo, "--repo")
    real, built = Path(os.path.realpath(repo)), Path(os.path.realpath(out))
    if real == built or built in real.parents:
        raise InputError("--repo", str(repo), "a folder outside the build folder")
    if repo.is_symlink() or (repo.exists() and not repo.is_dir()):
        raise InputError("--repo", str(repo), "a folder", "is a file or a symlink")


def owned(repo: Path) -> list[str]:
    """The model folders `vitexport deploy triton` wrote into `repo` (its marker's list)."""
    try:
        data = json.loads((repo / MARKER).read_text())
        return [m for m in data.get("models", []) if isinstance(m, str) and NAME.fullmatch(m)]
    except (OSError, ValueError, AttributeError):
        return []  # no marker, or one of an older vitexport: nothing is known to be ours


def check_replace(repo: Path, models: list[str], force: bool) -> None:
    """A non-empty repository needs --force; even then only folders of our own are replaced."""
    if not repo.exists() or not any(repo.iterdir()):
        return
    if not force:
        raise InputError(
            "--repo",
            str(repo),
            "a new or empty folder, or --force to add to it (replacing only model folders "
            "that vitexport wrote)",
            "exists and is not empty",
        )
    ours = set(owned(repo))
    for m in models:
        if (repo / m).exists() and m not in ours:
            raise InputError(
                "--repo",
                str(repo / m),
                "with --force, a folder name that is free or that vitexport wrote",
                "a model folder vitexport did not write; not replacing it (use --name)",
            )
    readme = repo / "README.md"
    if readme.exists() and not (repo / MARKER).exists():
        raise InputError(
            "--repo",
            str(readme),
            "with --force, a repository whose README.md vitexport wrote",
            "not replacing a README.md of yours",
        )


def check_validation(out: Path, record, allow_failed: bool) -> None:
    failed = [v for v in record.validation if not v.passed]
    if failed and not allow_failed:
        names = ", ".join(v.artifact for v in failed)
        raise InputError(
            "OUT",
            str(out),
            "a build whose validation passed, or --allow-failed",
            f"the validation of {names} FAILED (see report.md): its answers differ from PyTorch",
        )


def _read_build(out: Path):
    return read_record(out)  # checks the files against their recorded hashes


def write_repository(out, repo, **options) -> Repository:
    """Write a Triton model repository for build folder `out` into `repo`: the python,
    onnxruntime and TensorRT models of the artifact, and for a segmentation model the ensemble
    `<name>` (image in, class map out) with its `<name>_pre` and `<name>_post` steps.
    `options`: the fields of `Options`.

    >>> r = write_repository("vitexport-out/segmenter_digits-expedite", "triton-repo")  # doctest: +SKIP
    >>> sorted(r.models)  # doctest: +SKIP
    ['segmenter_digits_expedite', 'segmenter_digits_expedite_onnx', ...]
    """
    opts = Options(**options)
    out, repo = Path(out), Path(repo)
    check_target(repo, out)
    name = opts.name
    if name is not None and not NAME.fullmatch(name):
        raise InputError(
            "--name", repr(name), "letters, digits, '_', '-', '.' (a Triton model name)"
        )
    if opts.backend not in BACKENDS:
        raise InputError("--backend", opts.backend, ", ".join(BACKENDS))
    record = _read_build(out)  # every build has model.onnx (the record refuses one without)
    onnx_file, plugin_graph = record.onnx.file, record.plugin_graph
    check_validation(out, record, opts.allow_failed)
    name = name or f"{label_of(record.model.name)}_{record.method}".replace("-", "_")
    if not NAME.fullmatch(name):
        raise InputError("--name", name, "letters, digits, '_', '-', '.' (a Triton model name)")
    inputs, outputs = graph_io(confined(out, onnx_file, "OUT"))
    batch = _batching(record, inputs, opts.max_batch, opts.dynamic_batch)
    dynamic = opts.dynamic_batch and batch > 0
    py_batch = opts.max_batch if opts.max_batch is not None else PYTHON_MAX_BATCH
    if not 1 <= py_batch <= 4096:
        raise InputError("--max-batch", py_batch, "1..4096")
    ensemble = record.model.output_kind == "segmentation"
    if ensemble and opts.backend != "python" and batch == 0:
        raise InputError(
            "--backend",
            opts.backend,
            "python, or a build with --dynamic-batch",
            "the ensemble sends an image's windows as one batch; this build's batch is fixed",
        )

    models = [f"{name}_python", f"{name}_onnx", f"{name}_trt"]
    models += [f"{name}_python_plugins"] if plugin_graph is not None else []
    models += [name, f"{name}_pre", f"{name}_post"] if ensemble else []
    check_replace(repo, models, opts.force)

    result = Repository(repo, max_batch_size=batch)
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.vitexport-", dir=repo.parent))
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp's 0700 would stay on a new repository
    try:
        _python_model(
            tmp, result, f"{name}_python", out, onnx_file, opts, py_batch, plugin_nodes=False
        )
        if plugin_graph is not None:
            _python_model(
                tmp,
                result,
                f"{name}_python_plugins",
                out,
                plugin_graph.file,
                opts,
                py_batch,
                plugin_nodes=True,
            )
        _onnx_model(tmp, result, f"{name}_onnx", out, onnx_file, inputs, outputs, batch, opts)
        _trt_model(tmp, result, f"{name}_trt", out, record, batch, dynamic, opts)
        if ensemble:
            model = f"{name}{BACKENDS[opts.backend]}"
            limit = py_batch if opts.backend == "python" else batch
            _ensemble(tmp, result, name, model, record, inputs, outputs, limit, opts)
        else:
            result.notes.append(
                f"no ensemble: the model's output is {record.model.output_kind}, not class logits"
            )
        _commit(tmp, repo, models, readme(result, name, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _commit(tmp: Path, repo: Path, models: list[str], text: str) -> None:
    """Move the staged model folders into `repo`, each replaced by rename (a folder is either
    the old or the new one, never half of each); folders not ours are untouched."""
    marker = {"written_by": "vitexport deploy triton", "models": sorted(models)}
    if not repo.exists():  # a new repository: complete in the staging folder, one rename
        (tmp / "README.md").write_text(text)
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        os.replace(tmp, repo)
        return
    ours = sorted(set(owned(repo)) | set(models))
    for m in models:
        old = repo / m
        if old.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{m}.old-", dir=repo))
            os.replace(old, aside / m)
            os.replace(tmp / m, old)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp / m, old)
    for path, body in (
        (repo / "README.md", text),
        (repo / MARKER, json.dumps({"written_by": "vitexport deploy triton", "models": ours})),
    ):
        staged = tmp / path.name
        staged.write_text(body + ("\n" if not body.endswith("\n") else ""))
        os.replace(staged, path)


def _python_model(tmp, result, model, out, artifact, opts: Options, batch, plugin_nodes) -> None:
    """The artifact in ONNX Runtime, batched by Triton whatever the export's batch (model.py
    runs a fixed-batch artifact in chunks of its batch)."""
    version = tmp / model / "1"
    version.mkdir(parents=True)
    _copy_onnx(out, artifact, version)
    shutil.copy2(MODEL_FILE, version / "model.py")
    shutil.copy2(IO_FILE, version / IO_FILE.name)
    inputs, outputs = graph_io(version / Path(artifact).name)
    head = [
        'backend: "python"',
        "# ONNX Runtime uses every core for one execution unless intra_op_threads says",
        "# otherwise: on a CPU host, instances x intra_op_threads = the cores to use.",
        f"instance_group [ {{ kind: KIND_CPU, count: {opts.instances} }} ]",
        f'parameters {{ key: "onnx" value {{ string_value: "{Path(artifact).name}" }} }}',
        f'parameters {{ key: "plugin_nodes" value {{ string_value: '
        f'"{"true" if plugin_nodes else "false"}" }} }}',
        f'parameters {{ key: "intra_op_threads" value {{ string_value: "{opts.threads}" }} }}',
    ]
    batched = [Tensor(t.name, t.dtype, [-1, *t.shape[1:]]) for t in inputs]
    out_batched = [Tensor(t.name, t.dtype, [-1, *t.shape[1:]]) for t in outputs]
    (tmp / model / "config.pbtxt").write_text(
        config_text(model, head, batched, out_batched, batch, True, delay_us=opts.queue_delay_us)
    )
    result.models[model] = "python"


def _onnx_model(tmp, result, model, out, artifact, inputs, outputs, batch, opts) -> None:
    version = tmp / model / "1"
    version.mkdir(parents=True)
    _copy_onnx(out, artifact, version, "model.onnx")
    head = [
        'platform: "onnxruntime_onnx"',
        "# KIND_AUTO: on every GPU, or on the CPU without one.",
        f"instance_group [ {{ kind: KIND_AUTO, count: {opts.instances} }} ]",
    ]
    dynamic = opts.dynamic_batch and batch > 0
    (tmp / model / "config.pbtxt").write_text(
        config_text(
            model, head, inputs, outputs, batch, dynamic, ORT_TRT_BLOCK, opts.queue_delay_us
        )
    )
    result.models[model] = "onnxruntime_onnx"


def _trt_model(tmp, result, model, out, record, batch, dynamic, opts) -> None:
    """The engine's own I/O is the ONNX it is built from (names, types, dims)."""
    source_art = record.file_of(record.engine.source) if record.engine else record.onnx
    source = source_art.file
    inputs, outputs = graph_io(confined(out, source, "OUT"))
    version = tmp / model / "1"
    version.mkdir(parents=True)
    eng = engine_settings(record.settings)
    plugins = source_art.plugins
    if record.engine_file is not None:
        shutil.copy2(confined(out, record.engine_file.file, "OUT"), version / "model.plan")
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
            trtexec_command(Path(source).name, "1/model.plan", eng, profile),
            "",
        ]
        (tmp / model / "build_plan.sh").write_text("\n".join(script))
        (tmp / model / "build_plan.sh").chmod(0o755)
        result.notes.append(
            f"{model}: no engine in the build; run {model}/build_plan.sh on the "
            "GPU host to write 1/model.plan"
        )
    head = [
        'platform: "tensorrt_plan"',
        f"instance_group [ {{ kind: KIND_GPU, count: {opts.instances} }} ]",
    ]
    if plugins:
        head.insert(
            1,
            f"# Plugin nodes: start tritonserver with LD_PRELOAD={PLUGIN_LIBRARY} or "
            f"--backend-config=tensorrt,plugins=/path/to/{PLUGIN_LIBRARY}",
        )
    (tmp / model / "config.pbtxt").write_text(
        config_text(model, head, inputs, outputs, batch, dynamic, delay_us=opts.queue_delay_us)
    )
    result.models[model] = "tensorrt_plan"


def _ensemble(tmp, result, name, model, record, inputs, outputs, limit, opts: Options) -> None:
    """`<name>`: image -> `<name>_pre` (windows) -> `model` -> `<name>_post` (class map).

    Pre and post are python-backend models in numpy (tiling.py), not ONNX: the bundled CPU
    server has only the python backend, a variable number of windows with an overlap average
    is a loop in numpy but a Loop/ScatterND graph in ONNX, and the same file gives
    `exporter.api.predict` its answer."""
    entry = entry_of(record.model.name)
    window = tuple(inputs[0].shape[2:4])
    stride = opts.stride or default_stride(window)
    if not (1 <= stride[0] <= window[0] and 1 <= stride[1] <= window[1]):
        raise InputError(
            "--stride",
            f"{stride[0]}x{stride[1]}",
            f"1x1..{window[0]}x{window[1]} (the model's window; windows must meet or overlap)",
        )
    classes = outputs[0].shape[1]
    if classes > 256:
        raise InputError("OUT", record.model.name, "at most 256 classes (a uint8 map)")
    x, logits = inputs[0], outputs[0]
    for step, source in (("pre", PRE_FILE), ("post", POST_FILE)):
        version = tmp / f"{name}_{step}" / "1"
        version.mkdir(parents=True)
        shutil.copy2(source, version / "model.py")
        shutil.copy2(IO_FILE, version / IO_FILE.name)
        shutil.copy2(TILING_FILE, version / TILING_FILE.name)
    cpu = f"instance_group [ {{ kind: KIND_CPU, count: {opts.instances} }} ]"
    params = {
        "window": f"{window[0]}x{window[1]}",
        "stride": f"{stride[0]}x{stride[1]}",
        "mean": norm_text(entry.mean),
        "std": norm_text(entry.std),
        "max_windows": str(limit),
    }
    tiles = Tensor("tiles", x.dtype, [-1, *x.shape[1:]])
    origins, size = Tensor("origins", "TYPE_INT32", [-1, 2]), Tensor("size", "TYPE_INT32", [2])
    image = Tensor("image", "TYPE_UINT8", [-1, -1, 3])
    mask = Tensor("classes", "TYPE_UINT8", [-1, -1])
    conf = [Tensor("confidences", "TYPE_FP32", [classes, -1, -1])] if opts.confidences else []
    head = ['backend: "python"', cpu] + [
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in params.items()
    ]
    (tmp / f"{name}_pre" / "config.pbtxt").write_text(
        config_text(f"{name}_pre", head, [image], [tiles, origins, size], 0, False)
    )
    post_in = [Tensor("logits", logits.dtype, [-1, *logits.shape[1:]]), origins, size]
    head = [
        'backend: "python"',
        cpu,
        f'parameters {{ key: "confidences" value {{ string_value: '
        f'"{"true" if opts.confidences else "false"}" }} }}',
    ]
    (tmp / f"{name}_post" / "config.pbtxt").write_text(
        config_text(f"{name}_post", head, post_in, [mask, *conf], 0, False)
    )
    names = list(entry.class_names or ())
    labels = names if len(names) == classes else [f"class {c}" for c in range(classes)]
    (tmp / name / "1").mkdir(parents=True)  # an ensemble has a version folder but no files
    (tmp / name / "labels.txt").write_text("\n".join(labels) + "\n")

    def step(model_name, inputs_map, outputs_map):
        def pairs(kind, m):
            return [f'      {kind} {{ key: "{k}" value: "{v}" }}' for k, v in m.items()]

        return [
            "    {",
            f'      model_name: "{model_name}"',
            "      model_version: -1",
            *pairs("input_map", inputs_map),
            *pairs("output_map", outputs_map),
            "    }",
        ]

    steps = step(
        f"{name}_pre",
        {"image": "image"},
        {"tiles": "_tiles", "origins": "_origins", "size": "_size"},
    )
    steps[-1] += ","
    steps += step(model, {x.name: "_tiles"}, {logits.name: "_logits"})
    steps[-1] += ","
    post_out = {"classes": "classes", **({"confidences": "confidences"} if conf else {})}
    steps += step(
        f"{name}_post", {"logits": "_logits", "origins": "_origins", "size": "_size"}, post_out
    )
    head = [
        'platform: "ensemble"',
        f"# image (uint8 H x W x 3, any size) -> {name}_pre: windows of {window[0]}x{window[1]}",
        f"# at stride {stride[0]}x{stride[1]}, normalised (x/255 - {entry.mean})/{entry.std} ->",
        f"# {model} (all windows of an image as one batch, at most {limit}) -> {name}_post:",
        "# overlaps averaged, cropped back, argmax -> classes (uint8 H x W; labels.txt names",
        "# each id)" + (", confidences (softmax, float32 C x H x W)" if conf else ""),
    ]
    mask_out = Tensor("classes", "TYPE_UINT8", [-1, -1])
    shown = "|".join(n.replace("|", "/").replace('"', "'") for n in labels)
    head.append(f'parameters {{ key: "class_names" value {{ string_value: "{shown}" }} }}')
    text = config_text(name, head, [image], [mask_out, *conf], 0, False)
    text = text.replace(
        '    name: "classes"\n    data_type: TYPE_UINT8\n',
        '    name: "classes"\n    data_type: TYPE_UINT8\n    label_filename: "labels.txt"\n',
    )
    text += "ensemble_scheduling {\n  step [\n" + "\n".join(steps) + "\n  ]\n}\n"
    (tmp / name / "config.pbtxt").write_text(text)
    result.models[name] = "ensemble"
    result.models[f"{name}_pre"] = "python"
    result.models[f"{name}_post"] = "python"
    result.ensemble = name
    result.window, result.stride = window, stride


def readme(result: Repository, name: str, out: Path) -> str:
    """The repository's README: which model runs where, and how to start the server."""
    rows = "\n".join(f"| `{m}` | {kind} |" for m, kind in result.models.items())
    notes = "\n".join(f"- {n}" for n in result.notes)
    plugins = f"`{name}_python_plugins`" in rows
    ensemble = result.ensemble
    parts = [
        f"# Triton model repository for `{out.name}`",
        "",
        "Written by `vitexport deploy triton`. Names, data types and dims of every model come "
        "from the ONNX graphs of the build.",
        "",
        "| model | platform / backend |",
        "|---|---|",
        rows,
        "",
    ]
    if ensemble:
        parts += [
            f"- `{ensemble}` is the service: send a uint8 image `image` (H x W x 3, any size), "
            "get `classes` (uint8 H x W, the class of every pixel; `labels.txt` names the ids). "
            f"`{ensemble}_pre` cuts the image into the model's {result.window[0]}x"
            f"{result.window[1]} windows at stride {result.stride[0]}x{result.stride[1]} and "
            f"normalises them; `{ensemble}_post` averages the overlapping logits and crops "
            "back (numpy, in tiling.py).",
        ]
    parts += [
        f"- `{name}_python` runs model.onnx with ONNX Runtime in Triton's python backend and "
        "serves on any CPU host (the `python3` first on PATH needs numpy and onnxruntime).",
        f"- `{name}_onnx` needs Triton's onnxruntime backend (NGC's tritonserver containers); "
        "its TensorRT execution-provider block is in config.pbtxt, commented out.",
        f"- `{name}_trt` needs Triton's TensorRT backend and a GPU. A graph with plugin nodes "
        "needs libvitexport_plugins.so in the server process: "
        "`LD_PRELOAD=/path/to/libvitexport_plugins.so tritonserver ...` or "
        "`tritonserver --backend-config=tensorrt,plugins=/path/to/libvitexport_plugins.so ...`.",
    ]
    if plugins:
        parts.append(
            f"- `{name}_python_plugins` runs the plugin graph with vitexport's CPU code: the "
            "server's python3 needs vitexport installed."
        )
    parts += ["", notes, ""] if notes else [""]
    first = ensemble or f"{name}_python"
    parts += [
        "## Serve it",
        "",
        "On any CPU host, with vitexport and nvidia-pytriton installed (the server binary "
        "inside that wheel needs the environment `vitexport deploy serve` sets up; it is not "
        "on PATH):",
        "",
        "```",
        f"vitexport deploy serve {result.path}" + (f" --model {first}" if ensemble else ""),
        "```",
        "",
        "then, in another shell (samples/triton/client.py of vitexport):",
        "",
        "```",
        f"python samples/triton/client.py --url 127.0.0.1:PORT --model {first} --image photo.png",
        "```",
        "",
        "On a GPU host with NGC's tritonserver container, every model:",
        "",
        "```",
        "tritonserver --model-repository $PWD",
        "```",
        "",
    ]
    return "\n".join(parts)
