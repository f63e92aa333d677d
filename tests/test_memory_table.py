"""benchmarks/memory_table.py: the saved-tensor measurement, parameter counts, mask sizes and the totals."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def mt():
    return load_benchmark("memory_table")


def test_saved_bytes_of_a_linear_layer_under_bf16_autocast(mt):
    # a Linear saves its bf16 input (2·3·8 values) and its bf16 weight (4·8 values), 2 bytes each
    x = torch.randn(2, 3, 8, requires_grad=True)
    assert mt.saved_bytes(torch.nn.Linear(8, 4), x) == 2 * (2 * 3 * 8 + 4 * 8)


def test_block_bytes_split_into_per_token_and_weight_copies(mt):
    dim = 96
    per_token, fixed = mt.block_bytes(dim, 3, 4.0)
    block = mt.Block(dim, 3, 4.0)
    matrices = sum(p.numel() for n, p in block.named_parameters() if p.ndim == 2)
    assert fixed == pytest.approx(2 * matrices, rel=0.05)  # the bf16 copies of the weight matrices
    assert 30 * dim < per_token < 50 * dim  # tens of bytes per channel, the same for every sequence length


def test_parameter_counts_match_the_real_models(mt):
    recipe = mt.Recipe("vit_tiny", 16, 64, 2, 48, 8)
    enc_p, pred_p = mt.count_params(recipe)
    enc = mt.build_vit("vit_tiny", img_size=64, patch_size=16, in_chans=3)
    pred = mt.Predictor((4, 4), 192, 48, 2, num_heads=3)
    assert enc_p == sum(p.numel() for p in enc.parameters())
    assert pred_p == sum(p.numel() for p in pred.parameters())


def test_mask_sizes_on_the_published_grid(mt):
    context, target = mt.mean_mask_tokens(14, samples=16)
    assert round(0.15 * 196) <= target <= round(0.2 * 196)  # one target block: 15-20 % of the grid
    assert 10 <= context < 196 - target  # the context block minus four target blocks


def test_rows_add_up_and_checkpointing_needs_less(mt, capsys):
    (row,) = mt.main(["--models", "vit_base"])
    assert "ViT-base/16 at 224" in capsys.readouterr().out
    assert row.total_gib == pytest.approx(row.state_gib + 2 + row.activations_gib, abs=0.1)
    assert row.activations_ckpt_gib < row.activations_gib
    params = row.encoder_params + row.predictor_params
    assert row.state_gib == pytest.approx((20 * params + 4 * row.encoder_params) / 2**30, abs=0.01)
    for without, with_ckpt in row.max_batch.values():
        assert with_ckpt >= without
    with pytest.raises(SystemExit, match="no recipe"):
        mt.main(["--models", "vit_nope"])
