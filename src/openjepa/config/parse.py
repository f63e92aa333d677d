"""Reading configs: type-checked conversion of nested dicts, YAML files and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml

from openjepa.config.legacy import migrate_config, migrate_key
from openjepa.config.sections import (
    Config,
    ConfigError,
    ConfigLayoutWarning,
    MethodConfig,
    check_config,
    check_out_dir,
    default_method_name,
    method_config_class,
)


def type_name(tp: Any) -> str:
    """How a config type reads in messages and docs: ``int | null``, ``list of 2 × float``, ..."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return f"list of {len(args)} × {type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` and convert (lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key '{key}' expects {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_convert(v, a, key) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the largest float
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. run.out_dir=2024 (YAML reads it as a number)
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp} for '{key}'")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            owner = f" of method {data.get('name')!r}" if issubclass(cls, MethodConfig) else ""
            raise ConfigError(
                f"unknown config key '{full}'{owner}{hint}; allowed keys: "
                f"{', '.join(prefix + n for n in names)}"
            )
        tp = hints[key]
        if tp is MethodConfig:
            kwargs[key] = _build_method(value, f"{full}.")
        elif dataclasses.is_dataclass(tp):
            section = typing.cast(type, tp)
            kwargs[key] = _build(section, {} if value is None else value, f"{full}.")  # empty: defaults
        else:
            kwargs[key] = _convert(value, tp, full)
    return cls(**kwargs)


def _build_method(value: Any, prefix: str) -> MethodConfig:
    """The ``method`` section: ``NAME``, ``{name: NAME, ...keys}`` or nothing (the default method)."""
    if value is None:
        value = {}
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"config section 'method' must be a method name or a mapping, got {value!r}")
    name = value.get("name", default_method_name())
    if not isinstance(name, str):
        raise ConfigError(f"config key '{prefix}name' expects a method name, got {name!r}")
    return _build(method_config_class(name, f"{prefix}name"), {**value, "name": name}, prefix)


def from_dict(data: dict[str, Any], training: bool = True) -> Config:
    """Build a ``Config`` from nested dicts (missing keys keep their defaults; old layouts are migrated).

    ``training=False`` (a checkpoint's config, read to evaluate it) skips the checks only pretraining needs.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or keys that contradict each other.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {data!r}")
    migrated, _ = migrate_config(data)
    cfg = _build(Config, migrated, "")
    check_config(cfg, training)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dicts/lists of a config (tuples become lists), for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    out = plain(cfg)
    assert isinstance(out, dict)
    return out


# ---- files and overrides -----------------------------------------------------------------------------


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if isinstance(node.get(part), str) and part == "method":
            node[part] = {"name": node[part]}  # method: NAME, then method.key=value
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def _switch_method(section: dict[str, Any], name: str) -> dict[str, Any]:
    """``method=NAME`` over a method section: the new method with the old section's keys it also has
    (e.g. the predictor and masks when switching between methods that share them)."""
    keys = {f.name for f in dataclasses.fields(method_config_class(name, "method"))}
    return {**{k: v for k, v in section.items() if k in keys}, "name": name}


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line saying what is wrong in a YAML text and where: ``expected ',' or ']' (line 1, column 3)``."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{err.problem}{where}"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=5e-4"`` → ``("optim.lr", 0.0005)``; the value is read as YAML (``null``, lists, …).

    Raises:
        ConfigError: no ``=``, no key, or a value that is not valid YAML.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    if not raw.strip():
        return key, ""
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"override {text!r}: the value is not valid YAML: {yaml_problem(err)}; quote it or fix the "
            "brackets (a list reads [1, 2])"
        ) from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (None: all defaults) and apply ``key.sub=value`` overrides.

    A file or override in an earlier layout is read as the current one, with a
    :class:`ConfigLayoutWarning` naming the keys that moved.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: the file cannot be read or is not valid YAML, an unknown key, a value of the wrong type
            or out of range, keys that contradict each other, or a ``run.out_dir`` that cannot be a folder
            (the message names the key).
    """
    data: dict[str, Any] = {}
    notes: list[str] = []
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; give the YAML config file")
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read the config file {path}: {err}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {yaml_problem(err)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        data, notes = migrate_config(loaded or {})
    for text in overrides:
        key, value = parse_override(text)
        key, note = migrate_key(key)
        notes += [note] if note else []
        if key == "method" and isinstance(value, str) and isinstance(data.get("method"), dict):
            value = _switch_method(data["method"], value)
        _set_path(data, key, value)
    if notes:
        where = f"{path}: " if path is not None else ""
        warnings.warn(
            f"{where}read in the current config layout: {'; '.join(notes)} (see docs/config.md)",
            ConfigLayoutWarning,
            stacklevel=2,
        )
    cfg = from_dict(data)
    check_out_dir(cfg.run.out_dir)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (a temporary file renamed over ``path``)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
