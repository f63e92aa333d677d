"""Training schedules as pure functions of the global step.

A resumed run only needs the step to continue every schedule exactly; nothing is replayed.
``total_steps`` is the length the schedule is laid out over. The reference stretches every schedule by a
factor (``ipe_scale``): pass ``total_steps = round(stretch · steps_in_run)`` to get the same behaviour (with
1.25 only the first 80 % of each schedule is used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _progress(step: int, start: int, end: int) -> float:
    if end <= start:
        return 1.0
    return min(max((step - start) / (end - start), 0.0), 1.0)


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, start_lr: float, lr: float, final_lr: float
) -> float:
    """Linear warm-up from ``start_lr`` to ``lr`` over ``warmup_steps``, then cosine to ``final_lr``."""
    if step < warmup_steps:
        return start_lr + (lr - start_lr) * step / warmup_steps
    t = _progress(step, warmup_steps, total_steps)
    return final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def cosine(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine from ``start`` at step 0 to ``end`` at ``total_steps`` (weight decay)."""
    t = _progress(step, 0, total_steps)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def linear(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``total_steps`` (EMA momentum)."""
    return start + (end - start) * _progress(step, 0, total_steps)


@dataclass(frozen=True)
class Schedules:
    """The optimizer's schedules: ``at(step)`` gives the learning rate and the weight decay.

    Attributes:
        total_steps: steps the schedules are laid out over (after any stretch).
        warmup_steps: LR warm-up steps.
        start_lr, lr, final_lr: LR at step 0, after warm-up, and at the end.
        weight_decay, final_weight_decay: weight decay at step 0 and at the end.
    """

    total_steps: int
    warmup_steps: int
    start_lr: float = 2e-4
    lr: float = 1e-3
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4

    def at(self, step: int) -> dict[str, float]:
        return {
            "lr": warmup_cosine(
                step, self.total_steps, self.warmup_steps, self.start_lr, self.lr, self.final_lr
            ),
            "wd": cosine(step, self.total_steps, self.weight_decay, self.final_weight_decay),
        }
