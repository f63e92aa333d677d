"""Methods and encoders from checkpoints: what evaluation, export, pictures and the Python API load.

encoder = load_encoder("runs/demo")                 # the method's evaluated encoder, eval mode
method = load_model("runs/demo")                    # every network of the run, eval mode
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from openjepa.config import Config
from openjepa.methods.base import Method, build_method, encoder_attribute, get_method
from openjepa.models.build import build_encoder
from openjepa.models.vit import VisionTransformer
from openjepa.utils.run_folder import checkpoint_config, find_checkpoint, read_checkpoint
from openjepa.utils.state_dict import load_state_dict_strict, sub_state_dict


def load_checkpoint_config(path: str | Path) -> tuple[dict[str, Any], Config]:
    """The checkpoint dict of a file or run folder (in the current layout) and the config it was trained
    with."""
    ckpt = read_checkpoint(find_checkpoint(path))
    return ckpt, checkpoint_config(ckpt)


def _in_chans(state: dict[str, torch.Tensor], attribute: str) -> int:
    return int(state[f"{attribute}.patch_embed.proj.weight"].shape[1])


def load_encoder(
    path: str | Path, which: str | None = None, device: str | torch.device = "cpu"
) -> VisionTransformer:
    """The trained encoder of a checkpoint file or run folder, in eval mode.

    Args:
        path: a checkpoint file or a run folder (its latest checkpoint).
        which: the encoder's role in its method (I-JEPA: ``"target"``, the EMA encoder, or ``"context"``);
            None: the one the method evaluates.
        device: where to put it.

    Raises:
        ValueError: the method has no encoder of that role (the message lists its roles).
    """
    ckpt, cfg = load_checkpoint_config(path)
    attribute = encoder_attribute(get_method(cfg.method.name), which)
    encoder = build_encoder(cfg.model, cfg.data.image_size, _in_chans(ckpt["model"], attribute))
    load_state_dict_strict(encoder, sub_state_dict(ckpt["model"], attribute), f"{which or attribute} encoder")
    return encoder.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Method:
    """The whole method (every network, e.g. encoder, predictor and target encoder) of a checkpoint, in
    eval mode."""
    ckpt, cfg = load_checkpoint_config(path)
    attribute = encoder_attribute(get_method(cfg.method.name), None)
    method = build_method(cfg, _in_chans(ckpt["model"], attribute))
    load_state_dict_strict(method, ckpt["model"], "model")
    return method.to(device).eval()
