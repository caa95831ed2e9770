"""The export form of Expedite's clustering and reconstruction equals the literal reference."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from exporter.ops import TokenClustering, TokenReconstruction, pool_matrix, window_mask
from exporter.ops.clustering import DenseClustering
from exporter.ops.grid import ClusterTiles
from tests.reference import expedite as ref

TOL = 1e-5
# (grid, cells): square, non-divisible and non-square grids from the issue
GRIDS = [
    ((8, 8), (4, 4)),
    ((40, 40), (28, 28)),
    ((30, 20), (20, 12)),
    ((22, 76), (16, 16)),
    ((7, 5), (3, 4)),
]
SLOW_GRIDS = {((40, 40), (28, 28)), ((22, 76), (16, 16)), ((30, 20), (20, 12))}


def features(B, N, C, seed):
    g = torch.Generator().manual_seed(seed)
    # a smooth field plus noise, like a ViT residual stream: neighbours resemble each other
    return torch.randn(B, N, C, generator=g) * 0.5 + torch.linspace(-1, 1, N).view(1, N, 1)


@pytest.mark.parametrize("n_in,n_out", [(40, 28), (30, 20), (22, 16), (76, 16), (7, 7), (5, 2)])
def test_pool_matrix_is_adaptive_avg_pool(n_in, n_out):
    x = torch.randn(3, n_in)
    expect = F.adaptive_avg_pool1d(x.unsqueeze(0), n_out)[0]
    assert torch.allclose(x @ pool_matrix(n_in, n_out).T, expect, atol=1e-6)


@pytest.mark.parametrize("grid,cells", GRIDS)
def test_window_mask_matches_reference_neighbours(grid, cells):
    mask = window_mask(grid, cells, (5, 3))
    for p in range(0, grid[0] * grid[1], 7):
        assert mask[p].nonzero().flatten().tolist() == ref.neighbours(p, grid, cells, (5, 3))


def _grid_params():
    for grid, cells in GRIDS:
        marks = [pytest.mark.slow] if (grid, cells) in SLOW_GRIDS else []
        yield pytest.param(
            grid, cells, marks=marks, id=f"{grid[0]}x{grid[1]}->{cells[0]}x{cells[1]}"
        )


@pytest.mark.parametrize("grid,cells", _grid_params())
@pytest.mark.parametrize("window", [(3, 3), (5, 5)])
def test_clustering_equals_reference(grid, cells, window):
    B, C = 2, 16
    z = features(B, grid[0] * grid[1], C, seed=grid[0] * 100 + cells[0])
    layer = TokenClustering(grid, cells, window, iters=3, tau=5.0)
    got = layer(z)
    for b in range(B):
        expect = ref.cluster(z[b].double(), grid, cells, window, 3, 5.0)
        assert (got[b].double() - expect).abs().max() <= TOL


@pytest.mark.parametrize("grid,cells", _grid_params())
@pytest.mark.parametrize(
    "norm,neighbours", list(itertools.product(["sum", "l2"], ["all", "window"]))
)
def test_reconstruction_equals_reference(grid, cells, norm, neighbours):
    B, C, D, k, window = 2, 16, 8, 6, (3, 3)
    z = features(B, grid[0] * grid[1], C, seed=7 + cells[1])
    M = cells[0] * cells[1]
    centers = torch.randn(B, M, C, generator=torch.Generator().manual_seed(1)) * 0.5
    refined = torch.randn(B, M, D, generator=torch.Generator().manual_seed(2))
    layer = TokenReconstruction.for_grid(k, 5.0, norm, neighbours, grid, cells, window)
    index, w = layer.weights(z, centers)
    got = layer(refined, index, w)
    allowed = None
    if neighbours == "window":
        allowed = [ref.neighbours(p, grid, cells, window) for p in range(grid[0] * grid[1])]
    for b in range(B):
        expect = ref.reconstruct(
            z[b].double(), centers[b].double(), refined[b].double(), k, 5.0, norm, allowed
        )
        assert (got[b].double() - expect).abs().max() <= TOL


@pytest.mark.parametrize(
    "grid,cells,window",
    [
        ((8, 8), (4, 4), (3, 3)),
        ((32, 32), (24, 24), (5, 5)),
        ((22, 76), (16, 16), (5, 3)),
        ((7, 5), (3, 4), (3, 3)),
    ],
)
def test_cluster_tiles_hold_every_window_pair_once(grid, cells, window):
    """Every (pixel, allowed cluster) pair of the dense mask sits in exactly one tile slot;
    `appear`, `owner` and `order` point where the tables say."""
    dense = window_mask(grid, cells, window)
    N, M = dense.shape
    for tile in (1, 2, 3, max(cells)):
        t = ClusterTiles(grid, cells, window, tile)
        seen = torch.zeros_like(dense, dtype=torch.long)
        rows = t.pixels.unsqueeze(2).expand_as(t.allowed)[t.allowed]
        cols = t.clusters.unsqueeze(1).expand_as(t.allowed)[t.allowed]
        seen.index_put_((rows, cols), torch.ones_like(rows), accumulate=True)
        assert torch.equal(seen, dense.long())
        assert torch.equal(t.clusters.reshape(-1)[t.order], torch.arange(M))
        real = t.appear < t.T * t.P
        pixel = torch.arange(N).unsqueeze(1).expand_as(t.appear)
        assert torch.equal(t.owner[t.appear[real]], pixel[real])
        assert torch.equal(t.pixels.reshape(-1)[t.appear[real]], pixel[real])
        assert int(real.sum()) == int((t.owner < N).sum())  # every real slot is listed once


@pytest.mark.parametrize("tile", [1, 2, 3, 5])
def test_tiled_clustering_equals_dense_form(tile):
    grid, cells, window = (20, 18), (14, 10), (5, 3)
    z = features(2, grid[0] * grid[1], 12, seed=11) * 20  # large norms: shifts must hold
    tiled = TokenClustering(grid, cells, window, iters=4, tau=50.0, tile=tile)
    dense = DenseClustering(grid, cells, window, iters=4, tau=50.0)
    assert tiled.tile == tile
    assert (tiled(z) - dense(z)).abs().max() <= 1e-4 * z.abs().max()


def test_tiles_are_skipped_when_they_cost_more_than_dense():
    """8x8 -> 4x4 with 5x5 windows and 1-cell tiles: each tile's pixels span the whole grid,
    so the dense form is cheaper and is used."""
    assert TokenClustering((8, 8), (4, 4), (5, 5), iters=1, tau=1.0, tile=1).tile is None
    assert TokenClustering((32, 32), (24, 24), (5, 5), iters=1, tau=1.0).tile is not None


def test_default_tiles_of_the_headline_and_segmenter_b_builds():
    """The cost model counts a product's narrow side as at least 16 clusters (what ONNX
    Runtime's CPU products take as long over), so both builds get 4x4-cell tiles; the tiles'
    result still equals the dense form at feature norms where the shifts matter."""
    for grid, channels in (((40, 40), 24), ((32, 32), 16)):
        layer = TokenClustering(grid, (24, 24), (5, 5), iters=3, tau=50.0)
        assert layer.tile == 4
        z = features(1, grid[0] * grid[1], channels, seed=5) * 10
        dense = DenseClustering(grid, (24, 24), (5, 5), iters=3, tau=50.0)
        assert (layer(z) - dense(z)).abs().max() <= 1e-4 * z.abs().max()


@pytest.mark.parametrize("grid,cells", [((8, 8), (4, 4)), ((7, 5), (3, 4))])
def test_dense_clustering_equals_reference(grid, cells):
    z = features(1, grid[0] * grid[1], 16, seed=5)
    got = DenseClustering(grid, cells, (3, 3), iters=3, tau=5.0)(z)
    expect = ref.cluster(z[0].double(), grid, cells, (3, 3), 3, 5.0)
    assert (got[0].double() - expect).abs().max() <= TOL


def test_clustering_keeps_float32_under_half_inputs():
    layer = TokenClustering((8, 8), (4, 4), (3, 3), iters=2, tau=5.0)
    z = features(1, 64, 8, seed=3)
    got = layer(z.half())
    assert got.dtype == torch.float16
    assert (got.float() - layer(z)).abs().max() < 1e-2


def test_masked_logit_is_finite_in_half():
    from exporter.ops.clustering import MASKED_LOGIT

    assert torch.isfinite(torch.tensor(MASKED_LOGIT, dtype=torch.float16))


def test_large_distances_do_not_underflow():
    """Features with norms in the hundreds (real residual streams): weights stay normalised."""
    layer = TokenReconstruction(k=4, tau=1.0)
    z = torch.randn(1, 16, 8) * 300
    centers = torch.randn(1, 4, 8) * 300
    index, w = layer.weights(z, centers)
    assert torch.allclose(w.sum(-1), torch.ones(1, 16))
