"""The build record: report.json as typed values, read back with every field checked.

`BuildRecord.read` is the one reading of a report: each field's type and range is checked
(finite numbers, integers where integers, tolerances that can fail, positive shapes, a
non-negative seed) and every file it names is confined to its folder; a field that is not
what `vitexport build` writes is refused with one InputError naming it. `to_dict` writes the
JSON that builds have always written, so folders of earlier versions read unchanged.

An artifact knows what it is (`Artifact`: kind, file, precision, runtime, sha256): where it
is validated and at which precision, whether it holds plugin nodes. The rest of the tool asks
the record; the artifact keys of report.json ("onnx", "onnx_fp16", "engine", ...) are spelled
only here.

sweep.json is read the same way (`SweepRecord`): typed rows, each sealed with the sha256 of
its content, so a row edited by hand is refused instead of carried into the table.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .config import MAX_PAIR, BuildSettings, ModelSpec
from .errors import InputError
from .paths import confine

# ---- tolerances ------------------------------------------------------------------------------

TIE_BOUND = 1e-4
# float16 activations (10-bit mantissa) move the scores by ~1e-3 relative.
TIE_BOUND_FP16 = 1e-2
# The largest atol/rtol a build takes (the CLI's --atol/--rtol range).
MAX_TOLERANCE = 1e6


@dataclass(frozen=True)
class Tolerances:
    """What an artifact must meet against the PyTorch reference.

    tie_bound: a flipped decision counts as a near-tie when the reference's own margin at it
    (see ops.decisions) is at most this share of the scores' magnitude: float32 runtimes differ
    in the scores by the rounding of everything upstream (1e-6..1e-5 relative in deep models)."""

    atol: float = 1e-3
    rtol: float = 1e-3
    min_cosine: float = 0.99999
    error_quantile: float = 0.99  # share of elements that must be within atol or rtol
    min_argmax: float = 0.999  # segmentation: share of pixels whose class must agree
    tie_bound: float = TIE_BOUND  # relative margin below which a flipped decision is a near-tie

    @classmethod
    def of(cls, settings) -> "Tolerances":
        """The tolerances of a build's settings (BuildSettings or anything with those fields)."""
        return cls(
            settings.atol,
            settings.rtol,
            settings.min_cosine,
            settings.error_quantile,
            settings.min_argmax,
        )

    def half(self) -> "Tolerances":
        """Loosened for a float16 artifact (10-bit mantissa); never tightened."""
        return replace(
            self,
            atol=max(self.atol, 5e-2),
            rtol=max(self.rtol, 5e-2),
            min_cosine=min(self.min_cosine, 0.999),
            min_argmax=min(self.min_argmax, 0.99),
            tie_bound=max(self.tie_bound, TIE_BOUND_FP16),
        )

    def for_precision(self, precision: str) -> "Tolerances":
        """The tolerances an artifact of `precision` is held to: fp16 ones, whatever their file
        format (an ONNX graph or a TensorRT engine), get the looser float16 bounds."""
        return self.half() if precision == "fp16" else self

    def to_dict(self) -> dict:
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "error_quantile": self.error_quantile,
            "min_cosine": self.min_cosine,
            "min_argmax_agreement": self.min_argmax,
            "tie_bound": self.tie_bound,
        }


# ---- checked reading of JSON values -----------------------------------------------------------

SEED_MAX = 2**32 - 1  # the CLI's --seed range
BATCH_MAX = 4096  # the CLI's --batch range
OPSETS = (17, 23)  # the CLI's --opset range
COUNT_MAX = 10**9  # images, samples, runs, tokens: far past anything a build does
PRECISIONS = ("fp32", "fp16")
SHA256 = re.compile(r"[0-9a-f]{64}")


def _show(value) -> str:
    inner = value.values() if isinstance(value, dict) else value
    if isinstance(value, (list, dict)) and any(isinstance(v, (list, dict)) for v in inner):
        return f"a JSON {'list' if isinstance(value, list) else 'object'}"  # nested: its kind
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**60 else "a huge integer"
    return text if len(text) <= 60 else text[:60] + "..."


class Fields:
    """Checks the values of one JSON file; a bad one is an InputError naming file and field."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, name: str, value, allowed: str, reason: str | None = None):
        raise InputError(f"{self.where}: {name}", _show(value), allowed, reason)

    def obj(self, value, name: str) -> dict:
        if not isinstance(value, dict):
            self.fail(name, value, "a JSON object as vitexport writes it")
        return value

    def items(self, value, name: str) -> list:
        if not isinstance(value, list):
            self.fail(name, value, "a JSON list as vitexport writes it")
        return value

    def text(self, value, name: str, optional: bool = False, choices=None) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            self.fail(name, value, "a string" + (" or null" if optional else ""))
        if choices is not None and value not in choices:
            self.fail(name, value, " or ".join(choices))
        return value

    def flag(self, value, name: str, optional: bool = False) -> bool | None:
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            self.fail(name, value, "true or false")
        return value

    def integer(self, value, name: str, low: int, high: int, optional: bool = False):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(
                name, value, f"an integer in {low}..{high}" + (" or null" if optional else "")
            )
        return value

    def number(
        self,
        value,
        name: str,
        low: float = -math.inf,
        high: float = math.inf,
        optional: bool = False,
        open_low: bool = False,
    ) -> float | None:
        """A finite number in [low, high] ((low, high] with `open_low`); null where `optional`
        (non-finite results are written as null and listed under "non_finite")."""
        if value is None and optional:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and abs(value) < 1e300  # JSON integers of any size: beyond float's range
        ok = ok and math.isfinite(value) and low <= value <= high
        ok = ok and not (open_low and value == low)
        if not ok:
            bounds = f" in {'(' if open_low else '['}{low:g}, {high:g}]"
            if math.isinf(low) and math.isinf(high):
                bounds = ""
            elif math.isinf(high):
                bounds = f" {'>' if open_low else '>='} {low:g}"
            self.fail(name, value, f"a finite number{bounds}" + (" or null" if optional else ""))
        return float(value)

    def shape(self, value, name: str, length: int | None = None) -> tuple[int, ...]:
        ok = isinstance(value, list) and (length is None or len(value) == length) and value
        if not ok:
            self.fail(name, value, f"a list of {length or 'some'} positive integers")
        return tuple(self.integer(v, f"{name}[{i}]", 1, MAX_PAIR) for i, v in enumerate(value))

    def names(self, value, name: str) -> list[str]:
        return [self.text(v, f"{name}[{i}]") for i, v in enumerate(self.items(value, name))]

    def sha(self, value, name: str) -> str:
        if not isinstance(value, str) or not SHA256.fullmatch(value):
            self.fail(name, value, "a sha256 (64 lowercase hex digits)")
        return value

    def plain(self, value, name: str, depth: int = 0):
        """A JSON value of finite numbers (null allowed), strings, flags, lists and objects with
        string keys, at most 8 deep: the detail sections the tool writes but does not act on."""
        if value is None or isinstance(value, (str, bool, int)):
            return value
        if isinstance(value, float):
            return self.number(value, name)
        if depth > 8:
            self.fail(name, "...", "JSON nested at most 8 deep")
        if isinstance(value, list):
            return [self.plain(v, f"{name}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.plain(v, f"{name}.{k}", depth + 1) for k, v in value.items()}
        self.fail(name, value, "a JSON value")


# ---- artifacts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What a kind of artifact is: where it is validated against PyTorch (`runtime`, None: it is
    not a model that is validated), its precision and whether it holds TensorRT plugin nodes."""

    key: str  # its key under "artifacts" in report.json
    runtime: str | None = None
    precision: str = "fp32"
    plugins: bool = False


# In the order validation runs and reports them; others are recorded files (hashed, not run).
KINDS = {
    k.key: k
    for k in (
        Kind("onnx", "onnxruntime"),
        # attention fused and graph optimisations applied for ONNX Runtime (`--optimize`)
        Kind("onnx_optimized", "onnxruntime-optimized"),
        Kind("onnx_plugins", "onnxruntime+plugins", plugins=True),
        Kind("onnx_fp16", "onnxruntime-fp16", precision="fp16"),
        Kind("engine", "tensorrt"),  # its precision is the engine's (report's "engine" section)
        Kind("build_script"),
        Kind("polygraphy_inputs"),
        Kind("polygraphy_reference"),
        Kind("baseline_onnx"),
        Kind("authors_form_onnx"),
    )
}
# The ONNX an engine is built from: the half-precision graph, else the plugin graph, else plain.
ENGINE_SOURCES = ("onnx_fp16", "onnx_plugins", "onnx")
ENGINE_RUNTIME = KINDS["engine"].runtime


@dataclass(frozen=True)
class Artifact:
    """One file of a build folder and what it is."""

    kind: str
    file: str
    precision: str = "fp32"
    runtime: str | None = None  # where it is validated against PyTorch; None: not validated
    sha256: str | None = None
    plugins: bool = False  # holds TensorRT plugin nodes (needs the plugin library to run)

    @classmethod
    def of(cls, kind: str, file: str, precision: str | None = None, sha256=None) -> "Artifact":
        k = KINDS.get(kind, Kind(kind))
        return cls(kind, file, precision or k.precision, k.runtime, sha256, k.plugins)

    @classmethod
    def plain(cls, file: str) -> "Artifact":
        """A plain float32 ONNX graph of a model (as a build's model.onnx)."""
        return cls.of("onnx", file)

    @property
    def graph(self) -> bool:
        """An ONNX graph (linted, loadable by onnx)."""
        return self.file.endswith(".onnx")

    @property
    def validated(self) -> bool:
        return self.runtime is not None

    def tolerances(self, base: Tolerances) -> Tolerances:
        return base.for_precision(self.precision)

    def engine(self, file: str, precision: str | None = None) -> "Artifact":
        """The TensorRT engine built from this graph into `file` (at its precision unless
        told otherwise)."""
        return Artifact(
            "engine", file, precision or self.precision, ENGINE_RUNTIME, None, self.plugins
        )


# ---- sections of the report --------------------------------------------------------------------


@dataclass
class ModelInfo:
    name: str
    weights: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    layout: dict  # grid, num_prefix, dim, depth
    output_kind: str
    outputs: list[str]

    @classmethod
    def read(cls, d: dict, f: Fields) -> "ModelInfo":
        d = f.obj(d, "model")
        layout = f.obj(d.get("layout"), "model.layout")
        return cls(
            name=f.text(d.get("name"), "model.name"),
            weights=f.text(d.get("weights"), "model.weights"),
            input_shape=f.shape(d.get("input_shape"), "model.input_shape", 4),
            dynamic_batch=f.flag(d.get("dynamic_batch"), "model.dynamic_batch"),
            layout={
                "grid": list(f.shape(layout.get("grid"), "model.layout.grid", 2)),
                "num_prefix": f.integer(layout.get("num_prefix"), "model.layout.num_prefix", 0, 64),
                "dim": f.integer(layout.get("dim"), "model.layout.dim", 1, MAX_PAIR),
                "depth": f.integer(layout.get("depth"), "model.layout.depth", 1, 1024),
            },
            output_kind=f.text(d.get("output_kind"), "model.output_kind"),
            outputs=f.names(d.get("outputs"), "model.outputs"),
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}


@dataclass
class EngineInfo:
    """The engine stage: asked for, built or skipped (and why), from which ONNX, at what
    precision."""

    requested: bool
    built: bool
    source: str
    precision: str
    skipped: str | None = None

    @classmethod
    def read(cls, d, f: Fields, folder: Path, files: set) -> "EngineInfo":
        d = f.obj(d, "engine")
        source = f.text(d.get("source"), "engine.source")
        confine(folder, source, f"{f.where}: engine.source")
        if source not in files:
            f.fail("engine.source", source, "one of the artifacts the report records")
        return cls(
            requested=f.flag(d.get("requested"), "engine.requested"),
            built=f.flag(d.get("built"), "engine.built"),
            source=source,
            precision=f.text(d.get("precision"), "engine.precision", choices=PRECISIONS),
            skipped=f.text(d.get("skipped"), "engine.skipped", optional=True),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.skipped is None:
            d.pop("skipped")
        return d


@dataclass
class Validation:
    """One artifact's comparison with the reference.

    verdict: "decisions equal" (or "no decisions" for methods without any, or "decisions not
    exposed" when the runtime cannot return them), then judged on the outputs as they are;
    "near-tie flips: n" when the runtime chose differently only where the reference's own
    margins are within `tie_bound` and, with the runtime's choices imposed on the reference,
    the outputs match; otherwise it says what failed."""

    runtime: str
    artifact: str
    passed: bool
    verdict: str
    tolerances: Tolerances
    samples: int
    seed: int
    inputs: str
    outputs: dict  # per output: error metrics against the reference as it decides itself
    decisions: dict = field(default_factory=dict)  # per decision: compared, flipped, margins
    forced_outputs: dict | None = None  # the metrics with the runtime's decisions imposed

    @classmethod
    def read(cls, d, f: Fields, name: str) -> "Validation":
        d = f.obj(d, name)
        t = f.obj(d.get("tolerances"), f"{name}.tolerances")
        n = f"{name}.tolerances"
        tol = Tolerances(
            atol=f.number(t.get("atol"), f"{n}.atol", 0.0, MAX_TOLERANCE),
            rtol=f.number(t.get("rtol"), f"{n}.rtol", 0.0, MAX_TOLERANCE),
            # a bound of 0 or below lets any output pass: a vacuous check is refused
            min_cosine=f.number(t.get("min_cosine"), f"{n}.min_cosine", 0.0, 1.0, open_low=True),
            error_quantile=f.number(
                t.get("error_quantile"), f"{n}.error_quantile", 0.0, 1.0, open_low=True
            ),
            min_argmax=f.number(
                t.get("min_argmax_agreement"), f"{n}.min_argmax_agreement", 0.0, 1.0, open_low=True
            ),
            tie_bound=f.number(t.get("tie_bound", TIE_BOUND), f"{n}.tie_bound", 0.0, 1.0),
        )
        outputs = f.obj(d.get("outputs"), f"{name}.outputs")
        forced = d.get("forced_outputs")
        return cls(
            runtime=f.text(d.get("runtime"), f"{name}.runtime"),
            artifact=f.text(d.get("artifact"), f"{name}.artifact"),
            passed=f.flag(d.get("passed"), f"{name}.passed"),
            verdict=f.text(d.get("verdict", ""), f"{name}.verdict"),
            tolerances=tol,
            samples=f.integer(d.get("samples"), f"{name}.samples", 1, COUNT_MAX),
            seed=f.integer(d.get("seed"), f"{name}.seed", 0, SEED_MAX),
            inputs=f.text(d.get("inputs", ""), f"{name}.inputs"),
            outputs={k: f.obj(f.plain(v, f"{name}.outputs.{k}"), k) for k, v in outputs.items()},
            decisions=f.obj(f.plain(d.get("decisions", {}), f"{name}.decisions"), "decisions"),
            forced_outputs=None if forced is None else f.plain(forced, f"{name}.forced_outputs"),
        )

    def to_dict(self) -> dict:
        out = {
            "runtime": self.runtime,
            "artifact": self.artifact,
            "passed": self.passed,
            "verdict": self.verdict,
            "tolerances": self.tolerances.to_dict(),
            "samples": self.samples,
            "seed": self.seed,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "decisions": self.decisions,
        }
        if self.forced_outputs is not None:
            out["forced_outputs"] = self.forced_outputs
        return out


@dataclass
class Accuracy:
    """mIoU of the baseline (`--method none`) and the reduced model, and the retention."""

    metric: str
    baseline: float | None
    reduced: float | None
    retention: float | None
    pixel_accuracy: dict  # baseline, reduced
    images: int
    data: str
    runtime: str

    @classmethod
    def read(cls, d, f: Fields) -> "Accuracy":
        d = f.obj(d, "accuracy")
        pix = f.obj(d.get("pixel_accuracy"), "accuracy.pixel_accuracy")
        share = {"low": 0.0, "high": 1.0, "optional": True}
        return cls(
            metric=f.text(d.get("metric"), "accuracy.metric"),
            baseline=f.number(d.get("baseline"), "accuracy.baseline", **share),
            reduced=f.number(d.get("reduced"), "accuracy.reduced", **share),
            retention=f.number(d.get("retention"), "accuracy.retention", 0.0, optional=True),
            pixel_accuracy={
                k: f.number(pix.get(k), f"accuracy.pixel_accuracy.{k}", **share)
                for k in ("baseline", "reduced")
            },
            images=f.integer(d.get("images"), "accuracy.images", 1, COUNT_MAX),
            data=f.text(d.get("data"), "accuracy.data"),
            runtime=f.text(d.get("runtime"), "accuracy.runtime"),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Timing:
    """The build's speed against its baseline (`bench`): the headline numbers typed, the
    per-model latencies and the profile kept as written (`detail`)."""

    baseline_ms: float | None
    reduced_ms: float | None
    speedup: float | None
    gflops_ratio: float | None
    token_ops_share: float | None
    runs: int
    warmup: int
    detail: dict = field(default_factory=dict)  # latency, spread_ms, gflops, token_ops, ...

    HEADLINE = ("baseline_ms", "reduced_ms", "speedup", "gflops_ratio", "token_ops_share")

    @classmethod
    def read(cls, d, f: Fields) -> "Timing":
        d = f.obj(d, "bench")
        head = {
            k: f.number(d.get(k), f"bench.{k}", 0.0, optional=True, open_low=k != "token_ops_share")
            for k in cls.HEADLINE
        }
        if head["token_ops_share"] is not None and head["token_ops_share"] > 1:
            f.fail("bench.token_ops_share", d["token_ops_share"], "a share in [0, 1]")
        rest = {k: v for k, v in d.items() if k not in (*cls.HEADLINE, "runs", "warmup")}
        return cls(
            **head,
            runs=f.integer(d.get("runs"), "bench.runs", 1, COUNT_MAX),
            warmup=f.integer(d.get("warmup"), "bench.warmup", 0, COUNT_MAX),
            detail=f.plain(rest, "bench"),
        )

    @classmethod
    def of(cls, d: dict) -> "Timing":
        """From timing's result as computed (not read back: no checks)."""
        rest = {k: v for k, v in d.items() if k not in (*cls.HEADLINE, "runs", "warmup")}
        return cls(
            **{k: d.get(k) for k in cls.HEADLINE}, runs=d["runs"], warmup=d["warmup"], detail=rest
        )

    def to_dict(self) -> dict:
        head = {k: getattr(self, k) for k in self.HEADLINE}
        return {**head, "runs": self.runs, "warmup": self.warmup, **self.detail}


def _settings(d, f: Fields) -> BuildSettings:
    """BuildSettings from the report's "settings", every field checked as the CLI checks it."""
    d = f.obj(d, "settings")
    m = f.obj(d.get("model"), "settings.model")
    size = m.get("img_size")
    tol = "settings.{}"
    s = BuildSettings(
        model=ModelSpec(
            name=f.text(m.get("name"), "settings.model.name"),
            checkpoint=f.text(m.get("checkpoint"), "settings.model.checkpoint", optional=True),
            img_size=None if size is None else f.shape(size, "settings.model.img_size", 2),
            num_classes=f.integer(
                m.get("num_classes"), "settings.model.num_classes", 1, MAX_PAIR, optional=True
            ),
        ),
        method=f.text(d.get("method"), "settings.method"),
        method_args={
            k: f.plain(v, f"settings.method_args.{k}")
            for k, v in f.obj(d.get("method_args", {}), "settings.method_args").items()
        },
        batch=f.integer(d.get("batch", 1), "settings.batch", 1, BATCH_MAX),
        dynamic_batch=f.flag(d.get("dynamic_batch", False), "settings.dynamic_batch"),
        opset=f.integer(d.get("opset", 18), "settings.opset", *OPSETS),
        seed=f.integer(d.get("seed", 0), "settings.seed", 0, SEED_MAX),
        atol=f.number(d.get("atol", 1e-3), tol.format("atol"), 0.0, MAX_TOLERANCE, open_low=True),
        rtol=f.number(d.get("rtol", 1e-3), tol.format("rtol"), 0.0, MAX_TOLERANCE, open_low=True),
        min_cosine=f.number(
            d.get("min_cosine", 0.99999), tol.format("min_cosine"), 0.0, 1.0, open_low=True
        ),
        error_quantile=f.number(
            d.get("error_quantile", 0.99), tol.format("error_quantile"), 0.0, 1.0, open_low=True
        ),
        min_argmax=f.number(
            d.get("min_argmax", 0.999), tol.format("min_argmax"), 0.0, 1.0, open_low=True
        ),
        plugins=f.flag(d.get("plugins", False), "settings.plugins"),
        engine=f.flag(d.get("engine", False), "settings.engine"),
        precision=f.text(d.get("precision", "fp32"), "settings.precision", choices=PRECISIONS),
        workspace_mib=f.integer(
            d.get("workspace_mib"), "settings.workspace_mib", 1, 1 << 22, optional=True
        ),
        opt_level=f.integer(d.get("opt_level"), "settings.opt_level", 0, 5, optional=True),
        plugin_library=f.text(d.get("plugin_library"), "settings.plugin_library", optional=True),
        eval_data=f.text(d.get("eval_data"), "settings.eval_data", optional=True),
        eval_count=f.integer(
            d.get("eval_count"), "settings.eval_count", 1, 1_000_000, optional=True
        ),
    )
    return s


# ---- the record --------------------------------------------------------------------------------

# Top-level keys of report.json this module reads; others are kept as written (`extra`).
_KNOWN = (
    "tool",
    "model",
    "method",
    "tokens",
    "settings",
    "artifacts",
    "lint",
    "engine",
    "validation",
    "polygraphy",
    "accuracy",
    "bench",
    "hashes",
    "non_finite",
    "rehashed",
)


@dataclass
class BuildRecord:
    """A build as report.json records it."""

    model: ModelInfo
    method: str
    method_config: dict
    tokens: dict  # full, reduced
    settings: BuildSettings
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # by kind, in recorded order
    lint: list = field(default_factory=list)
    engine: EngineInfo | None = None
    validation: list[Validation] = field(default_factory=list)
    polygraphy: dict | None = None
    accuracy: Accuracy | None = None
    timing: Timing | None = None
    hashes: dict = field(default_factory=dict)  # file -> sha256
    non_finite: list | None = None
    rehashed: bool = False
    extra: dict = field(default_factory=dict)  # keys of other versions, kept as written

    # ---- artifacts, asked by what they are
    def add(self, kind: str, file: str, precision: str | None = None) -> Artifact:
        art = Artifact.of(kind, file, precision, self.hashes.get(file))
        self.artifacts[kind] = art
        return art

    def add_engine(self, file: str) -> Artifact:
        """The engine of this build, at the engine stage's precision."""
        return self.add("engine", file, self.engine.precision if self.engine else None)

    def add_variant(self, name: str, file: str) -> Artifact:
        """Another model built from the same weights (`baseline`, `authors_form`)."""
        return self.add(f"{name}_onnx", file)

    def variant(self, name: str) -> Artifact | None:
        return self.artifacts.get(f"{name}_onnx")

    @property
    def onnx(self) -> Artifact:
        """The build's model as a plain ONNX graph (every build has it)."""
        return self.artifacts["onnx"]

    @property
    def optimized(self) -> Artifact | None:
        """The model optimised for ONNX Runtime (`--optimize`), when the build wrote it."""
        return self.artifacts.get("onnx_optimized")

    @property
    def plugin_graph(self) -> Artifact | None:
        return self.artifacts.get("onnx_plugins")

    @property
    def engine_file(self) -> Artifact | None:
        return self.artifacts.get("engine")

    @property
    def baseline(self) -> Artifact | None:
        return self.variant("baseline")

    def engine_source(self) -> Artifact:
        """The graph an engine of this build is built from."""
        return next(self.artifacts[k] for k in ENGINE_SOURCES if k in self.artifacts)

    def engine_sources(self) -> list[Artifact]:
        """Every graph an engine can be built from (doctor builds each)."""
        return [self.artifacts[k] for k in reversed(ENGINE_SOURCES) if k in self.artifacts]

    def validated(self) -> list[Artifact]:
        """The artifacts validated against PyTorch, in the order the report lists them."""
        return [self.artifacts[k] for k in KINDS if k in self.artifacts and KINDS[k].runtime]

    def graphs(self) -> list[Artifact]:
        return [a for a in self.artifacts.values() if a.graph]

    def files(self) -> list[str]:
        return [a.file for a in self.artifacts.values()]

    def file_of(self, file: str) -> Artifact | None:
        return next((a for a in self.artifacts.values() if a.file == file), None)

    def validation_of(self, artifact: Artifact) -> Validation | None:
        return next((v for v in self.validation if v.artifact == artifact.file), None)

    def set_hashes(self, hashes: dict) -> None:
        self.hashes = dict(hashes)
        self.artifacts = {
            k: replace(a, sha256=self.hashes.get(a.file)) for k, a in self.artifacts.items()
        }

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.validation)

    # ---- JSON
    def to_dict(self) -> dict:
        out = {
            "tool": "vitexport",
            "model": self.model.to_dict(),
            "method": {"name": self.method, "config": self.method_config},
            "tokens": dict(self.tokens),
            "settings": self.settings.to_dict(),
            "artifacts": {k: a.file for k, a in self.artifacts.items()},
            "lint": self.lint,
        }
        if self.engine is not None:
            out["engine"] = self.engine.to_dict()
        out["validation"] = [v.to_dict() for v in self.validation]
        for key, value in (
            ("polygraphy", self.polygraphy),
            ("accuracy", self.accuracy.to_dict() if self.accuracy else None),
            ("bench", self.timing.to_dict() if self.timing else None),
            ("non_finite", self.non_finite),
        ):
            if value is not None:
                out[key] = value
        if self.rehashed:
            out["rehashed"] = True
        out.update(self.extra)
        out["hashes"] = dict(self.hashes)
        return out

    @classmethod
    def read(cls, data, folder: Path, where: str | None = None) -> "BuildRecord":
        """The record of report.json's content `data` in `folder`, every field checked."""
        folder = Path(folder)
        where = where or str(folder / "report.json")
        f = Fields(where)
        d = f.obj(data, "(the report)")
        if d.get("tool", "vitexport") != "vitexport":
            f.fail("tool", d.get("tool"), "vitexport")
        method = f.obj(d.get("method"), "method")
        tokens = f.obj(d.get("tokens"), "tokens")
        hashes = f.obj(d.get("hashes", {}), "hashes")
        for name, digest in hashes.items():
            confine(folder, name, f"{where}: hashes")
            f.sha(digest, f"hashes.{name}")
        record = cls(
            model=ModelInfo.read(d.get("model"), f),
            method=f.text(method.get("name"), "method.name"),
            method_config=f.obj(f.plain(method.get("config", {}), "method.config"), "config"),
            tokens={
                k: f.integer(tokens.get(k), f"tokens.{k}", 1, COUNT_MAX)
                for k in ("full", "reduced")
            },
            settings=_settings(d.get("settings"), f),
            hashes=dict(hashes),
        )
        arts = f.obj(d.get("artifacts"), "artifacts")
        if "onnx" not in arts:
            f.fail("artifacts", sorted(arts), "artifacts with the build's model.onnx ('onnx')")
        engine = d.get("engine")
        for kind, file in arts.items():
            f.text(file, f"artifacts.{kind}")
            confine(folder, file, f"{where}: artifacts.{kind}")
        if engine is not None:
            record.engine = EngineInfo.read(engine, f, folder, set(arts.values()))
        for kind, file in arts.items():
            record.add(kind, file, record.engine.precision if kind == "engine" and engine else None)
        record.lint = [
            f.obj(f.plain(x, f"lint[{i}]"), f"lint[{i}]")
            for i, x in enumerate(f.items(d.get("lint", []), "lint"))
        ]
        record.validation = [
            Validation.read(v, f, f"validation[{i}]")
            for i, v in enumerate(f.items(d.get("validation", []), "validation"))
        ]
        if d.get("polygraphy") is not None:
            record.polygraphy = f.obj(f.plain(d["polygraphy"], "polygraphy"), "polygraphy")
        if d.get("accuracy") is not None:
            record.accuracy = Accuracy.read(d["accuracy"], f)
        if d.get("bench") is not None:
            record.timing = Timing.read(d["bench"], f)
        if d.get("non_finite") is not None:
            record.non_finite = f.names(d["non_finite"], "non_finite")
        record.rehashed = bool(f.flag(d.get("rehashed", False), "rehashed"))
        record.extra = {k: f.plain(v, k) for k, v in d.items() if k not in _KNOWN}
        return record


# ---- sweep.json ----------------------------------------------------------------------------------


def row_digest(row: dict) -> str:
    """The sha256 that seals a sweep row: of its content, without the seal and the Pareto mark
    (which the whole table decides)."""
    content = {k: v for k, v in row.items() if k not in ("sha256", "pareto")}
    text = json.dumps(content, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class SweepRow:
    """One measured setting of a sweep."""

    key: str
    method: str
    values: dict  # every field as written (speed-up, GFLOPs, retention, command, ...)
    sealed: bool  # its sha256 was recorded (rows of older sweeps have none)

    NUMBERS = ("gflops", "gflops_ratio", "baseline_ms", "reduced_ms", "speedup", "seconds")
    SHARES = ("token_ops_share", "miou", "cosine", "argmax_agreement")

    @classmethod
    def read(cls, d, f: Fields, name: str) -> "SweepRow":
        d = f.obj(d, name)
        key = f.text(d.get("key"), f"{name}.key")
        method = f.text(d.get("method"), f"{name}.method")
        for k in cls.NUMBERS:
            f.number(d.get(k), f"{name}.{k}", 0.0, optional=True)
        for k in cls.SHARES:
            f.number(d.get(k), f"{name}.{k}", -1.0, 1.0, optional=True)
        f.number(d.get("retention"), f"{name}.retention", 0.0, optional=True)
        f.integer(d.get("tokens"), f"{name}.tokens", 1, COUNT_MAX, optional=True)
        f.flag(d.get("validated"), f"{name}.validated", optional=True)
        values = f.plain(d, name)
        seal = d.get("sha256")
        if seal is not None and row_digest(d) != f.sha(seal, f"{name}.sha256"):
            f.fail(
                f"{name} ({key})",
                seal[:12] + "...",
                "rows as the sweep measured them (--force to measure again)",
                "its content differs from its recorded sha256: edited",
            )
        return cls(key, method, values, seal is not None)

    def to_dict(self) -> dict:
        return dict(self.values)


@dataclass
class SweepRecord:
    """sweep.json: what was swept (model, data, runs) and the rows measured so far."""

    header: dict  # every field but the rows, as written
    rows: list[SweepRow]

    def get(self, key: str, default=None):
        return self.header.get(key, default)

    @classmethod
    def read(cls, data, where: str) -> "SweepRecord":
        f = Fields(where)
        d = f.obj(data, "(the sweep)")
        rows = [
            SweepRow.read(r, f, f"rows[{i}]") for i, r in enumerate(f.items(d.get("rows"), "rows"))
        ]
        keys = [r.key for r in rows]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            f.fail("rows", dup, "each setting once", "a key appears twice")
        for k in ("model", "weights", "data"):
            f.text(d.get(k), k, optional=True)
        f.integer(d.get("images"), "images", 1, COUNT_MAX, optional=True)
        input_size = d.get("input")
        if input_size is not None:
            f.shape(input_size, "input", 2)
        header = {k: f.plain(v, k) for k, v in d.items() if k != "rows"}
        return cls(header, rows)


def seal_rows(rows: list[dict]) -> None:
    """Record each row's sha256 in it (before writing sweep.json)."""
    for r in rows:
        r["sha256"] = row_digest(r)


__all__ = [
    "Artifact",
    "BuildRecord",
    "KINDS",
    "Kind",
    "ModelInfo",
    "EngineInfo",
    "Validation",
    "Accuracy",
    "Timing",
    "Tolerances",
    "Fields",
    "SweepRecord",
    "SweepRow",
    "seal_rows",
    "row_digest",
]
