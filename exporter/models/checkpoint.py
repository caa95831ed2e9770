"""Loading user checkpoints safely: no pickled code, clear errors on mismatched keys."""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed

from ..errors import InputError
from ..paths import check_regular

FLAG = "--checkpoint"


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a .safetensors file or a torch file saved without code."""
    p = Path(path)
    if p.is_dir():
        raise InputError(FLAG, path, "a .pth/.pt/.bin or .safetensors file", "is a folder")
    check_regular(p, FLAG)  # /dev/zero or a FIFO would be read forever
    try:
        if p.suffix == ".safetensors":
            data = load_file(str(p))
        else:
            data = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or truncated files raise many types
        if isinstance(err, pickle.UnpicklingError) and _is_pickle(p):
            raise InputError(
                FLAG,
                path,
                "a checkpoint loadable with weights_only=True (tensors and plain containers)",
                "refused, it needs code execution to load",
            ) from None
        raise InputError(
            FLAG,
            path,
            "a readable torch or safetensors checkpoint",
            f"cannot be read ({type(err).__name__})",
        ) from None
    for key in ("model", "state_dict", "model_state"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(FLAG, path, "a state dict of tensors", "holds something else")
    return data


def _is_pickle(path: Path) -> bool:
    """True when the file (or a torch zip's data.pkl) parses as a pickle stream; parsing the
    opcodes runs nothing."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next(n for n in z.namelist() if n.endswith("data.pkl"))
                data = z.read(name)
        else:
            data = path.read_bytes()
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
        return True
    except Exception:
        return False


def fit_pos_embed(
    state: dict, module: torch.nn.Module, key: str, num_prefix: int, grid: tuple[int, int]
) -> None:
    """Resize a square checkpoint position embedding to the model's grid (bilinear)."""
    target = dict(module.named_parameters()).get(key)
    if key not in state or target is None or state[key].shape == target.shape:
        return
    n_old = state[key].shape[1] - num_prefix
    side = int(round(n_old**0.5))
    if side * side == n_old and state[key].shape[2] == target.shape[2]:
        state[key] = resample_abs_pos_embed(
            state[key], new_size=list(grid), old_size=[side, side], num_prefix_tokens=num_prefix
        )


def load_into(
    module: torch.nn.Module, path: str, layout, pos_embed_key: str | None = None, convert=None
) -> None:
    """Load `path` into `module`; every key must match, shapes included.

    A position embedding trained at another resolution is resized first, as Segmenter does.
    `convert(state, module)`, when given, maps a checkpoint's layout to the module's names first.
    """
    state = read_state_dict(path)
    if convert is not None:
        state = convert(state, module)
    if pos_embed_key is not None:
        fit_pos_embed(state, module, pos_embed_key, layout.num_prefix, layout.grid)
    load_checked(module, state, path)


def load_checked(module: torch.nn.Module, state: dict, path: str, flag: str = FLAG) -> None:
    """Load `state` (read from `path`) into `module` strictly: the same keys, shapes and kinds
    of tensors, or one `InputError` naming `flag` and what differs."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise InputError(flag, path, "a checkpoint with this model's keys", "; ".join(parts))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise InputError(
            flag,
            path,
            "a checkpoint with this model's shapes",
            f"{len(wrong)} shapes differ (e.g. {'; '.join(wrong[:2])})",
        )
    # load_state_dict casts silently: int8 weights, booleans or complex numbers would become
    # different floats. Float -> float (half, bfloat16) is a plain widening and is allowed.
    kinds = [
        f"{k} is {state[k].dtype}, the model's {v.dtype}"
        for k, v in own.items()
        if _kind(state[k].dtype) != _kind(v.dtype)
    ]
    if kinds:
        raise InputError(
            flag,
            path,
            "a checkpoint whose tensors have the model's kinds (floating weights as floats)",
            f"{len(kinds)} differ (e.g. {kinds[0]})",
        )
    module.load_state_dict(state, strict=True)


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "integer"
