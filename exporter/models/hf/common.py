"""What the transformers-folder loaders share: the config as transformers reads it and the
folder's weights (loaded with `checkpoint.load_checked`: every key, shape and kind)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import InputError
from ...paths import check_regular
from . import FLAG, read_json

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"  # sharded weights: which file holds each tensor
LEGACY = "pytorch_model.bin"  # older folders; read with weights_only


def transformers_config(config: dict):
    """config.json as transformers' own config class reads it (its defaults filled in), made
    from the dict: nothing is looked up anywhere."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise InputError(FLAG, str(model_type), "a model_type transformers knows", "unknown")
    return CONFIG_MAPPING[model_type].from_dict(dict(config))


def unsupported(folder: Path, field: str, value, allowed: str) -> InputError:
    return InputError(FLAG, f"hf:{folder}", allowed, f"config {field} = {value!r}")


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    check_regular(path, FLAG)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or truncated files raise many types
        raise InputError(
            FLAG,
            str(path),
            "readable safetensors weights",
            f"cannot be read ({type(err).__name__})",
        ) from None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's weights: model.safetensors, its shards (model.safetensors.index.json),
    or pytorch_model.bin (tensors only)."""
    if (folder / WEIGHTS).is_file():
        return _read_file(folder / WEIGHTS)
    if (folder / INDEX).is_file():
        index = read_json(folder / INDEX).get("weight_map")
        if not isinstance(index, dict):
            raise InputError(FLAG, str(folder / INDEX), "a weight_map of shard file names")
        state = {}
        for shard in sorted(set(index.values())):
            if not isinstance(shard, str) or "/" in shard or shard.startswith("."):
                raise InputError(FLAG, str(folder / INDEX), "shard names inside the folder")
            state.update(_read_file(folder / shard))
        return state
    if (folder / LEGACY).is_file():
        return _read_file(folder / LEGACY)
    raise InputError(
        FLAG, f"hf:{folder}", f"a folder with {WEIGHTS} (or {INDEX}, {LEGACY})", "no weights"
    )


def strip_prefix(state: dict, marker: str) -> dict:
    """Keys relative to the model whose `marker` key the state holds under some prefix
    ("dpt.", "vit."): a head-carrying model's backbone read as the backbone."""
    if marker in state:
        return state
    prefixes = [k[: -len(marker)] for k in state if k.endswith("." + marker)]
    if len(prefixes) != 1:
        return state
    prefix = prefixes[0]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def is_meta(model: torch.nn.Module) -> bool:
    """Built on the meta device (shapes only: the memory estimate): no weights to load."""
    return next(model.parameters()).device.type == "meta"
