"""benchmarks/train_step.py: the timed step and its operator profile."""

from __future__ import annotations

import pytest

from tests.helpers import load_benchmark

TINY = ["--img", "16", "--patch", "2", "--batch", "8", "--pred-depth", "1", "--pred-dim", "24"]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("train_step")


def test_the_profile_names_the_step_s_operators(bench, tmp_path, capsys):
    path = tmp_path / "profile.txt"
    result = bench.main([*TINY, "--steps", "2", "--warmup", "1", "--json", "--profile", str(path)])
    assert result["images_per_s"] > 0 and result["steps"] == 2
    table = path.read_text()
    assert "Self CPU" in table and "aten::addmm" in table
    top = result["profile_top"]
    assert len(top) == 10 and all(row["self_ms_per_step"] >= 0 for row in top)
    assert [row["self_ms_per_step"] for row in top] == sorted(
        (row["self_ms_per_step"] for row in top), reverse=True
    )
    ops = {row["op"] for row in top}
    assert ops & {"aten::addmm", "aten::mm"}  # the matrix products are among the costliest
    # the two encoders' 12 blocks of 4 linear layers each run forward once per step
    assert (
        "aten::addmm" not in ops or next(e for e in top if e["op"] == "aten::addmm")["calls_per_step"] >= 96
    )
    assert "host_syncs_per_step" not in result  # measured on CUDA only


def test_any_encoder_width_is_timed_and_counted(bench):
    """The one-hour recipe's width 128 is no named ViT size; its FLOPs come from the built encoder."""
    common = [*TINY, "--steps", "1", "--warmup", "1", "--json", "--set", "model.depth=2"]
    narrow = bench.main([*common, "--set", "model.embed_dim=96", "--set", "model.num_heads=2"])
    wide = bench.main(common)  # vit_tiny: width 192
    assert narrow["images_per_s"] > 0
    # same seed, so the same masks: the encoders' FLOPs grow between linearly and quadratically in width
    assert 1.3 < wide["gflop_per_step"] / narrow["gflop_per_step"] < 4.0
