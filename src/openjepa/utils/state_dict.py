"""State dicts: strict loading with a readable diff, wrapper prefixes, sub-module slices.

load_state_dict_strict(encoder, checkpoint["model"], "target encoder")   # or a readable error
encoder_state = sub_state_dict(checkpoint["model"], "target_encoder")    # keys without the prefix
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

# Prefixes added by wrappers: DistributedDataParallel and torch.compile's OptimizedModule.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 20


class CheckpointMismatchError(ValueError):
    """A state dict's keys or tensor shapes do not match the module it is loaded into."""


def sub_state_dict(state: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The entries of sub-module ``name`` (``"target_encoder"``), with the ``name.`` prefix removed."""
    prefix = name + "."
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def strip_wrapper_prefixes(sd: Mapping[str, Any], model_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Remove ``module.`` (DDP) and ``_orig_mod.`` (``torch.compile``) prefixes that *every* key carries.

    A prefix that the module's own keys (``model_keys``) also carry is kept. Nested wrappers
    (``module._orig_mod.``) are stripped one after the other.
    """
    model_keys = list(model_keys)
    out = dict(sd)
    stripped = True
    while stripped and out:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            in_ckpt = all(k.startswith(prefix) for k in out)
            in_model = bool(model_keys) and all(k.startswith(prefix) for k in model_keys)
            if in_ckpt and not in_model:
                out = {k[len(prefix) :]: v for k, v in out.items()}
                stripped = True
    return out


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, Any], name: str = "model") -> None:
    """Load ``state_dict`` into ``module`` with ``strict=True``, after a readable key and shape check.

    Wrapper prefixes are stripped first (see :func:`strip_wrapper_prefixes`).

    Args:
        module: The module to load into (unwrapped or not; its own keys decide what is stripped).
        state_dict: Parameter and buffer tensors by key, e.g. ``checkpoint["encoder"]``.
        name: How the module is called in error messages, e.g. ``"target_encoder"``.

    Raises:
        CheckpointMismatchError: A ``ValueError`` listing missing keys, unexpected keys and shape
            mismatches (``key: checkpoint (a, b) vs model (c, d)``), each list cut at 20 entries with a
            count of the rest. Nothing is loaded in that case.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state dict for {name!r} must be a mapping, got {type(state_dict).__name__}")
    expected = module.state_dict()
    sd = strip_wrapper_prefixes(state_dict, expected.keys())

    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = []
    for key, want in expected.items():
        if key not in sd or not isinstance(want, torch.Tensor):
            continue
        got = sd[key]
        if not isinstance(got, torch.Tensor):
            mismatched.append(f"{key}: checkpoint {type(got).__name__} vs model {_shape(want)}")
        elif got.shape != want.shape:
            mismatched.append(f"{key}: checkpoint {_shape(got)} vs model {_shape(want)}")

    if missing or unexpected or mismatched:
        counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} shape mismatch"
        lines = [f"checkpoint does not match {name!r} ({type(module).__name__}): {counts}"]
        lines += _section("missing keys (in model, not in checkpoint)", missing)
        lines += _section("unexpected keys (in checkpoint, not in model)", unexpected)
        lines += _section("shape mismatches", mismatched)
        raise CheckpointMismatchError("\n".join(lines))
    module.load_state_dict(sd, strict=True)


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))  # "(5, 4)", "(5,)", "()"


def _section(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    lines = [f"  {title} [{len(items)}]:"] + [f"    {item}" for item in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
    return lines


def nonfinite_names(named: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity, in order (one host sync per device)."""
    floats = [(name, t) for name, t in named if t.is_floating_point() or t.is_complex()]
    if not floats:
        return []
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(floats):
        by_device.setdefault(t.device, []).append(i)
    finite = [True] * len(floats)
    for indices in by_device.values():
        flags = torch.stack([torch.isfinite(floats[i][1]).all() for i in indices]).tolist()
        for i, ok in zip(indices, flags, strict=True):
            finite[i] = ok
    return [name for (name, _), ok in zip(floats, finite, strict=True) if not ok]
