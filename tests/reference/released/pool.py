"""The pooling baseline as the Expedite authors' release has it, written for the tests.

Expedit-Segmenter (github.com/Expedit-LargeScale-Vision-Transformer/Expedit-Segmenter) ships an
`AvgPool` module in mmseg/ops/cluster.py: adaptive average pooling of the [C, H, W] token map to
(h, w), flattened in raster order to [h * w, C]. Its release has no matching restore for this
baseline (the hourglass backbone restores through `TokenReconstructionBlock`), so the restoring
upsampling has no released counterpart; ours follows the paper's ablation text.
"""

import torch.nn.functional as F


def avg_pool(z, grid, cells):
    """z [B, N, C] -> [B, h * w, C]."""
    B, N, C = z.shape
    fmap = z.transpose(1, 2).reshape(B, C, *grid)
    return F.adaptive_avg_pool2d(fmap, cells).reshape(B, C, -1).transpose(1, 2)
