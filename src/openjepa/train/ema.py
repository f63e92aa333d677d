"""Exponential moving average of parameters, as one fused foreach operation."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``θ̄ ← m·θ̄ + (1 − m)·θ`` for every parameter pair, in place.

    Both modules must have the same parameters in the same order (the target is a copy of the online
    module). Runs as a single ``torch._foreach_lerp_`` over all tensors; momentum 0 copies exactly.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    tgt = list(target.parameters())
    src = list(online.parameters())
    if len(tgt) != len(src):
        raise ValueError(f"target has {len(tgt)} parameters, online has {len(src)}")
    if momentum == 0.0:  # no EMA: the target is a stop-gradient copy of the online module
        torch._foreach_copy_(tgt, [p.detach() for p in src])
        return
    # lerp(θ̄, θ, w) = θ̄ + w·(θ − θ̄) = (1 − w)·θ̄ + w·θ, so w = 1 − m
    torch._foreach_lerp_(tgt, [p.detach() for p in src], 1.0 - momentum)
