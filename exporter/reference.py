"""The PyTorch reference of a build (its model with the method applied) and the data it is
evaluated on; every artifact of the build is compared with and measured against these."""

from __future__ import annotations

from .accuracy import EvalSet, check_eval_set, load_eval_set
from .config import BuildSettings
from .errors import InputError
from .methods import apply_method
from .methods.base import ReducedModel
from .models import MODELS, create_model, entry_of


def input_shape(settings: BuildSettings, model) -> tuple[int, int, int, int]:
    return (settings.batch, 3, *model.layout.image_size)


def patched_model(settings: BuildSettings) -> ReducedModel:
    """The PyTorch reference for `settings` (random weights are seeded, so this is repeatable)."""
    if settings.batch < 1:
        raise InputError("--batch", settings.batch, "an integer >= 1")
    model = create_model(settings.model, seed=settings.seed)
    return apply_method(model, settings.method, settings.method_args)


def eval_set(settings: BuildSettings, model) -> EvalSet | None:
    """The eval set of this build (--eval-data, or the model's own evaluation set where its
    entry has one), checked against the model; None when there is nothing to evaluate on."""
    name = settings.model.name
    entry = entry_of(name)
    if settings.eval_data is None and entry.eval_set is None:
        if settings.eval_count is not None:
            owners = " or ".join(f"--model {m}" for m, e in MODELS.items() if e.eval_set)
            raise InputError(
                "--eval-count", settings.eval_count, f"only with --eval-data FILE or {owners}"
            )
        return None
    if model.output_kind != "segmentation":
        raise InputError(
            "--eval-data",
            settings.eval_data,
            "only with segmentation models",
            f"{name} predicts {model.output_kind}",
        )
    size = model.layout.image_size
    if settings.eval_data is not None:
        return load_eval_set(settings.eval_data, model.num_classes, size, settings.eval_count)
    count = entry.eval_count if settings.eval_count is None else settings.eval_count
    entry.check_eval_count(count)
    images, labels, source = entry.eval_set(count, size)
    return check_eval_set(
        images, labels, model.num_classes, size, None, f"{source} ({count} images)"
    )
