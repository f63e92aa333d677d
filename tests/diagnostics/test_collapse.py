"""Collapse metrics against matrices whose answer is known."""

import math

import pytest
import torch

from openjepa.diagnostics.collapse import (
    collapse_metrics,
    collapse_warnings,
    feature_std,
    mean_cosine,
    rankme,
)


def _orthonormal(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(n, d), max(n, d), generator=g, dtype=torch.float64))
    return q[:n, :d]


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_rankme_of_equal_singular_values_is_the_rank(rank):
    # U diag(1,..,1,0,..) V^T: `rank` equal singular values, the rest zero -> entropy log(rank)
    u, v = _orthonormal(32, 32, 1)[:, :rank], _orthonormal(16, 16, 2)[:, :rank]
    x = (u @ v.T).float()
    assert rankme(x) == pytest.approx(rank, rel=1e-4)


def test_rankme_matches_the_formula_on_unequal_spectrum():
    sigma = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    x = _orthonormal(10, 4, 3) @ torch.diag(sigma) @ _orthonormal(4, 4, 4).T
    p = sigma / sigma.sum() + 1e-7
    assert rankme(x.float()) == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)


def test_mean_cosine_matches_brute_force():
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    z = torch.nn.functional.normalize(x, dim=1)
    sim = z @ z.T
    brute = (sim.sum() - sim.diag().sum()) / (50 * 49)
    assert mean_cosine(x) == pytest.approx(brute.item(), abs=1e-6)


def test_feature_std_is_about_one_for_isotropic_and_zero_for_constant():
    x = torch.randn(4000, 64, generator=torch.Generator().manual_seed(0))
    assert feature_std(x) == pytest.approx(1.0, abs=0.02)
    assert feature_std(torch.ones(100, 64) * 3.0) == pytest.approx(0.0, abs=1e-6)


def test_constant_encoder_is_flagged_and_healthy_one_is_not():
    collapsed = collapse_metrics(torch.ones(200, 32) + 1e-6 * torch.randn(200, 32))
    reasons = collapse_warnings(collapsed)
    assert collapsed["mean_cosine"] > 0.99 and collapsed["feature_std"] < 0.01
    assert any("feature_std" in r for r in reasons) and any("mean_cosine" in r for r in reasons)
    healthy = collapse_metrics(torch.randn(200, 32, generator=torch.Generator().manual_seed(1)))
    assert collapse_warnings(healthy) == []
    assert healthy["rankme"] > 25


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="N >= 2"):
        rankme(torch.ones(1, 4))


def test_sigreg_statistic_separates_isotropic_from_low_rank_and_ignores_scale():
    from openjepa.diagnostics.collapse import sigreg_statistic

    g = torch.Generator().manual_seed(0)
    iso = torch.randn(2000, 64, generator=g)
    # below the 1.06 of a known standard normal: centring and scaling by the sample absorb part of the noise
    for n in (500, 2000, 8000):
        assert 0.3 < sigreg_statistic(torch.randn(n, 64, generator=g)) < 1.0
    assert sigreg_statistic(iso * 10 + 3) == pytest.approx(sigreg_statistic(iso), rel=1e-4)  # scale, shift
    low_rank = iso[:, :2] @ torch.randn(2, 64, generator=g)  # 64 dimensions, 2 used
    assert sigreg_statistic(low_rank) > 20 * sigreg_statistic(iso)
    assert sigreg_statistic(torch.ones(100, 8)) > 20  # collapsed to one point
