"""The check that a mask recipe always leaves ``min_keep`` context patches: the block shapes the rounding can
give, the bound on what target blocks can cover, the probe, and the verdicts on the shipped configs."""

import itertools
import math
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from openjepa import cli
from openjepa.masks.fit import MaskFitWarning, block_shapes, covered_bound
from openjepa.masks.multiblock import MultiBlockMaskSampler
from openjepa.methods.jepa import MaskConfig
from tests.helpers import REPO, tiny, write_empty


@pytest.mark.parametrize(
    "grid,scale,aspect",
    [(16, (0.15, 0.2), (0.75, 1.5)), (7, (0.85, 1.0), (1.0, 1.0)), (5, (0.4, 0.9), (0.3, 2.5))],
)
def test_block_shapes_hold_every_shape_the_sampler_draws(grid, scale, aspect):
    sampler = MultiBlockMaskSampler(grid, check=False)
    shapes = set(block_shapes((grid, grid), grid * grid, scale, aspect))
    s = torch.linspace(*scale, 301).tolist()
    a = torch.linspace(*aspect, 301).tolist()
    drawn = {sampler.block_shape(si, ai) for si, ai in itertools.product(s, a)}
    assert drawn <= shapes
    assert len(shapes) <= len(drawn) + 2  # the interval ends may add a shape rounding never reaches


def _most_covered(context, target, m):
    """Brute force: the most context patches m target blocks can cover, blocks anywhere around it."""
    (ch, cw), (th, tw) = context, target
    spots = [(y, x) for y in range(-th + 1, ch) for x in range(-tw + 1, cw)]
    best = 0
    for placed in itertools.combinations_with_replacement(spots, m):
        cells = {(y + i, x + j) for y, x in placed for i in range(th) for j in range(tw)}
        best = max(best, sum(0 <= y < ch and 0 <= x < cw for y, x in cells))
    return best


@pytest.mark.parametrize(
    "context,target,m", [((4, 4), (2, 2), 3), ((4, 5), (2, 3), 2), ((5, 3), (2, 2), 3), ((3, 3), (4, 1), 2)]
)
def test_covered_bound_is_never_below_the_true_most(context, target, m):
    truth = _most_covered(context, target, m)
    bound = covered_bound(context, target, m)
    assert truth <= bound <= context[0] * context[1]
    assert bound - truth <= 2  # and close: the check would be useless if loose


def test_covered_bound_clears_the_published_recipe_on_16x16():
    # targets of 8x7 can cover at most 15·14 = 210 of a 15x15 context; the bound says 211, sum of areas 224
    assert covered_bound((15, 15), (8, 7), 4) == 211


def _sampler_of(path: Path) -> MultiBlockMaskSampler:
    cfg = yaml.safe_load(path.read_text())
    masks = {**vars(MaskConfig()), **cfg["method"].get("masks", {})}
    grid = cfg["data"]["image_size"] // cfg["model"]["patch_size"]
    return MultiBlockMaskSampler(grid, **masks)


def _uses_masks(path: Path) -> bool:
    method = yaml.safe_load(path.read_text())["method"]
    return (method if isinstance(method, str) else method["name"]) in ("ijepa", "cjepa")


SHIPPED = [p for p in sorted((REPO / "configs").glob("*.yaml")) if _uses_masks(p)]  # LeJEPA has no masks
PROVEN = {"in1k_vitb16_cjepa_ep600", "in1k_vith14_ep300", "in1k_vitl16_cjepa_ep600", "in22k_vitg16_ep44"}
PROVEN |= {"in22k_vith14_ep66"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_configs_are_accepted_silently(path):
    """14x14 and 16x16 grids are proven by the bound; 7x7 (28 px, patch 4) and 28x28 (448 px, patch 16) need
    the probe, whose worst per-image chance of exhausting the redraws is negligible."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = _sampler_of(path)
    assert sampler.fit is not None
    assert sampler.fit.always_fits == (path.stem in PROVEN)
    assert sampler.fit.failure_chance < 1e-20


def test_a_recipe_that_fits_only_sometimes_is_rejected_at_build_time():
    """Issue 12, item 9: 4 targets of 40-50 % of a 7x7 grid and min_keep 10 fit in ~7 % of placements for
    the worst shapes, so a batch fails within a few steps."""
    with pytest.raises(ValueError) as err:
        MultiBlockMaskSampler(7, target_scale=(0.4, 0.5), min_keep=10)
    message = str(err.value)
    assert "\n" not in message
    for key in ("method.masks.target_scale=[0.4, 0.5]", "method.masks.min_keep=10", "7x7"):
        assert key in message
    assert "lower method.masks.num_targets or method.masks.target_scale" in message


def test_the_command_line_rejects_it_in_one_line_before_writing(tmp_path, capsys):
    overrides = ["data.image_size=28", "method.masks.target_scale=[0.4,0.5]", "method.masks.min_keep=10"]
    args = ["pretrain", str(write_empty(tmp_path)), *tiny(tmp_path, "run", *overrides)]
    assert cli.main(args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "method.masks.min_keep=10" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_rare_failure_is_warned_about():
    with pytest.warns(MaskFitWarning, match="a long run may stop there"):
        sampler = MultiBlockMaskSampler(2, min_keep=2)  # 4 single patches can cover a 2x2 context
    assert 1e-12 < sampler.fit.failure_chance < 1e-6


def test_always_fitting_recipes_are_not_probed(monkeypatch):
    sampler = MultiBlockMaskSampler(16, check=False)
    monkeypatch.setattr(sampler, "_kept", lambda *a: pytest.fail("probed a recipe the bound clears"))
    report = sampler.check_fit()
    assert report.always_fits and report.pairs == 48 and report.failure_chance == 0.0


def test_the_probe_is_deterministic():
    a = MultiBlockMaskSampler(7, min_keep=10).fit
    b = MultiBlockMaskSampler(7, min_keep=10).fit
    assert a == b and a is not None and len(a.unproven) == 12
    assert math.isclose(a.worst.fit_rate, b.worst.fit_rate)
