"""The papers' hyper-parameter tables as named presets (`--preset NAME`).

A preset fills in the model, input size, method and method flags; any flag given explicitly
on the command line wins. Sources: the Expedite paper's supplementary material Tables 1-3, and the
AiluRus and Token Adapter defaults. SwinV2-L + HTC++ (Table 2) has no preset: SwinV2's
attention has no bias table to resize, and vitexport has no SwinV2 adapter.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from .config import ModelSpec
from .errors import InputError
from .models import method_defaults

DEFAULT_MODEL = ModelSpec().name
DEFAULT_METHOD = "expedite"


@dataclass(frozen=True)
class Preset:
    name: str
    source: str
    model: str
    img_size: tuple[int, int]
    method: str
    args: dict = field(default_factory=dict)
    num_classes: int | None = None
    note: str = ""


def _expedite(alpha, hw, window, tau, k, iters=5):
    return {"alpha": alpha, "hw": hw, "window": window, "iters": iters, "tau": tau, "k": k}


PRESETS = {
    p.name: p
    for p in [
        Preset(
            "segmenter-ade20k",
            "000 Table 1 (Segmenter ViT-L/16, ADE20K); input 000 Table 3",
            "segmenter_large",
            (640, 640),
            "expedite",
            _expedite(10, "28x28", "5x5", 50, 20),
            150,
        ),
        Preset(
            "segmenter-cityscapes",
            "000 Table 1 (Segmenter ViT-L/16, Cityscapes); input Table 3",
            "segmenter_large",
            (768, 768),
            "expedite",
            _expedite(12, "32x32", "5x5", 50, 20),
            19,
        ),
        Preset(
            "segmenter-pascal-context",
            "000 Table 1 (Segmenter ViT-L/16, PASCAL-Context); Table 3",
            "segmenter_large",
            (480, 480),
            "expedite",
            _expedite(14, "15x15", "5x5", 50, 20),
            60,
        ),
        Preset(
            "dpt-kitti",
            "000 Table 1 (DPT R50+ViT-B/16, KITTI); input 1216x352 (Table 3)",
            "dpt_hybrid",
            (352, 1216),
            "expedite",
            _expedite(2, "28x28", "5x5", 5, 20),
            note="28 cluster rows over the grid's 22 token rows, as in the paper",
        ),
        Preset(
            "dpt-nyuv2",
            "000 Table 1 (DPT R50+ViT-B/16, NYUv2); input 640x480 (Table 3)",
            "dpt_hybrid",
            (480, 640),
            "expedite",
            _expedite(3, "16x16", "7x7", 10, 50),
        ),
        Preset(
            "swag-vit-h14",
            "000 Table 1 (SWAG ViT-H/14); input 518x518 (Table 3)",
            "vit_huge_patch14_224",
            (518, 518),
            "expedite",
            _expedite(8, "25x25", "7x7", 1, 20),
        ),
        Preset(
            "swag-vit-l16",
            "000 Table 1 (SWAG ViT-L/16); input 512x512 (Table 3)",
            "vit_large_patch16_224",
            (512, 512),
            "expedite",
            _expedite(8, "22x22", "9x9", 1, 20),
        ),
        # Table 2 counts alpha over all 24 Swin-L blocks; stage 3 starts after block 4, so the
        # stage-3 alpha is alpha - 4. The empty cells of the COCO rows take the ADE20K row's values.
        Preset(
            "mask2former-ade20k",
            "000 Table 2 (Mask2Former Swin-L, ADE20K); input 1152 (Table 3)",
            "swin_large_patch4_window12_384",
            (1152, 1152),
            "expedite",
            {
                "stage": 3,
                "alpha": 4,
                "window_hw": "8x8",
                "window": "5x5",
                "iters": 5,
                "tau": 100,
                "k": 10,
            },
        ),
        Preset(
            "mask2former-coco-panoptic",
            "000 Table 2 (Mask2Former Swin-L, COCO panoptic); input 1152 (Table 3)",
            "swin_large_patch4_window12_384",
            (1152, 1152),
            "expedite",
            {
                "stage": 3,
                "alpha": 6,
                "window_hw": "8x8",
                "window": "7x7",
                "iters": 5,
                "tau": 20,
                "k": 10,
            },
            note="k x k = 8x8 from the ADE20K row (empty in the table)",
        ),
        Preset(
            "mask2former-coco-instance",
            "000 Table 2 (Mask2Former Swin-L, COCO instance); input 1152 (Table 3)",
            "swin_large_patch4_window12_384",
            (1152, 1152),
            "expedite",
            {
                "stage": 3,
                "alpha": 8,
                "window_hw": "8x8",
                "window": "11x11",
                "iters": 5,
                "tau": 100,
                "k": 60,
            },
            note="k x k = 8x8 from the ADE20K row (empty in the table)",
        ),
        Preset(
            "ailurus-ade20k",
            "002 section 3.3 and Table 7 (400 of 1600 tokens after block 2)",
            "segmenter_large",
            (640, 640),
            "ailurus",
            {"alpha": 2, "clusters": 400, "spatial_alpha": 0.9, "spatial_neighbours": 50, "knn": 1},
            150,
        ),
        Preset(
            "token-adapter-ade20k",
            "003 Table 4 defaults (rows and columns ratio 0.3)",
            "segmenter_large",
            (640, 640),
            "token-adapter",
            {"rows_ratio": 0.3, "cols_ratio": 0.3},
            150,
        ),
    ]
}


def resolve(
    preset: str | None, model: ModelSpec, method: str | None, method_args: dict
) -> tuple[ModelSpec, str, dict]:
    """Fill what the user left None from the preset, then from the model's tuned defaults,
    then from the project defaults (inside each method)."""
    if preset is None:
        spec = ModelSpec(
            model.name or DEFAULT_MODEL, model.checkpoint, model.img_size, model.num_classes
        )
        chosen = method or DEFAULT_METHOD
        return spec, chosen, {**method_defaults(spec.name, chosen), **method_args}
    if preset not in PRESETS:
        raise InputError("--preset", preset, "|".join(PRESETS), "unknown preset")
    p = PRESETS[preset]
    chosen = method or p.method
    args = dict(p.args) if chosen == p.method else {}
    args.update(method_args)
    spec = ModelSpec(
        model.name or p.model,
        model.checkpoint,
        model.img_size or (p.img_size if not model.name else None),
        model.num_classes
        if model.num_classes is not None
        else (p.num_classes if not model.name else None),
    )
    return spec, chosen, {**method_defaults(spec.name, chosen), **args}


@contextmanager
def named_preset(preset: str | None, model: ModelSpec, method: str | None, method_args: dict):
    """Re-raise an InputError about a value the preset supplied (not typed by the user) with the
    preset named, so the user learns where the value came from."""
    try:
        yield
    except InputError as err:
        p = PRESETS.get(preset) if preset else None
        if p is None:
            raise
        supplied = {
            f"--{k.replace('_', '-')}"
            for k in p.args
            if k not in method_args and (method or p.method) == p.method
        }
        if model.img_size is None and not model.name:
            supplied.add("--img-size")
        if err.flag not in supplied:
            raise
        raise InputError(
            err.flag,
            err.value,
            err.allowed,
            f"set by --preset {preset} (made for --model {p.model}); "
            f"{err.reason + '; ' if err.reason else ''}override it with "
            f"{err.flag} or drop --preset",
        ) from None
