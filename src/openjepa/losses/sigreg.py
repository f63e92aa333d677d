"""SIGReg (Sketched Isotropic Gaussian Regularisation, LeJEPA, arXiv 2511.08544): push a batch of embeddings
towards an isotropic standard normal, as plain functions and a thin module.

For embeddings ``z`` (N, d):

1. *sketch*: project onto M random unit directions ``a_1 … a_M`` (redrawn every step from a generator that
   every process seeds alike), giving N samples ``x = z·a_m`` of each one-dimensional projection;
2. for each projection, the *Epps–Pulley* statistic
   ``N · ∫ |φ_N(t) − exp(−t²/2)|² · exp(−t²/2) dt``, where ``φ_N(t) = mean_n exp(i·t·x_n)`` is the empirical
   characteristic function and ``exp(−t²/2)`` the standard normal's; the integral is the trapezoid rule on
   a grid of t (17 points on [−5, 5] by default);
3. SIGReg is the mean of the statistic over the M directions.

``|φ_N(t) − φ(t)|² = (mean cos(t·x) − exp(−t²/2))² + (mean sin(t·x))²``, so the statistic only needs the
batch means of ``cos(t·x)`` and ``sin(t·x)``: linear time and memory in the batch. In a distributed run
those sums are added over processes (with gradients, see ``_SumOverProcesses``) and N is the global batch,
so every process computes the single-process statistic of the global batch.

Everything is computed in float32, whatever the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the gradients over processes too: each process's loss is the
    same function of the summed tensor, so after DDP averages the parameter gradients they equal those of a
    single process holding the global batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_processes(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over every process (``x`` itself when not distributed), with gradients."""
    return _SumOverProcesses.apply(x) if _distributed() else x


def t_grid(t_max: float = 5.0, points: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    """The points ``t`` (T,) on [−t_max, t_max] and their integration weights (T,): trapezoid rule times
    the ``exp(−t²/2)`` weighting of the Epps–Pulley statistic.

    Raises:
        ValueError: ``t_max`` is not positive or fewer than 2 points.
    """
    if not t_max > 0 or points < 2:
        raise ValueError(f"the t grid needs t_max > 0 and at least 2 points, got {t_max} and {points}")
    t = torch.linspace(-t_max, t_max, points, dtype=torch.float64)
    trapezoid = torch.full((points,), 2 * t_max / (points - 1), dtype=torch.float64)
    trapezoid[[0, -1]] /= 2
    return t.float(), (trapezoid * torch.exp(-t.square() / 2)).float()


def epps_pulley(
    x: torch.Tensor, t: torch.Tensor, weights: torch.Tensor, distributed: bool = True
) -> torch.Tensor:
    """The Epps–Pulley statistic of each column of ``x`` (N, M) against a standard normal: (M,).

    Args:
        x: N samples of M one-dimensional variables (this process's rows).
        t, weights: the grid and its integration weights (:func:`t_grid`).
        distributed: under ``torchrun``, compute the statistic of every process's rows together.
    """
    x = x.float()
    tx = x.unsqueeze(-1) * t.to(x.device)  # (N, M, T)
    sums = torch.stack([tx.cos().sum(0), tx.sin().sum(0)])  # (2, M, T)
    n = torch.tensor(float(x.shape[0]), device=x.device)
    if distributed and _distributed():
        sums, n = sum_over_processes(sums), sum_over_processes(n)
    real, imag = sums[0] / n, sums[1] / n  # the empirical characteristic function, (M, T) each
    gauss = torch.exp(-t.to(x.device).square() / 2)  # (T,)
    distance = (real - gauss).square() + imag.square()  # (M, T)
    return n * (distance * weights.to(x.device)).sum(-1)  # (M,)


def random_directions(dim: int, num: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` directions uniform on the unit sphere of R^dim, as the columns of a (dim, num) matrix."""
    a = torch.randn(dim, num, generator=generator)
    return a / a.norm(dim=0, keepdim=True)


def sigreg(
    z: torch.Tensor,
    directions: torch.Tensor,
    t: torch.Tensor,
    weights: torch.Tensor,
    distributed: bool = True,
) -> torch.Tensor:
    """SIGReg of embeddings ``z`` (N, d): the Epps–Pulley statistic of each projection ``z·a_m`` (directions
    (d, M)), averaged over the M directions. A scalar; about 0 for a large standard-normal sample."""
    if z.ndim != 2 or z.shape[1] != directions.shape[0]:
        raise ValueError(f"sigreg needs embeddings (N, {directions.shape[0]}), got {tuple(z.shape)}")
    with torch.autocast(z.device.type, enabled=False):  # float32 projections, not autocast's bf16
        x = z.float() @ directions.to(z.device, torch.float32)  # (N, M)
        return epps_pulley(x, t, weights, distributed).mean()


class SIGReg(nn.Module):
    """SIGReg with fixed settings; the directions are drawn by the caller's generator (seed it with the step,
    alike on every process, so that every process projects onto the same directions).

    Args:
        num_slices: M, the random directions per step.
        t_max, points: the grid of t (:func:`t_grid`).

    Example:
        >>> reg = SIGReg(num_slices=256)
        >>> loss = reg(z, torch.Generator().manual_seed(step))
    """

    t: torch.Tensor
    weights: torch.Tensor

    def __init__(self, num_slices: int = 256, t_max: float = 5.0, points: int = 17):
        super().__init__()
        if num_slices < 1:
            raise ValueError(f"SIGReg needs at least one slice, got {num_slices}")
        self.num_slices = num_slices
        t, weights = t_grid(t_max, points)
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        directions = random_directions(z.shape[-1], self.num_slices, generator)  # (d, M), on the CPU
        return sigreg(z, directions, self.t, self.weights)
