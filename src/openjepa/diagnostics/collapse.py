"""Collapse metrics of a batch of embeddings.

A JEPA can lower its loss by making every image map to (nearly) the same embedding, or by spending only a
few dimensions. Three cheap statistics of ``N`` pooled embeddings ``(N, D)`` show it:

* ``feature_std``: the standard deviation over images of each dimension of the L2-normalised embeddings,
  averaged over dimensions and multiplied by ``sqrt(D)``. About 1 for embeddings spread evenly on the
  sphere, 0 when every image maps to the same direction.
* ``rankme``: the effective rank of Garrido et al. (2023), ``exp(-sum_k p_k log p_k)`` with
  ``p_k = sigma_k / sum(sigma) + eps`` over the singular values of the (uncentred) embedding matrix.
  Between 1 and ``min(N, D)``.
* ``mean_cosine``: the mean cosine similarity over all pairs of distinct images; 1 when collapsed.
* ``sigreg``: the SIGReg statistic (:mod:`openjepa.losses.sigreg`, averaged over 256 fixed random
  directions) of the embeddings centred and scaled to unit mean variance per dimension: how far they are
  from an isotropic Gaussian, whatever their scale. Below 1 (about 0.6) for isotropic Gaussian
  embeddings, whatever N; it grows with N (as N times a distance) for embeddings that use few directions
  or are far from Gaussian, so compare values at the same N.
"""

from __future__ import annotations

import math

import torch

from openjepa.losses.sigreg import random_directions, sigreg, t_grid

#: Default thresholds of :func:`collapse_warnings`.
MIN_FEATURE_STD = 0.1
MAX_MEAN_COSINE = 0.99
MIN_RANKME = 2.0


def _check(features: torch.Tensor) -> torch.Tensor:
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"expected embeddings of shape (N >= 2, D), got {tuple(features.shape)}")
    return features.detach().float()


def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank of an ``(N, D)`` embedding matrix (RankMe), between 1 and ``min(N, D)``."""
    x = _check(features)
    s = torch.linalg.svdvals(x.double())
    if s.sum() <= 0:
        return 1.0  # all-zero embeddings: one (empty) direction
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def feature_std(features: torch.Tensor) -> float:
    """Mean per-dimension std of the L2-normalised embeddings, times ``sqrt(D)`` (~1 healthy, 0 collapsed)."""
    x = _check(features)
    z = torch.nn.functional.normalize(x, dim=1)
    return float(z.std(dim=0).mean() * math.sqrt(x.shape[1]))


def mean_cosine(features: torch.Tensor) -> float:
    """Mean cosine similarity over the ``N (N - 1)`` ordered pairs of distinct images."""
    x = _check(features)
    z = torch.nn.functional.normalize(x.double(), dim=1)
    n = z.shape[0]
    total = z.sum(dim=0).pow(2).sum() - z.pow(2).sum()  # sum over i != j of <z_i, z_j>
    return float(total / (n * (n - 1)))


def sigreg_statistic(features: torch.Tensor, num_slices: int = 256, seed: int = 0) -> float:
    """SIGReg of the centred embeddings scaled to unit mean variance per dimension (fixed directions, so
    values of one run are comparable over time)."""
    x = _check(features)
    x = x - x.mean(dim=0)
    scale = x.square().mean().sqrt()
    if scale > 0:  # (every image the same: all projections stay 0, far from a standard normal)
        x = x / scale
    directions = random_directions(x.shape[1], num_slices, torch.Generator().manual_seed(seed))
    return float(sigreg(x, directions, *t_grid(), distributed=False))


def collapse_metrics(features: torch.Tensor) -> dict[str, float]:
    """``{"feature_std", "rankme", "mean_cosine", "sigreg"}`` of an ``(N, D)`` embedding matrix."""
    return {
        "feature_std": feature_std(features),
        "rankme": rankme(features),
        "mean_cosine": mean_cosine(features),
        "sigreg": sigreg_statistic(features),
    }


def collapse_warnings(
    metrics: dict[str, float],
    min_feature_std: float = MIN_FEATURE_STD,
    max_mean_cosine: float = MAX_MEAN_COSINE,
    min_rankme: float = MIN_RANKME,
) -> list[str]:
    """Readable reasons to think the embeddings have collapsed; empty when none applies."""
    reasons = []
    if metrics["feature_std"] < min_feature_std:
        reasons.append(f"feature_std {metrics['feature_std']:.3f} < {min_feature_std}")
    if metrics["mean_cosine"] > max_mean_cosine:
        reasons.append(f"mean_cosine {metrics['mean_cosine']:.3f} > {max_mean_cosine}")
    if metrics["rankme"] < min_rankme:
        reasons.append(f"rankme {metrics['rankme']:.2f} < {min_rankme}")
    return reasons
