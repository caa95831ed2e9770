"""`vitexport visualize OUT`: pictures of what the reduced model sees and what it predicts.

Written into OUT/visualize/ (matplotlib figures):
- tokens.png: the input with the boundaries between reduced tokens drawn over it (the method's
  `assignment`; pruned tokens, SViT's, greyed out), beside the input as seen through the reduced
  tokens (every pixel painted with the mean colour of its reduced token).
- prediction.png: input | ground truth (when the image comes from the model's evaluation set)
  | baseline (`--method none`) | reduced, with a legend of the classes shown; depth on one
  shared colour scale; features as the baseline's three main components.
Predictions come from the PyTorch reference, which the build validated the ONNX against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from .folder import read_record
from .errors import InputError
from .limits import open_image
from .models import entry_of
from .paths import note_written, out_dir, write_file
from .reference import patched_model

MIN_SIDE = 420  # token pictures are enlarged (nearest neighbour) to at least this side
PRUNED_GREY = 96
PANEL_INCHES = 2.8  # prediction panels; token panels are TOKEN_INCHES
TOKEN_INCHES = 4.4
DPI = 100
IGNORE = 255
EDGE = (255, 214, 0)  # reduced-token boundaries: yellow with a dark rim, seen on any background


def scale_of(size: tuple[int, int]) -> int:
    """The enlargement factor of pictures of an H x W input."""
    return max(1, -(-MIN_SIDE // min(size)))


def class_colours(count: int) -> np.ndarray:
    """uint8 [count, 3]: matplotlib's qualitative tab20 order (tab10 first, then its light
    shades), repeated past 20 classes."""
    from matplotlib import colormaps  # deferred: matplotlib is heavy; only the figures use it

    table = colormaps["tab20"].colors
    order = [table[2 * i] for i in range(10)] + [table[2 * i + 1] for i in range(10)]
    return (np.array([order[i % 20] for i in range(count)]) * 255).round().astype(np.uint8)


def paint_classes(classes: np.ndarray, count: int) -> np.ndarray:
    """Class ids [H, W] -> uint8 [H, W, 3]; ignored pixels black."""
    table = np.concatenate([class_colours(count), np.zeros((1, 3), np.uint8)])
    return table[np.where(classes == IGNORE, count, np.clip(classes, 0, count - 1))]


def synthetic_image(size: tuple[int, int]) -> np.ndarray:
    """A deterministic test picture: a colour gradient with a few flat shapes, uint8 [H, W, 3]."""
    H, W = size
    yy, xx = np.mgrid[0:H, 0:W] / np.array([max(H - 1, 1), max(W - 1, 1)]).reshape(2, 1, 1)
    base = np.stack([40 + 120 * xx, 60 + 100 * yy, 160 - 80 * xx], -1).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    draw.ellipse([W * 0.1, H * 0.15, W * 0.45, H * 0.55], fill=(230, 200, 40))
    draw.rectangle([W * 0.55, H * 0.1, W * 0.9, H * 0.4], fill=(200, 40, 60))
    draw.polygon([(W * 0.2, H * 0.9), (W * 0.5, H * 0.6), (W * 0.8, H * 0.9)], fill=(30, 140, 70))
    return np.asarray(img).copy()


def load_image(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as uint8 [H, W, 3], resized to `size` (H, W) where given."""
    path = Path(path)
    if path.is_dir():
        raise InputError(
            "--image", str(path), "an image file Pillow reads (PNG, JPEG, ...)", "is a folder"
        )
    if not path.is_file():
        raise InputError(
            "--image", str(path), "an image file Pillow reads (PNG, JPEG, ...)", "no such file"
        )
    try:
        with open_image(path) as img:  # bounded: a decompression bomb is one line, not a traceback
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img).copy()
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(
            "--image",
            str(path),
            "an image file Pillow reads (PNG, JPEG, ...)",
            f"unreadable ({err})",
        ) from None


def to_model_input(image: np.ndarray, model_name: str) -> torch.Tensor:
    """uint8 [H, W, 3] -> [1, 3, H, W], normalised as the model's entry says."""
    return entry_of(model_name).to_input(image[None])


def default_sample(model_name: str, size: tuple[int, int]):
    """(uint8 image, labels or None, what it is): the first image of the model's own evaluation
    set where it has one, else a synthetic image."""
    entry = entry_of(model_name)
    if entry.eval_set is not None and size[0] == size[1]:
        images, labels, source = entry.eval_set(1, size)
        # back from the model's normalisation to uint8 pixels
        pixels = images[0].transpose(1, 2, 0) * np.asarray(entry.std) + np.asarray(entry.mean)
        image = (pixels * 255.0).round().clip(0, 255).astype(np.uint8)
        return image, labels[0], f"the first image of the {source}"
    return synthetic_image(size), None, "a synthetic image"


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


def tokens_picture(image: np.ndarray, ids: np.ndarray, s: int) -> np.ndarray:
    """The input enlarged `s` times with the boundaries between reduced tokens drawn over it;
    pruned tokens (id -1) greyed out."""
    out = enlarge(image.astype(np.float64), s)
    pix = enlarge(ids, s)
    pruned = pix < 0
    out[pruned] = PRUNED_GREY * 0.6 + out[pruned].mean(-1, keepdims=True) * 0.4
    line = boundaries(pix)  # one pixel wide on the enlarged picture
    out[line] = EDGE
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


def prediction_maps(base: torch.Tensor, red: torch.Tensor, kind: str, size: tuple[int, int]):
    """Model outputs [1, D, h, w] at the input size -> (baseline, reduced) as class ids [H, W]
    (segmentation), depth [H, W] (one channel), or uint8 RGB [H, W, 3] of the baseline's three
    main components, both projected alike (features)."""
    b, r = base[0].float(), red[0].float()
    if b.shape[-2:] != tuple(size):
        b = torch.nn.functional.interpolate(b[None], size=size, mode="nearest")[0]
        r = torch.nn.functional.interpolate(r[None], size=size, mode="nearest")[0]
    if kind == "segmentation":
        return b.argmax(0).numpy(), r.argmax(0).numpy()
    if b.shape[0] == 1:
        return b[0].numpy(), r[0].numpy()
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


def panels(count: int, title: str, inches: float = PANEL_INCHES, legend: bool = True):
    """A figure of `count` square panels in a row, axes off, room for a legend below."""
    from matplotlib.figure import Figure  # deferred: matplotlib is heavy; only the figures use it

    below = 0.55 if legend else 0.1
    height = inches + 0.75 + below
    fig = Figure(figsize=(inches * count, height), dpi=DPI)
    axes = fig.subplots(1, count, squeeze=False)[0]
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(
        left=0.01, right=0.99, top=1 - 0.75 / height, bottom=below / height, wspace=0.04
    )
    return fig, axes


def save_figure(fig, path: Path) -> None:
    """Write to a temporary name, then rename (no half-written picture)."""
    write_file(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    note_written(path)


def tokens_figure(image: np.ndarray, ids: np.ndarray, title: str):
    fig, (left, right) = panels(2, title, TOKEN_INCHES, legend=False)
    s = scale_of(image.shape[:2])
    left.imshow(tokens_picture(image, ids, s), interpolation="nearest")
    left.set_title("input, reduced-token boundaries", fontsize=9)
    right.imshow(reconstruction_picture(image, ids, s), interpolation="nearest")
    right.set_title("each reduced token's mean colour", fontsize=9)
    return fig


def prediction_figure(image, labels, base, red, kind: str, names, method: str, title: str):
    """input | ground truth | baseline | reduced, with a legend of the classes shown."""
    from matplotlib.patches import Patch  # deferred: matplotlib is heavy; only the figures use it

    shown = [("input", image)] + ([] if labels is None else [("ground truth", labels)])
    shown += [("baseline (--method none)", base), (f"reduced ({method})", red)]
    fig, axes = panels(len(shown), title)
    axes[0].imshow(image, interpolation="nearest")
    maps = shown[1:]
    if kind == "segmentation":
        count = len(names)
        for ax, (name, m) in zip(axes[1:], maps):
            ax.imshow(paint_classes(m, count), interpolation="nearest")
        present = sorted({int(c) for _, m in maps for c in np.unique(m) if c != IGNORE})
        colours = class_colours(count) / 255.0
        fig.legend(
            handles=[Patch(color=colours[c], label=names[c]) for c in present],
            loc="lower center",
            ncol=min(len(present), 12),
            fontsize=8,
            frameon=False,
            handlelength=1.2,
            columnspacing=1.0,
        )
        agree = float((base == red).mean())
        axes[-1].set_title(f"reduced ({method})\n{agree:.1%} of pixels as baseline", fontsize=9)
    elif kind == "depth":
        lo = float(min(base.min(), red.min()))
        hi = float(max(base.max(), red.max()))
        for ax, (_, m) in zip(axes[1:], maps):
            im = ax.imshow(m, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(im, ax=list(axes[1:]), orientation="horizontal", fraction=0.05, pad=0.02)
    else:
        for ax, (_, m) in zip(axes[1:], maps):
            ax.imshow(m, interpolation="nearest")
    for ax, (name, _) in zip(axes, shown):
        if not ax.get_title():
            ax.set_title(name, fontsize=9)
    return fig


def visualize_folder(
    out, image_path=None, progress=lambda text: None, record=None, rehash: bool = False
) -> dict:
    """Write the pictures of an output folder; return {"files": [...], "notes": [...]}.
    `record`: the folder's record as the caller read (and verified) it; else read here."""
    out = Path(out)
    settings = (record if record is not None else read_record(out, rehash)).settings
    # a symlink or file at OUT/visualize is refused, never written through, before any work
    out_dir(out, "visualize", "OUT/visualize", make=False)
    reduced = patched_model(settings)
    model, method = reduced.model, reduced.method
    size, lay = model.layout.image_size, model.layout
    # a bad --image is refused before any progress line: the error stays the only output
    given = None if image_path is None else load_image(image_path, size)
    native = None if image_path is None else load_image(image_path)
    progress("rebuilt the PyTorch reference")
    if given is not None:
        image, labels, source = given, None, str(image_path)
    else:
        image, labels, source = default_sample(settings.model.name, size)
    x = to_model_input(image, settings.model.name)
    progress(f"run baseline and reduced model on {source} ...")
    with torch.no_grad():
        base, red = model(x), reduced(x)
        ids = method.assignment(model, x)
    folder = out_dir(out, "visualize", "OUT/visualize")  # made once every check has passed
    files, notes = [], [f"input: {source}"]
    name = f"{settings.model.name} + {settings.method}"
    if ids is None:
        notes.append(
            f"--method {settings.method} has no token assignment to draw; "
            "only the predictions are pictured"
        )
    else:
        pix = pixel_ids(ids[0].cpu().numpy(), lay.grid, size)
        kept = ids[0][ids[0] >= 0]
        count = len(torch.unique(kept))
        grey = f" (grey: {method.pruned_note})" if bool((ids[0] < 0).any()) else ""
        text = f"{name}: {lay.num_patches} patch tokens as {count} reduced tokens{grey}"
        save_figure(tokens_figure(image, pix, text), folder / "tokens.png")
        files.append(folder / "tokens.png")
        notes.append(f"{lay.num_patches} patch tokens drawn as {count} reduced tokens{grey}")
    kind = (
        model.output_kind
        if model.output_kind == "segmentation"
        else ("depth" if base.shape[1] == 1 else "features")
    )
    b, r = prediction_maps(base, red, model.output_kind, size)
    names = None
    if kind == "segmentation":
        classes = base.shape[1]
        names = list(entry_of(settings.model.name).class_names or ())
        names = names if len(names) == classes else [f"class {c}" for c in range(classes)]
    save_figure(
        prediction_figure(
            image,
            labels if kind == "segmentation" else None,
            b,
            r,
            kind,
            names,
            settings.method,
            f"{name} on {source}",
        ),
        folder / "prediction.png",
    )
    files.append(folder / "prediction.png")
    if native is not None and native.shape[:2] != tuple(size) and kind == "segmentation":
        progress(f"sliding windows over the {native.shape[1]}x{native.shape[0]} image ...")
        files += windows_pictures(out, native, names, folder, f"{name} on {source}", notes)
    return {"files": [str(f) for f in files], "notes": notes}


def windows_pictures(out, image: np.ndarray, names, folder: Path, title: str, notes) -> list:
    """The class map of an image of another size than the model's, by sliding windows of
    model.onnx (`exporter.predict`, as the Triton ensemble answers): windows.png (input |
    classes) and classes.png (the ids as greyscale, lossless)."""
    from .predict import predict_folder  # the build's ONNX in ONNX Runtime

    p = predict_folder(out, image)
    fig, axes = panels(2, f"{title}: {p.windows} windows of {p.window[0]}x{p.window[1]}")
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title(f"input ({image.shape[1]}x{image.shape[0]})", fontsize=9)
    axes[1].imshow(paint_classes(p.classes, len(names)), interpolation="nearest")
    axes[1].set_title(
        f"model.onnx, sliding windows at stride {p.stride[0]}x{p.stride[1]}", fontsize=9
    )
    save_figure(fig, folder / "windows.png")
    write_file(
        folder / "classes.png", lambda tmp: Image.fromarray(p.classes).save(tmp, format="png")
    )
    note_written(folder / "classes.png")
    notes.append(
        f"sliding windows: {p.windows} windows of {p.window[0]}x{p.window[1]} over the "
        f"{image.shape[1]}x{image.shape[0]} image, as the deploy triton ensemble answers"
    )
    return [folder / "windows.png", folder / "classes.png"]
