"""Models as users hold them: a local Hugging Face transformers folder (`config.json`, the
weights in `model.safetensors`, optionally `preprocessor_config.json`), named `--model
hf:FOLDER` or `--model FOLDER`.

The family comes from the config's `architectures[0]` (or its `model_type`): `LOADERS` maps
each supported architecture to the function that builds the project's model of it and loads
the folder's weights into it (`module:function`, imported when a model is built, with
`(folder, config, spec)`: the folder, config.json as a dict, the `ModelSpec` with the input
size filled in). Input size, normalisation and class names come from the folder.

This module reads JSON only: no torch and no transformers (the CLI's --help imports it).
transformers itself is an optional extra (`pip install 'vitexport[hf]'`); the loaders use its
config classes, so a folder's defaults are transformers' own. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import NamedTuple

from ...config import ModelSpec
from ...errors import InputError
from ...paths import check_regular, read_text
from ..entry import ModelEntry

PREFIX = "hf:"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
JSON_LIMIT = 16 << 20  # a config with a few thousand labels is far below this
FLAG = "--model"

IMAGENET_STANDARD = (0.5, 0.5, 0.5)  # transformers' ViT and DPT processors' defaults
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)  # its DINOv2 (BiT) processor's defaults
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


class Loader(NamedTuple):
    target: str  # "module:function" (relative to this package when it starts with ".")
    what: str  # what the project builds of it, for `vitexport models` and the entry
    takes_classes: bool = False  # --num-classes puts the project's linear head on it
    labeled: bool = False  # its classes (and their names) come from the config's id2label
    mean: tuple[float, float, float] = IMAGENET_STANDARD  # without a preprocessor_config.json
    std: tuple[float, float, float] = IMAGENET_STANDARD


LOADERS = {
    "ViTModel": Loader(
        ".vit:load_vit", "ViT backbone: features, or + linear head with --num-classes", True
    ),
    "Dinov2Model": Loader(
        ".vit:load_dinov2",
        "DINOv2 backbone: features, or + linear head with --num-classes",
        True,
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
    ),
    "Dinov2WithRegistersModel": Loader(
        ".vit:load_dinov2_registers",
        "DINOv2 with registers: features, or + linear head with --num-classes",
        True,
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
    ),
    "DPTForDepthEstimation": Loader(".dpt:load_depth", "DPT depth"),
    "DPTForSemanticSegmentation": Loader(
        ".dpt:load_segmentation", "DPT segmentation", labeled=True
    ),
    # its own family; absent from an install without it (then unsupported, as any other)
    "EomtForUniversalSegmentation": Loader(
        "exporter.models.eomt:from_hf",
        "EoMT segmentation",
        labeled=True,
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
    ),
}
# model_type -> architecture, for a config.json whose `architectures` names none we know
MODEL_TYPES = {
    "vit": "ViTModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    "eomt": "EomtForUniversalSegmentation",
}


def _module_of(target: str) -> str:
    module = target.partition(":")[0]
    return f"{__name__}{module}" if module.startswith(".") else module


def _available(loader: Loader) -> bool:
    """Whether the loader's module is part of this install (found without importing it)."""
    try:
        return importlib.util.find_spec(_module_of(loader.target)) is not None
    except ModuleNotFoundError:
        return False


def supported() -> list[str]:
    return [arch for arch, loader in LOADERS.items() if _available(loader)]


def folder_of(name: str) -> Path | None:
    """The folder `name` names as a transformers model (hf:FOLDER, or a folder holding a
    config.json), or None when `name` is not such a source."""
    allowed = "hf:FOLDER, a local transformers model folder"
    if name.startswith(PREFIX):
        folder = Path(name[len(PREFIX) :]).expanduser()
        if not _is(folder.is_dir):
            raise InputError(FLAG, name, allowed, "no such folder")
        if not _is((folder / CONFIG).is_file):
            raise InputError(FLAG, name, allowed, f"no {CONFIG} in it")
        return folder
    folder = Path(name).expanduser()
    return folder if _is(folder.is_dir) and _is((folder / CONFIG).is_file) else None


def _is(check) -> bool:
    """A path check that says no where the name cannot be looked up (too long, a NUL byte)."""
    try:
        return check()
    except (OSError, ValueError):
        return False


def label_of(name: str) -> str:
    """A name for files and folders made from the model's name: "hf-<folder name>" for a
    model folder (its path holds '/'), the name itself for the others."""
    folder = folder_of(name) if name.startswith(PREFIX) or "/" in name else None
    if folder is None:
        return name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.resolve().name).strip("._") or "model"
    return f"hf-{stem}"


def read_json(path: Path) -> dict:
    check_regular(path, FLAG, JSON_LIMIT)
    try:
        data = json.loads(read_text(path, FLAG, JSON_LIMIT, follow=True))
    except json.JSONDecodeError as err:
        raise InputError(FLAG, str(path), "a JSON file", f"not JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise InputError(FLAG, str(path), "a JSON object", "holds something else")
    return data


def architecture_of(config: dict, name: str) -> tuple[str, Loader]:
    """The config's architecture and its loader; one InputError naming the architecture and
    the supported ones when there is none."""
    archs = config.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    model_type = config.get("model_type")
    if arch not in LOADERS and isinstance(model_type, str) and model_type in MODEL_TYPES:
        arch = MODEL_TYPES[model_type]
    loader = LOADERS.get(arch)
    if loader is None or not _available(loader):
        shown = arch or (f"model_type {model_type}" if model_type else "none named")
        raise InputError(
            FLAG,
            name,
            f"a folder of one of: {', '.join(supported())}",
            f"architecture {shown} is not supported",
        )
    return arch, loader


def _pair(value) -> tuple[int, int] | None:
    """A size as transformers writes it: an int, [H, W], or {"height": H, "width": W}."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (value[0], value[1])
    if isinstance(value, dict) and isinstance(value.get("height"), int):
        return _pair([value["height"], value.get("width")])
    return None


def _patch(config: dict) -> int:
    patch = _pair(config.get("patch_size", 16)) or (16, 16)
    return max(1, patch[0])


def input_size_of(config: dict, pre: dict) -> tuple[int, int] | None:
    """The input HxW: the processor's crop (where it crops) or its fixed size, else the
    config's image_size; a processor size that is no whole number of patches is skipped."""
    patch = _patch(config)
    candidates = []
    if pre.get("do_center_crop"):
        candidates.append(_pair(pre.get("crop_size")))
    candidates += [_pair(pre.get("size")), _pair(config.get("image_size"))]
    for size in candidates:
        if size and size[0] > 0 and size[1] > 0 and not (size[0] % patch or size[1] % patch):
            return size
    return None


def _channels(value, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    return default


def normalisation_of(pre: dict, loader: Loader) -> tuple[tuple, tuple]:
    """(mean, std) per channel: the processor's image_mean / image_std, its default where the
    folder has no processor file; (0, 1) when the processor does not normalise."""
    if pre.get("do_normalize") is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean = _channels(pre.get("image_mean"), loader.mean)
    std = _channels(pre.get("image_std"), loader.std)
    if not all(s > 0 for s in std):
        raise InputError(FLAG, str(pre.get("image_std")), "image_std > 0 per channel")
    return mean, std


def labels_of(config: dict) -> tuple[str, ...] | None:
    """id2label's names in id order, None without a complete one."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        ids = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(ids) != list(range(len(ids))):
        return None
    return tuple(ids[i] for i in range(len(ids)))


def check_transformers(name: str) -> None:
    """One line when the optional extra is missing."""
    try:
        found = importlib.util.find_spec("transformers") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise InputError(
            FLAG,
            name,
            "with transformers installed: pip install 'vitexport[hf]'",
            "a transformers model folder needs the optional extra hf",
        )


def _build(name: str, folder: Path, config: dict, loader: Loader, size, spec: ModelSpec):
    check_transformers(name)
    spec = ModelSpec(spec.name, spec.checkpoint, spec.img_size or size, spec.num_classes)
    module, _, function = loader.target.partition(":")
    load = getattr(importlib.import_module(module, __name__), function)
    return load(folder, config, spec)


def _convert(loader: Loader):
    """The loader module's `convert_state` (transformers' names -> the model's, for a
    --checkpoint in the folder's layout), looked up when a checkpoint is loaded."""

    def convert(state, module):
        own = importlib.import_module(loader.target.partition(":")[0], __name__)
        found = getattr(own, "convert_state", None)
        return found(state, module) if found else state

    return convert


def entry_for(name: str) -> ModelEntry | None:
    """The entry of the model folder `name` names, None when it names none."""
    folder = folder_of(name)
    if folder is None:
        return None
    config = read_json(folder / CONFIG)
    arch, loader = architecture_of(config, name)
    pre_path = folder / PREPROCESSOR
    pre = read_json(pre_path) if pre_path.is_file() else {}
    size = input_size_of(config, pre)
    mean, std = normalisation_of(pre, loader)
    names = labels_of(config) if loader.labeled else None
    weights = next(
        (
            folder / f
            for f in ("model.safetensors", "model.safetensors.index.json")
            if (folder / f).is_file()
        ),
        folder / "model.safetensors",
    )
    return ModelEntry(
        name,
        lambda spec: _build(name, folder, config, loader, size, spec),
        f"Hugging Face {arch} ({loader.what})",
        takes_classes=loader.takes_classes,
        convert_state=_convert(loader),
        weights_text=str(weights),
        input_size=size,
        mean=mean,
        std=std,
        num_classes=len(names) if names else None,
        class_names=names,
    )
