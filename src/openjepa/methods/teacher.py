"""An EMA teacher: a frozen copy of a network that follows it by exponential moving average.

Any method with a momentum teacher uses these (the JEPA family does); a method without one has no use
for them.

    target = make_teacher(encoder)                     # a frozen deep copy
    m = momentum_at(step, total_steps, 0.996, 1.0)     # the linear momentum schedule
    ema_update(target, encoder, m)                     # after every optimizer step
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from openjepa.utils.schedules import linear


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` that no gradient reaches (``requires_grad=False``)."""
    return copy.deepcopy(student).requires_grad_(False)


def momentum_at(step: int, total_steps: int, start: float, end: float) -> float:
    """The EMA momentum at ``step``: linear from ``start`` at step 0 to ``end`` at ``total_steps``."""
    return linear(step, total_steps, start, end)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``θ̄ ← m·θ̄ + (1 − m)·θ`` for every parameter pair, in place.

    Both modules must have the same parameters in the same order (the target is a copy of the online
    module). Runs as a single ``torch._foreach_lerp_`` over all tensors; momentum 0 copies exactly.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    tgt: list[torch.Tensor] = list(target.parameters())
    src: list[torch.Tensor] = list(online.parameters())
    if len(tgt) != len(src):
        raise ValueError(f"target has {len(tgt)} parameters, online has {len(src)}")
    if momentum == 0.0:  # no EMA: the target is a stop-gradient copy of the online module
        torch._foreach_copy_(tgt, [p.detach() for p in src])
        return
    # lerp(θ̄, θ, w) = θ̄ + w·(θ − θ̄) = (1 − w)·θ̄ + w·θ, so w = 1 − m
    torch._foreach_lerp_(tgt, [p.detach() for p in src], 1.0 - momentum)
