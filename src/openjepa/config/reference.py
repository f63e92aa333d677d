"""The config reference, generated from each config class's ``Attributes:`` docstring: ``openjepa config``
and ``docs/config.md``."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from typing import Any

from openjepa.config.parse import type_name
from openjepa.config.sections import (
    Config,
    MethodConfig,
    Range,
    field_range,
    method_config_class,
    method_names,
)

_ENTRY_RE = re.compile(r"^    ([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*): (.*)$")


def field_descriptions(cls: type) -> dict[str, str]:
    """Each field's description, from the ``Attributes:`` sections of ``cls`` and its bases' docstrings.

    An entry ``a, b: text`` describes both fields; continuation lines are joined.
    """
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        lines = doc.splitlines()
        if "Attributes:" not in lines:
            continue
        current: list[str] = []
        for line in lines[lines.index("Attributes:") + 1 :]:
            match = _ENTRY_RE.match(line)
            if match:
                current = match.group(1).split(", ")
                for name in current:
                    out[name] = match.group(2).strip()
            elif line.startswith("        ") and current:
                for name in current:
                    out[name] += " " + line.strip()
            elif line.strip():
                break
    return out


def ranged_type_name(tp: Any, rng: Range | None) -> str:
    """A config type with its range: ``int ≥ 1``, ``int ≥ 1 | null``, ``list of 2 × float, each in (0, 1],
    ascending``."""
    if rng is None:
        return type_name(tp)
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return f"{ranged_type_name(inner[0], rng)} | null"
    if typing.get_origin(tp) is tuple:
        return f"{type_name(tp)}, each {rng.symbols()}" + (", ascending" if rng.ascending else "")
    return f"{type_name(tp)} {rng.symbols()}"


def _rows(cls: type, obj: Any, prefix: str) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, description) of every leaf of a config class, depth first."""
    hints = typing.get_type_hints(cls)
    docs = field_descriptions(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp, value = hints[f.name], getattr(obj, f.name)
        if dataclasses.is_dataclass(tp) and tp is not MethodConfig:
            rows += _rows(typing.cast(type, tp), value, f"{prefix}{f.name}.")
        elif tp is not MethodConfig:
            shown = ranged_type_name(tp, field_range(f))
            rows.append((f"{prefix}{f.name}", shown, value, docs.get(f.name, "")))
    return rows


def _method_rows(name: str) -> list[tuple[str, str, Any, str]]:
    cls = method_config_class(name)
    rows = _rows(cls, cls(), "method.")
    names = " | ".join(repr(n) for n in method_names())
    return [(k, names if k == "method.name" else t, v, d) for k, t, v, d in rows]


def config_rows() -> dict[str, list[tuple[str, str, Any, str]]]:
    """Every key of every section, ``{section title: [(key, type, default, description)]}``; the method
    section once per registered method."""
    out = {f"method: {name}": _method_rows(name) for name in method_names()}
    cfg = Config()
    for f in dataclasses.fields(Config):
        if f.name != "method":
            section = getattr(cfg, f.name)
            out[f.name] = _rows(type(section), section, f"{f.name}.")
    return out


def _shown(value: Any) -> str:
    """A default as it is written in YAML (``null``, ``true``, ``[0.3, 1.0]``)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def describe() -> str:
    """Every key with its type, default and description, for ``openjepa config``."""
    lines = []
    for title, rows in config_rows().items():
        lines.append(f"{title}:")
        for key, tp, default, doc in rows:
            lines.append(f"  {key}: {tp} = {_shown(default)}")
            if doc:
                lines.append(f"      {doc}")
    return "\n".join(lines)


def reference_markdown() -> str:
    """``docs/config.md``: one table per section, generated from the config classes' descriptions."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the config classes' own descriptions by `openjepa config --markdown > docs/config.md`"
        " (a test checks that this file is current). Set keys in a YAML file or as `key.sub=value` "
        "overrides on the command line; unknown keys and values of the wrong type are errors that name "
        "the key. `method: NAME` is short for `method: {name: NAME}`. `optim.batch_size` is the global batch "
        "over all processes and accumulation steps. A number out of its range (the type column: `int ≥ 1`, "
        "`float in (0, 1]`; a list's range holds for each of its numbers) is an error that names the key.",
        "",
        "Configs of earlier versions are still read: `method: NAME` with a top-level `NAME:` section, "
        "`model.pred_*` (now `method.predictor.*`), `masks.*` (now `method.masks.*`), `optim.ema` and "
        "`optim.loss` (now `method.ema`, `method.loss`), with a warning that names what moved.",
    ]
    for title, rows in config_rows().items():
        out += ["", f"## {title}", "", "| key | type | default | description |", "|---|---|---|---|"]
        for key, tp, default, doc in rows:
            cells = [f"`{key}`", tp, f"`{_shown(default)}`", doc]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"
