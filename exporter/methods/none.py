"""`--method none`: the unmodified model, the baseline everything is compared with."""

from ..models.base import DenseModel
from .base import MethodSpec, NoConfig, TokenMethod


class NoReduction(TokenMethod):
    name = "none"
    reduces = False


def build(model: DenseModel, args: dict) -> NoReduction:
    return NoReduction(model.layout)


SPEC = MethodSpec(
    "none", "the unmodified model (baseline)", NoConfig, {"vit": build, "swin": build}
)
