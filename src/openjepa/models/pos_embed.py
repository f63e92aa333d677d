"""Fixed sine-cosine position embeddings for a 2-D grid of patches.

For a grid of ``grid_h × grid_w`` patches and an embedding width ``dim`` (divisible by 4), patch
``(row, col)`` gets the vector

    [sin(col·ω_0) … sin(col·ω_{q-1}), cos(col·ω_0) … cos(col·ω_{q-1}),
     sin(row·ω_0) … sin(row·ω_{q-1}), cos(row·ω_0) … cos(row·ω_{q-1})]

with ``q = dim / 4`` and ``ω_k = 1 / 10000^(k / q)``: the first half of the channels encodes the column,
the second half the row. Patches are numbered in raster order, ``index = row · grid_w + col``. This is the
layout used by MAE and I-JEPA, so embeddings stored in their checkpoints match this formula.
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D sin-cos embedding.

    Args:
        dim: output width, even.
        positions: float tensor of positions, shape (M,).

    Returns:
        Tensor of shape (M, dim): ``[sin(p·ω_k) for k], [cos(p·ω_k) for k]`` with ``ω_k = 10000^(-2k/dim)``.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """2-D sin-cos embedding of a ``grid_h × grid_w`` patch grid, in raster order.

    Args:
        dim: embedding width, divisible by 4.
        grid_h: number of patch rows.
        grid_w: number of patch columns.

    Returns:
        float32 tensor of shape (grid_h · grid_w, dim).

    Example:
        >>> sincos_2d(8, 2, 3).shape
        torch.Size([6, 8])
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be divisible by 4, got {dim}")
    rows = torch.arange(grid_h).repeat_interleave(grid_w)  # (N,) row of each patch
    cols = torch.arange(grid_w).repeat(grid_h)  # (N,) column of each patch
    emb = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)  # (N, dim)
    return emb.float()
