"""Bare safetensors export of an encoder: its own state dict (openjepa key names) and, beside it, a JSON of
its ``VisionTransformer`` arguments; :func:`load_safetensors_encoder` reads both.

    export_safetensors("runs/demo", "exports/demo.safetensors")     # + exports/demo.json
    encoder = load_safetensors_encoder("exports/demo.safetensors")

Needs the ``safetensors`` package (``pip install 'openjepa[hf]'``), imported when called.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import torch

from openjepa.interop.reference import size_name
from openjepa.methods.base import encoder_role, get_method
from openjepa.methods.loading import load_checkpoint_config, load_encoder
from openjepa.models.vit import VIT_SIZES, VisionTransformer
from openjepa.utils.io import atomic_write, atomic_write_text
from openjepa.utils.state_dict import load_state_dict_strict

__all__ = ["export_safetensors", "load_safetensors_encoder", "safetensors_module"]

SAFETENSORS_FORMAT = "openjepa-vit-encoder"
_VIT_ARGS = (
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "norm_eps",
)


def safetensors_module() -> ModuleType:
    try:
        import safetensors.torch
    except ImportError as err:
        raise ImportError(
            "this needs the safetensors package: pip install 'openjepa[hf]' (or pip install safetensors)"
        ) from err
    return safetensors.torch


def export_safetensors(ckpt_or_run: str | Path, out_path: str | Path, encoder: str | None = None) -> Path:
    """Write an encoder's weights as safetensors (openjepa key names) and its architecture as JSON beside it.

    Args:
        ckpt_or_run: An openjepa checkpoint file or run folder.
        out_path: The weights file; must end in ``.safetensors``. The architecture goes to the same path
            with ``.json`` (``encoder.safetensors`` → ``encoder.json``).
        encoder: the encoder's role in its method (None: the one it evaluates; I-JEPA: the EMA target).

    Returns:
        ``out_path``.

    Example:
        >>> export_safetensors("runs/demo", "exports/demo.safetensors")
        >>> encoder = load_safetensors_encoder("exports/demo.safetensors")
    """
    st = safetensors_module()
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"{out_path} must end in .safetensors (the architecture goes beside it as .json)")
    _, cfg = load_checkpoint_config(ckpt_or_run)
    role = encoder_role(get_method(cfg.method.name), encoder)
    vit = load_encoder(ckpt_or_run, role)
    height, width = vit.patch_embed.img_size
    state = vit.state_dict()
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    arch = {
        "format": SAFETENSORS_FORMAT,
        "img_size": height if height == width else [height, width],
        "patch_size": vit.patch_embed.patch_size,
        "in_chans": vit.patch_embed.in_chans,
        "embed_dim": vit.embed_dim,
        "depth": vit.depth,
        "num_heads": vit.num_heads,
        "mlp_ratio": VIT_SIZES[size_name(vit.embed_dim, hidden)].mlp_ratio,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "norm_eps": vit.norm.eps,
        "encoder": role,
        "source": str(ckpt_or_run),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state.items()}
    atomic_write(out_path, lambda f: f.write(st.save(tensors, metadata={"format": "pt"})))
    atomic_write_text(out_path.with_suffix(".json"), json.dumps(arch, indent=2) + "\n")
    return out_path


def load_safetensors_encoder(path: str | Path, device: str | torch.device = "cpu") -> VisionTransformer:
    """Load an encoder written by :func:`export_safetensors`, in eval mode.

    Args:
        path: The ``.safetensors`` file; its ``.json`` architecture file must be beside it.
        device: Where to put the encoder.

    Raises:
        FileNotFoundError: If the weights or the architecture file is missing.
        ValueError: If the JSON is not an openjepa encoder architecture.
        CheckpointMismatchError: If the weights do not fit the architecture.
    """
    st = safetensors_module()
    path = Path(path)
    arch_path = path.with_suffix(".json")
    for needed in (path, arch_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found; export_safetensors writes the weights and the JSON")
    arch = json.loads(arch_path.read_text(encoding="utf-8"))
    missing = [key for key in _VIT_ARGS if key not in arch]
    if arch.get("format") != SAFETENSORS_FORMAT or missing:
        raise ValueError(
            f"{arch_path} is not an openjepa encoder architecture: expected format {SAFETENSORS_FORMAT!r} "
            f"and the keys {list(_VIT_ARGS)} (missing {missing})"
        )
    vit = VisionTransformer(**{key: arch[key] for key in _VIT_ARGS})
    load_state_dict_strict(vit, st.load_file(path), f"encoder of {path.name}")
    return vit.to(device).eval()
