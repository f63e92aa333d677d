"""AdamW over a method's parameter groups, and the schedules that drive it."""

from __future__ import annotations

import torch

from openjepa.config import OptimConfig
from openjepa.methods.base import Method
from openjepa.utils.schedules import Schedules


def build_optimizer(method: Method, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``method.param_groups``, using the fused kernel where the build has one."""
    groups = method.param_groups(optim.weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=fused)


def build_schedules(optim: OptimConfig, steps_per_epoch: int) -> tuple[Schedules, int]:
    """The LR and weight-decay schedules of ``optim``, and the run's length in steps.

    The schedules are laid over ``schedule_stretch`` × the run (the reference's ``ipe_scale``).
    """
    total_steps = max(1, round(optim.epochs * steps_per_epoch))
    schedules = Schedules(
        total_steps=max(1, round(total_steps * optim.schedule_stretch)),
        warmup_steps=round(optim.warmup_epochs * steps_per_epoch),
        start_lr=optim.start_lr,
        lr=optim.lr,
        final_lr=optim.final_lr,
        weight_decay=optim.weight_decay,
        final_weight_decay=optim.final_weight_decay,
    )
    return schedules, total_steps


def set_hyperparams(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Write the scheduled LR into every group and the weight decay into the decayed groups."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if group.get("apply_wd", True):
            group["weight_decay"] = weight_decay
