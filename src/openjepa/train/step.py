"""One optimisation step of a JEPA model: forward, backward, optimizer, EMA."""

from __future__ import annotations

import torch

from openjepa.masks.multiblock import MaskBatch
from openjepa.methods.ijepa import IJEPA, JEPAOutput
from openjepa.train.optim import set_hyperparams


def train_step(
    model: IJEPA,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    masks: MaskBatch,
    lr: float,
    weight_decay: float,
    momentum: float,
    amp_dtype: torch.dtype | None = None,
    clip_grad: float | None = None,
) -> JEPAOutput:
    """Run one full step and return the forward's output (its loss is still attached to the graph).

    Args:
        model: the JEPA model.
        optimizer: optimizer over the encoder and predictor parameters.
        images: batch (B, C, H, W) on the model's device.
        masks: masks of this batch on the model's device.
        lr, weight_decay, momentum: this step's scheduled values.
        amp_dtype: autocast dtype (e.g. ``torch.bfloat16``) or None for full precision.
        clip_grad: clip the global gradient norm to this value.
    """
    set_hyperparams(optimizer, lr, weight_decay)
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        out = model(images, masks)
    out.loss.backward()
    finish_step(model, optimizer, momentum, clip_grad)
    return out


def finish_step(
    model: IJEPA, optimizer: torch.optim.Optimizer, momentum: float, clip_grad: float | None = None
) -> None:
    """After backward: clip the gradient norm, step and clear the optimizer, update the EMA target."""
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.update_target(momentum)
