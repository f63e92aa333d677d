"""The multi-block mask sampler: shapes, coverage, unbiasedness, determinism, errors.

Its speed is measured by ``benchmarks/masks.py`` (tests assert no wall-clock times).
"""

import pytest
import torch

from openjepa.masks.multiblock import MultiBlockMaskSampler
from openjepa.rng import step_generator


def membership(idx: torch.Tensor, n: int) -> torch.Tensor:
    """(B, K) or (B, M, K) indices → (B, N) bool membership."""
    flat = idx.reshape(idx.shape[0], -1)
    return torch.zeros(idx.shape[0], n, dtype=torch.bool).scatter_(1, flat, True)


def many(sampler, batches=200, batch=64, seed=0):
    return [sampler(batch, step_generator(seed, s)) for s in range(batches)]


def test_shapes_ranges_and_order():
    sampler = MultiBlockMaskSampler(14)
    masks = sampler(32, torch.Generator().manual_seed(0))
    b, m, kt = masks.targets.shape
    assert (b, m) == (32, 4) and kt == masks.target_shape[0] * masks.target_shape[1]
    assert masks.context.shape[0] == 32 and masks.context.dtype == torch.long
    for t in (masks.context, masks.targets):
        assert t.min() >= 0 and t.max() < 196
    assert (masks.context.diff(dim=1) > 0).all()  # sorted, no repeats
    assert (masks.targets.diff(dim=2) > 0).all()


def test_target_blocks_are_rectangles():
    sampler = MultiBlockMaskSampler((10, 12))
    masks = sampler(16, torch.Generator().manual_seed(1))
    h, w = masks.target_shape
    rows, cols = masks.targets // 12, masks.targets % 12  # (B, M, Kt)
    assert ((rows.amax(-1) - rows.amin(-1)) == h - 1).all()
    assert ((cols.amax(-1) - cols.amin(-1)) == w - 1).all()


def test_context_and_targets_are_disjoint_and_keep_min_keep():
    sampler = MultiBlockMaskSampler(14, min_keep=10)
    for masks in many(sampler, batches=50):
        ctx = membership(masks.context, 196)
        tgt = membership(masks.targets, 196)
        assert not (ctx & tgt).any()
        assert masks.context.shape[1] >= 10


def test_allow_overlap_keeps_target_patches_in_context():
    sampler = MultiBlockMaskSampler(14, allow_overlap=True)
    overlaps = sum(
        (membership(m.context, 196) & membership(m.targets, 196)).any().item() for m in many(sampler, 20)
    )
    assert overlaps == 20


def test_every_patch_including_last_row_and_column_is_covered():
    grid = 14
    sampler = MultiBlockMaskSampler(grid)
    tgt_freq = torch.zeros(grid * grid)
    ctx_freq = torch.zeros(grid * grid)
    batches = many(sampler, batches=100)
    for masks in batches:
        tgt_freq += membership(masks.targets, grid * grid).float().sum(0)
        ctx_freq += membership(masks.context, grid * grid).float().sum(0)
    n_images = 100 * 64
    tgt_freq, ctx_freq = (tgt_freq / n_images).view(grid, grid), (ctx_freq / n_images).view(grid, grid)
    assert (tgt_freq > 0).all() and (ctx_freq > 0).all()
    # the last row/column are covered about as often as the first (the reference never covered them)
    assert tgt_freq[-1].mean().item() == pytest.approx(tgt_freq[0].mean().item(), rel=0.15)
    assert tgt_freq[:, -1].mean().item() == pytest.approx(tgt_freq[:, 0].mean().item(), rel=0.15)
    assert tgt_freq[-1, -1] > 0.02


def test_scale_and_aspect_ranges():
    sampler = MultiBlockMaskSampler(64)  # a large grid keeps rounding small
    shapes = [
        sampler.draw_block_shape(sampler.target_scale, sampler.target_aspect, g)
        for g in [torch.Generator().manual_seed(i) for i in range(2000)]
    ]
    area = torch.tensor([h * w / 64**2 for h, w in shapes])
    aspect = torch.tensor([h / w for h, w in shapes])
    assert area.min() >= 0.14 and area.max() <= 0.21
    assert aspect.min() >= 0.72 and aspect.max() <= 1.55
    assert area.min() < 0.155 and area.max() > 0.195  # both ends reached
    assert aspect.min() < 0.8 and aspect.max() > 1.4
    assert area.mean() == pytest.approx(0.175, abs=0.005)


def test_scale_and_aspect_are_independent():
    """One uniform draw for both (the reference's defect) would correlate area and aspect almost perfectly."""
    sampler = MultiBlockMaskSampler(64)
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor(
        [sampler.draw_block_shape(sampler.target_scale, sampler.target_aspect, g) for _ in range(4000)],
        dtype=torch.float64,
    )
    area, aspect = shapes.prod(1), shapes[:, 0] / shapes[:, 1]
    corr = torch.corrcoef(torch.stack([area, aspect]))[0, 1]
    assert abs(corr.item()) < 0.1


def test_context_truncation_is_unbiased():
    """Placement is symmetric under a 180° rotation, so context membership must be too.

    Keeping the first K indices in raster order (the reference) would deplete the bottom-right.
    """
    grid = 10
    sampler = MultiBlockMaskSampler(grid, min_keep=4)
    freq = torch.zeros(grid, grid)
    truncated = 0
    for masks in many(sampler, batches=300, batch=64, seed=3):
        tgt = membership(masks.targets, grid * grid)
        full_ctx_sizes = (~tgt).sum(1)  # upper bound of each image's context size
        truncated += (full_ctx_sizes > masks.context.shape[1]).sum().item()
        freq += membership(masks.context, grid * grid).float().sum(0).view(grid, grid)
    freq /= 300 * 64
    assert truncated > 1000  # the test exercises truncation
    rotated = freq.flip(0).flip(1)
    assert (freq - rotated).abs().max() < 0.03
    assert freq[:5, :5].mean().item() == pytest.approx(freq[5:, 5:].mean().item(), rel=0.03)


def test_determinism_and_independence_of_streams():
    sampler = MultiBlockMaskSampler(14)
    a = sampler(8, step_generator(seed=1, step=5, rank=0))
    b = sampler(8, step_generator(seed=1, step=5, rank=0))
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    for other in (step_generator(1, 6, 0), step_generator(1, 5, 1), step_generator(2, 5, 0)):
        c = sampler(8, other)
        assert not (c.context.shape == a.context.shape and torch.equal(c.context, a.context))


def count_placements(sampler, monkeypatch) -> list[int]:
    """Count the sampler's batched block placements (two per round: targets and context)."""
    calls = [0]
    place = sampler._place_blocks

    def counted(*args, **kwargs):
        calls[0] += 1
        return place(*args, **kwargs)

    monkeypatch.setattr(sampler, "_place_blocks", counted)
    return calls


def test_small_grid_default_recipe_does_not_hang(monkeypatch):
    """The default recipe on a 7x7 grid succeeds within the sampler's bounded redraws (its time:
    ``benchmarks/masks.py``, ``small_grid_s``)."""
    sampler = MultiBlockMaskSampler(7)
    calls = count_placements(sampler, monkeypatch)
    for masks in many(sampler, batches=100, batch=128):
        assert masks.context.shape[1] >= 10
    assert calls[0] <= 100 * 2 * sampler.max_tries


def test_impossible_recipe_raises_clear_error_quickly(monkeypatch):
    """ "Quickly" as work, not time: the error comes after max_tries batched rounds, not a per-image search
    (its time: ``benchmarks/masks.py``, ``impossible_recipe_s``). Such a recipe is rejected when the sampler
    is built (tests/masks/test_fit.py); ``check=False`` reaches the error of sampling itself."""
    sampler = MultiBlockMaskSampler(7, num_targets=4, target_scale=(0.95, 1.0), min_keep=10, check=False)
    calls = count_placements(sampler, monkeypatch)
    with pytest.raises(ValueError, match="method.masks.num_targets"):
        sampler(64, torch.Generator().manual_seed(0))
    assert calls[0] == 2 * sampler.max_tries


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"min_keep": 0}, "method.masks.min_keep"),
        ({"min_keep": 50}, "method.masks.min_keep"),
        ({"target_scale": (0.3, 0.2)}, "method.masks.target_scale"),
        ({"context_scale": (0.0, 0.5)}, "method.masks.context_scale"),
        ({"num_targets": 0}, "method.masks.num_targets"),
        ({"context_scale": (0.1, 0.1), "min_keep": 10}, "raise method.masks.context_scale"),
    ],
)
def test_invalid_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiBlockMaskSampler(7, **kwargs)
