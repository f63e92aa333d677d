"""VICReg terms against hand-computed values, their limiting cases, and the gather without a process group.

The gather under torchrun: tests/e2e/test_vicreg_gather.py.
"""

import math

import pytest
import torch

from openjepa.losses.vicreg import (
    VICRegLoss,
    VICRegWeights,
    covariance_loss,
    gather_batch,
    invariance_loss,
    variance_loss,
    vicreg_terms,
)

# Z has columns x = [0, 2, 4] and y = [1, 1, 1.5] (N = 3, d = 2).
# x: mean 2, unbiased variance (4 + 0 + 4) / 2 = 4, std ≈ 2 → hinge 0.
# y: mean 7/6, deviations (-1/6, -1/6, 1/3), unbiased variance (1/36 + 1/36 + 4/36) / 2 = 1/12.
# cov(x, y) = ((-2)(-1/6) + 0 + 2(1/3)) / 2 = 1/2 → off-diagonal squares 2 · 1/4, divided by d = 2: 1/4.
Z = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.5]])


def test_variance_hand_value():
    expected = (0.0 + (1.0 - math.sqrt(1 / 12 + 1e-4))) / 2  # ≈ 0.355576
    assert variance_loss(Z).item() == pytest.approx(expected, rel=1e-6)
    # γ = 3 puts column x under the hinge too: 3 − sqrt(4 + 1e-4)
    expected3 = ((3 - math.sqrt(4 + 1e-4)) + (3 - math.sqrt(1 / 12 + 1e-4))) / 2
    assert variance_loss(Z, gamma=3.0).item() == pytest.approx(expected3, rel=1e-6)


def test_covariance_hand_value():
    assert covariance_loss(Z).item() == pytest.approx(0.25, rel=1e-6)


def test_invariance_hand_value():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])
    # squared differences 1, 0, 0, 4, 1, 1 → 7 / 6
    assert invariance_loss(a, b).item() == pytest.approx(7 / 6, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        invariance_loss(a, b[:2])


def test_variance_zero_for_unit_variance_and_positive_when_collapsed():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 16, generator=g)
    z = (z - z.mean(0)) / z.std(0)  # exactly unit (unbiased) variance per dimension
    assert variance_loss(z).item() == 0.0
    collapsed = torch.ones(512, 16) * 3.0  # every sample the same embedding
    assert variance_loss(collapsed).item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)
    half = z * 0.5  # std 0.5 in every dimension
    assert variance_loss(half).item() == pytest.approx(1 - math.sqrt(0.25 + 1e-4), rel=1e-5)


def test_covariance_zero_for_decorrelated_and_positive_for_correlated():
    # three columns of a 4x4 Hadamard matrix: zero mean and orthogonal, so uncorrelated
    h = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])
    assert covariance_loss(h).item() == pytest.approx(0.0, abs=1e-7)
    # scaling a decorrelated set keeps it decorrelated; duplicating a column does not
    assert covariance_loss(5 * h).item() == pytest.approx(0.0, abs=1e-6)
    dup = torch.cat([h, h[:, :1]], dim=1)  # columns 0 and 3 equal: cov = var = 4/3 twice, d = 4
    assert covariance_loss(dup).item() == pytest.approx(2 * (4 / 3) ** 2 / 4, rel=1e-6)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="N ≥ 2"):
        variance_loss(torch.ones(1, 4))
    with pytest.raises(ValueError, match="N ≥ 2"):
        covariance_loss(torch.ones(4))


def test_module_weights_and_branch_reduction():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g) * 0.3
    w = VICRegWeights(vicreg=0.5, sim=2.0, std=3.0, cov=4.0)
    total, terms = VICRegLoss(w)(a, b)
    var = (variance_loss(a) + variance_loss(b)) / 2  # averaged over branches
    cov = covariance_loss(a) + covariance_loss(b)  # summed over branches
    torch.testing.assert_close(terms["var"], var)
    torch.testing.assert_close(terms["cov"], cov)
    torch.testing.assert_close(terms["inv"], ((a - b) ** 2).mean())
    torch.testing.assert_close(total, 0.5 * (2.0 * terms["inv"] + 3.0 * var + 4.0 * cov))


def test_terms_in_float32_under_bf16_input():
    z = Z.to(torch.bfloat16)
    var, cov = vicreg_terms([z, z])
    assert var.dtype == torch.float32 and cov.dtype == torch.float32
    assert cov.item() == pytest.approx(0.5, rel=1e-2)  # two identical branches: 2 × 1/4


def test_gather_is_identity_without_process_group():
    z = torch.randn(4, 3, requires_grad=True)
    assert gather_batch(z) is z
