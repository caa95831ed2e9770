"""Decision-aware validation: decisions equal, flips judged by the reference's own margins and by
teacher forcing, a swapped model failing; under 1 and 2 ONNX Runtime threads with graph
optimisations on and off (orders of reduction differ between those, as between CPUs)."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch

from exporter.methods import apply_method
from exporter.onnx.export import export_onnx
from exporter.ops.decisions import Decisions, decide, top_margin
from exporter.ops.density_peaks import DensityPeaksSelection
from exporter.validate import Tolerances, feeds_for, validate_artifact

from .helpers import tiny_vit

SHAPE = (1, 3, 32, 32)
MATRIX = [
    pytest.param(threads, level, id=f"threads{threads}-{name}")
    for threads in (1, 2)
    for name, level in (
        ("opt-all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        ("opt-off", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
    )
]


def options(threads, level):
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.graph_optimization_level = threads, level
    return o


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """method -> (reference, model.onnx) on an 8x8-token ViT; plus the baseline."""
    folder = tmp_path_factory.mktemp("decisions")
    out = {}
    for method, args in (
        ("expedite", {"hw": "5x5", "k": 3}),
        ("ailurus", {"clusters": 12}),
        ("tome", {"r": "6", "alpha": "1"}),
        ("token-adapter", {"alpha": "1"}),
        ("none", {}),
    ):
        reduced = apply_method(tiny_vit(grid=(8, 8), depth=3, dim=16), method, args)
        export_onnx(reduced, folder / f"{method}.onnx", SHAPE)
        out[method] = (reduced, folder / f"{method}.onnx")
    return out


def check(reduced, path, tol=Tolerances(), opts=None):
    data, text = feeds_for(SHAPE, 0, 2)
    return validate_artifact(reduced, path, data, text, tol, 0, options=opts)


@pytest.mark.parametrize("threads,level", MATRIX)
@pytest.mark.parametrize("method", ["expedite", "ailurus", "tome", "token-adapter"])
def test_decisions_found_and_judged_in_every_session(exported, method, threads, level):
    reduced, path = exported[method]
    result = check(reduced, path, opts=options(threads, level))
    assert result.passed, result.to_dict()
    assert result.decisions and all(d.get("tensor") for d in result.decisions.values())
    assert set(k.split("#")[0] for k in result.decisions) == set(reduced.method.decisions())
    assert result.verdict == "decisions equal" or result.verdict.startswith("near-tie flips")


@pytest.mark.parametrize(
    "method,names",
    [
        ("tome", {"tome.match", "tome.merged"}),
        ("token-adapter", {"adapter.rows", "adapter.cols", "adapter.best_rep"}),
    ],
)
def test_imposed_decisions_are_followed(exported, method, names):
    """Imposing the reference's own decisions changes nothing; imposing other kept lines or
    other merged tokens changes the outputs (the rest of the reference follows them)."""
    reduced, _ = exported[method]
    images = torch.from_numpy(feeds_for(SHAPE, 0, 1)[0][0]["images"])
    with torch.no_grad(), Decisions() as own:
        base = reduced(images)
    assert names <= {k.split("#")[0] for k in own.own}
    with torch.no_grad(), Decisions(dict(own.own)):
        assert torch.equal(reduced(images), base)
    key = next(k for k in own.own if k.split("#")[0] in ("tome.merged", "adapter.rows"))
    other = own.own[key].copy()
    # a line of the 8x8 grid not kept / an A token (even position past the class token) not merged
    candidates = range(2, 65, 2) if method == "tome" else range(8)
    other[0, -1] = next(v for v in candidates if v not in other[0])
    other.sort(-1)
    with torch.no_grad(), Decisions({key: other}) as forced:
        changed = reduced(images)
    assert not torch.equal(changed, base)
    assert np.array_equal(np.sort(forced.own[key], -1), np.sort(own.own[key], -1))
    assert forced.margins[key](own.own[key], other).size == 1


def test_swapped_model_fails(exported):
    """baseline.onnx in place of model.onnx: none of the reduced model's decisions is there."""
    reduced, _ = exported["expedite"]
    result = check(reduced, exported["none"][1])
    assert not result.passed
    assert "holds none of the decisions" in result.verdict


def _perturbed_topk(path, out_path, noise):
    """model.onnx where the reconstruction's TopK picks its indices from scores + noise, and its
    weights from the true scores at those indices: another implementation's choices."""
    graph = gs.import_onnx(onnx.load(str(path)))
    topk = next(
        n
        for n in graph.nodes
        if n.op == "TopK"
        and int(n.attrs.get("largest", 1)) == 1
        and len(n.inputs[0].shape or ()) == 3
    )
    scores, (values, indices) = topk.inputs[0], topk.outputs
    shape = [d if isinstance(d, int) else 1 for d in scores.shape]
    bump = gs.Constant("bump", np.asarray(noise(shape), dtype=np.float32))
    shifted = gs.Variable("shifted_scores", dtype=np.float32)
    graph.nodes.append(gs.Node("Add", inputs=[scores, bump], outputs=[shifted]))
    topk.inputs[0] = shifted
    picked = gs.Variable("picked", dtype=np.float32)
    topk.outputs = [picked, indices]
    graph.nodes.append(
        gs.Node("GatherElements", attrs={"axis": 2}, inputs=[scores, indices], outputs=[values])
    )
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    model.ir_version = onnx.load(str(path)).ir_version
    onnx.save(model, str(out_path))
    return out_path


def _rows_noise(rng, rows, scale):
    """Noise on the first `rows` rows of a [B, N, k] score tensor only: a few decisions flip,
    the rest stay the reference's (so the matcher still finds the index tensor)."""

    def noise(shape):
        out = np.zeros(shape)
        out[:, :rows] = rng.standard_normal((shape[0], rows, *shape[2:])) * scale
        return out

    return noise


def test_teacher_forcing_reproduces_other_choices(exported, tmp_path):
    """Large perturbations of a few rows' scores flip decisions far from ties: FAILED, with
    the margins shown. The same flips with the tie bound lifted: the reference with the
    runtime's choices imposed reproduces the runtime's outputs, so only the margins decided."""
    reduced, path = exported["expedite"]
    other = _perturbed_topk(
        path, tmp_path / "other.onnx", _rows_noise(np.random.default_rng(0), 4, 50.0)
    )
    strict = check(reduced, other)
    assert not strict.passed and strict.verdict.startswith("decisions flipped beyond rounding")
    flips = strict.decisions["reconstruction.index#0"]
    assert flips["flipped"] > 0 and flips["margins"][0] > Tolerances().tie_bound
    lifted = check(reduced, other, Tolerances(tie_bound=float("inf")))
    assert lifted.passed and lifted.verdict.startswith("near-tie flips: ")
    assert all(o["max_abs"] <= 1e-4 for o in lifted.forced_outputs.values())
    # without teacher forcing the flipped rows differ: the outputs alone would have failed
    assert max(o["max_abs"] for o in lifted.outputs.values()) > 1e-3


def test_decide_is_inert_outside_validation_and_imposes_inside():
    scores = torch.tensor([[3.0, 1.0, 2.0, 2.0]])
    choice = scores.argmax(1)
    assert decide("x", choice) is choice
    with Decisions({"x#0": np.array([2])}) as record:
        got = decide("x", choice, top_margin(scores))
    assert got.tolist() == [2] and record.own["x#0"].tolist() == [0]
    # 2 is behind 3 by 1 in scores of magnitude 3
    assert record.margins["x#0"](record.own["x#0"], np.array([2])).tolist() == [1 / 3]
    # exactly tied alternatives (2 and 3 both score 2.0) have margin 0
    assert record.margins["x#0"](np.array([2]), np.array([3])).tolist() == [0.0]


class Selection(torch.nn.Module):
    """AiluRus's selection alone, for export: z [B, N, C] -> (centers, assignment)."""

    def __init__(self, grid, clusters, neighbours, knn, channels=6):
        super().__init__()
        self.selection = DensityPeaksSelection(grid, clusters, neighbours, 0.9, knn, channels)

    def forward(self, z):
        return self.selection(z)


def integer_columns(grid, C=6, seed=5):
    """Tokens of one column identical, small integers: squared distances are exact integers in
    any summation order, and many scores tie exactly."""
    H, W = grid
    col = torch.randint(-3, 4, (W, C), generator=torch.Generator().manual_seed(seed)).float()
    return col.repeat(H, 1).unsqueeze(0)


@pytest.fixture(scope="module")
def selection_onnx(tmp_path_factory):
    grid = (6, 5)
    module = Selection(grid, 7, 8, 2).eval()
    z = integer_columns(grid)
    path = tmp_path_factory.mktemp("selection") / "selection.onnx"
    torch.onnx.export(
        module,
        (z,),
        str(path),
        input_names=["z"],
        output_names=["centers", "assignment"],
        dynamo=True,
    )
    return module, z, path


@pytest.mark.parametrize("threads,level", MATRIX)
def test_exact_ties_resolved_by_the_tie_rule_in_every_session(selection_onnx, threads, level):
    """ONNX Runtime's choices on exactly tied scores are the reference's, or differ only
    where the reference's own margins are zero (the rule: higher score, then lower index)."""
    module, z, path = selection_onnx
    session = ort.InferenceSession(
        str(path), options(threads, level), providers=["CPUExecutionProvider"]
    )
    centers, assignment = session.run(None, {"z": z.numpy()})
    with Decisions({"selection.centers#0": centers}) as record:
        module(z)
    for key, got in (("selection.centers#0", centers), ("selection.assignment#0", assignment)):
        assert (record.margins[key](record.own[key], got) <= 1e-6).all(), key


def test_a_set_decision_in_another_order_is_the_same_decision():
    """ToMe's merged tokens come ordered by rank; a runtime that ranks two near-equal matches
    the other way round merged the same tokens: not a flip, and the tensor is still found."""
    from exporter.validate import _match, _same

    own = np.array([[2, 4, 6, 8]])
    other = np.array([[4, 2, 8, 6]])
    assert not _same(own, other).all() and _same(own, other, is_set=True).all()
    found = [{"sum_2": other, "noise": np.array([[1, 3, 5, 7]])}]
    assert _match([{"tome.merged#0": own}], found, {"tome.merged#0"}) == {"tome.merged#0": "sum_2"}
    assert _match([{"tome.merged#0": own}], found, set()) == {}
