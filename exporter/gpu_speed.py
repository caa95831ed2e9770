"""A build's speed-up measured on a GPU (`vitexport doctor`'s "gpu speed" step), beside the
GFLOPs ratio, the structural limit and the paper estimate of docs/performance.md.

The baseline (`--method none`) and the reduced model are timed through exporter.timing
(interleaved rounds on the build's images, the median of the per-round ratios with their
p25-p75), on ONNX Runtime's CUDA execution provider where onnxruntime-gpu is installed, else
on TensorRT engines. Nothing here imports a GPU library before a GPU has been found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import parse_pair

# GPU rounds cost milliseconds: more of them than on a CPU, for a tighter spread.
GPU_RUNS = 100
GPU_WARMUP = 10
CUDA_EP = "CUDAExecutionProvider"
INSTALL_ORT_GPU = "pip install onnxruntime-gpu (or 'vitexport[gpu]' for TensorRT)"
# The timed pairs of ONNX Runtime: attention fused into MultiHeadAttention (what a GPU
# runtime deploys, the form the estimate is about) and the plain exports.
PAIRS = {"fused": ("baseline_fused", "reduced_fused"), "plain": ("baseline", "reduced")}


@dataclass(frozen=True)
class Estimate:
    """docs/performance.md's paper estimate for one setting, per batch size."""

    model: str
    image: tuple[int, int]
    method: str
    args: dict
    by_batch: dict

    def matches(self, settings, image) -> bool:
        if (settings.model.name, tuple(image), settings.method) != (
            self.model,
            self.image,
            self.method,
        ):
            return False
        args = settings.method_args
        for key, want in self.args.items():
            got = args.get(key)
            if key == "hw" and got is not None:
                got = parse_pair("--hw", got)
            if got != want:
                return False
        return True


ESTIMATES = (
    Estimate(
        "segmenter_digits",
        (80, 80),
        "expedite",
        {"alpha": 3, "hw": (24, 24)},
        {1: "0.5-0.9x (kernel launches bound it)", 64: "1.3-1.55x"},
    ),
    Estimate(
        "segmenter_large",
        (640, 640),
        "expedite",
        {"alpha": 10, "hw": (28, 28)},
        {1: "1.15-1.35x (1.48-1.52x with the token ops in a few kernels)"},
    ),
)


def paper_estimate(settings, input_shape) -> str | None:
    """The paper estimate for this build at its batch, or None where there is none."""
    batch, image = int(input_shape[0]), tuple(int(v) for v in input_shape[2:])
    for estimate in ESTIMATES:
        if estimate.matches(settings, image) and batch in estimate.by_batch:
            return estimate.by_batch[batch]
    return None


def cuda_backend(gpu: dict | None, tensorrt: str | None, providers) -> tuple[str | None, str]:
    """Which runtime times the GPU ("onnxruntime-cuda" or "tensorrt"), or None and why not.

    `gpu`: nvidia-smi's first GPU (None: no device); `tensorrt`: TensorRT's version (None:
    not installed); `providers`: ONNX Runtime's available execution providers."""
    if gpu is None:
        return None, "no CUDA device (nvidia-smi found none)"
    if CUDA_EP in providers:
        return "onnxruntime-cuda", f"{CUDA_EP} on {gpu.get('name') or 'the GPU'}"
    if tensorrt:
        return "tensorrt", f"TensorRT {tensorrt} on {gpu.get('name') or 'the GPU'}"
    return None, (
        f"a GPU ({gpu.get('name') or 'unnamed'}) but neither ONNX Runtime's {CUDA_EP} "
        f"(available: {', '.join(providers) or 'none'}) nor TensorRT"
    )


def ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class CudaSession:
    """An ONNX Runtime session on the GPU with the two calls timing uses. Each input array
    is copied to the GPU once and the outputs stay there, so a run times the model, not the
    transfers (the digits model's output is larger than its input)."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        self.ort = ort
        self.session = ort.InferenceSession(str(path), providers=[CUDA_EP])
        if CUDA_EP not in self.session.get_providers():
            raise RuntimeError(f"ONNX Runtime did not take {CUDA_EP} for {Path(path).name}")
        self.binding = self.session.io_binding()
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.on_device: dict[int, tuple] = {}

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, _outputs, feed):
        ((name, array),) = feed.items()
        if id(array) not in self.on_device:  # the array is kept, so its id stays its own
            value = self.ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
            self.on_device[id(array)] = (array, value)
        self.binding.bind_ortvalue_input(name, self.on_device[id(array)][1])
        for out in self.outputs:
            self.binding.bind_output(out, "cuda")
        self.session.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()


def ort_sessions(paths: dict, scratch: Path) -> dict:
    """CUDA sessions of both pairs: the plain exports and their fused-attention forms."""
    import onnx

    from .onnx.fuse import fuse_attention
    from .onnx.export import save_onnx

    sessions = {}
    for name in ("baseline", "reduced"):
        fused, _ = fuse_attention(onnx.load(str(paths[name])))
        save_onnx(fused, scratch / f"{name}.fused.onnx")
        sessions[f"{name}_fused"] = CudaSession(scratch / f"{name}.fused.onnx")
        sessions[name] = CudaSession(paths[name])
    return sessions


def trt_sessions(paths: dict, scratch: Path, profile) -> dict:
    """Sessions of fp32 TensorRT engines of both models (TensorRT fuses attention itself)."""
    from .runtime import EngineSession
    from .models.base import INPUT_NAME
    from .trt.engine import EngineSettings, build_engine

    class OnDevice(EngineSession):
        def run(self, _outputs, feed):  # outputs left on the GPU
            return self.runner.infer(feed, copy_outputs_to_host=False)

    sessions = {}
    for name in ("baseline", "reduced"):
        engine = scratch / f"{name}.engine"
        settings = EngineSettings(timing_cache=str(scratch / "timing.cache"))
        build_engine(paths[name], engine, settings, profile)
        sessions[name] = OnDevice(engine, INPUT_NAME)
    return sessions


def summarise(latency: dict, pairs: dict, gflops: dict, limit, estimate) -> dict:
    """The per-round ratio of each timed pair, with the GFLOPs ratio, the structural limit and
    the paper estimate beside them (`latency`: exporter.timing.interleaved_latency's)."""
    from .timing import form_speed

    out = {}
    for form, (base, red) in pairs.items():
        if base in latency and red in latency:
            out[form] = form_speed(latency, base, red)
    return {
        "forms": out,
        "gflops": dict(gflops),
        "gflops_ratio": gflops["baseline"] / gflops["reduced"],
        "structural_limit": limit,
        "paper_estimate": estimate,
    }


FORM_NAMES = {"fused": "fused attention", "plain": "plain export", "engine": "engine"}


def speed_text(result: dict) -> str:
    """One line: the measured speed-up(s), the GFLOPs ratio, the limit, the paper estimate."""
    parts = []
    for form, f in result["forms"].items():
        r = f["ratio"]
        parts.append(
            f"{FORM_NAMES.get(form, form)} {f['baseline_ms']:.3f} -> {f['reduced_ms']:.3f} ms, "
            f"{f['speedup']:.2f}x (p25-p75 {r['p25']:.2f}-{r['p75']:.2f})"
        )
    limit = result["structural_limit"]
    beside = [f"GFLOPs ratio {result['gflops_ratio']:.2f}x"]
    if limit:
        beside.append(f"structural limit {limit:.2f}x")
    beside.append(
        f"paper estimate {result['paper_estimate']}"
        if result["paper_estimate"]
        else "no paper estimate for this setting"
    )
    head = f"{result['backend']}, {result['device']}, fp32, batch {result['batch']}, "
    head += f"{result['runs']} interleaved rounds: "
    return head + "; ".join(parts) + "; " + ", ".join(beside)


def measure(
    folder: Path,
    record,
    backend: str,
    device: str,
    scratch: Path,
    progress=lambda text: None,
    runs: int = GPU_RUNS,
    warmup: int = GPU_WARMUP,
    sessions_for=None,
) -> dict:
    """Time the folder's model against its baseline (exported when the folder lacks one) on
    the GPU; `sessions_for(paths, scratch)`: the sessions to time (default: per backend)."""
    from .bench import export_baseline
    from .folder import write_report
    from .methods import baseline_of
    from .reference import eval_set, patched_model
    from .timing import count_gflops, interleaved_latency, limit_of, timing_inputs
    from .trt.engine import shapes_of

    settings, shape = record.settings, record.model.input_shape
    reduced = patched_model(settings)
    base_model = baseline_of(reduced.model)
    recorded = record.baseline
    baseline = folder / recorded.file if recorded else None
    if baseline is None or not baseline.is_file():
        baseline = export_baseline(folder, settings, shape, record, base_model, progress=progress)
        write_report(folder, record)  # recorded, so that a later bench trusts the file
    paths = {"baseline": baseline, "reduced": folder / record.onnx.file}
    if sessions_for is None:
        if backend == "tensorrt":
            profile = shapes_of(shape, settings.dynamic_batch)
            sessions_for = lambda p, s: trt_sessions(p, s, profile)  # noqa: E731
        else:
            sessions_for = ort_sessions
    progress(f"time baseline and reduced model on the GPU ({backend}), {runs} rounds ...")
    sessions = sessions_for(paths, scratch)
    inputs, note = timing_inputs(
        shape, settings.seed, eval_set(settings, reduced.model), reduced.model.input_name
    )
    latency = interleaved_latency(sessions, shape, runs, warmup, settings.seed, inputs)
    del sessions
    one = (1, *shape[1:])
    gflops = {"baseline": count_gflops(base_model, one), "reduced": count_gflops(reduced, one)}
    limit = limit_of(settings, reduced.method.cut, one)
    pairs = PAIRS if "baseline_fused" in latency else {"engine": ("baseline", "reduced")}
    result = summarise(latency, pairs, gflops, limit, paper_estimate(settings, shape))
    result.update(
        backend=backend,
        device=device,
        batch=int(shape[0]),
        runs=runs,
        inputs=note,
        latency=latency,
    )
    return result
