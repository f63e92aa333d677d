"""The method interface: what the generic trainer, evaluation, export and reports ask of a method.

A method is an ``nn.Module`` that owns its networks and its config section. Per training step the trainer

1. hands it this process's raw images of the step's global batch and a :class:`StepContext`, and gets back
   the step's inputs (``prepare_batch``: crops, masks, augmented views… whatever the method needs), a dict
   of tensors whose first dimension is the batch, so that the trainer can cut it into micro-batches;
2. calls it on each micro-batch (``forward``), under autocast and DDP, for a :class:`StepOutput`: the loss
   and named scalar metrics, logged to ``metrics.jsonl`` as they are named;
3. after the optimizer step, calls ``after_optimizer_step`` (an EMA teacher's update, or nothing), whose
   returned numbers are logged too.

Besides the step, a method says which of its sub-modules are encoders (``encoders``, the first one is the
one evaluated and exported), how its parameters are grouped for AdamW (``param_groups``) and, for reports,
how its metrics are titled and how a config of it reads (``describe``).

Register a method with :func:`register_method` (usable as a class decorator); ``method.name`` in a config
then selects it and ``method.*`` keys are validated against its ``config_class``. ``docs/extending.md``
walks through a complete example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple, TypeVar

import torch
from torch import nn

from openjepa.config import Config, ConfigError, MethodConfig, register_method_config
from openjepa.data.augment import PretrainAugment


@dataclass(frozen=True)
class StepContext:
    """Where a step stands, for ``prepare_batch``: every random draw should be a pure function of these.

    Attributes:
        step: global optimizer step (0-based).
        seed: the run's seed (``run.seed``).
        rank: this process's rank.
        rows: this process's rows of the global batch (``slice(rank, global_batch, world_size)``).
        global_batch: images per optimizer step over all processes.
        device: where the step runs (the images are already there).
        augment: the run's crop/flip/normalise pipeline (``data.*``), drawn per global batch.
        micro_batches: how many micro-batches the trainer cuts this process's rows into
            (``optim.grad_accum``; see :meth:`Method.micro_batches`).
    """

    step: int
    seed: int
    rank: int
    rows: slice
    global_batch: int
    device: torch.device
    augment: PretrainAugment
    micro_batches: int = 1


class StepOutput(NamedTuple):
    """What ``Method.forward`` returns: the loss to minimise and detached scalar metrics to log."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class Method(nn.Module):
    """Base class of pretraining methods (see the module docstring for the protocol).

    Class attributes a subclass sets:
        name: the ``method.name`` that selects it.
        config_class: its config section, a dataclass deriving :class:`openjepa.config.MethodConfig`.
        encoders: role → attribute name of its encoders, e.g. ``{"target": "target_encoder", "context":
            "encoder"}``; the first role is the one evaluated and exported by default.
        metric_titles: readable titles of the metrics it logs, for the HTML report.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    encoders: ClassVar[dict[str, str]] = {"encoder": "encoder"}
    metric_titles: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_config(cls, cfg: Config, in_chans: int) -> Method:
        """Build the method's networks for ``cfg`` (``cfg.method`` is an instance of ``config_class``) and
        images of ``in_chans`` channels."""
        raise NotImplementedError(f"{cls.__name__} must implement from_config")

    def prepare_batch(self, images: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """This process's inputs of step ``ctx.step`` from its raw images ``(B, C, H, W)`` (uint8 or float).

        The default crops, flips and normalises them with the run's pipeline: ``{"images": (B, C, S, S)}``.
        Every tensor returned must have the batch as its first dimension.
        """
        return {"images": ctx.augment(images, ctx.step, ctx.rows, ctx.global_batch)}

    def micro_batches(self, batch: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
        """``prepare_batch``'s output cut into the ``n`` micro-batches the trainer runs one after another.

        The default cuts ``n`` consecutive, equal slices of rows. A method whose micro-batches need more
        than rows (a mask cut to each micro-batch's own length) overrides it.
        """
        size = next(iter(batch.values())).shape[0] // n
        return [{key: value[j * size : (j + 1) * size] for key, value in batch.items()} for j in range(n)]

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Loss and metrics of one (micro-)batch of ``prepare_batch``'s output."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def after_optimizer_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Called after each optimizer step ``step`` of a schedule of ``total_steps``; returns numbers to log.

        Nothing by default; a method with an EMA teacher updates it here.
        """
        return {}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: no weight decay on biases and 1-D parameters (norms, tokens).

        Only parameters that require gradients are included, in registration order. Each group carries
        ``"apply_wd"`` so that the weight-decay schedule knows which groups to update.
        """
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if name.endswith("bias") or p.ndim <= 1 else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay, "apply_wd": True},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd": False},
        ]

    def get_encoder(self, role: str | None = None) -> nn.Module:
        """The encoder playing ``role`` (None: the default, evaluated one)."""
        return getattr(self, encoder_attribute(type(self), role))

    @classmethod
    def describe(cls, cfg: MethodConfig) -> str:
        """One line naming the method and its settings, for reports and ``openjepa info``."""
        return cls.name

    @classmethod
    def resume_key(cls, cfg: MethodConfig) -> str:
        """What must not change between a run and its resumption (other keys may); the name by default."""
        return cls.name


_METHODS: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register_method(cls: M, default: bool = False) -> M:
    """Register a method class so that ``method.name`` selects it; returns the class (a decorator).

    Raises:
        ValueError: the class lacks a name or a config class, or another class has its name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"{cls!r} is not a subclass of openjepa.methods.Method")
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name` class attribute")
    if cls.config_class is MethodConfig:
        raise ValueError(f"{cls.__name__} needs a `config_class`: a dataclass deriving MethodConfig")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({_METHODS[cls.name].__name__})")
    if not cls.encoders:
        raise ValueError(f"{cls.__name__}.encoders must name at least one encoder")
    register_method_config(cls.name, cls.config_class, default=default)
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``.

    Raises:
        ConfigError: no method of that name is registered (the message lists the registered ones).
    """
    if name not in _METHODS:
        from openjepa.config import method_config_class

        method_config_class(name)  # raises the error that lists the registered methods
        raise ConfigError(f"unknown method {name!r}")
    return _METHODS[name]


def encoder_role(method: type[Method], role: str | None) -> str:
    """``role`` checked against ``method``'s encoders; None gives the default (evaluated) one.

    Raises:
        ValueError: the method has no encoder of that role; the message lists its roles.
    """
    if role is None:
        return next(iter(method.encoders))
    if role not in method.encoders:
        raise ValueError(
            f"method {method.name!r} has no {role!r} encoder; choose one of {', '.join(method.encoders)}"
        )
    return role


def encoder_attribute(method: type[Method], role: str | None) -> str:
    """The attribute (and state-dict prefix) of ``method``'s encoder ``role`` (None: the default one).

    Raises:
        ValueError: the method has no encoder of that role; the message lists its roles.
    """
    return method.encoders[encoder_role(method, role)]


def build_method(cfg: Config, in_chans: int) -> Method:
    """The method ``cfg.method.name`` with its networks built for ``cfg``."""
    return get_method(cfg.method.name).from_config(cfg, in_chans)
