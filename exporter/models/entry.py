"""A model's registry entry: how to build it and the defaults it owns (as timm's
`pretrained_cfg`): input name and size, normalisation, classes, evaluation set, and the
method flags tuned for its weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..config import ModelSpec
from ..errors import InputError

if TYPE_CHECKING:
    import torch

# The name of every model's image input in the exported graphs (and their feed dicts).
INPUT_NAME = "images"

# (images float32 [N, 3, H, W] normalised, labels int64 [N, H, W], the data set's name); numpy
# arrays (no numpy import here: --help reads the entries)
EvalData = tuple[Any, Any, str]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[[ModelSpec], Any]  # -> the DenseModel
    description: str
    pos_embed_key: str | None = None
    weights_root: str = ""  # submodule whose state dict a checkpoint holds
    takes_classes: bool = False  # whether --num-classes applies
    default_weights: Callable[[], str] | None = None  # path of weights used without --checkpoint
    # what reports call the weights a build loads without --checkpoint, where the builder loads
    # them itself (a model folder); None: `default_weights`' file name, "(shipped)", or "random"
    weights_text: str | None = None
    convert_state: Callable | None = None  # checkpoint layout -> the module's names
    # Method flags tuned for this model's shipped weights, used where neither the user nor a
    # preset set them: {method: {flag dest: value}}.
    method_defaults: dict = field(default_factory=dict)
    input_name: str = INPUT_NAME
    input_size: tuple[int, int] | None = None  # None: the builder's own default
    # uint8 pixels -> model input: (x / 255 - mean) / std; 0.5/0.5 as Segmenter's checkpoints.
    # One number for every channel, or one per channel (R, G, B) as a model folder states them.
    mean: float | tuple[float, float, float] = 0.5
    std: float | tuple[float, float, float] = 0.5
    num_classes: int | None = None  # None: set by --num-classes or the builder
    class_names: tuple[str, ...] | None = None
    # The model's own evaluation data, evaluated on every build: (count, (H, W)) -> EvalData.
    eval_set: Callable[[int, tuple[int, int]], EvalData] | None = None
    eval_count: int = 0  # images of `eval_set` a build evaluates unless told otherwise
    eval_size: int = 0  # images `eval_set` holds: the bound of --eval-count

    def check_eval_count(self, count: int) -> None:
        """--eval-count within what the model's own evaluation set holds."""
        held = self.eval_size or count
        if not 1 <= count <= held:
            raise InputError(
                "--eval-count",
                count,
                f"an integer in 1..{held}",
                f"the {self.name} evaluation set holds {held} images",
            )

    def to_input(self, images) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] normalised as the model expects."""
        import numpy as np
        import torch

        x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float()
        if isinstance(self.mean, tuple) or isinstance(self.std, tuple):
            mean = torch.tensor(self.mean, dtype=torch.float32).reshape(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).reshape(-1, 1, 1)
            return (x / 255.0 - mean) / std
        return (x / 255.0 - self.mean) / self.std
