"""The runtime of a process: its device, its autocast precision and its place in the process group.

runtime = build_runtime("auto", "auto")     # joins the process group under torchrun
with runtime.autocast():
    ...
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from openjepa.runtime.device import autocast, resolve_device, resolve_precision
from openjepa.runtime.distributed import DistInfo, init_distributed


@dataclass(frozen=True)
class Runtime:
    """Device, autocast dtype (None: full fp32) and process-group position of this process."""

    device: torch.device
    amp_dtype: torch.dtype | None
    dist: DistInfo

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.amp_dtype)


def build_runtime(
    device: str = "auto", precision: str = "auto", dist_timeout: float | None = None
) -> Runtime:
    """Resolve ``device`` and ``precision`` names; under ``torchrun``, join the process group (collectives
    time out after ``dist_timeout`` seconds) and take the local GPU (``cuda:LOCAL_RANK``)."""
    dev = resolve_device(device)
    dist = init_distributed(dev.type, dist_timeout)
    if dev.type == "cuda" and dist.enabled:
        dev = torch.device("cuda", dist.local_rank)
    return Runtime(dev, resolve_precision(precision, dev), dist)


__all__ = ["Runtime", "autocast", "build_runtime", "resolve_device", "resolve_precision"]
