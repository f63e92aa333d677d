"""The Python API, mirroring the command line.

import openjepa
summary = openjepa.pretrain("configs/demo.yaml", overrides=["run.max_steps=100"])
encoder = openjepa.load_encoder("runs/demo")          # the method's evaluated encoder, eval mode
tokens = encoder(images)                              # (B, N, D)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from openjepa.config import Config, from_dict, load_config
from openjepa.diagnostics.monitor import MonitorCallback
from openjepa.methods.loading import load_checkpoint_config, load_encoder, load_model
from openjepa.runtime.distributed import cleanup_distributed
from openjepa.train.callbacks import Callback
from openjepa.train.trainer import Trainer


def build_trainer(cfg: Config, callbacks: Iterable[Callback] = (), dataset: Dataset | None = None) -> Trainer:
    """A ``Trainer`` with the callbacks ``cfg`` asks for (the online monitor of ``eval.monitor_every``) and
    ``callbacks`` after them."""
    monitor = MonitorCallback.from_config(cfg)
    return Trainer(cfg, [*([monitor] if monitor is not None else []), *callbacks], dataset)


def pretrain(
    config: Config | str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Pretrain as ``openjepa pretrain CONFIG [overrides]`` does; returns the run summary.

    Args:
        config: a ``Config``, a YAML path, a nested dict, or None for the defaults.
        overrides: ``key.sub=value`` strings applied on top (YAML paths and None only).
    """
    if isinstance(config, Config):
        if overrides:
            raise ValueError("overrides apply to YAML configs; edit the Config object directly instead")
        cfg = config
    elif isinstance(config, dict):
        cfg = from_dict(config)
    else:
        cfg = load_config(config, overrides)
    try:
        return build_trainer(cfg).fit()
    finally:
        cleanup_distributed()


__all__ = ["build_trainer", "load_checkpoint_config", "load_encoder", "load_model", "pretrain"]
