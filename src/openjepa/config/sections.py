"""The config sections as typed dataclasses, the registry of method sections, and cross-key checks."""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

#: Longest run ``optim.epochs`` (and the other epoch counts) may ask for: a bound that no real run reaches
#: and that keeps step counts far from overflow (``epochs × steps per epoch`` must be an integer).
MAX_EPOCHS = 1_000_000
#: Largest ``run.seed``: torch generators take 64-bit seeds, and the seed is mixed with stream keys.
MAX_SEED = 2**63 - 1
#: What ``run.device`` accepts (whether the device exists is checked when the run starts).
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?|mps")


class ConfigError(ValueError):
    """A configuration key is unknown, its value has the wrong type or is out of range, or keys disagree."""


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of :data:`DEVICE_NAMES` (``cuda:N`` for any device number N)."""
    return _DEVICE_RE.fullmatch(name) is not None


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The numbers a config key accepts (each number, for a list); see :func:`bounded`.

    Attributes:
        low, high: the bounds (None: unbounded on that side).
        low_open, high_open: the bound itself is excluded.
        ascending: a list must not decrease (a ``[min, max]`` pair).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    ascending: bool = False

    def admits(self, x: float) -> bool:
        """Whether the number ``x`` is in range (NaN never is)."""
        if self.low is not None and not (x > self.low if self.low_open else x >= self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def text(self) -> str:
        """The range in words: ``at least 1``, ``greater than 0``, ``in (0, 1]``."""
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_number(lo)}, {_number(hi)}{right}"
        if lo is not None:
            return f"{'greater than' if self.low_open else 'at least'} {_number(lo)}"
        if hi is not None:
            return f"{'less than' if self.high_open else 'at most'} {_number(hi)}"
        return "any number"

    def symbols(self) -> str:
        """The range for the config reference: ``≥ 1``, ``> 0``, ``in (0, 1]``."""
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return self.text()
        if lo is not None:
            return f"{'>' if self.low_open else '≥'} {_number(lo)}"
        if hi is not None:
            return f"{'<' if self.high_open else '≤'} {_number(hi)}"
        return ""

    def problem(self, key: str, value: Any) -> str | None:
        """The error message for ``value`` of config key ``key``, or None when it is in range."""
        if isinstance(value, tuple | list):
            if not all(self.admits(x) for x in value):
                return f"config key '{key}' must hold numbers {self.text()}, got {list(value)}"
            if self.ascending and any(a > b for a, b in zip(value, value[1:], strict=False)):
                return f"config key '{key}' must be [low, high] with low <= high, got {list(value)}"
            return None
        if not self.admits(value):
            return f"config key '{key}' must be {self.text()}, got {_number(value)}"
        return None


RANGE = "range"  # the field-metadata key of a Range


def bounded(
    default: T,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    ascending: bool = False,
) -> T:
    """A dataclass field with a default whose numbers must lie in a range, checked by :func:`check_config`.

    Works for ``int`` and ``float`` fields, optional ones (null is always allowed) and lists (each number;
    ``ascending``: a ``[min, max]`` pair). Method config classes of plug-ins use it too.

    Example:
        >>> @dataclass
        ... class MyConfig(MethodConfig):
        ...     name: str = "mine"
        ...     width: int = bounded(64, ge=1)
        ...     scale: tuple[float, float] = bounded((0.2, 1.0), gt=0, le=1, ascending=True)
    """
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise ValueError("give at most one lower bound (ge or gt) and one upper bound (le or lt)")
    rng = Range(
        low=gt if gt is not None else ge,
        high=lt if lt is not None else le,
        low_open=gt is not None,
        high_open=lt is not None,
        ascending=ascending,
    )
    return field(default=default, metadata={RANGE: rng})


def field_range(f: dataclasses.Field) -> Range | None:
    """The :class:`Range` of a config dataclass field, or None when it has none."""
    return f.metadata.get(RANGE)


def check_ranges(section: Any, prefix: str = "") -> None:
    """Check every field with a :class:`Range` of a config dataclass and of the sections nested in it.

    Raises:
        ConfigError: ``config key 'KEY' must be ..., got VALUE`` for the first value out of range.
    """
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, f"{prefix}{f.name}.")
            continue
        rng = field_range(f)
        problem = None if rng is None or value is None else rng.problem(f"{prefix}{f.name}", value)
        if problem:
            raise ConfigError(problem)


class ConfigLayoutWarning(UserWarning):
    """A config in the layout of an earlier version was read as the current one."""


@dataclass
class MethodConfig:
    """Base of every method's config section (``method:``); subclasses add the method's own keys.

    Attributes:
        name: the pretraining method (``openjepa config`` lists the registered ones).
    """

    name: str = ""

    def check(self, cfg: Config) -> None:
        """Constraints between this method's keys and the rest of ``cfg``, called by :func:`check_config`
        after every key's own range has been checked; a method overrides it to add its own.

        Raises:
            ConfigError: naming the keys and what to change.
        """

    def check_training(self, cfg: Config) -> None:
        """What only pretraining needs (e.g. a mask recipe that always fits the patch grid), called by
        :func:`check_config` for a run about to train, not for a checkpoint read for evaluation.

        Raises:
            ConfigError: naming the keys and what to change.
        """


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
        init: weight init of the encoder and the predictor: ``reference`` (what the published runs trained
            from: normal std 0.02, no depth rescale) or ``rescaled`` (±2σ-truncated, residual projections
            of block i divided by sqrt(2·i); openjepa's earlier default).
        stem: the patch embedding: ``linear`` (one projection per patch, the published ViTs) or ``mlp``
            (the projection, then LayerNorm, GELU and a width × width layer, still per patch, so context
            tokens never see the target patches' pixels). ``mlp`` has no Hugging Face export.
    """

    name: str = "vit_tiny"
    patch_size: int = bounded(4, ge=1)
    depth: int | None = bounded(None, ge=1)
    embed_dim: int | None = bounded(None, ge=1)
    num_heads: int | None = bounded(None, ge=1)
    grad_checkpointing: bool = False
    patch_init_std: float | None = bounded(None, gt=0)
    init: Literal["reference", "rescaled"] = "reference"
    stem: Literal["linear", "mlp"] = "linear"


@dataclass
class DataConfig:
    """Where images come from and how they are cropped.

    Attributes:
        dataset: ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``folder``, ``synthetic`` or
            ``shapes`` (procedural CLEVR-like scenes, generated and cached under the data folder).
        root: data folder (null: the dataset's default search, e.g. $OPENJEPA_DATA, Debian's path).
        task: which labels the online monitor uses, for a dataset with several (shapes: ``count`` or
            ``distance``; null: its default, ``count``).
        image_size: side of the square training crops.
        channels: image channels (null: the dataset's own).
        crop_scale: RandomResizedCrop area range; [1, 1] disables cropping.
        flip: random horizontal flips.
        subset: use only the first N training images (null: all).
        num_workers: DataLoader worker processes for datasets decoded from files.
    """

    dataset: Literal["fashion_mnist", "mnist", "cifar10", "cifar100", "folder", "synthetic", "shapes"] = (
        "fashion_mnist"
    )
    root: str | None = None
    task: Literal["count", "distance"] | None = None
    image_size: int = bounded(28, ge=1)
    channels: int | None = bounded(None, ge=1)
    crop_scale: tuple[float, float] = bounded((0.3, 1.0), gt=0, le=1, ascending=True)
    flip: bool = False
    subset: int | None = bounded(None, ge=1)
    num_workers: int = bounded(4, ge=0)


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

    epochs: float = bounded(100, gt=0, le=MAX_EPOCHS)
    batch_size: int = bounded(256, ge=1)
    grad_accum: int = bounded(1, ge=1)
    lr: float = bounded(1e-3, gt=0)
    start_lr: float = bounded(2e-4, ge=0)
    final_lr: float = bounded(1e-6, ge=0)
    warmup_epochs: float = bounded(10, ge=0, le=MAX_EPOCHS)
    weight_decay: float = bounded(0.04, ge=0)
    final_weight_decay: float = bounded(0.4, ge=0)
    schedule_stretch: float = bounded(1.0, gt=0, le=1000)
    betas: tuple[float, float] = bounded((0.9, 0.999), ge=0, lt=1)
    eps: float = bounded(1e-8, gt=0)
    clip_grad: float | None = bounded(None, gt=0)


@dataclass
class RunConfig:
    """Run folder, devices, logging and checkpointing.

    Attributes:
        out_dir: run folder; running again with the same folder resumes from its latest checkpoint.
        seed: seeds the model init, the data order, the masks and the augmentations.
        device: ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:N`` (device N) or ``mps``.
        precision: ``auto`` (bf16 on GPUs and on CPUs with native bf16, else fp32), ``fp32``, ``bf16``.
        compile: ``torch.compile`` the training step's forward.
        max_steps: stop after this many optimizer steps (null: the full schedule); schedules still follow
            the full run, so a run can be done in pieces.
        log_every: steps between lines in metrics.jsonl. The step's loss stays on the device and is read
            (and checked for NaN) only at these steps (every 100 steps at the least), before checkpoints and
            at monitor passes; under ``torchrun`` the processes also agree on a stop (SIGTERM, Ctrl-C) only
            at these steps (every 100 steps at the least) and at checkpoints.
        checkpoint_every: steps between checkpoints (latest.pt); one is also written at the end.
        keep_every: steps between checkpoints kept forever (null: only latest).
        progress: show a progress bar.
        keep_best: also keep ``checkpoints/best.pt``, the best checkpoint by ``run.best_by`` (needs
            ``eval.monitor_every``).
        best_by: what ``best.pt`` follows: ``knn`` (the online kNN, highest; needs labels) or ``val_loss``
            (the validation loss of the online monitor, lowest; needs ``eval.monitor_val_loss``).
        loggers: where metrics go besides ``metrics.jsonl`` (always written): ``tensorboard``
            (``RUN/tensorboard``), ``wandb`` (``RUN/wandb``; the config, metrics, and the best and final
            checkpoints as model artifacts).
        wandb_project, wandb_name: W&B project (null: ``openjepa``) and run name (null: the folder's name).
        wandb_mode: ``offline`` (no account or network needed; upload later with ``wandb sync``),
            ``online`` or ``disabled``.
        dist_timeout: seconds a process waits for the others in a collective under ``torchrun`` before
            the run fails (a stopped or hung process); long enough for the slowest checkpoint write.
    """

    out_dir: str = "runs/default"
    seed: int = bounded(0, ge=0, le=MAX_SEED)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    max_steps: int | None = bounded(None, ge=1)
    log_every: int = bounded(10, ge=1)
    checkpoint_every: int = bounded(500, ge=1)
    keep_every: int | None = bounded(None, ge=1)
    progress: bool = True
    keep_best: bool = False
    best_by: Literal["knn", "val_loss"] = "knn"
    loggers: tuple[Literal["jsonl", "tensorboard", "wandb"], ...] = ("jsonl",)
    wandb_project: str | None = None
    wandb_name: str | None = None
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    dist_timeout: float = bounded(600.0, gt=0, le=86400)


@dataclass
class EvalConfig:
    """Evaluation of the frozen encoder, after pretraining and online during it.

    Attributes:
        knn_k: neighbours, one accuracy per value.
        knn_temperature: temperature of the weighted vote.
        train_samples, test_samples: use the first N images of each split (null: all).
        batch_size: images per forward pass.
        monitor_every: epochs between online monitors during pretraining (null: off): kNN of the evaluated
            encoder on fixed images of the training split (queries against a labelled bank; the test split
            is never used), and collapse metrics (feature std, RankMe, mean pairwise cosine, SIGReg
            statistic), logged to metrics.jsonl with a warning when collapse sets in.
            With ``monitor_val_loss``, also the method's loss on the query images (below).
        monitor_train_samples: labelled memory bank of the online kNN (the first training images).
        monitor_val_samples: query images of the online kNN (the last training images).
        monitor_k: neighbours of the online kNN.
        monitor_val_loss: each monitor pass also logs ``val_loss``, the method's loss on the query images
            with the same masks and views at every pass (no gradient; whole global batches of
            ``optim.batch_size``, or one smaller batch when there are fewer images).
        monitor_holdout: leave the query images out of pretraining, so that the online kNN and the
            validation loss see images the encoder never trained on (the stream then reads the training
            images before them: ``data.subset`` images at most).
    """

    knn_k: tuple[int, ...] = bounded((10, 20, 200), ge=1)
    knn_temperature: float = bounded(0.07, gt=0)
    train_samples: int | None = bounded(None, ge=1)
    test_samples: int | None = bounded(None, ge=1)
    batch_size: int = bounded(512, ge=1)
    monitor_every: float | None = bounded(None, gt=0, le=MAX_EPOCHS)
    monitor_train_samples: int = bounded(5000, ge=1)
    monitor_val_samples: int = bounded(1000, ge=1)
    monitor_k: int = bounded(20, ge=1)
    monitor_val_loss: bool = True
    monitor_holdout: bool = False


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


def check_config(cfg: Config, training: bool = True) -> None:
    """Every key's range (:func:`check_ranges`), then constraints between keys, which no single type can
    say, then the method's own (``MethodConfig.check``; with ``training``, also
    ``MethodConfig.check_training``: a checkpoint read for evaluation skips what only pretraining needs).

    Raises:
        ConfigError: naming the keys and what to change.
    """
    check_ranges(cfg)
    r, e = cfg.run, cfg.eval
    if not is_device_name(r.device):
        raise ConfigError(f"config key 'run.device' must be {DEVICE_NAMES}, got {r.device!r}")
    if not r.out_dir.strip():
        raise ConfigError("config key 'run.out_dir' must name the run folder, got ''")
    if r.keep_best and e.monitor_every is None:
        raise ConfigError("run.keep_best needs the online monitor: set eval.monitor_every (epochs)")
    if r.keep_best and r.best_by == "val_loss" and not e.monitor_val_loss:
        raise ConfigError(
            "run.best_by=val_loss needs the validation loss: set eval.monitor_val_loss=true "
            "(or run.best_by=knn)"
        )
    cfg.method.check(cfg)
    if training:
        cfg.method.check_training(cfg)


def check_out_dir(out_dir: str | Path) -> None:
    """Check that the run folder ``out_dir`` can be a folder: neither it nor a parent is an existing file.

    Raises:
        ConfigError: naming ``run.out_dir`` and the file in the way.
    """
    path = Path(out_dir)
    for node in (path, *path.parents):
        if node.exists():
            if not node.is_dir():
                what = "is a file" if node == path else f"is inside {str(node)!r}, which is a file"
                raise ConfigError(
                    f"config key 'run.out_dir' must name a folder, but {str(path)!r} {what}; "
                    "choose another run.out_dir"
                )
            return
