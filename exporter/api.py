"""The Python API: what the `vitexport` commands do, callable from a script or a notebook.

    from exporter.api import build, validate, bench, deploy, predict

    result = build("out/digits", method="expedite", hw="24x24")
    result.passed                      # every artifact matched PyTorch within the tolerances
    result.path("onnx")                # Path('out/digits/model.onnx')
    validate("out/digits").validation  # re-run the comparison of every artifact
    bench("out/digits").report["bench"]["speedup"]
    deploy("out/digits", "triton-repo").models  # {'segmenter_digits_expedite': 'ensemble', ...}
    predict("out/digits", "photo.png").classes   # uint8 H x W, any image size

Each call prints its progress on stderr as the CLI does (`progress=None`: silent, or any
function taking a line) and returns a `Result` (the folder and its report), a `Repository`
(`deploy`) or a `Prediction` (`predict`);
mistakes in the arguments raise `exporter.errors.InputError` with the same one-line message
the CLI prints.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .bench import bench_folder
from .build import build as run_build
from .build import revalidate
from .config import BuildSettings, ModelSpec, parse_pair
from .deploy import Repository, write_repository
from .predict import Prediction, predict_folder
from .presets import resolve
from .record import BuildRecord


def _say(text: str) -> None:
    """The default progress: one line per step on stderr, as the CLI prints (a build takes
    minutes; silence looked like a hang). Pass `progress=None` for none."""
    print(f"  {text}", file=sys.stderr, flush=True)


def _quiet(_: str) -> None:
    pass


@dataclass
class Result:
    """An output folder and its record (`record`, typed; `report`: report.json's content)."""

    folder: Path
    record: BuildRecord

    @property
    def report(self) -> dict:
        return self.record.to_dict()

    @property
    def passed(self) -> bool:
        """Every validated artifact matched the PyTorch reference."""
        return self.record.passed

    @property
    def validation(self) -> list[dict]:
        return [v.to_dict() for v in self.record.validation]

    @property
    def accuracy(self) -> dict | None:
        return self.record.accuracy.to_dict() if self.record.accuracy else None

    def path(self, artifact: str) -> Path:
        """The file of an artifact by its report key ("onnx", "onnx_plugins", "engine", ...)."""
        if artifact not in self.record.artifacts:
            raise KeyError(artifact)
        return self.folder / self.record.artifacts[artifact].file


def build(
    out,
    model: str | None = None,
    method: str | None = None,
    *,
    preset: str | None = None,
    img_size=None,
    checkpoint: str | None = None,
    num_classes: int | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = _say,
    **options,
) -> Result:
    """Patch, export, validate and report into folder `out`, as `vitexport build` does.

    `model`, `method` and `preset` default as in the CLI (segmenter_digits, expedite).
    `options` are BuildSettings fields (batch, dynamic_batch, opset, seed, atol, rtol, plugins,
    engine, precision, eval_count, ...) or the method's flags by their keys (hw=(24, 24),
    alpha=3, ...; see `vitexport methods`).

    >>> r = build("out/tiny", model="segmenter_tiny", img_size=(64, 64))  # doctest: +SKIP
    >>> r.passed, r.path("onnx").name  # doctest: +SKIP
    (True, 'model.onnx')
    """
    fields = set(BuildSettings.__dataclass_fields__) - {"model", "method", "method_args"}
    settings_args = {k: v for k, v in options.items() if k in fields}
    method_args = {k: v for k, v in options.items() if k not in fields}
    size = parse_pair("--img-size", img_size) if img_size is not None else None
    spec, method, method_args = resolve(
        preset, ModelSpec(model, checkpoint, size, num_classes), method, method_args
    )
    settings = BuildSettings(model=spec, method=method, method_args=method_args, **settings_args)
    report = run_build(settings, Path(out), force=force, progress=progress or _quiet)
    return Result(Path(out), report)


def validate(
    out,
    atol: float | None = None,
    rtol: float | None = None,
    progress: Callable[[str], None] | None = _say,
) -> Result:
    """Re-run the validation of every artifact in a build folder (`vitexport validate OUT`).

    >>> validate("out/tiny").passed  # doctest: +SKIP
    True
    """
    return Result(
        Path(out), revalidate(Path(out), progress=progress or _quiet, atol=atol, rtol=rtol)
    )


def bench(
    out,
    runs: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    progress: Callable[[str], None] | None = _say,
) -> Result:
    """Time a build against its `--method none` baseline (`vitexport bench OUT`); the numbers
    are in `result.report["bench"]`."""
    return Result(
        Path(out), bench_folder(Path(out), runs, warmup, threads, progress=progress or _quiet)
    )


def deploy(out, repo, **options) -> Repository:
    """Write a Triton model repository for a build folder (`vitexport deploy triton`);
    `options`: name, max_batch, dynamic_batch, force (as `write_repository`).

    >>> sorted(deploy("out/tiny", "triton-repo").models.values())  # doctest: +SKIP
    ['onnxruntime_onnx', 'python', 'tensorrt_plan']
    """
    return write_repository(out, repo, **options)


def predict(out, image, stride=None, threads: int | None = None) -> Prediction:
    """The class of every pixel of `image` (a path, or uint8 H x W x 3 of any size) by the
    build in `out`, by sliding windows of the model's input size (`stride` (h, w), default two
    thirds of the window; overlaps averaged), exactly as the `deploy triton` ensemble answers.

    >>> p = predict("out/digits", "photo.png")  # doctest: +SKIP
    >>> p.classes.shape, p.classes.dtype, p.windows  # doctest: +SKIP
    ((130, 200), dtype('uint8'), 8)
    """
    if not hasattr(image, "shape"):
        from .visualize import load_image  # deferred: image files only

        image = load_image(image)
    return predict_folder(out, image, stride, threads)


__all__ = ["Result", "Repository", "Prediction", "build", "validate", "bench", "deploy", "predict"]
