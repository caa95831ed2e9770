"""SViT (Liu et al., WACV 2024; with its supplementary material): learned gates, pruned tokens kept.

In every block from alpha to the last, a small gating MLP scores the patch tokens; the block
runs on the prefix tokens and the best-scored patch tokens only, and writes them back in
place. The others pass through unchanged, stay in the feature map, and may be chosen again by
a later block (reactivation, SViT's supplementary material section C).

Export form: the paper lets the number of kept tokens vary per image and batches the
variable-length sequences as nested tensors (SViT's supplementary material section B). Here every gated block
keeps a fixed capacity, round(keep_ratio * N) of the N patch tokens, chosen by score (ties by
lower index), so a batch has static shapes and exports to ONNX / TensorRT.

Readings (the supplementary gives no gate details; the main paper asks for "a lightweight,
2-layer MLP"):
- gate = Linear(C, hidden) - GELU - Linear(hidden, 1) on the block's input tokens; the score
  is its single output. A gate trained with two logits (keep, drop) converts exactly: the fc2
  row difference keep - drop gives the same ranking.
- hidden is read from the gates file; random gates use C / 4.
- alpha defaults to round(depth / 4) (3 of 12, like DynamicViT's first pruning stage), or to
  the first block that has a gate in the --gates file.

Gates file (--gates, .safetensors or a torch file loadable with weights_only=True), for every
block index i from alpha to depth - 1 (0-based) and nothing else:
    gates.<i>.fc1.weight [hidden, C]   gates.<i>.fc1.bias [hidden]
    gates.<i>.fc2.weight [1, hidden]   gates.<i>.fc2.bias [1]
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import MethodSpec, SweepInput, flag


@dataclass(frozen=True)
class SViTConfig:
    alpha: int | None = flag(
        "blocks run dense before the first gated block",
        rule="round(depth/4), or the first gate in --gates",
    )
    keep_ratio: float = flag("capacity: share of patch tokens each gated block runs", 0.7)
    gates: str | None = flag("trained gates (gates.<block>.fc1/fc2.weight/bias)", rule="required")
    random_gates: bool = flag(
        "seeded random gates (tests, trials)", False, rule="off", is_flag=True
    )


def sweep(at: SweepInput) -> list[tuple[dict, str]]:
    """Two capacities, with seeded random gates (no trained gates for an arbitrary model)."""
    return [
        ({"random_gates": True, "keep_ratio": k}, f"keep {k}, random gates") for k in (0.7, 0.5)
    ]


SPEC = MethodSpec(
    "svit",
    "learned per-block gates, fixed capacity, pruned tokens kept and reactivated (Liu et al. 2024)",
    SViTConfig,
    sweep=sweep,
    marker="P",
    tiny={"random_gates": True},
)
