#!/usr/bin/env python3
"""Send images to a vitexport model served by Triton; print what each pixel was classified as.

    python samples/triton/client.py --url 127.0.0.1:8000 --model segmenter_digits_expedite --image photo.png
    python samples/triton/client.py --url 127.0.0.1:8001 --protocol grpc --model M --digits 4
    python samples/triton/client.py --model segmenter_digits_expedite_python --digits 2

The ensemble `<name>` (what `vitexport deploy triton` writes for a segmentation model) takes
the image as it is, any size, as uint8 H x W x 3, and answers the class of every pixel; the
server does the windows and the normalisation. A `<name>_python` (or `_onnx`, `_trt`) model
takes the normalised float tensor of its fixed shape: the image is resized to it here and
scaled as (x/255 - mean)/std. Images: an image file, or the first N canvases of the digits
validation split (needs vitexport installed). The input's name, shape and type are read from
the server's model metadata, the class names from the ensemble's config (for the digits model
class 0 is the background and class d + 1 is the digit d). Prints, per image, the classes with
the most pixels; writes a PNG of input | predicted classes with a legend (--png) and, with
--save, the inputs and raw outputs as an .npz.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image


def client_for(url: str, protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    return tc, tc.InferenceServerClient(url=url)


def model_io(client, model: str, protocol: str):
    """(input name, shape, datatype, output names, max_batch_size) from the server."""
    if protocol == "grpc":
        meta = client.get_model_metadata(model, as_json=True)
        config = client.get_model_config(model, as_json=True)["config"]
    else:
        meta, config = client.get_model_metadata(model), client.get_model_config(model)
    inp = meta["inputs"][0]
    shape = [int(d) for d in inp["shape"]]
    return (
        inp["name"],
        shape,
        inp["datatype"],
        [o["name"] for o in meta["outputs"]],
        int(config.get("max_batch_size", 0)),
    )


def load_images(args, height: int, width: int) -> np.ndarray:
    """uint8 [N, H, W, 3]; an image file is resized to (height, width) unless they are -1."""
    if args.image:
        with Image.open(args.image) as img:
            img = img.convert("RGB")
            if height > 0 and width > 0:
                img = img.resize((width, height), Image.BILINEAR)
            return np.asarray(img)[None]
    from exporter.datasets.digits import make_split

    if height < 0:  # an ensemble takes any size: the digits model's own 80x80
        height = width = 80
    if height != width:
        sys.exit(f"--digits: the canvases are square, the model takes {height}x{width}")
    return make_split("val", args.digits, size=height)[0]


def infer(
    tc, client, model: str, name: str, datatype: str, outputs: list[str], batch: np.ndarray
) -> dict:
    inp = tc.InferInput(name, list(batch.shape), datatype)
    inp.set_data_from_numpy(batch)
    req = [tc.InferRequestedOutput(o) for o in outputs]
    result = client.infer(model, [inp], outputs=req)
    return {o: result.as_numpy(o) for o in outputs}


def colours(count: int) -> np.ndarray:
    """uint8 [count, 3]: matplotlib's tab20 in the order `vitexport visualize` uses (tab10,
    then its light shades), so the pictures agree."""
    from matplotlib import colormaps

    table = colormaps["tab20"].colors
    order = [table[2 * i] for i in range(10)] + [table[2 * i + 1] for i in range(10)]
    return (np.array([order[i % 20] for i in range(count)]) * 255).round().astype(np.uint8)


def class_names(client, model: str, protocol: str, count: int) -> list[str]:
    """The ensemble's class names (its `class_names` parameter), else "class i"."""
    if protocol == "grpc":
        config = client.get_model_config(model, as_json=True)["config"]
    else:
        config = client.get_model_config(model)
    text = config.get("parameters", {}).get("class_names", {}).get("string_value", "")
    names = text.split("|") if text else []
    return names if len(names) >= count else [f"class {i}" for i in range(count)]


def picture(pixels: np.ndarray, classes: np.ndarray, names: list[str], path: str) -> None:
    """input | classes, one row per image, with a legend of the classes shown."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    table = colours(len(names))
    fig = Figure(figsize=(6, 3 * len(pixels) + 0.6), dpi=100)
    axes = fig.subplots(len(pixels), 2, squeeze=False)
    for row, (image, c) in zip(axes, zip(pixels, classes)):
        row[0].imshow(image, interpolation="nearest")
        row[1].imshow(table[c], interpolation="nearest")
        for ax, title in zip(row, ("input", "predicted classes")):
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    present = sorted({int(v) for c in classes for v in np.unique(c)})
    fig.legend(
        handles=[Patch(color=table[v] / 255.0, label=names[v]) for v in present],
        loc="lower center",
        ncol=min(len(present), 6),
        fontsize=8,
        frameon=False,
    )
    fig.savefig(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="127.0.0.1:8000", help="host:port (HTTP 8000, gRPC 8001)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--model", required=True, help="model name in the repository")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", help="an image file (PNG, JPEG, ...)")
    src.add_argument("--digits", type=int, default=1, help="first N digits validation canvases")
    p.add_argument("--mean", type=float, default=0.5, help="input normalisation (default 0.5)")
    p.add_argument("--std", type=float, default=0.5, help="input normalisation (default 0.5)")
    p.add_argument("--top", type=int, default=4, help="classes printed per image")
    p.add_argument("--png", default="prediction.png", help="picture of input | classes")
    p.add_argument("--save", default=None, help="also write inputs and raw outputs (.npz)")
    args = p.parse_args(argv)
    if args.digits < 1:
        p.error(f"--digits {args.digits}: allowed: an integer >= 1")

    tc, client = client_for(args.url, args.protocol)
    try:
        name, shape, datatype, outputs, max_batch = model_io(client, args.model, args.protocol)
        if datatype == "UINT8":  # the ensemble: one image per request, any size
            pixels = load_images(args, -1, -1)
            results = [infer(tc, client, args.model, name, datatype, outputs, p) for p in pixels]
            classes = [r["classes"] for r in results]
            x = pixels
            count = int(max(c.max() for c in classes)) + 1
            names = class_names(client, args.model, args.protocol, count)
        else:
            if max_batch > 0 and len(shape) == 3:  # the batch is Triton's (-1 or left out)
                shape = [max_batch] + shape
            _, _, height, width = shape
            pixels = load_images(args, height, width)
            x = ((pixels.astype(np.float32) / 255.0 - args.mean) / args.std).transpose(0, 3, 1, 2)
            x = np.ascontiguousarray(x, dtype=np.float32)
            step = 1 if max_batch > 0 else shape[0]
            if max_batch == 0 and len(x) % step:
                sys.exit(f"--digits {len(x)}: the model takes batches of exactly {step} images")
            results = [
                infer(tc, client, args.model, name, datatype, outputs, x[i : i + step])
                for i in range(0, len(x), step)
            ]
            logits = np.concatenate([r[outputs[0]] for r in results])
            classes = list(logits.argmax(1))
            names = [f"class {i}" for i in range(logits.shape[1])]
            if logits.shape[1] == 11:  # the digits model: 0 background, d + 1 the digit d
                names = ["background"] + [f"digit {d}" for d in range(10)]
    finally:
        client.close()  # an open client keeps the server's shutdown waiting
    for i, c in enumerate(classes):
        ids, counts = np.unique(c, return_counts=True)
        order = np.argsort(-counts)[: args.top]
        text = ", ".join(
            f"{ids[j]} ({names[ids[j]]}): {counts[j]} px ({counts[j] / c.size:.1%})" for j in order
        )
        print(f"image {i}: {text}")
    picture(pixels, classes, names, args.png)
    print(f"wrote {args.png}")
    if args.save:
        outs = {o: np.concatenate([r[o] for r in results]) for o in outputs}
        np.savez(args.save, inputs=x, **outs)
        print(f"wrote {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
