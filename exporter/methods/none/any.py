"""The baseline's one form: any model, unchanged."""

from ...models.base import DenseModel
from ..base import TokenMethod


class NoReduction(TokenMethod):
    name = "none"
    reduces = False


def build(model: DenseModel, args: dict) -> NoReduction:
    return NoReduction(model.layout)
