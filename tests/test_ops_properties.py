"""Property tests: the token ops equal the float64 literal references at scale extremes.

Feature norms range over 1e-2..1e3 and the clustering's sharpness (typical squared distance
over tau) over 1e-3..1e3, so near-empty clusters (total weight below WEIGHT_FLOOR) and
almost-uniform assignments both occur. Errors are measured relative to the feature scale.
Examples are derandomized: the same cases run on every machine.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.errors import InputError
from exporter.methods.expedite.vit import check_cluster_hw
from exporter.ops import TokenClustering, TokenReconstruction
from exporter.ops.clustering import WEIGHT_FLOOR, DenseClustering
from exporter.ops.density_peaks import DensityPeaksSelection
from tests.reference import ailurus as ailurus_ref
from tests.reference import expedite as ref

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Float32 rounding of the scores relative to |z|^2, amplified by the sharpness (d/tau): the
# clustering is checked to this share of the feature scale.
CENTER_TOL = 2e-4


@st.composite
def clustering_case(draw):
    """A grid, cells and window that `--hw`/`--window` accept, a tile, scale and sharpness."""
    H, W = draw(st.integers(2, 9)), draw(st.integers(2, 9))
    window = (draw(st.sampled_from([1, 3, 5, 7])), draw(st.sampled_from([1, 3, 5, 7])))
    h, w = draw(st.integers(1, H + 2)), draw(st.integers(1, W + 2))
    try:
        check_cluster_hw(f"{h}x{w}", (H, W), window)
    except InputError:
        h, w = min(h, H), min(w, W)  # always accepted
    tile = draw(st.one_of(st.none(), st.integers(1, max(h, w))))
    scale = 10.0 ** draw(st.floats(-2, 3))
    sharp = 10.0 ** draw(st.floats(-3, 3))
    iters = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    return (H, W), (h, w), window, tile, scale, sharp, iters, seed


def features(B, N, C, scale, seed):
    g = torch.Generator().manual_seed(seed)
    field = torch.linspace(-1, 1, N).view(1, N, 1)
    return (torch.randn(B, N, C, generator=g) + field) * scale


def tau_for(z, sharp):
    """tau that puts the typical squared distance between tokens at `sharp` * tau."""
    z = z.double()
    typical = ((z - z.mean(1, keepdim=True)) ** 2).sum(-1).mean().item()
    return max(typical, 1e-30) / sharp


@SETTINGS
@given(clustering_case())
def test_tiled_and_dense_clustering_equal_reference_at_every_scale(case):
    grid, cells, window, tile, scale, sharp, iters, seed = case
    z = features(1, grid[0] * grid[1], 6, scale, seed)
    tau = tau_for(z, sharp)
    expect = ref.cluster(z[0].double(), grid, cells, window, iters, tau)
    tiled = TokenClustering(grid, cells, window, iters, tau, tile=tile)
    for layer in (tiled, DenseClustering(grid, cells, window, iters, tau)):
        got = layer(z)[0].double()
        assert torch.isfinite(got).all()
        assert (got - expect).abs().max().item() <= CENTER_TOL * scale, type(layer).__name__


def test_near_empty_cluster_keeps_the_dense_constant():
    """Sharp assignments starve clusters below WEIGHT_FLOOR; their centers stay near the origin
    in both forms, and the next step scores them the same way."""
    grid, cells, window = (20, 18), (14, 10), (5, 3)
    z = features(1, 360, 12, 1.0, seed=0)
    tau = 0.01
    dense = DenseClustering(grid, cells, window, 1, tau)
    q = dense.assignment(z, dense.initial_centers(z))
    assert (q.sum(1) < WEIGHT_FLOOR).any()  # the regime is reached
    expect = ref.cluster(z[0].double(), grid, cells, window, 3, tau)
    got = TokenClustering(grid, cells, window, 3, tau, tile=2)(z)[0].double()
    assert (got - expect).abs().max().item() <= CENTER_TOL  # before the fix: 0.94


@SETTINGS
@given(st.floats(-2, 3), st.integers(0, 2**16), st.sampled_from([1, 3, 5, 7]))
def test_clustering_under_half_inputs(log_scale, seed, lam):
    grid, cells = (8, 8), (5, 5)
    scale = 10.0**log_scale
    z = features(1, 64, 6, min(scale, 200.0), seed).half()  # float16 holds |z|^2 up to 6e4
    tau = tau_for(z.float(), 1.0)
    got = TokenClustering(grid, cells, (lam, lam), 3, tau)(z)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    expect = ref.cluster(z[0].double(), grid, cells, (lam, lam), 3, tau)
    assert (got[0].double() - expect).abs().max().item() <= 2e-3 * z.float().abs().max().item()


@st.composite
def reconstruction_case(draw):
    M = draw(st.integers(1, 12))
    return (
        draw(st.integers(1, M)),
        M,
        10.0 ** draw(st.floats(-2, 3)),
        10.0 ** draw(st.floats(-3, 3)),
        draw(st.sampled_from(["sum", "l2"])),
        draw(st.integers(0, 2**16)),
    )


@SETTINGS
@given(reconstruction_case())
def test_reconstruction_at_every_scale(case):
    """Finite, normalised weights; equal to the reference wherever the reference's k-th and
    (k+1)-th distances are apart by more than float32 rounding (elsewhere the choice is a tie)."""
    k, M, scale, sharp, norm, seed = case
    N, C, D = 20, 6, 3
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, N, C, generator=g) * scale
    centers = torch.randn(1, M, C, generator=g) * scale
    values = torch.randn(1, M, D, generator=g)
    tau = tau_for(z, sharp)
    layer = TokenReconstruction(k, tau, norm)
    index, w = layer.weights(z, centers)
    got = layer(values, index, w)[0].double()
    assert torch.isfinite(w).all() and (w.amax(-1) > 0).all()
    total = w.sum(-1) if norm == "sum" else w.norm(dim=-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    expect = ref.reconstruct(z[0].double(), centers[0].double(), values[0].double(), k, tau, norm)
    d = ref.sq_dist(z[0].double(), centers[0].double()).sort(1).values
    rounding = 1e-5 * (z[0].double().pow(2).sum(-1) + centers[0].double().pow(2).sum(-1).max())
    clear = torch.ones(N, dtype=torch.bool) if k == M else (d[:, k] - d[:, k - 1]) > rounding
    # weights exp(-d/tau) carry the scores' rounding divided by tau
    tol = 1e-4 + 1e-5 * sharp * 10
    err = (got - expect)[clear].abs()
    assert err.numel() == 0 or err.max().item() <= tol


@SETTINGS
@given(st.floats(-2, 3), st.integers(0, 2**16), st.integers(1, 3))
def test_density_peaks_at_every_scale(log_scale, seed, knn):
    """No NaN, M distinct centers, every token in a valid cluster, each center in its own;
    equal to the reference where its scores are apart by more than rounding."""
    grid, M, lam = (6, 7), 9, 8
    z = features(1, 42, 5, 10.0**log_scale, seed)
    sel = DensityPeaksSelection(grid, M, lam, 0.9, knn, 5)
    centers, assignment = sel(z)
    _, _, score = sel.scores(z)
    assert torch.isfinite(score).all()
    assert centers.unique().numel() == M
    assert assignment.min() >= 0 and assignment.max() < M
    assert torch.equal(assignment[0, centers[0]], torch.arange(M))
    expect = ailurus_ref.density_peaks(z[0].double(), grid, M, lam, 0.9, knn)
    order = score[0].double().sort(descending=True).values
    if order[M - 1] - order[M] > 1e-4 * order.abs().max():
        assert centers[0].tolist() == expect["centers"]


@SETTINGS
@given(st.floats(-2, 3), st.integers(0, 2**16))
def test_bipartite_matching_at_every_scale(log_scale, seed):
    from exporter.ops.bipartite import BipartiteSoftMatching

    n, r, C = 17, 5, 6
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, C, generator=g) * 10.0**log_scale
    layer = BipartiteSoftMatching(n, r, 1)
    out, sizes, _ = layer(x, x, torch.ones(1, n), torch.arange(n).view(1, n))
    assert torch.isfinite(out).all() and out.shape == (1, n - r, C)
    assert sizes.sum().item() == n
    assert math.isclose(
        out.double().mul(sizes[..., None].double()).sum().item(),
        x.double().sum().item(),
        rel_tol=1e-4,
        abs_tol=1e-4 * x.abs().max().item(),
    )


@pytest.mark.parametrize("log_scale", [-2, 0, 3])
def test_token_adapter_scores_at_scale_extremes(log_scale):
    from exporter.ops.rows_cols import RowColEjector, RowColInjector

    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, 64, 6, generator=g) * 10.0**log_scale
    inject = RowColInjector((8, 8), 0.5, 0.5, 0.25)
    merged = inject(z)
    tokens = merged[0] if isinstance(merged, (tuple, list)) else merged
    assert torch.isfinite(tokens).all()
    eject = RowColEjector()
    w = eject.weights(torch.nn.functional.normalize(z, dim=-1), tokens)
    assert torch.isfinite(w).all() and (w.abs().sum(-1) > 0).all()
