"""The Python API, mirroring the command line.

import openjepa
summary = openjepa.pretrain("configs/demo.yaml", overrides=["run.max_steps=100"])
encoder = openjepa.load_encoder("runs/demo")          # frozen target encoder, eval mode
tokens = encoder(images)                              # (B, N, D)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from openjepa.config import Config, from_dict, load_config
from openjepa.models.build import build_encoder, build_model
from openjepa.models.vit import VisionTransformer
from openjepa.train.checkpoint import find_checkpoint, load_checkpoint, load_state_dict_strict

ENCODERS = ("target", "context")


def pretrain(
    config: Config | str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> dict:
    """Pretrain as ``openjepa pretrain CONFIG [overrides]`` does; returns the run summary.

    Args:
        config: a ``Config``, a YAML path, a nested dict, or None for the defaults.
        overrides: ``key.sub=value`` strings applied on top (YAML paths and None only).
    """
    from openjepa.train.distributed import cleanup_distributed
    from openjepa.train.loop import Trainer

    if isinstance(config, Config):
        if overrides:
            raise ValueError("overrides apply to YAML configs; edit the Config object directly instead")
        cfg = config
    elif isinstance(config, dict):
        cfg = from_dict(config)
    else:
        cfg = load_config(config, overrides)
    try:
        return Trainer(cfg).fit()
    finally:
        cleanup_distributed()


def load_checkpoint_config(path: str | Path) -> tuple[dict[str, Any], Config]:
    """The checkpoint dict of a file or run folder and the config it was trained with."""
    ckpt = load_checkpoint(find_checkpoint(path))
    return ckpt, from_dict(ckpt["config"])


def _in_chans(state: dict[str, torch.Tensor], prefix: str) -> int:
    return int(state[f"{prefix}patch_embed.proj.weight"].shape[1])


def load_encoder(
    path: str | Path, which: str = "target", device: str | torch.device = "cpu"
) -> VisionTransformer:
    """The trained encoder of a checkpoint file or run folder, in eval mode.

    Args:
        path: a checkpoint file or a run folder (its latest checkpoint).
        which: ``"target"`` (the EMA encoder, the one to evaluate) or ``"context"``.
        device: where to put it.
    """
    if which not in ENCODERS:
        raise ValueError(f"which must be one of {ENCODERS}, got {which!r}")
    ckpt, cfg = load_checkpoint_config(path)
    prefix = "target_encoder." if which == "target" else "encoder."
    state = {k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    encoder = build_encoder(cfg, _in_chans(ckpt["model"], prefix))
    load_state_dict_strict(encoder, state, f"{which} encoder")
    return encoder.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """The whole JEPA model (encoder, predictor, target encoder) of a checkpoint, in eval mode."""
    ckpt, cfg = load_checkpoint_config(path)
    model = build_model(cfg, _in_chans(ckpt["model"], "encoder."))
    load_state_dict_strict(model, ckpt["model"], "model")
    return model.to(device).eval()
