"""Latent regression loss between predicted and target features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

JEPA_LOSSES = ("smooth_l1", "l2")


def jepa_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """Mean regression loss over every predicted element.

    Args:
        prediction: predicted features, any shape, e.g. (B, M, Kt, D).
        target: target features of the same shape (no gradient needed).
        kind: ``"smooth_l1"`` (Huber with β = 1, the reference code's choice) or ``"l2"`` (mean squared
            error, as the paper writes it).
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape"
        )
    if kind == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=1.0)
    if kind == "l2":
        return F.mse_loss(prediction, target)
    raise ValueError(f"unknown loss {kind!r}; choose one of {JEPA_LOSSES}")
