#!/usr/bin/env python3
"""The Python API end to end: build a token-reduced model, validate it again, deploy it to a
Triton model repository.

    python samples/python/end_to_end.py --out work/digits --repo work/triton-repo
    python samples/python/end_to_end.py --model segmenter_tiny --img-size 64x64 --hw 3x3 \
        --out w/t --repo w/r

The same build as the Python snippet of docs/getting-started.md (expedite, --hw 24x24).

Prints what each step returned; exits 1 if an artifact does not match PyTorch.
"""

from __future__ import annotations

import argparse
import sys

from exporter.api import build, deploy, validate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="default: segmenter_digits (shipped weights)")
    p.add_argument("--img-size", default=None, help="HxW, default: the model's")
    p.add_argument("--method", default="expedite")
    p.add_argument(
        "--hw",
        default="24x24",
        help="expedite's cluster grid, as getting-started's snippet ('' for a method without --hw)",
    )
    p.add_argument("--out", required=True, help="build folder to write")
    p.add_argument("--repo", required=True, help="Triton model repository to write")
    p.add_argument("--force", action="store_true", help="replace --out and --repo")
    args = p.parse_args(argv)

    result = build(
        args.out,
        model=args.model,
        method=args.method,
        img_size=args.img_size,
        force=args.force,
        **({"hw": args.hw} if args.hw else {}),
        progress=lambda text: print(" ", text),
    )
    tokens = result.report["tokens"]
    print(f"built {result.path('onnx')}: {tokens['full']} -> {tokens['reduced']} tokens")
    for v in result.validation:
        cosine = min(o["cosine"] for o in v["outputs"].values())
        print(
            f"  {v['artifact']} in {v['runtime']}: "
            f"{'passed' if v['passed'] else 'FAILED'}, cosine {cosine:.8f}"
        )
    if result.accuracy:
        print(
            f"  mIoU baseline {result.accuracy['baseline']:.4f}, "
            f"reduced {result.accuracy['reduced']:.4f}"
        )

    again = validate(args.out)  # e.g. after copying the folder to another machine
    print(f"validated again: {'passed' if again.passed else 'FAILED'}")

    repo = deploy(args.out, args.repo, force=args.force)
    for name, kind in repo.models.items():
        print(f"  {name}: {kind}")
    print(f"Triton repository: {repo.path}; serve it with: vitexport deploy serve {repo.path}")
    return 0 if result.passed and again.passed else 1


if __name__ == "__main__":
    sys.exit(main())
