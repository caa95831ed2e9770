"""`vitexport visualize OUT`: pictures of what the reduced model sees and what it predicts.

Written into OUT/visualize/, every picture enlarged (nearest neighbour) by one integer factor
so that its smaller side is at least MIN_SIDE pixels:
- tokens.png: the input with the patch-token grid, each pixel tinted by the reduced token its
  patch went to (the method's `assignment`), boundaries between reduced tokens in black;
  pruned tokens (SViT) greyed out.
- reconstruction.png: the input as seen through the reduced tokens: every pixel painted with
  the mean colour of the pixels of its reduced token.
- prediction.png: baseline (`--method none`) and reduced prediction side by side: class maps
  for segmentation, a shared colour scale for depth, the three main components for features.
Predictions come from the PyTorch reference, which the build validated the ONNX against.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .models import entry_of

MIN_SIDE = 256
GAP = 8  # pixels between side-by-side panels
PRUNED_GREY = 96
GRID_BLEND = 0.35  # weight of white on the token grid lines
TINT = 0.45  # weight of a reduced token's colour over the input


def scale_of(size: tuple[int, int]) -> int:
    """The enlargement factor of pictures of an H x W input."""
    return max(1, -(-MIN_SIDE // min(size)))


def palette(ids: np.ndarray) -> np.ndarray:
    """A distinct, deterministic colour per id (golden-ratio hues): uint8 [..., 3]."""
    flat = np.asarray(ids).reshape(-1)
    table = {}
    for i in np.unique(flat):
        h = (int(i) * 0.6180339887) % 1.0
        s, v = (0.55, 0.95) if int(i) % 2 == 0 else (0.85, 0.8)
        table[int(i)] = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255
    out = np.stack([table[int(i)] for i in flat]) if flat.size else np.zeros((0, 3))
    return out.reshape(*np.shape(ids), 3).round().astype(np.uint8)


def ramp(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 colours from dark blue through red to yellow."""
    anchors = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64],
                        [240, 249, 33]], np.float64)
    x = np.clip(values, 0, 1) * (len(anchors) - 1)
    lo = np.floor(x).astype(int).clip(0, len(anchors) - 2)
    t = (x - lo)[..., None]
    return (anchors[lo] * (1 - t) + anchors[lo + 1] * t).round().astype(np.uint8)


def synthetic_image(size: tuple[int, int]) -> np.ndarray:
    """A deterministic test picture: a colour gradient with a few flat shapes, uint8 [H, W, 3]."""
    from PIL import Image, ImageDraw

    H, W = size
    yy, xx = np.mgrid[0:H, 0:W] / np.array([max(H - 1, 1), max(W - 1, 1)]).reshape(2, 1, 1)
    base = np.stack([40 + 120 * xx, 60 + 100 * yy, 160 - 80 * xx], -1).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    draw.ellipse([W * 0.1, H * 0.15, W * 0.45, H * 0.55], fill=(230, 200, 40))
    draw.rectangle([W * 0.55, H * 0.1, W * 0.9, H * 0.4], fill=(200, 40, 60))
    draw.polygon([(W * 0.2, H * 0.9), (W * 0.5, H * 0.6), (W * 0.8, H * 0.9)], fill=(30, 140, 70))
    return np.asarray(img).copy()


def load_image(path, size: tuple[int, int]) -> np.ndarray:
    """An image file as uint8 [H, W, 3], resized to the model's input size."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError("--image", str(path), "an image file Pillow reads (PNG, JPEG, ...)",
                         "no such file")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img).copy()
    except (UnidentifiedImageError, OSError) as err:
        raise InputError("--image", str(path), "an image file Pillow reads (PNG, JPEG, ...)",
                         f"unreadable ({err})") from None


def to_model_input(image: np.ndarray, model_name: str) -> torch.Tensor:
    """uint8 [H, W, 3] -> [1, 3, H, W], normalised as the model's entry says."""
    return entry_of(model_name).to_input(image[None])


def default_image(model_name: str, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The first image of the model's own evaluation set where it has one, else a synthetic one."""
    entry = entry_of(model_name)
    if entry.eval_set is not None and size[0] == size[1]:
        images, _, source = entry.eval_set(1, size)
        # back from the model's normalisation to uint8 pixels
        pixels = images[0].transpose(1, 2, 0) * entry.std + entry.mean
        return (pixels * 255.0).round().clip(0, 255).astype(np.uint8), f"the first image of the {source}"
    return synthetic_image(size), "a synthetic image"


def pixel_ids(tokens: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Per-patch ids [N] -> per-pixel ids [H, W] (nearest patch; grid x patch may fall short
    of the input, e.g. behind a convolutional stem)."""
    rows = np.minimum(np.arange(size[0]) * grid[0] // size[0], grid[0] - 1)
    cols = np.minimum(np.arange(size[1]) * grid[1] // size[1], grid[1] - 1)
    return tokens.reshape(grid)[rows[:, None], cols[None, :]]


def boundaries(ids: np.ndarray) -> np.ndarray:
    """True where a pixel's right or lower neighbour belongs to another id."""
    edge = np.zeros(ids.shape, bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1] |= ids[:-1] != ids[1:]
    return edge


def enlarge(img: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(img, s, 0), s, 1)


def tokens_picture(image: np.ndarray, ids: np.ndarray, patch: tuple[int, int], s: int) -> np.ndarray:
    """The input tinted by reduced token, with the patch grid and the token boundaries."""
    pruned = ids < 0
    out = image * (1 - TINT) + palette(ids) * TINT
    out[pruned] = PRUNED_GREY * 0.6 + image[pruned].mean(-1, keepdims=True) * 0.4
    out = enlarge(out, s)
    H, W = out.shape[:2]
    grid = np.zeros((H, W), bool)
    grid[:: patch[0] * s] = True
    grid[:, :: patch[1] * s] = True
    out[grid] = out[grid] * (1 - GRID_BLEND) + 255 * GRID_BLEND
    out[boundaries(enlarge(ids, s))] = 0  # on the enlarged map: lines one pixel wide
    return out.round().astype(np.uint8)


def reconstruction_picture(image: np.ndarray, ids: np.ndarray, s: int) -> np.ndarray:
    """Every pixel painted with its reduced token's mean colour (pruned tokens grey)."""
    flat, pix = ids.reshape(-1), image.reshape(-1, 3).astype(np.float64)
    out = np.full_like(pix, PRUNED_GREY)
    keep = flat >= 0
    uniq, inverse = np.unique(flat[keep], return_inverse=True)
    sums = np.zeros((len(uniq), 3))
    np.add.at(sums, inverse, pix[keep])
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    out[keep] = (sums / counts)[inverse]
    return enlarge(out.reshape(image.shape).round().astype(np.uint8), s)


def prediction_pictures(base: torch.Tensor, red: torch.Tensor, kind: str,
                        size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs [1, D, h, w] -> two uint8 [H, W, 3] pictures on a shared scale."""
    b, r = base[0].float(), red[0].float()
    if b.shape[-2:] != tuple(size):
        b = torch.nn.functional.interpolate(b[None], size=size, mode="nearest")[0]
        r = torch.nn.functional.interpolate(r[None], size=size, mode="nearest")[0]
    if kind == "segmentation":
        return palette(b.argmax(0).numpy()), palette(r.argmax(0).numpy())
    if b.shape[0] == 1:  # depth
        lo, hi = float(min(b.min(), r.min())), float(max(b.max(), r.max()))
        span = hi - lo if hi > lo else 1.0
        return ramp(((b[0] - lo) / span).numpy()), ramp(((r[0] - lo) / span).numpy())
    # features: the baseline's three principal components, both projected alike
    fb, fr = b.flatten(1).T, r.flatten(1).T
    mean = fb.mean(0)
    _, _, v = torch.linalg.svd(fb - mean, full_matrices=False)
    pb, pr = (fb - mean) @ v[:3].T, (fr - mean) @ v[:3].T
    lo, hi = pb.amin(0), pb.amax(0)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))

    def paint(p):
        rgb = ((p - lo) / span).clamp(0, 1) * 255
        if rgb.shape[1] < 3:
            rgb = torch.cat([rgb, rgb.new_zeros(rgb.shape[0], 3 - rgb.shape[1])], 1)
        return rgb.reshape(*size, 3).round().to(torch.uint8).numpy()

    return paint(pb), paint(pr)


def side_by_side(left: np.ndarray, right: np.ndarray, captions=("", "")) -> np.ndarray:
    from PIL import Image, ImageDraw

    H, W = left.shape[:2]
    canvas = Image.new("RGB", (2 * W + GAP, H), (255, 255, 255))
    for k, (img, text) in enumerate(zip((left, right), captions)):
        x = k * (W + GAP)
        canvas.paste(Image.fromarray(img), (x, 0))
        if text:
            draw = ImageDraw.Draw(canvas)
            box = draw.textbbox((x + 4, 4), text)
            draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], fill=(0, 0, 0))
            draw.text((x + 4, 4), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def save_png(img: np.ndarray, path: Path) -> None:
    """Write to a temporary name, then rename (no half-written picture)."""
    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Image.fromarray(img).save(tmp, format="PNG")
    os.replace(tmp, path)


def visualize_folder(out, image_path=None, progress=lambda text: None) -> dict:
    """Write the pictures of an output folder; return {"files": [...], "notes": [...]}."""
    from .build import patched_model, read_folder

    out = Path(out)
    report, settings = read_folder(out)
    progress("rebuild the PyTorch reference ...")
    reduced = patched_model(settings)
    model, method = reduced.model, reduced.method
    size, lay = model.layout.image_size, model.layout
    if image_path is not None:
        image, source = load_image(image_path, size), str(image_path)
    else:
        image, source = default_image(settings.model.name, size)
    x = to_model_input(image, settings.model.name)
    progress(f"run baseline and reduced model on {source} ...")
    with torch.no_grad():
        base, red = model(x), reduced(x)
        ids = method.assignment(model, x)
    s = scale_of(size)
    folder = out / "visualize"
    folder.mkdir(exist_ok=True)
    files, notes = [], [f"input: {source}"]
    if ids is None:
        notes.append(f"--method {settings.method} has no token assignment to draw; "
                     "only the predictions are pictured")
    else:
        pix = pixel_ids(ids[0].cpu().numpy(), lay.grid, size)
        patch = (size[0] // lay.grid[0], size[1] // lay.grid[1])
        save_png(tokens_picture(image.astype(np.float64), pix, patch, s),
                 folder / "tokens.png")
        save_png(reconstruction_picture(image, pix, s), folder / "reconstruction.png")
        files += [folder / "tokens.png", folder / "reconstruction.png"]
        kept = ids[0][ids[0] >= 0]
        notes.append(f"{lay.num_patches} patch tokens drawn as {len(torch.unique(kept))} "
                     "reduced tokens")
        if settings.method == "svit":
            notes.append("SViT: tokens the first gated block processes; grey = skipped there")
    left, right = prediction_pictures(base, red, model.output_kind, size)
    save_png(side_by_side(enlarge(left, s), enlarge(right, s),
                          ("baseline", f"{settings.method}")), folder / "prediction.png")
    files.append(folder / "prediction.png")
    return {"files": [str(f) for f in files], "notes": notes}
