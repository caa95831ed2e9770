"""Trace a patched model to a standard-op ONNX file with torch.onnx (dynamo exporter)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx
import torch
from google.protobuf.message import EncodeError
from onnx.external_data_helper import load_external_data_for_model

from ..errors import InputError
from ..models.base import INPUT_NAME

OPSETS = (17, 23)  # supported range of --opset
# Metadata that holds absolute paths or FX text: dropped so that files are small and equal
# across machines. The module name scopes stay: the lint names modules with them.
DROPPED_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")
MAX_PROTO_BYTES = 2**31 - 1


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    input_shape: tuple[int, ...],
    opset: int = 18,
    dynamic_batch: bool = False,
    dtype: torch.dtype = torch.float32,
) -> onnx.ModelProto:
    """Export `model` for inputs of `input_shape` (and `dtype`) to `path`; return the proto."""
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise InputError("--opset", opset, f"{OPSETS[0]}..{OPSETS[1]}")
    images = torch.zeros(input_shape, dtype=dtype)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=1024)}}
        if input_shape[0] == 1:  # torch.export specialises a size of 1; trace with 2
            images = torch.zeros((2, *input_shape[1:]), dtype=dtype)
    names = list(getattr(model, "output_names", ("output",)))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (images,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
            external_data=False,
        )
    proto = program.model_proto
    strip_metadata(proto)
    save_onnx(proto, path)
    return proto


def strip_metadata(proto: onnx.ModelProto) -> None:
    for node in proto.graph.node:
        keep = [p for p in node.metadata_props if p.key not in DROPPED_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    proto.producer_version = ""  # keep bytes independent of the exact torch build


def too_big(proto: onnx.ModelProto) -> bool:
    try:
        return proto.ByteSize() > MAX_PROTO_BYTES
    except EncodeError:  # protobuf refuses to even measure a message past 2 GB (ViT-H)
        return True


def save_onnx(proto: onnx.ModelProto, path: Path) -> None:
    """Save, moving weights to `<name>.data` beside it when the proto would exceed 2 GB.

    Saving that way empties the proto's tensors; they are read back so that the caller's
    proto stays complete (plugin and fp16 graphs are derived from it).
    """
    path = Path(path)
    if not too_big(proto):
        onnx.save_model(proto, str(path))
        return
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
    )
    load_external_data_for_model(proto, str(path.parent))
