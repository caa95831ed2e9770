"""AiluRus: the export form equals the literal reference (tests/reference/ailurus.py), exports
to a clean ONNX graph that ONNX Runtime runs identically, and refuses bad flags."""

import copy
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporter.errors import InputError
from exporter.methods import apply_method, get_method
from exporter.methods.ailurus.vit import build
from exporter.models.base import TokenLayout
from exporter.ops.density_peaks import (
    DensityPeaksSelection,
    merge_clusters,
    rank_weights,
    spatial_neighbours,
    unfold_clusters,
)
from tests.helpers import export_and_run, images_for, max_abs, tiny_segmenter, tiny_vit
from tests.reference import ailurus as ref
from tests.reference.released import ailurus as released

TOL = 1e-5
# grid, clusters M, spatial neighbours lambda, spatial alpha a, knn k
CASES = [
    pytest.param((5, 7), 9, 10, 0.9, 2, id="5x7-M9-l10-k2"),
    pytest.param((7, 9), 3, 4, 0.6, 1, id="7x9-M3-l4-fallback"),  # few centers, tiny lambda
    pytest.param((4, 6), 12, 23, 0.9, 1, id="4x6-M12-lN-1"),  # lambda = N-1: all tokens
    pytest.param((6, 5), 7, 8, 1.0, 3, id="6x5-M7-a1-k3"),  # a = 1: no spatial weighting
]


def features(B, N, C, seed):
    g = torch.Generator().manual_seed(seed)
    # a smooth field plus noise, like a ViT residual stream: neighbours resemble each other
    return torch.randn(B, N, C, generator=g) * 0.5 + torch.linspace(-1, 1, N).view(1, N, 1)


def column_features(grid, B=2, C=8):
    """Tokens of one column are identical: many exactly equal scores and distances."""
    H, W = grid
    col = torch.randn(W, C, generator=torch.Generator().manual_seed(5))
    return col.repeat(H, 1).unsqueeze(0).expand(B, -1, -1).contiguous()


def check_against_reference(sel, z, grid, M, lam, a, k):
    centers, assignment = sel(z)
    _, neg_log_rho, log_score = sel.scores(z)
    merged, sizes = merge_clusters(z, assignment, M)
    for b in range(z.shape[0]):
        r = ref.density_peaks(z[b].double(), grid, M, lam, a, k)
        rho = torch.tensor(r["rho"], dtype=torch.float64)
        assert (torch.exp(-neg_log_rho[b].double()) - rho).abs().max() <= TOL
        ref_log_score = torch.tensor(r["log_score"], dtype=torch.float64)
        finite = torch.isfinite(ref_log_score)
        assert torch.equal(finite, torch.isfinite(log_score[b]))
        if finite.any():  # identical tokens: every distance 0, every score log 0 = -inf
            assert (log_score[b].double()[finite] - ref_log_score[finite]).abs().max() <= TOL
        assert centers[b].tolist() == r["centers"]
        assert assignment[b].tolist() == r["assignment"]
        ref_merged, ref_sizes = ref.merge(z[b].double(), r["assignment"], M)
        assert (merged[b].double() - ref_merged).abs().max() <= TOL
        assert sizes[b].tolist() == ref_sizes


@pytest.mark.parametrize("grid,M,lam,a,k", CASES)
def test_neighbour_table_and_weights_match_reference(grid, M, lam, a, k):
    table = spatial_neighbours(grid, lam)
    assert table.shape == (grid[0] * grid[1], lam)
    for i in range(grid[0] * grid[1]):
        assert table[i].tolist() == ref.grid_neighbours(i, grid, lam)
    expect = torch.tensor([ref.spatial_weight(r, lam, a) for r in range(lam)])
    assert (rank_weights(lam, a).double() - expect).abs().max() <= 1e-7


@pytest.mark.parametrize("grid,M,lam,a,k", CASES)
def test_selection_and_merge_equal_reference(grid, M, lam, a, k):
    N = grid[0] * grid[1]
    z = features(3, N, 16, seed=N + M)
    sel = DensityPeaksSelection(grid, M, lam, a, k, 16)
    check_against_reference(sel, z, grid, M, lam, a, k)


def test_fallback_to_plain_distance_is_exercised_and_correct():
    """Tokens with no center among their lambda neighbours join the nearest center overall."""
    grid, M, lam = (7, 9), 3, 4
    z = features(2, 63, 16, seed=63 + M)
    r = ref.density_peaks(z[0].double(), grid, M, lam, 0.6, 1)
    orphans = [
        i
        for i in range(63)
        if i not in r["centers"] and not set(ref.grid_neighbours(i, grid, lam)) & set(r["centers"])
    ]
    assert orphans, "this case must contain tokens without a center among their neighbours"
    _, assignment = DensityPeaksSelection(grid, M, lam, 0.6, 1, 16)(z)
    assert [assignment[0, i].item() for i in orphans] == [r["assignment"][i] for i in orphans]


@pytest.mark.parametrize("kind", ["constant", "columns"])
def test_exact_ties_break_by_token_index(kind):
    grid, M, lam = (4, 6), 7, 23
    z = torch.zeros(2, 24, 8) if kind == "constant" else column_features(grid)
    sel = DensityPeaksSelection(grid, M, lam, 0.9, 1, 8)
    check_against_reference(sel, z, grid, M, lam, 0.9, 1)
    if kind == "constant":  # every token is a peak with equal score: the first M win
        assert sel(z)[0][0].tolist() == list(range(M))


def test_half_inputs_are_clustered_in_float32():
    grid, M = (5, 7), 9
    z = features(2, 35, 16, seed=1).half()
    sel = DensityPeaksSelection(grid, M, 10, 0.9, 1, 16)
    centers, assignment = sel(z)
    expect_centers, expect_assignment = sel(z.float())
    assert torch.equal(centers, expect_centers) and torch.equal(assignment, expect_assignment)
    merged, sizes = merge_clusters(z, assignment, M)
    assert merged.dtype == torch.float16 and sizes.dtype == torch.float32
    assert unfold_clusters(merged, assignment).dtype == torch.float16


def reference_output(model64, reduced, images):
    """The literal reference for `reduced`'s settings, run on a float64 copy of its model."""
    cfg = reduced.method.config()
    return ref.forward(
        model64,
        images.double(),
        cfg["alpha"],
        cfg["clusters"],
        cfg["spatial_neighbours"],
        cfg["spatial_alpha"],
        cfg["knn"],
    )


@pytest.mark.parametrize(
    "grid,num_prefix,args",
    [
        ((5, 7), 2, {"alpha": 1, "clusters": 9, "spatial_neighbours": 10, "knn": 2}),
        ((6, 4), 0, {"alpha": 2, "clusters": 5, "spatial_neighbours": 4, "spatial_alpha": 0.7}),
        ((4, 6), 1, {"alpha": 2, "clusters": 8}),
    ],
    ids=["class+register", "no-prefix", "class-defaults"],
)
def test_vit_output_equals_reference_forward(grid, num_prefix, args):
    model = tiny_vit(grid, num_prefix, depth=3)
    reduced = apply_method(model, "ailurus", args)
    images = images_for(model, batch=2)
    with torch.no_grad():
        got = reduced(images)
    model64 = copy.deepcopy(model).double()
    assert max_abs(got, reference_output(model64, reduced, images)) <= TOL


def test_segmenter_restores_after_decoder_and_equals_reference():
    model = tiny_segmenter()
    reduced = apply_method(model, "ailurus", {"alpha": 9, "clusters": 12})
    assert reduced.method.restore_at_output
    images = images_for(model, batch=2)
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        got = reduced(images)
        # float32 floor: the unmodified Segmenter's own float32-vs-float64 error (~1.3e-5)
        floor = max_abs(model(images), model64(images.double()))
    assert max_abs(got, reference_output(model64, reduced, images)) <= max(TOL, 2 * floor)


class SelectionOnly(torch.nn.Module):
    """The selection with the graph input named as the export helpers name it."""

    output_names = DensityPeaksSelection.output_names

    def __init__(self, selection):
        super().__init__()
        self.selection = selection

    def forward(self, images):
        return self.selection(images)


def test_selection_exports_and_runs_alike_in_onnxruntime(tmp_path):
    """The subgraph the DPCSelect plugin replaces: same centers and assignment in ORT,
    including exact ties (ORT's and PyTorch's TopK order ties differently)."""
    grid, M = (4, 6), 7
    sel = DensityPeaksSelection(grid, M, 10, 0.9, 2, 8).eval()
    _, proto = export_and_run(
        SelectionOnly(sel),
        features(2, 24, 8, seed=3),
        tmp_path / "selection.onnx",
        dynamic_batch=True,
    )
    # O(N * lambda * C): no intermediate holds an N x N table
    inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
    shapes = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred]
    assert len(shapes) > 20 and not [s for s in shapes if s.count(24) >= 2]
    sess = ort.InferenceSession(
        str(tmp_path / "selection.onnx"), providers=["CPUExecutionProvider"]
    )
    for inputs in (features(3, 24, 8, seed=4), column_features(grid, B=2), torch.zeros(1, 24, 8)):
        centers, assignment = sess.run(None, {"images": inputs.numpy()})
        expect_centers, expect_assignment = sel(inputs)
        np.testing.assert_array_equal(centers, expect_centers.numpy())
        np.testing.assert_array_equal(assignment, expect_assignment.numpy())


def test_model_exports_clean_and_onnxruntime_matches(tmp_path):
    model = tiny_vit((5, 7), 2, depth=3)
    reduced = apply_method(model, "ailurus", {"alpha": 1, "clusters": 9, "spatial_neighbours": 10})
    images = images_for(model, batch=2)
    (out,), proto = export_and_run(reduced, images, tmp_path / "model.onnx")
    with torch.no_grad():
        assert max_abs(out, reduced(images)) <= TOL
    ks = [n for n in proto.graph.node if n.op_type == "TopK"]
    assert ks, "center selection should lower to TopK"


def fake_model(grid, depth=4):
    lay = TokenLayout(grid=grid, num_prefix=1, dim=8, depth=depth, num_heads=1)
    return SimpleNamespace(layout=lay, restore_at_output=False, per_token_head=True)


@pytest.mark.parametrize(
    "args,flag",
    [
        ({"clusters": 24}, "--clusters"),
        ({"clusters": 30}, "--clusters"),
        ({"clusters": 0}, "--clusters"),
        ({"clusters": -3}, "--clusters"),
        ({"clusters": "many"}, "--clusters"),
        ({"knn": 11, "spatial_neighbours": 10}, "--knn"),
        ({"knn": 0}, "--knn"),
        ({"knn": 24}, "--knn"),  # default lambda is clamped to N-1 = 23
        ({"spatial_alpha": 0}, "--spatial-alpha"),
        ({"spatial_alpha": 1.5}, "--spatial-alpha"),
        ({"spatial_alpha": -0.2}, "--spatial-alpha"),
        ({"spatial_alpha": "nan"}, "--spatial-alpha"),
        ({"spatial_alpha": "x"}, "--spatial-alpha"),
        ({"spatial_neighbours": 24}, "--spatial-neighbours"),
        ({"spatial_neighbours": 0}, "--spatial-neighbours"),
        ({"alpha": 0}, "--alpha"),
        ({"alpha": 4}, "--alpha"),
    ],
)
def test_bad_flags_raise_input_error_naming_the_flag(args, flag):
    with pytest.raises(InputError) as err:
        build(fake_model((4, 6)), args)
    assert err.value.flag == flag
    assert str(err.value.value) == str(args[flag.lstrip("-").replace("-", "_")])
    assert "allowed" in str(err.value)


def test_clusters_beyond_tensorrt_topk_limit_are_refused():
    with pytest.raises(InputError, match="3840") as err:
        build(fake_model((64, 64)), {"clusters": 3841})
    assert err.value.flag == "--clusters"


def test_flags_of_other_methods_are_refused():
    with pytest.raises(InputError):
        apply_method(tiny_vit((4, 6), 1, depth=2), "ailurus", {"hw": "2x2"})


def test_defaults_are_the_papers_configuration():
    """400 of 1600 tokens after block 2, a = 0.9, lambda = 50, k = 1 (the AiluRus paper, Table 7)."""
    assert get_method("ailurus").name == "ailurus"
    method = build(fake_model((40, 40), depth=24), {})
    assert method.config() == {
        "alpha": 2,
        "clusters": 400,
        "spatial_alpha": 0.9,
        "spatial_neighbours": 50,
        "knn": 1,
        "restore": "backbone",
    }
    small = build(fake_model((4, 6)), {})
    assert small.config()["spatial_neighbours"] == 23  # lambda clamped to N-1


# ---- against the released DPC-kNN (TCFormer's cluster_dpc_knn) with AiluRus's spatial term ----


def released_check(grid, M, lam, a, k, z, seed=None):
    """Compare the export form with tests/reference/released/ailurus.py on every image of z.
    Returns the number of tokens that join a different center (0 when the forms agree)."""
    sel = DensityPeaksSelection(grid, M, lam, a, k, z.shape[-1])
    centers, assignment = sel(z)
    _, neg_log_rho, _ = sel.scores(z)
    merged, sizes = merge_clusters(z, assignment, M)
    differ = 0
    for b in range(z.shape[0]):
        noise = None if seed is None else torch.Generator().manual_seed(seed + b)
        r = released.dpc_knn(z[b].double(), grid, M, lam, a, k, noise)
        # the released density carries its noise (< 1e-6) on top of exp(-mean squared distance)
        err = (torch.exp(-neg_log_rho[b].double()) - r["density"]).abs().max()
        assert err <= TOL + (0 if seed is None else released.NOISE)
        # The released code orders clusters by score, ours by token index: compare centers as a
        # set and each token's cluster by the token at its center.
        ours = centers[b][assignment[b]]
        theirs = r["centers"][r["assignment"]]
        differ += int((ours != theirs).sum())
        if sorted(r["centers"].tolist()) != centers[b].tolist():
            continue
        # merge: the released merge divides by size + 1e-6, a relative difference below 1e-6
        ref_merged, ref_sizes = released.merge(z[b].double(), r["assignment"], M)
        slot = torch.searchsorted(centers[b], r["centers"])  # our slot of each released cluster
        assert torch.equal(sizes[b][slot].double(), ref_sizes)
        scale = z[b].abs().max().item()
        assert (merged[b][slot].double() - ref_merged).abs().max() <= TOL + 2e-6 * scale
    return differ


@pytest.mark.parametrize("grid,M,lam,a,k", CASES)
def test_selection_equals_released_dpc_knn(grid, M, lam, a, k):
    """Without the released code's density noise, the export form picks the same centers and
    the same center for every token as the released structure (full N x N matrices, product
    rho * delta, topk, argmin)."""
    N = grid[0] * grid[1]
    z = features(3, N, 16, seed=N + M)
    assert released_check(grid, M, lam, a, k, z) == 0


@pytest.mark.parametrize("grid,M,lam,a,k", [c for c in CASES if c.values[4] > 1])
def test_released_density_noise_changes_nothing_on_untied_features(grid, M, lam, a, k):
    """The released code adds noise below 1e-6 to the density so that no two are equal; ours
    orders equal densities by token index instead. Where no two densities of an image lie
    within 2e-6 of each other the noise changes no decision. (With k = 1, two tokens that are
    each other's nearest neighbours at the same rank have exactly equal densities; the cases
    here average k > 1 distances, and the test checks that they have no near-equal pair.)"""
    N = grid[0] * grid[1]
    z = features(3, N, 16, seed=N + M)
    _, neg_log_rho, _ = DensityPeaksSelection(grid, M, lam, a, k, 16).scores(z)
    rho = torch.exp(-neg_log_rho.double()).sort(-1).values
    assert (rho[:, 1:] - rho[:, :-1]).min() > 2 * released.NOISE
    assert released_check(grid, M, lam, a, k, z, seed=7) == 0


def test_exact_ties_differ_from_released_noise_only_within_bound():
    """Exactly tied features (every column the same): the released code breaks the ties of
    density at random, ours by token index, so the two clusterings differ on purpose. The bound:
    both keep M distinct centers, and each token's cluster is as close in the weighted distance
    under either rule, on average within 5% (the ties are between equivalent tokens)."""
    grid, M, lam = (4, 6), 7, 23
    z = column_features(grid)
    sel = DensityPeaksSelection(grid, M, lam, 0.9, 1, z.shape[-1])
    centers, assignment = sel(z)
    for b in range(z.shape[0]):
        r = released.dpc_knn(z[b].double(), grid, M, lam, 0.9, 1, torch.Generator().manual_seed(b))
        assert r["centers"].unique().numel() == M

        def cost(joined):  # mean plain distance of each token to the token at its center
            return (z[b] - z[b][joined]).norm(dim=-1).mean().item()

        ours = cost(centers[b][assignment[b]])
        theirs = cost(r["centers"][r["assignment"]])
        assert ours <= 1.05 * theirs + 1e-6


# ---- accuracy as evidence ------------------------------------------------------------------------


@pytest.mark.slow
def test_retention_at_the_default_on_the_default_model(digits_retention):
    """400 of 1,600 clusters after block 2 on the shipped digits model, first 40 validation
    canvases (tests/retention.py): measured 99.96% (stage-0 weights: 100.1%).
    Without the released distance scale it kept 55%; the issue that found this asks for 99%."""
    assert digits_retention("ailurus") >= 0.99
