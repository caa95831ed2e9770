"""SViT with a fixed capacity: export form == literal reference, reactivation, gates files,
ONNX Runtime == PyTorch, flag errors.

Like tests/test_pool.py, the export form meets the float64 reference in float64; the ONNX test
compares float32 with float32.
"""

import copy
import functools
import pickle

import pytest
import torch

from exporter.errors import InputError
from exporter.methods import apply_method
from exporter.ops.gating import CapacityGate, rank_tokens
from tests.helpers import export_and_run, images_for, max_abs, tiny_segmenter, tiny_vit
from tests.reference import svit as ref
from tests.reference.released import svit as released

TOL = 1e-5
# Building the tiny Segmenter costs seconds; methods wrap it without changing its weights.
segmenter = functools.lru_cache(maxsize=1)(lambda: tiny_segmenter((64, 96)))


def _reduced(model, **args):
    args = {k: (v if isinstance(v, bool) else str(v)) for k, v in args.items()}
    return apply_method(model, "svit", args)


def _run_double(reduced, images):
    with torch.no_grad():
        return copy.deepcopy(reduced).double()(images.double())


def test_ranks_break_ties_by_index():
    scores = torch.tensor([[0.5, 2.0, 0.5, -1.0, 2.0, 0.5, 0.0]])
    rank = rank_tokens(scores, torch.arange(7))
    by_rank = sorted(range(7), key=lambda i: int(rank[0, i]))
    assert by_rank == ref.chosen_tokens(scores[0].tolist(), 7) == [1, 4, 0, 2, 5, 6, 3]


def test_equal_scores_choose_the_first_tokens():
    """Gates whose output ignores the token: every score ties, so tokens 0..k-1 are processed."""
    model = tiny_vit((4, 4), num_prefix=1)
    reduced = _reduced(model, random_gates=True, keep_ratio=0.5, alpha=3)
    gate = reduced.method.gates["3"]
    torch.nn.init.zeros_(gate.gate.fc2.weight)
    with torch.no_grad():
        x = model.embed(images_for(model, batch=2))
        rank = gate.select(x[:, 1:])
    assert (rank == torch.arange(16)).all()


CASES = [  # non-square grids, with and without prefix tokens, several capacities
    pytest.param(lambda: tiny_vit((6, 5), num_prefix=0), dict(keep_ratio=0.5), id="vit-6x5-p0"),
    pytest.param(
        lambda: tiny_vit((5, 7), num_prefix=2), dict(keep_ratio=0.7, alpha=2), id="vit-5x7-p2"
    ),
    pytest.param(
        lambda: tiny_vit((4, 9), num_prefix=1), dict(keep_ratio=0.2, alpha=1), id="vit-4x9-p1"
    ),
    pytest.param(segmenter, dict(keep_ratio=0.6), id="segmenter"),
]


@pytest.mark.parametrize("make,args", CASES)
def test_model_equals_reference(make, args):
    model = make()
    reduced = _reduced(model, random_gates=True, **args)
    m = reduced.method
    images = images_for(model, batch=3, seed=4)
    got = _run_double(reduced, images)
    expect, _ = ref.run(model, m.gate_state(), images, m.cut, m.capacity)
    assert got.shape == expect.shape
    assert (got - expect).abs().max() <= TOL
    with torch.no_grad():  # the gating really changed the output
        assert (model(images) - reduced(images)).abs().max() > 1e-3


def _export_form_choices(reduced, images):
    """Per image and gated block, the patch tokens the export form processes (via hooks)."""
    P, k = reduced.method.layout.num_prefix, reduced.method.capacity
    seen = {}

    def hook(module, inputs):
        block, x = inputs
        rank = module.select(x[:, P:])
        seen[index_of[module]] = [sorted((r < k).nonzero().flatten().tolist()) for r in rank]

    index_of = {g: int(i) for i, g in reduced.method.gates.items()}
    handles = [g.register_forward_pre_hook(hook) for g in index_of]
    try:
        with torch.no_grad():
            reduced(images)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_pruned_tokens_are_reactivated():
    model = tiny_vit((5, 6), num_prefix=1)
    reduced = _reduced(model, random_gates=True, keep_ratio=0.5, alpha=1)
    m = reduced.method
    images = images_for(model, batch=2, seed=5)
    _, chosen = ref.run(model, m.gate_state(), images, m.cut, m.capacity)
    ours = _export_form_choices(reduced, images)
    blocks = range(m.cut, m.layout.depth)
    for b in range(len(images)):
        assert [sorted(chosen[b][i]) for i in blocks] == [ours[i][b] for i in blocks]
    reactivated = [
        (b, i, j, n)
        for b in range(len(images))
        for i in blocks
        for j in blocks
        if j > i
        for n in range(m.layout.num_patches)
        if n not in chosen[b][i] and n in chosen[b][j]
    ]
    assert reactivated, "no token dropped by one block was chosen by a later one"


def test_full_capacity_is_the_dense_model():
    model = tiny_vit((4, 5), num_prefix=2)
    images = images_for(model, batch=2)
    with torch.no_grad():
        dense, got = model(images), _reduced(model, random_gates=True, keep_ratio=1)(images)
    assert (dense - got).abs().max() <= TOL


def test_onnx_runtime_matches_pytorch_and_reference(tmp_path):
    # One export (they are slow): prefix tokens, non-square grid, dynamic batch.
    model = tiny_vit((5, 7), num_prefix=2)
    reduced = _reduced(model, random_gates=True, keep_ratio=0.6, alpha=1)
    m = reduced.method
    images = images_for(model, batch=3, seed=6)
    (out,), proto = export_and_run(reduced, images, tmp_path / "svit.onnx", dynamic_batch=True)
    with torch.no_grad():
        torch_out = reduced(images).numpy()
    assert max_abs(out, torch_out) <= TOL
    assert max_abs(out, ref.run(model, m.gate_state(), images, m.cut, m.capacity)[0]) <= TOL
    ops = {n.op_type for n in proto.graph.node}
    assert "TopK" not in ops and "ScatterND" not in ops


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_gates_file_round_trip(fmt, tmp_path):
    model = tiny_vit((4, 6), num_prefix=1)
    source = _reduced(model, random_gates=True, alpha=2)
    state = {k: v.clone() for k, v in source.method.gate_state().items()}
    path = tmp_path / f"gates.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    loaded = _reduced(model, gates=path)  # alpha comes from the file's first gate
    assert loaded.method.cut == 2 and loaded.method.config()["gates"] == str(path)
    images = images_for(model, batch=2)
    with torch.no_grad():
        assert torch.equal(loaded(images), source(images))


def _gates_error(tmp_path, state, **args):
    path = tmp_path / "gates.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as err:
        _reduced(tiny_vit((4, 6), num_prefix=1), gates=path, **args)
    assert err.value.flag == "--gates"
    return str(err.value)


def _good_gates():
    return dict(
        _reduced(tiny_vit((4, 6), num_prefix=1), random_gates=True, alpha=2).method.gate_state()
    )


def test_gates_file_with_wrong_shape_or_keys(tmp_path):
    state = _good_gates()
    state["gates.3.fc1.weight"] = torch.zeros(8, 16)  # C is 32
    del state["gates.2.fc2.bias"]
    state["gates.3.norm.weight"] = torch.zeros(32)
    text = _gates_error(tmp_path, state)
    assert "missing gates.2.fc2.bias" in text
    assert "gates.3.fc1.weight has shape [8, 16], expected [8, 32]" in text
    assert "unexpected gates.3.norm.weight" in text


def test_gates_file_with_nan(tmp_path):
    state = _good_gates()
    state["gates.2.fc1.bias"][3] = float("nan")
    assert "gates.2.fc1.bias has non-finite values" in _gates_error(tmp_path, state)


def test_gates_file_for_other_blocks(tmp_path):
    text = _gates_error(tmp_path, _good_gates(), alpha=1)  # file has gates for blocks 2, 3
    assert "missing gates.1.fc1.weight" in text and "(and " in text


def test_gates_file_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "gates.pth"
    path.write_bytes(pickle.dumps(InputError("x", 1, "y"), protocol=2))
    with pytest.raises(InputError, match="--gates .*refused"):
        _reduced(tiny_vit((4, 4)), gates=path)


def test_without_gates_refuses():
    with pytest.raises(InputError, match="--random-gates") as err:
        _reduced(tiny_vit((4, 4)))
    assert err.value.flag == "--gates"
    with pytest.raises(InputError, match="one of --gates PATH or --random-gates"):
        _reduced(tiny_vit((4, 4)), gates="x.pth", random_gates=True)


@pytest.mark.parametrize(
    "args,flag",
    [
        (dict(keep_ratio=0), "--keep-ratio"),
        (dict(keep_ratio=-0.5), "--keep-ratio"),
        (dict(keep_ratio=1.01), "--keep-ratio"),
        (dict(keep_ratio="nan"), "--keep-ratio"),
        (dict(keep_ratio="half"), "--keep-ratio"),
        (dict(alpha=0), "--alpha"),
        (dict(alpha=4), "--alpha"),  # depth 4: 1..3
        (dict(hw="2x2"), "--hw"),  # a pool/Expedite flag
    ],
)
def test_bad_flags_raise_input_error(args, flag):
    with pytest.raises(InputError) as err:
        _reduced(tiny_vit((4, 4)), random_gates=True, **args)
    assert err.value.flag == flag
    assert "allowed" in str(err.value)


def test_defaults():
    m = _reduced(segmenter(), random_gates=True).method  # 12 blocks, 24 tokens
    assert m.config() == {"alpha": 3, "keep_ratio": 0.7, "capacity": 17, "gates": "random"}
    assert m.reduced_tokens() == 17 and sorted(m.gates, key=int) == [str(i) for i in range(3, 12)]
    assert all(
        isinstance(g, CapacityGate) and g.gate.fc1.out_features == 48 for g in m.gates.values()
    )


# ---- against uzh-rpg/svit's gate and selection (tests/reference/released/svit.py) ---------------


class ReleasedGateScore(torch.nn.Module):
    """The released gate (LayerNorm, MLP to two logits) as one score, logit 0 - logit 1: the
    released code keeps a token when that is positive, ours ranks by it."""

    def __init__(self, norm, fc1, fc2):
        super().__init__()
        self.norm, self.fc1, self.fc2 = norm, fc1, fc2

    def forward(self, z):
        logits = released.gate_logits(z, self.norm, self.fc1, self.fc2)
        return logits[..., 0] - logits[..., 1]


def released_gate(C, hidden, seed):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    # fc2's keep row is biased so that about half the tokens pass the threshold
    return (
        (1 + 0.1 * rand(C), 0.1 * rand(C)),
        (rand(hidden, C) / C**0.5, rand(hidden)),
        (
            rand(2, hidden) / hidden**0.5,
            torch.tensor([0.0, 0.0], dtype=torch.float64),
        ),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selection_equals_released_gate_at_the_released_count(seed):
    """Where our capacity equals the number of tokens the released gate keeps (logit 0 > logit
    1), the block runs on the same tokens and every output equals the released inference path.
    Differences on purpose: the release keeps a number of tokens that varies per image; ours a
    fixed capacity (static shapes), chosen by the same score. With a larger capacity ours runs
    the block on a superset (the next-best tokens), with a smaller one on a subset; checked
    below. Known gap: the released gate starts with a LayerNorm, which our TokenGate (and the
    --gates file format) does not have, so a released gate file cannot be loaded as it is."""
    model = copy.deepcopy(tiny_vit((5, 6), 1, depth=2)).double()
    block, P, N, C = model.blocks[1], 1, 30, model.layout.dim
    x = torch.randn(1, P + N, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    score = ReleasedGateScore(*released_gate(C, C // 4, seed))
    keep = released.kept(released.gate_logits(x[0, P:], score.norm, score.fc1, score.fc2))
    count = int(keep.sum())
    assert 0 < count < N
    theirs = released.selective_block(block, x[0], keep, P)
    with torch.no_grad():
        for capacity in (count - 1, count, count + 1):
            if not 0 < capacity <= N:
                continue
            gate = CapacityGate(score, N, P, capacity)
            ours = gate(block, x)[0]
            chosen = gate.select(x[:, P:])[0] < capacity
            if capacity == count:
                assert torch.equal(chosen, keep)
                assert max_abs(ours, theirs) <= 1e-10
            elif capacity > count:
                assert bool((chosen | ~keep).all())  # a superset of the released tokens
            else:
                assert bool((keep | ~chosen).all())  # a subset


# ---- accuracy as evidence ------------------------------------------------------------------------


@pytest.mark.slow
def test_retention_at_the_default_on_the_default_model(digits_retention):
    """Keep ratio 0.7 with the seeded random gates (no trained gates exist for this model: the
    number shows what the capacity costs, not what trained gates keep) on the first 40
    validation canvases: measured 97.1% (stage-0 weights: 95.3%); about one point of margin."""
    assert digits_retention("svit", random_gates=True) >= 0.96
