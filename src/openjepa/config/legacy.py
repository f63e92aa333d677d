"""Configs in the layouts of earlier versions, read as the current one."""

from __future__ import annotations

import copy
from typing import Any

from openjepa.config.sections import ConfigError, default_method_name, method_names

# Keys that moved into the method section when methods became plug-ins: old path → path under `method`.
_MOVED_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("model", "pred_depth"): ("predictor", "depth"),
    ("model", "pred_dim"): ("predictor", "dim"),
    ("model", "pred_heads"): ("predictor", "heads"),
    ("model", "pred_mode"): ("predictor", "mode"),
    ("masks",): ("masks",),
    ("optim", "ema"): ("ema",),
    ("optim", "loss"): ("loss",),
}
_SECTIONS = ("method", "model", "data", "optim", "run", "eval")


def migrate_key(key: str) -> tuple[str, str | None]:
    """An override key of an earlier layout (``model.pred_depth``) in the current one, and a note.

    A key already in the current layout comes back as it is, with no note.
    """
    parts = tuple(key.split("."))
    for old, new in _MOVED_KEYS.items():
        if parts[: len(old)] == old:
            moved = ".".join(("method", *new, *parts[len(old) :]))
            return moved, f"{key} is now {moved}"
    if parts[0] in method_names() and parts[0] not in _SECTIONS and len(parts) > 1:
        moved = ".".join(("method", *parts[1:]))
        return moved, f"{key} is now {moved}"
    return key, None


def migrate_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A config dict of any earlier layout in the current one, and notes of what moved.

    Earlier layouts named the method as a string (``method: NAME``) and kept its keys in a top-level
    section of its name; the predictor (``model.pred_*``), the masks (``masks``), the EMA (``optim.ema``)
    and the loss (``optim.loss``) now belong to the method section. A top-level section of another method
    than the selected one (old run folders wrote every method's section) is dropped.

    Raises:
        ConfigError: an old key and its new name are both set, to different values.
    """
    if not isinstance(data, dict):
        return data, []
    data = copy.deepcopy(data)
    notes: list[str] = []
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}
    method = data.get("method")
    if method is None:
        method = {}
    selected = method.get("name", default_method_name()) if isinstance(method, dict) else None
    for name in [k for k in data if k in method_names() and k not in _SECTIONS]:
        legacy = data.pop(name)
        if name != selected or not isinstance(legacy, dict) or not isinstance(method, dict):
            notes.append(f"section '{name}' ignored (method.name is {selected!r})")
            continue
        for key, value in legacy.items():
            _move(method, (key,), value, f"{name}.{key}", notes)
        notes.append(f"section '{name}' is now part of 'method'")
    for old, new in _MOVED_KEYS.items():
        parent = data
        for part in old[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None  # type: ignore[assignment]
        if not isinstance(parent, dict) or old[-1] not in parent or not isinstance(method, dict):
            continue
        value = parent.pop(old[-1])
        _move(method, new, value, ".".join(old), notes)
        notes.append(f"{'.'.join(old)} is now method.{'.'.join(new)}")
    if method and not data.get("method"):
        data["method"] = method
    return data, notes


def _move(method: dict[str, Any], path: tuple[str, ...], value: Any, old: str, notes: list[str]) -> None:
    node = method
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(
                f"cannot move '{old}' into the method section: 'method.{part}' is not a section"
            )
    if path[-1] in node and node[path[-1]] != value:
        new = "method." + ".".join(path)
        raise ConfigError(f"both '{old}' (the old name) and '{new}' are set; keep only '{new}'")
    node.setdefault(path[-1], value)
