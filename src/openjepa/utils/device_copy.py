"""Host-to-device copies that do not make the host wait for the device."""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the CPU) on ``device``, without a host synchronisation on CUDA.

    A copy from ordinary (pageable) host memory makes the host wait while CUDA stages it; from pinned
    memory it is queued on the stream and the host goes on. The step's small CPU tensors (masks, crop
    boxes, flips, SIGReg directions) are therefore pinned first; PyTorch's pinned-memory cache keeps
    each buffer until its copy has completed. Elsewhere this is ``tensor.to(device)``.
    """
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
