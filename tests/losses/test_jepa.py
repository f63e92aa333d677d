"""The latent regression loss between predicted and target features."""

import pytest
import torch
import torch.nn.functional as F

from openjepa.losses.jepa import jepa_loss


def test_loss_kinds():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4) * 3
    torch.testing.assert_close(jepa_loss(a, b, "l2"), ((a - b) ** 2).mean())
    torch.testing.assert_close(jepa_loss(a, b), F.smooth_l1_loss(a, b))
    with pytest.raises(ValueError, match="unknown loss"):
        jepa_loss(a, b, "l3")


def test_smooth_l1_is_huber_with_beta_one():
    a = torch.tensor([0.0, 0.0, 0.0, 0.0])
    b = torch.tensor([0.5, -0.5, 2.0, -3.0])
    # |d| < 1: d²/2 → 0.125, 0.125; else |d| − 1/2 → 1.5, 2.5
    assert jepa_loss(a, b).item() == pytest.approx((0.125 + 0.125 + 1.5 + 2.5) / 4)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"prediction \(2, 3\) and target \(3, 2\) differ in shape"):
        jepa_loss(torch.zeros(2, 3), torch.zeros(3, 2))
