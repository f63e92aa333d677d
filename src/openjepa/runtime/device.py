"""Where a run computes and in which precision: device choice, bf16 detection, autocast.

device = resolve_device("auto")                     # cuda when available, else cpu
amp = resolve_precision("auto", device)             # torch.bfloat16 or None (full fp32)
with autocast(device, amp):
    loss = model(x)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from openjepa.config.sections import DEVICE_NAMES, is_device_name

DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as a device.

    Raises:
        ValueError: the name is not one of those, or names a device this machine does not have.
    """
    if not is_device_name(name):
        raise ValueError(f"unknown device {name!r}; use {DEVICE_NAMES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} was asked for but no CUDA device is available; use cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {name!r} was asked for but this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}; use one of those, or cuda"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} was asked for but no MPS device is available; use cpu or auto")
    return device


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX-BF16 (where bf16 matmuls are ~3x faster than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a precision name: None means full fp32.

    ``auto`` is bf16 on GPUs that support it and on CPUs with native bf16, fp32 elsewhere.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on the device's type, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
