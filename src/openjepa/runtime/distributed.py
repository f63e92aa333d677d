"""Process-group setup for ``torchrun`` (DDP), and a no-op single-process mode.

A plain ``python``/``openjepa`` invocation runs in one process without any distributed setup. Under
``torchrun`` (which sets RANK, WORLD_SIZE and LOCAL_RANK), the default process group is created with
NCCL on GPUs and Gloo on CPUs, with a timeout on every collective (``run.dist_timeout``): a stopped or
hung process makes the others fail after that many seconds instead of torch's default 30 minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


class ProcessGroupError(RuntimeError):
    """A collective failed: another process is stopped, hung or dead (or the network is)."""


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that timed out or lost a peer (Gloo and NCCL word them differently)."""
    text = str(err).lower()
    return isinstance(err, dist.DistError) or any(
        s in text for s in ("timed out", "timeout", "connection closed by peer", "connection reset")
    )


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes and its local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str, timeout_s: float | None = None) -> DistInfo:
    """Join the process group when launched by torchrun with more than one process; else single-process.

    Args:
        device_type: ``"cuda"`` (NCCL) or another (Gloo).
        timeout_s: seconds a collective may wait for the other processes (None: torch's default).
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo()
    info = DistInfo(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        timeout = None if timeout_s is None else timedelta(seconds=timeout_s)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=timeout)
    return info


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over all processes (returns the tensor itself in single-process mode)."""
    if not info.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def any_process(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (every process must call it; a host sync)."""
    if not info.enabled:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
