import math

import pytest
import torch

from openjepa.losses.sigreg import SIGReg, epps_pulley, random_directions, sigreg, t_grid
from tests.helpers import torchrun2


def closed_form(x: torch.Tensor) -> float:
    """N ∫ |φ_N(t) − exp(−t²/2)|² exp(−t²/2) dt over the whole line, by the Gaussian integrals
    ∫ exp(i·t·a − t²/2) dt = √(2π)·exp(−a²/2), ∫ cos(t·a)·exp(−t²) dt = √π·exp(−a²/4) and
    ∫ exp(−3t²/2) dt = √(2π/3)."""
    x = x.double()
    n = x.numel()
    pairs = torch.exp(-(x[:, None] - x[None, :]).square() / 2).sum() * math.sqrt(2 * math.pi) / n**2
    cross = 2 * math.sqrt(math.pi) * torch.exp(-x.square() / 4).sum() / n
    return float(n * (pairs - cross + math.sqrt(2 * math.pi / 3)))


def test_grid_weights_are_the_trapezoid_rule_times_the_gaussian_weight():
    t, w = t_grid(5.0, 17)
    assert t[0] == -5 and t[-1] == 5 and len(t) == 17
    step = 10 / 16
    expected = torch.full((17,), step) * torch.exp(-t.double().square() / 2)
    expected[[0, -1]] /= 2
    torch.testing.assert_close(w.double(), expected, rtol=1e-6, atol=0)
    with pytest.raises(ValueError):
        t_grid(0.0, 17)


@pytest.mark.parametrize("kind", ["gaussian", "shifted", "wide", "bimodal"])
def test_epps_pulley_matches_the_closed_form_integral(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, generator=g)
    x = {"gaussian": x, "shifted": x + 1, "wide": 2 * x, "bimodal": x.sign() * 2 + 0.3 * x}[kind]
    exact = closed_form(x)
    dense = epps_pulley(x[:, None], *t_grid(8.0, 4001)).item()  # the integral, numerically
    assert dense == pytest.approx(exact, rel=1e-4)
    default = epps_pulley(x[:, None], *t_grid()).item()  # 17 points on [-5, 5]
    assert default == pytest.approx(exact, rel=0.05, abs=0.05)


def test_a_gaussian_sample_scores_about_one_and_departures_grow_with_the_batch():
    # for a standard-normal sample E[statistic] = ∫ (1 − e^{−t²}) e^{−t²/2} dt = √(2π) − √(2π/3), whatever N
    expected = math.sqrt(2 * math.pi) - math.sqrt(2 * math.pi / 3)
    g = torch.Generator().manual_seed(1)
    reg = SIGReg(num_slices=64)
    z = torch.randn(4096, 32, generator=g)
    gaussian = reg(z, torch.Generator().manual_seed(0)).item()
    assert gaussian == pytest.approx(expected, rel=0.25)
    shifted = reg(z + 0.5, torch.Generator().manual_seed(0)).item()
    anisotropic = reg(z * torch.linspace(0.2, 3, 32), torch.Generator().manual_seed(0)).item()
    collapsed = reg(torch.zeros(4096, 32) + 0.01 * z[:, :1], torch.Generator().manual_seed(0)).item()
    assert min(shifted, anisotropic, collapsed) > 50 * gaussian
    small = reg(z[:512] + 0.5, torch.Generator().manual_seed(0)).item()
    assert shifted / small == pytest.approx(8, rel=0.3)  # N × a fixed distance


def test_gradients_are_finite_even_for_collapsed_embeddings():
    for z in (torch.zeros(64, 16), torch.randn(64, 16) * 1e4, torch.randn(64, 16)):
        z.requires_grad_(True)
        sigreg(z, random_directions(16, 8, torch.Generator().manual_seed(0)), *t_grid()).backward()
        assert torch.isfinite(z.grad).all()


def test_float32_under_autocast_and_directions_on_the_unit_sphere():
    a = random_directions(24, 1000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.norm(dim=0), torch.ones(1000))
    assert a.mean(dim=1).abs().max() < 0.1  # no preferred direction
    z = torch.randn(32, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sigreg(z.bfloat16(), a[:, :8], *t_grid())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, sigreg(z.bfloat16().float(), a[:, :8], *t_grid()))


def test_two_processes_compute_the_statistic_of_the_global_batch(tmp_path):
    torchrun2("dist_sigreg_worker.py", str(tmp_path), timeout=120)
