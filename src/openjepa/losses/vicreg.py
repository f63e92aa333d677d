"""VICReg's three terms (invariance, variance, covariance), as plain functions and a thin module.

For two batches of embeddings ``z_a, z_b`` of shape (N, d):

* invariance: mean squared error between ``z_a`` and ``z_b``;
* variance: ``mean_j relu(γ − sqrt(Var(z_j) + ε))`` per branch (unbiased variance over the batch), averaged
  over the branches;
* covariance: ``Σ_{i≠j} C_ij² / d`` of each branch's covariance matrix ``C``, summed over the branches.

Variance and covariance are statistics of the whole batch. In a distributed run they are computed on the
embeddings of every process (``gather_batch``): each process holds the full global batch, with gradients
flowing only into its own rows; the backward pass sums those row gradients over processes, so that after
DDP averages the parameter gradients they equal a single-process run on the global batch. The invariance
term is per sample and stays local.

All terms are computed in float32, whatever the autocast dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _GatherRows(torch.autograd.Function):
    """All-gather along the batch axis; backward sums gradients over processes and keeps the local rows."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(z) for _ in range(world)]
        dist.all_gather(parts, z.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), z.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_batch(z: torch.Tensor) -> torch.Tensor:
    """Embeddings of every process concatenated along the batch axis (rank order); ``z`` itself when
    not distributed. Every process must pass the same number of rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z
    return _GatherRows.apply(z)


def invariance_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the two branches."""
    if z_a.shape != z_b.shape:
        raise ValueError(f"branches differ in shape: {tuple(z_a.shape)} vs {tuple(z_b.shape)}")
    return F.mse_loss(z_a.float(), z_b.float())


def variance_loss(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the standard deviation of each dimension: ``mean_j relu(γ − sqrt(Var(z_j) + ε))``.

    Args:
        z: embeddings (N, d), N ≥ 2.
        gamma: target standard deviation.
        eps: numerical stabiliser inside the square root.
    """
    _check_batch(z)
    std = torch.sqrt(z.float().var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal entries of the covariance matrix of ``z`` (N, d), divided by d."""
    _check_batch(z)
    z = z.float()
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)  # (d, d)
    off = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return off / d


def _check_batch(z: torch.Tensor) -> None:
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"expected embeddings of shape (N ≥ 2, d), got {tuple(z.shape)}")


@dataclass(frozen=True)
class VICRegWeights:
    """Coefficients of ``β_vicreg · (β_sim · L_inv + β_std · L_var + β_cov · L_cov)`` (C-JEPA's values)."""

    vicreg: float = 0.001
    sim: float = 25.0
    std: float = 25.0
    cov: float = 1.0
    gamma: float = 1.0
    eps: float = 1e-4


def vicreg_terms(
    branches: list[torch.Tensor],
    gamma: float = 1.0,
    eps: float = 1e-4,
    gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variance (averaged over branches) and covariance (summed over branches) of local embeddings.

    Args:
        branches: one (N_local, d) tensor per branch.
        gather: compute on the embeddings of all processes (``gather_batch``).
    """
    gathered = [gather_batch(z) if gather else z for z in branches]
    var = torch.stack([variance_loss(z, gamma, eps) for z in gathered]).mean()
    cov = torch.stack([covariance_loss(z) for z in gathered]).sum()
    return var, cov


class VICRegLoss(nn.Module):
    """VICReg between two branches: returns the weighted total and its three raw terms.

    Example:
        >>> loss, terms = VICRegLoss()(z_a, z_b)  # terms = {"inv": …, "var": …, "cov": …}
    """

    def __init__(self, weights: VICRegWeights = VICRegWeights(), gather: bool = True):
        super().__init__()
        self.weights = weights
        self.gather = gather

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.weights
        inv = invariance_loss(z_a, z_b)
        var, cov = vicreg_terms([z_a, z_b], w.gamma, w.eps, self.gather)
        total = w.vicreg * (w.sim * inv + w.std * var + w.cov * cov)
        return total, {"inv": inv, "var": var, "cov": cov}
