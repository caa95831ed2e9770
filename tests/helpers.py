"""Small models and checks shared by the tests (fast: 64-256 tokens, dim 32)."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import torch
from click.testing import CliRunner
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from exporter.cli import main
from exporter.methods import METHODS
from exporter.methods.spec import flag_of
from exporter.models.dpt import DPT, DPTConfig
from exporter.models.segmenter import Segmenter
from exporter.models.swin import Swin
from exporter.models.vit import TimmViT
from exporter.onnx.export import export_onnx
from exporter.onnx.lint import errors_of, lint


def tiny_vit(grid=(8, 8), num_prefix=1, depth=4, dim=32, heads=2, patch=4, seed=0) -> TimmViT:
    """A random timm ViT with the given patch grid; prefix = class token + register tokens."""
    torch.manual_seed(seed)
    vit = VisionTransformer(
        img_size=(grid[0] * patch, grid[1] * patch),
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        num_classes=0,
        class_token=num_prefix > 0,
        reg_tokens=max(0, num_prefix - 1),
        global_pool="" if num_prefix == 0 else "token",
    )
    return TimmViT(vit).eval()


def tiny_segmenter(img=(64, 96), classes=5, seed=0) -> Segmenter:
    """Segmenter with ViT-Ti/16 shapes but few blocks' worth of tokens (img 64x96 -> 4x6 grid)."""
    torch.manual_seed(seed)
    return Segmenter("tiny", img, classes).eval()


TINY_BASE = DPTConfig(64, 4, 2, (0, 1, 2, 3), (16, 32, 64, 64))


def tiny_dpt(img=(64, 96), seed=0) -> DPT:
    torch.manual_seed(seed)
    model = DPT(TINY_BASE, img, features=32).eval()
    # random weights end in a ReLU that zeroes most pixels; a positive bias keeps them alive
    torch.nn.init.constant_(model.scratch.output_conv[4].bias, 1.0)
    return model


def tiny_swin(img=128, window=4, depths=(2, 2, 4, 2), dim=16, seed=0) -> Swin:
    """A random timm Swin: grids img/4, /8, /16, /32 (32, 16, 8, 4 at 128)."""
    torch.manual_seed(seed)
    swin = SwinTransformer(
        img_size=img,
        patch_size=4,
        embed_dim=dim,
        depths=depths,
        num_heads=(1, 2, 2, 4),
        window_size=window,
        num_classes=0,
    )
    for m in swin.modules():  # non-zero biases, so that every weight matters
        if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm)) and m.bias is not None:
            torch.nn.init.normal_(m.bias, std=0.1)
    return Swin(swin).eval()


# The tiny configuration of each model family, the one table the tests draw their models from
# (test_plugin_models, test_extension); the 32x32 ViT grid has a neighbour table (1024 x 50)
# large enough that the exporter keeps it as one initializer behind an Unsqueeze, as in the
# default model; the DPT has four taps: one reconstruction per tap, sharing their weights.
TINY_MODELS = {
    "vit": lambda: tiny_vit(grid=(6, 10), depth=4),
    "vit-32x32": lambda: tiny_vit(grid=(32, 32), depth=2, dim=16),
    "segmenter": lambda: tiny_segmenter(img=(64, 96)),
    "dpt": lambda: tiny_dpt(),
    "swin": lambda: tiny_swin(),
}


def images_for(model, batch=2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *model.layout.image_size, generator=g)


def export_and_run(module, images: torch.Tensor, path, dynamic_batch=False):
    """Export `module`, check it has no forbidden op, run it in ONNX Runtime; return outputs."""
    proto = export_onnx(module, path, tuple(images.shape), dynamic_batch=dynamic_batch)
    bad = errors_of(lint(proto))
    assert not bad, [str(f) for f in bad]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": images.numpy()}), proto


def max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# The one set of tiny build settings of the CLI tests: Segmenter-Ti shapes on a 4x6 token grid.


def vit_block_keys(prefix: str, dim: int) -> dict:
    """Key names and shapes of one pre-norm ViT block (timm's, and the official Segmenter and
    DPT releases') with qkv bias and an MLP ratio of 4."""
    return {
        f"{prefix}.norm1.weight": (dim,),
        f"{prefix}.norm1.bias": (dim,),
        f"{prefix}.attn.qkv.weight": (3 * dim, dim),
        f"{prefix}.attn.qkv.bias": (3 * dim,),
        f"{prefix}.attn.proj.weight": (dim, dim),
        f"{prefix}.attn.proj.bias": (dim,),
        f"{prefix}.norm2.weight": (dim,),
        f"{prefix}.norm2.bias": (dim,),
        f"{prefix}.mlp.fc1.weight": (4 * dim, dim),
        f"{prefix}.mlp.fc1.bias": (4 * dim,),
        f"{prefix}.mlp.fc2.weight": (dim, 4 * dim),
        f"{prefix}.mlp.fc2.bias": (dim,),
    }


TINY = ["--model", "segmenter_tiny", "--img-size", "64x96", "--num-classes", "5"]


def tiny_flags(method: str) -> list[str]:
    """The CLI flags of `method`'s tiny test settings (`MethodSpec.tiny`), from the registry."""
    flags = []
    for key, value in METHODS[method].tiny.items():
        flags += [flag_of(key)] if value is True else [flag_of(key), str(value)]
    return flags


# The one shared Expedite build of the CLI tests (test_cli's own expedite build, too)
EXPEDITE = ("expedite", *tiny_flags("expedite"))


def run(args, **options):
    """`vitexport ARGS` in-process, the one way the tests run the CLI (`options`: CliRunner's,
    e.g. input); exceptions other than the exit propagate (a traceback fails the test)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **options)


def one_line(result, code: int, *words: str) -> str:
    """The result exited with `code`, printed exactly one line (an `Error:` line for a mistake
    in the input, exit 2) holding every one of `words`, and no traceback; returns the line."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert code != 2 or lines[0].startswith("Error:"), result.output
    for w in words:
        assert w in lines[0], result.output
    return lines[0]


def copy_of(folder, tmp_path):
    """A private copy of a built folder (see conftest's `built`), for a test that changes it."""
    return shutil.copytree(folder, tmp_path / folder.name)
