"""Typed configuration: dataclasses with one source of defaults, from YAML plus ``key=value`` overrides.

    cfg = load_config("configs/demo.yaml", ["optim.lr=5e-4", "run.out_dir=runs/try"])

A config has one section per concern: ``method`` (which method, and that method's own keys), ``model`` (the
encoder), ``data``, ``optim``, ``run`` and ``eval``. The ``method`` section's keys come from the method's
own config class: each method registers it (:func:`register_method_config`), so this module never names a
method. ``method: NAME`` is short for ``method: {name: NAME}`` (every other key at its default).

Unknown keys and values of the wrong type fail with the key's full name and what is allowed. ``to_dict``
gives plain Python containers (what is written to ``config.yaml`` in the run folder and into checkpoints).
Configs in the layout of earlier versions are read as the current one (:func:`migrate_config`).

Every key is documented in its class's ``Attributes:`` docstring; :func:`describe` and
:func:`reference_markdown` (``docs/config.md``) are generated from those descriptions.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import json
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration key is unknown or its value has the wrong type."""


class ConfigLayoutWarning(UserWarning):
    """A config in the layout of an earlier version was read as the current one."""


# ---- sections ----------------------------------------------------------------------------------------


@dataclass
class MethodConfig:
    """Base of every method's config section (``method:``); subclasses add the method's own keys.

    Attributes:
        name: the pretraining method (``openjepa config`` lists the registered ones).
    """

    name: str = ""


@dataclass
class ModelConfig:
    """The encoder: a Vision Transformer of a named size.

    Attributes:
        name: encoder size, ``vit_tiny`` … ``vit_giant``.
        patch_size: patch side in pixels; the image size must be a multiple of it.
        depth, embed_dim, num_heads: override the named size (null keeps it), for small-data recipes.
        grad_checkpointing: recompute encoder activations in backward to save memory.
        patch_init_std: std of the patch-embedding init (null: 0.02, the reference); small patches of
            few channels need a larger one (0.25 for 4×4×1) or the model can collapse onto positions.
    """

    name: str = "vit_tiny"
    patch_size: int = 4
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    grad_checkpointing: bool = False
    patch_init_std: float | None = None


@dataclass
class DataConfig:
    """Where images come from and how they are cropped.

    Attributes:
        dataset: ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``folder`` or ``synthetic``.
        root: data folder (null: the dataset's default search, e.g. $OPENJEPA_DATA, Debian's path).
        image_size: side of the square training crops.
        channels: image channels (null: the dataset's own).
        crop_scale: RandomResizedCrop area range; [1, 1] disables cropping.
        flip: random horizontal flips.
        subset: use only the first N training images (null: all).
        num_workers: DataLoader worker processes for datasets decoded from files.
    """

    dataset: Literal["fashion_mnist", "mnist", "cifar10", "cifar100", "folder", "synthetic"] = "fashion_mnist"
    root: str | None = None
    image_size: int = 28
    channels: int | None = None
    crop_scale: tuple[float, float] = (0.3, 1.0)
    flip: bool = False
    subset: int | None = None
    num_workers: int = 4


@dataclass
class OptimConfig:
    """Optimisation and schedules (the published I-JEPA values by default).

    Attributes:
        epochs: passes over the training set.
        batch_size: global batch per optimizer step, over all processes and accumulation steps.
        grad_accum: micro-batches per optimizer step.
        lr, start_lr, final_lr: peak LR, LR at step 0, LR at the end (cosine after warm-up).
        warmup_epochs: linear LR warm-up (may be fractional).
        weight_decay, final_weight_decay: cosine weight-decay schedule.
        schedule_stretch: lay schedules over stretch × the run (the reference's ``ipe_scale``).
        betas, eps: AdamW.
        clip_grad: clip the global gradient norm (null: off).
    """

    epochs: float = 100
    batch_size: int = 256
    grad_accum: int = 1
    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    schedule_stretch: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float | None = None


@dataclass
class RunConfig:
    """Run folder, devices, logging and checkpointing.

    Attributes:
        out_dir: run folder; running again with the same folder resumes from its latest checkpoint.
        seed: seeds the model init, the data order, the masks and the augmentations.
        device: ``auto`` (cuda if available), ``cpu``, ``cuda``.
        precision: ``auto`` (bf16 on GPUs and on CPUs with native bf16, else fp32), ``fp32``, ``bf16``.
        compile: ``torch.compile`` the training step's forward.
        max_steps: stop after this many optimizer steps (null: the full schedule); schedules still follow
            the full run, so a run can be done in pieces.
        log_every: steps between lines in metrics.jsonl.
        checkpoint_every: steps between checkpoints (latest.pt); one is also written at the end.
        keep_every: steps between checkpoints kept forever (null: only latest).
        progress: show a progress bar.
        keep_best: also keep ``checkpoints/best.pt``, the checkpoint with the best online kNN (needs
            ``eval.monitor_every``).
        loggers: where metrics go besides ``metrics.jsonl`` (always written): ``tensorboard``
            (``RUN/tensorboard``), ``wandb`` (``RUN/wandb``; the config, metrics, and the best and final
            checkpoints as model artifacts).
        wandb_project, wandb_name: W&B project (null: ``openjepa``) and run name (null: the folder's name).
        wandb_mode: ``offline`` (no account or network needed; upload later with ``wandb sync``),
            ``online`` or ``disabled``.
    """

    out_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    max_steps: int | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    keep_every: int | None = None
    progress: bool = True
    keep_best: bool = False
    loggers: tuple[Literal["jsonl", "tensorboard", "wandb"], ...] = ("jsonl",)
    wandb_project: str | None = None
    wandb_name: str | None = None
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"


@dataclass
class EvalConfig:
    """Evaluation of the frozen encoder, after pretraining and online during it.

    Attributes:
        knn_k: neighbours, one accuracy per value.
        knn_temperature: temperature of the weighted vote.
        train_samples, test_samples: use the first N images of each split (null: all).
        batch_size: images per forward pass.
        monitor_every: epochs between online monitors during pretraining (null: off): kNN of the evaluated
            encoder on a fixed held-out subset of the training split, and collapse metrics (feature std,
            RankMe, mean pairwise cosine), logged to metrics.jsonl with a warning when collapse sets in.
        monitor_train_samples: labelled memory bank of the online kNN (the first training images).
        monitor_val_samples: query images of the online kNN (the last training images).
        monitor_k: neighbours of the online kNN.
    """

    knn_k: tuple[int, ...] = (10, 20, 200)
    knn_temperature: float = 0.07
    train_samples: int | None = None
    test_samples: int | None = None
    batch_size: int = 512
    monitor_every: float | None = None
    monitor_train_samples: int = 5000
    monitor_val_samples: int = 1000
    monitor_k: int = 20


# ---- the method section: filled in by the methods themselves -------------------------------------------

_METHOD_CONFIGS: dict[str, type[MethodConfig]] = {}
_DEFAULT_METHOD: list[str] = []  # the name used when a config names no method


def register_method_config(name: str, config_class: type[MethodConfig], default: bool = False) -> None:
    """Make ``method: {name: NAME, ...}`` parse into ``config_class`` (what ``register_method`` calls).

    Raises:
        ValueError: ``config_class`` is not a dataclass deriving from :class:`MethodConfig`, or its ``name``
            default is not ``name``.
    """
    if not (dataclasses.is_dataclass(config_class) and issubclass(config_class, MethodConfig)):
        raise ValueError(f"the config class of method {name!r} must be a dataclass deriving MethodConfig")
    if config_class().name != name:
        raise ValueError(f"{config_class.__name__}.name must default to {name!r}")
    _METHOD_CONFIGS[name] = config_class
    if default or not _DEFAULT_METHOD:
        _DEFAULT_METHOD[:] = [name]


def method_names() -> tuple[str, ...]:
    """Names of the registered methods, the default first."""
    return tuple(sorted(_METHOD_CONFIGS, key=lambda n: (n != default_method_name(), n)))


def default_method_name() -> str:
    if not _DEFAULT_METHOD:
        raise RuntimeError("no method is registered; import openjepa.methods first")
    return _DEFAULT_METHOD[0]


def method_config_class(name: str, key: str = "method.name") -> type[MethodConfig]:
    """The config class registered for method ``name``.

    Raises:
        ConfigError: no method of that name is registered; the message lists the registered ones.
    """
    if name not in _METHOD_CONFIGS:
        close = difflib.get_close_matches(str(name), list(_METHOD_CONFIGS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"config key '{key}': unknown method {name!r}{hint}; registered methods: "
            f"{', '.join(method_names())}. A method of your own must be imported first "
            "(openjepa --import MODULE_OR_FILE ...; see docs/extending.md)"
        )
    return _METHOD_CONFIGS[name]


def _default_method_config() -> MethodConfig:
    return method_config_class(default_method_name())()


@dataclass
class Config:
    """Everything one pretraining run needs.

    Attributes:
        method: the pretraining method and its own keys (``method.name`` picks it).
        model: the encoder.
        data: the training images.
        optim: optimizer and schedules.
        run: run folder, device, logging, checkpoints.
        eval: evaluation settings and the online monitor.
    """

    method: MethodConfig = field(default_factory=_default_method_config)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def check_config(cfg: Config) -> None:
    """Constraints between keys, which no single type can say.

    Raises:
        ConfigError: naming the keys and what to change.
    """
    o, r, e = cfg.optim, cfg.run, cfg.eval
    for key, value in (
        ("optim.batch_size", o.batch_size),
        ("optim.grad_accum", o.grad_accum),
        ("run.log_every", r.log_every),
        ("run.checkpoint_every", r.checkpoint_every),
    ):
        if value < 1:
            raise ConfigError(f"config key '{key}' must be at least 1, got {value}")
    if r.keep_best and e.monitor_every is None:
        raise ConfigError("run.keep_best needs the online monitor: set eval.monitor_every (epochs)")
    if e.monitor_every is not None and e.monitor_every <= 0:
        raise ConfigError(f"eval.monitor_every must be a positive number of epochs, got {e.monitor_every}")


# ---- conversion --------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} × {_type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` and convert (lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
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
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
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


def from_dict(data: dict[str, Any]) -> Config:
    """Build a ``Config`` from nested dicts (missing keys keep their defaults; old layouts are migrated).

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or keys that contradict each other.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {data!r}")
    migrated, _ = migrate_config(data)
    cfg = _build(Config, migrated, "")
    check_config(cfg)
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


# ---- earlier layouts ---------------------------------------------------------------------------------

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
    if parts[0] in _METHOD_CONFIGS and parts[0] not in _SECTIONS and len(parts) > 1:
        moved = ".".join(("method", *parts[1:]))
        return moved, f"{key} is now {moved}"
    return key, None


def migrate_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A config dict of any earlier layout in the current one, and notes of what moved.

    Earlier layouts named the method as a string (``method: cjepa``) and kept its keys in a top-level
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
    for name in [k for k in data if k in _METHOD_CONFIGS and k not in _SECTIONS]:
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


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=5e-4"`` → ``("optim.lr", 0.0005)``; the value is read as YAML (``null``, lists, …)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    return key, (yaml.safe_load(raw) if raw.strip() else "")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (None: all defaults) and apply ``key.sub=value`` overrides.

    A file or override in an earlier layout is read as the current one, with a
    :class:`ConfigLayoutWarning` naming the keys that moved.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: an unknown key or a value of the wrong type (the message names the key).
    """
    data: dict[str, Any] = {}
    notes: list[str] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
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
    return from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


# ---- documentation -----------------------------------------------------------------------------------

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
            rows.append((f"{prefix}{f.name}", _type_name(tp), value, docs.get(f.name, "")))
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
        "over all processes and accumulation steps.",
        "",
        "Configs of earlier versions are still read: `method: cjepa` with a top-level `cjepa:` section, "
        "`model.pred_*` (now `method.predictor.*`), `masks.*` (now `method.masks.*`), `optim.ema` and "
        "`optim.loss` (now `method.ema`, `method.loss`), with a warning that names what moved.",
    ]
    for title, rows in config_rows().items():
        out += ["", f"## {title}", "", "| key | type | default | description |", "|---|---|---|---|"]
        for key, tp, default, doc in rows:
            cells = [f"`{key}`", tp, f"`{_shown(default)}`", doc]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"
