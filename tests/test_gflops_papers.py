"""GFLOPs counted by vitexport reproduce the papers' published numbers (within 2%).

The expected values are typed from the papers: the AiluRus paper Table 1 (Segmenter ViT-L/16
baselines on ADE20K 640x640 with 150 classes, Cityscapes 768x768 with 19 classes,
PASCAL-Context 480x480 with 60 classes), the Expedite paper Table 2 (Expedite on Segmenter ViT-L/16
640, alpha 10) and supplementary Table 1 of the Expedite paper (SWAG ViT-L/16 at 512x512). Models are
built on the "meta" device: only shapes matter for a count.
"""

import pytest

from exporter.timing import count_settings_gflops
from exporter.config import BuildSettings, ModelSpec

pytestmark = pytest.mark.slow


def gflops(name, size, classes=None, method="none", **args):
    settings = BuildSettings(
        model=ModelSpec(name, None, size, classes), method=method, method_args=args
    )
    return count_settings_gflops(settings)


@pytest.mark.parametrize("size,classes,paper", [((640, 640), 150, 659.0), ((480, 480), 60, 338.7)])
def test_segmenter_large_baselines(size, classes, paper):
    assert gflops("segmenter_large", size, classes) == pytest.approx(paper, rel=0.02)


@pytest.mark.xfail(strict=True, reason="vitexport counts 1044.5 (+4.9%); see docs/performance.md")
def test_segmenter_large_cityscapes_baseline():
    assert gflops("segmenter_large", (768, 768), 19) == pytest.approx(995.6, rel=0.02)


def test_swag_vit_large_backbone():
    assert gflops("vit_large_patch16_224", (512, 512)) == pytest.approx(364.8, rel=0.02)


@pytest.mark.parametrize(
    "hw,paper", [("8x8", 274.0), ("16x16", 315.1), ("24x24", 388.2), ("28x28", 438.9)]
)
def test_expedite_on_segmenter_large(hw, paper):
    got = gflops("segmenter_large", (640, 640), 150, "expedite", alpha=10, hw=hw)
    assert got == pytest.approx(paper, rel=0.02)


def test_dense_clustering_costs_more_than_tiled():
    """The authors' all-pairs clustering: 2 x N x h*w x C per EM step more than the windows."""
    tiled = gflops("segmenter_large", (640, 640), 150, "expedite", alpha=10, hw="28x28")
    dense = gflops(
        "segmenter_large", (640, 640), 150, "expedite", alpha=10, hw="28x28", clustering="dense"
    )
    n, m, c, iters = 1600, 784, 1024, 5
    # the dense form does every product over all clusters; the tiled one a small part of it
    assert dense - tiled == pytest.approx(iters * 2 * n * m * c / 1e9, rel=0.25)
