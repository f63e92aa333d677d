"""Randomness as a pure function of (seed, step): named streams, and the global RNG state of a checkpoint.

Everything random in a training step (data order, crops, masks, augmented views) comes from a
``torch.Generator`` made by :func:`step_generator` for one *stream* and one step, never from the global RNG.
A resumed run therefore needs only the step to draw the same numbers, and processes agree on whatever they
draw from the same stream. The global RNG (model init, dropout-like ops) is captured with
:func:`rng_state` and put back with :func:`set_rng_state`.

    g = step_generator(seed ^ Stream.CROPS, step)        # the crops of this step, on every rank alike
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

import torch


class Stream(IntEnum):
    """Stream keys XOR-ed into the run seed, so the streams never share numbers."""

    MASKS = 0
    DATA_ORDER = 0x5EED_0001
    CROPS = 0x5EED_0002
    VIEWS = 0x5EED_0003
    ITEM_CROPS = 0x5EED_0004  # crops drawn per image in the loader (image folders), keyed by global row
    SLICES = 0x5EED_0005  # the random directions of SIGReg, alike on every process
    VALIDATION = 0x5EED_0006  # the fixed masks and views of the validation loss (online monitor)
    VIEW_CROPS = 0x5EED_0007  # C-JEPA reading C: the views' own crops and flips (method.view_crop_scale)


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of an integer."""
    x &= 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, rank, step): independent streams, reproducible anywhere.

    Example:
        >>> g = step_generator(seed=0 ^ Stream.CROPS, step=12)
        >>> torch.rand(2, generator=g)  # the same two numbers on every machine and every resume
    """
    key = _mix64(_mix64(_mix64(seed) ^ (rank + 0x9E3779B97F4A7C15)) ^ step)
    return torch.Generator().manual_seed(key & 0x7FFFFFFFFFFFFFFF)


def rng_state() -> dict[str, Any]:
    """Capture the global RNG states as tensors and plain tuples, loadable with ``weights_only=True``.

    Returns:
        ``{"torch": ByteTensor, "python": tuple}`` plus ``"cuda": list[ByteTensor]`` (one per device)
        when CUDA is available and initialised. NumPy's global RNG is not captured; openjepa draws
        its randomness from torch.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], strict: bool = True) -> None:
    """Restore RNG states captured by :func:`rng_state`.

    Args:
        state: The captured states (possibly after a save/load round trip).
        strict: If True, CUDA states that cannot be restored (no CUDA, or a different device count)
            raise. If False, they are restored for as many devices as both sides have, with a warning.

    Raises:
        ValueError: On unknown keys, a missing ``"torch"`` entry or a malformed state.
        RuntimeError: With ``strict=True``, if the CUDA states do not fit the visible devices.
    """
    unknown = set(state) - {"torch", "python", "cuda"}
    if unknown:
        raise ValueError(f"unknown RNG state entries: {sorted(unknown)}")
    if "torch" not in state:
        raise ValueError("RNG state has no 'torch' entry")
    torch.set_rng_state(_byte_tensor(state["torch"], "torch"))
    if "python" in state:
        random.setstate(_python_state(state["python"]))
    if "cuda" in state:
        cuda_states = [_byte_tensor(s, f"cuda[{i}]") for i, s in enumerate(state["cuda"])]
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available != len(cuda_states):
            message = f"RNG state holds {len(cuda_states)} CUDA generator(s), {available} device(s) visible"
            if strict:
                raise RuntimeError(message + "; pass strict=False to restore what fits")
            warnings.warn(message + "; restoring the first min(saved, visible)", stacklevel=2)
            cuda_states = cuda_states[:available]
        for device, s in enumerate(cuda_states):
            torch.cuda.set_rng_state(s, device)


def _byte_tensor(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
        raise ValueError(f"RNG state {where!r} must be a uint8 tensor, got {value!r:.80}")
    return value.cpu()


def _python_state(value: Any) -> tuple[Any, ...]:
    # random.setstate needs tuples, not lists, in case a caller passed the state through JSON or YAML.
    if not isinstance(value, tuple | list) or len(value) != 3:
        raise ValueError(f"RNG state 'python' must be a 3-tuple from random.getstate(), got {value!r:.80}")
    version, internal, gauss_next = value
    return (version, tuple(internal), gauss_next)
