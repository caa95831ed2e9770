#!/usr/bin/env python3
"""Send images to a vitexport model served by Triton; print what each pixel was classified as.

    python samples/triton/client.py --url 127.0.0.1:8000 --model segmenter_digits_expedite_python --digits 4
    python samples/triton/client.py --url 127.0.0.1:8001 --protocol grpc --model M --image photo.png

Images: an image file (resized to the model's input, scaled as (x/255 - mean)/std), or the
first N canvases of the digits validation split (needs vitexport installed). The input's name,
shape and type are read from the server's model metadata. Prints, per image, the classes with
the most pixels; writes a PNG of input | predicted classes (--png) and, with --save, the raw
outputs as an .npz.
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
    """uint8 [N, H, W, 3]."""
    if args.image:
        with Image.open(args.image) as img:
            return np.asarray(img.convert("RGB").resize((width, height), Image.BILINEAR))[None]
    from exporter.datasets.digits import make_split

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


PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
    ],
    np.uint8,
)


def colour(classes: np.ndarray) -> np.ndarray:
    return PALETTE[classes % len(PALETTE)]


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
        if max_batch > 0:  # the batch is Triton's: shape leaves it out
            shape = [max_batch] + shape
        _, _, height, width = shape
        pixels = load_images(args, height, width)
        x = ((pixels.astype(np.float32) / 255.0 - args.mean) / args.std).transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = shape[0] if shape[0] > 0 else len(x)
        if max_batch == 0 and len(x) % step:
            sys.exit(f"--digits {len(x)}: the model takes batches of exactly {step} images")
        results = [
            infer(tc, client, args.model, name, datatype, outputs, x[i : i + step])
            for i in range(0, len(x), step)
        ]
    finally:
        client.close()  # an open client keeps the server's shutdown waiting
    outs = {o: np.concatenate([r[o] for r in results]) for o in outputs}
    logits = outs[outputs[0]]
    classes = logits.argmax(1)
    for i, c in enumerate(classes):
        ids, counts = np.unique(c, return_counts=True)
        order = np.argsort(-counts)[: args.top]
        text = ", ".join(
            f"class {ids[j]}: {counts[j]} px ({counts[j] / c.size:.1%})" for j in order
        )
        print(f"image {i}: {text}")
    rows = [np.concatenate([pixels[i], colour(classes[i])], axis=1) for i in range(len(x))]
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.png)
    print(f"wrote {args.png}")
    if args.save:
        np.savez(args.save, inputs=x, **outs)
        print(f"wrote {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
