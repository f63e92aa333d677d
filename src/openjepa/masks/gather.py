"""Gathering tokens by patch index: the one operation every mask goes through."""

from __future__ import annotations

import torch


def gather_tokens(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Select tokens of each sequence by index.

    Args:
        x: tokens, shape (B, N, D).
        indices: patch indices into the N axis, shape (B, K) or (B, M, K), dtype int64.

    Returns:
        (B, K, D) or (B, M, K, D): ``out[b, ..., k] = x[b, indices[b, ..., k]]``.
    """
    if indices.dim() == 3:
        b, m, k = indices.shape
        return gather_tokens(x, indices.reshape(b, m * k)).reshape(b, m, k, x.shape[-1])
    if indices.dim() != 2 or indices.shape[0] != x.shape[0]:
        raise ValueError(f"indices must be (B, K) with B={x.shape[0]}, got {tuple(indices.shape)}")
    # (B, K) → (B, K, D) so gather picks whole token vectors
    return torch.gather(x, 1, indices.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
