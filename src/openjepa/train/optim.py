"""AdamW with I-JEPA's parameter groups."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group and a group without weight decay.

    Biases and every parameter with at most one dimension (LayerNorm weights, …) get no weight decay.
    Each group carries ``"apply_wd"`` so a weight-decay schedule knows which group to update.
    """
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if name.endswith("bias") or p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "apply_wd": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_wd": False},
    ]


def build_adamw(
    modules: Iterable[nn.Module],
    lr: float = 1e-3,
    weight_decay: float = 0.04,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` of the modules, using the fused kernel where the build has one."""
    groups = param_groups(modules, weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def set_hyperparams(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Write the scheduled LR into every group and the weight decay into the decayed groups."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if group.get("apply_wd", True):
            group["weight_decay"] = weight_decay
