"""The config sections as typed dataclasses, the registry of method sections, and cross-key checks."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Literal


class ConfigError(ValueError):
    """A configuration key is unknown or its value has the wrong type."""


class ConfigLayoutWarning(UserWarning):
    """A config in the layout of an earlier version was read as the current one."""


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
