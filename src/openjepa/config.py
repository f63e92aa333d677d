"""Typed configuration: dataclasses with one source of defaults, from YAML plus ``key=value`` overrides.

    cfg = load_config("configs/demo.yaml", ["optim.lr=5e-4", "run.out_dir=runs/try"])

Unknown keys and values of the wrong type fail with the key's full name and what is allowed. ``to_dict``
gives plain Python containers (what is written to ``config.yaml`` in the run folder and into checkpoints).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from openjepa.losses.vicreg import VICRegWeights


class ConfigError(ValueError):
    """A configuration key is unknown or its value has the wrong type."""


@dataclass
class ModelConfig:
    """Encoder and predictor architecture.

    Attributes:
        name: encoder size, ``vit_tiny`` … ``vit_giant``.
        patch_size: patch side in pixels; the image size must be a multiple of it.
        depth, embed_dim, num_heads: override the named size (None keeps it), for small-data recipes.
        pred_depth, pred_dim: predictor blocks and width.
        pred_heads: predictor heads (None: the encoder's).
        pred_mode: ``separate`` (reference semantics) or ``joint`` (see openjepa.models.predictor).
        grad_checkpointing: recompute encoder activations in backward to save memory.
        patch_init_std: std of the patch-embedding init (None: 0.02, the reference); small patches of
            few channels need a larger one (0.25 for 4×4×1) or the model can collapse onto positions.
    """

    name: str = "vit_tiny"
    patch_size: int = 4
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    pred_depth: int = 6
    pred_dim: int = 96
    pred_heads: int | None = None
    pred_mode: Literal["separate", "joint"] = "separate"
    grad_checkpointing: bool = False
    patch_init_std: float | None = None


@dataclass
class MaskConfig:
    """Multi-block masks (see openjepa.masks.multiblock)."""

    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    min_keep: int = 10
    allow_overlap: bool = False


@dataclass
class DataConfig:
    """Where images come from and how they are augmented.

    Attributes:
        dataset: ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``folder`` or ``synthetic``.
        root: data folder (None: the dataset's default search, e.g. $OPENJEPA_DATA, Debian's path).
        image_size: side of the square training crops.
        channels: image channels (None: the dataset's own).
        crop_scale: RandomResizedCrop area range; (1, 1) disables cropping.
        flip: random horizontal flips.
        subset: use only the first N training images (None: all).
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
    """Optimisation and schedules (I-JEPA defaults).

    Attributes:
        epochs: passes over the training set.
        batch_size: global batch per optimizer step, over all processes and accumulation steps.
        grad_accum: micro-batches per optimizer step.
        lr, start_lr, final_lr: peak LR, LR at step 0, LR at the end (cosine after warm-up).
        warmup_epochs: linear LR warm-up (may be fractional).
        weight_decay, final_weight_decay: cosine weight-decay schedule.
        ema: EMA momentum at the start and at the end (linear).
        schedule_stretch: lay schedules over stretch × the run (the reference's ``ipe_scale``).
        betas, eps: AdamW.
        clip_grad: clip the global gradient norm (None: off).
        loss: ``smooth_l1`` or ``l2``.
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
    ema: tuple[float, float] = (0.996, 1.0)
    schedule_stretch: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float | None = None
    loss: Literal["smooth_l1", "l2"] = "smooth_l1"


@dataclass
class RunConfig:
    """Run folder, devices, logging and checkpointing.

    Attributes:
        out_dir: run folder; running again with the same folder resumes from its latest checkpoint.
        seed: seeds the model init, the data order, the masks and the augmentations.
        device: ``auto`` (cuda if available), ``cpu``, ``cuda``.
        precision: ``auto`` (bf16 on GPUs and on CPUs with native bf16, else fp32), ``fp32``, ``bf16``.
        compile: ``torch.compile`` the networks.
        max_steps: stop after this many optimizer steps (None: the full schedule); schedules still follow
            the full run, so a run can be done in pieces.
        log_every: steps between lines in metrics.jsonl.
        checkpoint_every: steps between checkpoints (latest.pt); one is also written at the end.
        keep_every: steps between checkpoints kept forever (None: only latest).
        progress: show a progress bar.
        keep_best: also keep ``checkpoints/best.pt``, the checkpoint with the best online kNN (needs
            ``eval.monitor_every``).
        loggers: where metrics go besides ``metrics.jsonl`` (always written): ``tensorboard``
            (``RUN/tensorboard``), ``wandb`` (``RUN/wandb``; the config, metrics, and the best and final
            checkpoints as model artifacts).
        wandb_project, wandb_name: W&B project (None: ``openjepa``) and run name (None: the folder's name).
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
    """Evaluation after pretraining (kNN on the frozen target encoder).

    Attributes:
        knn_k: neighbours, one accuracy per value.
        knn_temperature: temperature of the weighted vote.
        train_samples, test_samples: use the first N images of each split (None: all).
        batch_size: images per forward pass.
        monitor_every: epochs between online monitors during pretraining (None: off): kNN of the target
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


_PAPER = VICRegWeights()  # C-JEPA's published coefficients, defined once in openjepa.losses.vicreg


@dataclass
class CJEPAConfig:
    """C-JEPA's VICReg term (used when ``method: cjepa``; see openjepa.methods.cjepa).

    Attributes:
        reading: which tensors carry VICReg: ``A`` pooled target predictions through a projector, between
            target blocks; ``B`` pooled context embeddings, the JEPA loss being the invariance; ``C`` two
            photometrically augmented views. C is the default: it learned fastest in the README's
            Fashion-MNIST study (B second, at no extra cost per step; A no better than I-JEPA).
        var_cov: variance and covariance terms on.
        inv: invariance term on (reading B: always, it is the JEPA loss).
        beta_vicreg: weight of the whole VICReg term.
        beta_sim, beta_std, beta_cov: weights of invariance, variance and covariance inside it.
        gamma, eps: target standard deviation and stabiliser of the variance term.
        projector: expander widths after pooling (null: 4·D, 4·D for reading A, none for B and C; [] none).
    """

    reading: Literal["A", "B", "C"] = "C"
    var_cov: bool = True
    inv: bool = True
    beta_vicreg: float = _PAPER.vicreg
    beta_sim: float = _PAPER.sim
    beta_std: float = _PAPER.std
    beta_cov: float = _PAPER.cov
    gamma: float = _PAPER.gamma
    eps: float = _PAPER.eps
    projector: tuple[int, ...] | None = None


@dataclass
class Config:
    """Everything one pretraining run needs."""

    method: Literal["ijepa", "cjepa"] = "ijepa"
    model: ModelConfig = field(default_factory=ModelConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cjepa: CJEPAConfig = field(default_factory=CJEPAConfig)


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


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
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
            raise ConfigError(
                f"unknown config key '{full}'{hint}; allowed keys: {', '.join(prefix + n for n in names)}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, {} if value is None else value, f"{full}.")  # empty section: defaults
        else:
            kwargs[key] = _convert(value, tp, full)
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Config:
    """Build a ``Config`` from nested dicts (missing keys keep their defaults)."""
    return _build(Config, data, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dicts/lists of a config (tuples become lists), for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


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

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: an unknown key or a value of the wrong type (the message names the key).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        data = loaded or {}
    for text in overrides:
        key, value = parse_override(text)
        _set_path(data, key, value)
    return from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def describe() -> str:
    """Every key with its type and default, for ``--help`` and the README's config reference."""
    lines = []

    def walk(cls: type, prefix: str, obj: Any) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.", value)
            else:
                shown = list(value) if isinstance(value, tuple) else value
                lines.append(f"  {prefix}{f.name}: {_type_name(tp)} = {shown!r}")

    walk(Config, "", Config())
    return "\n".join(lines)
