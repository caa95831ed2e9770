"""GFLOPs counting follows the papers' convention; bench reports both models side by side."""

import json

import pytest

from exporter.timing import count_gflops, source_node
from tests.helpers import run
from exporter.config import ModelSpec
from exporter.models import create_model


def vit_block_macs(n, c):
    """Multiply-accumulates of one ViT block: qkv + proj + mlp (12 n c^2) and attention (2 n^2 c)."""
    return 12 * n * c * c + 2 * n * n * c


def test_gflops_count_attention_and_blocks():
    model = create_model(ModelSpec("vit_tiny_patch16_224", None, (64, 96)))
    n, c, depth = 4 * 6 + 1, 192, 12
    patch_embed = 4 * 6 * c * 3 * 16 * 16
    expect = (depth * vit_block_macs(n, c) + patch_embed) / 1e9
    assert count_gflops(model, (1, 3, 64, 96)) == pytest.approx(expect, rel=1e-6)


def test_fused_kernels_are_credited_to_the_node_they_are_named_after():
    known = {"node_MatMul_70", "node_TopK_3"}
    assert source_node("node_TopK_3", known) == "node_TopK_3"
    assert source_node("node_MatMul_70/MatMulAddFusion", known) == "node_MatMul_70"
    assert source_node("node_MatMul_7/MatMulAddFusion", known) is None
    assert source_node("Transpose_token_363", known) is None


@pytest.mark.slow
def test_bench_reports_baseline_and_reduced(tmp_path):
    out = tmp_path / "out"
    # 12x12 tokens into 8x8 clusters: large enough that the windows leave clusters out
    args = ["--model", "segmenter_tiny", "--img-size", "192x192", "--num-classes", "5"]
    result = run(["build", *args, "--hw", "8x8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = run(["bench", str(out), "--runs", "3", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    b = json.loads((out / "report.json").read_text())["bench"]
    assert b["gflops"]["baseline"] > b["gflops"]["reduced"] > 0
    assert b["baseline_ms"] > 0 and b["reduced_ms"] > 0
    # the headline: median of the per-round ratios, optimised baseline against optimised reduced
    assert b["ratio"]["p25"] <= b["speedup"] == b["ratio"]["median"] <= b["ratio"]["p75"]
    assert b["forms"]["plain"]["speedup"] == b["speedup_plain"] > 0
    assert b["attention_fused"] == {"baseline": 14, "reduced": 14}  # ViT-Ti blocks + decoder
    assert b["load"]["before"]["cores"] >= 1 and b["cpu"] and b["runs"] == 3
    assert b["cpu_ms"]["reduced"] > 0 and "seeded" in b["inputs"]  # no eval set: noise
    assert (out / "baseline.onnx").is_file()
    # clustering and reconstruction take some, but not all, of the reduced model's time
    assert 0 < b["token_ops_share"] < 1 and b["token_ops"]["token_nodes"] > 0
    # fused kernels are traced back to their nodes: little kernel time stays unattributed
    assert 0 <= b["token_ops"]["unattributed"] < 0.2
    for name in ("baseline", "reduced", "baseline_optimized", "reduced_optimized", "authors_form"):
        lo, hi = b["spread_ms"][name]
        assert 0 < lo <= hi
    # the authors' dense clustering is timed beside the tiled one and does more products
    a = b["authors_form"]
    assert a["flags"]["clustering"] == "dense" and (out / "authors_form.onnx").is_file()
    assert a["gflops"] > b["gflops"]["reduced"] and 0 < a["token_ops_share"] < 1
    text = (out / "report.md").read_text()
    assert "Speed" in text and "authors' form" in text and "p25-p75" in result.output


@pytest.mark.slow
def test_build_bench_flag_runs_the_benchmark(built):
    flags = ("--hw", "3x4", "--bench")  # the pool build test_cli.py checks too
    out, output = built("pool", *flags), built.output("pool", *flags)
    b = json.loads((out / "report.json").read_text())["bench"]
    assert b["baseline_ms"] > 0 and "authors_form" not in b
    assert "speed-up" in output


@pytest.mark.parametrize(
    "args,flag",
    [
        ([], "OUT"),
        (["--model", "segmenter_tiny"], "--model"),  # every method on a model: `vitexport sweep`
    ],
)
def test_bench_input_mistakes_exit_2_naming_the_flag(tmp_path, args, flag):
    args = [str(tmp_path / a) if a == "somewhere" else a for a in args]
    result = run(["bench", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {flag}") and "Traceback" not in result.output
