"""Bare safetensors export of an encoder: its own state dict (openjepa key names) and, beside it, a JSON of
its ``VisionTransformer`` arguments; :func:`load_safetensors_encoder` reads both.

    export_safetensors("runs/demo", "exports/demo.safetensors")     # + exports/demo.json
    encoder = load_safetensors_encoder("exports/demo.safetensors")

Needs the ``safetensors`` package (``pip install 'openjepa[hf]'``), imported when called.

Every safetensors file openjepa writes (:func:`save_safetensors`, used here and by the Hugging Face export)
carries the CRC-32 of each tensor's bytes in its metadata header (key ``openjepa.crc32``, a JSON object);
:func:`read_safetensors` checks them when present, so a damaged copy is refused instead of loaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from openjepa.interop.reference import size_name
from openjepa.methods.base import encoder_role, get_method
from openjepa.methods.loading import check_encoder_shapes, check_fits, load_checkpoint_config, load_encoder
from openjepa.models.vit import STEMS, VIT_SIZES, VisionTransformer
from openjepa.utils.io import DAMAGED_HINT, DamagedFileError, atomic_write, atomic_write_text, tensor_crc32
from openjepa.utils.state_dict import load_state_dict_strict

__all__ = [
    "export_safetensors",
    "load_safetensors_encoder",
    "read_json_object",
    "read_safetensors",
    "safetensors_module",
    "save_safetensors",
]

#: Metadata key of the per-tensor CRC-32 checksums (a JSON object name → int) in files openjepa writes.
CHECKSUM_METADATA_KEY = "openjepa.crc32"

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
    safetensors_module()
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
        "stem": vit.patch_embed.stem,
        "encoder": role,
        "source": str(ckpt_or_run),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(state, out_path)
    atomic_write_text(out_path.with_suffix(".json"), json.dumps(arch, indent=2) + "\n")
    return out_path


def load_safetensors_encoder(path: str | Path, device: str | torch.device = "cpu") -> VisionTransformer:
    """Load an encoder written by :func:`export_safetensors`, in eval mode.

    The architecture's sizes are checked against the stored tensors before the encoder is built, so a
    damaged or edited JSON cannot make it allocate more than the weights file holds.

    Args:
        path: The ``.safetensors`` file; its ``.json`` architecture file must be beside it.
        device: Where to put the encoder.

    Raises:
        FileNotFoundError: If the weights or the architecture file is missing.
        ValueError: If the JSON is not an openjepa encoder architecture, a file is unreadable or damaged,
            or the architecture disagrees with the weights (``CheckpointMismatchError``).
    """
    safetensors_module()
    path = Path(path)
    arch_path = path.with_suffix(".json")
    for needed in (path, arch_path):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} not found; export_safetensors writes the weights and the JSON")
    arch = read_json_object(arch_path)
    missing = [key for key in _VIT_ARGS if key not in arch]
    if arch.get("format") != SAFETENSORS_FORMAT or missing:
        raise ValueError(
            f"{arch_path} is not an openjepa encoder architecture: expected format {SAFETENSORS_FORMAT!r} "
            f"and the keys {list(_VIT_ARGS)} (missing {missing})"
        )
    kwargs = _vit_arguments(arch, arch_path)
    weights = read_safetensors(path)
    hidden = kwargs["embed_dim"] * kwargs["mlp_ratio"]
    check_encoder_shapes(
        weights,
        where=str(path),
        image_size=kwargs["img_size"],
        patch_size=kwargs["patch_size"],
        embed_dim=kwargs["embed_dim"],
        depth=kwargs["depth"],
        num_heads=kwargs["num_heads"],
        in_chans=kwargs["in_chans"],
        mlp_hidden_dim=int(hidden) if hidden < 2**62 else -1,
        names=_json_size_names(arch_path.name),
    )
    build = lambda: VisionTransformer(**kwargs)  # noqa: E731
    check_fits(build, weights, f"encoder of {path.name}")
    vit = build()
    load_state_dict_strict(vit, weights, f"encoder of {path.name}")
    return vit.to(device).eval()


def _json_size_names(name: str) -> dict[str, str]:
    """How :func:`check_encoder_shapes` names the sizes: by their keys in the architecture JSON."""
    keys = {"image_size": "img_size", "mlp_hidden_dim": "mlp_ratio"}
    sizes = ("image_size", "patch_size", "embed_dim", "depth", "num_heads", "in_chans", "mlp_hidden_dim")
    return {size: f"{name} {keys.get(size, size)!r}" for size in sizes}


def _vit_arguments(arch: Mapping[str, Any], arch_path: Path) -> dict[str, Any]:
    """The ``VisionTransformer`` arguments of an architecture JSON, with their types checked."""
    kwargs = {key: arch[key] for key in _VIT_ARGS}
    img = kwargs["img_size"]
    if isinstance(img, list) and len(img) == 2 and img[0] == img[1]:
        kwargs["img_size"] = img = img[0]
    for key in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
        value = kwargs[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arch_path}: {key!r} is {value!r}, expected a positive integer")
    for key in ("mlp_ratio", "norm_eps"):
        value = kwargs[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{arch_path}: {key!r} is {value!r}, expected a positive finite number")
    if not isinstance(kwargs["qkv_bias"], bool):
        raise ValueError(f"{arch_path}: 'qkv_bias' is {kwargs['qkv_bias']!r}, expected true or false")
    stem = arch.get("stem", "linear")  # files written before model.stem existed: the linear stem
    if stem not in STEMS:
        raise ValueError(f"{arch_path}: 'stem' is {stem!r}, expected one of {list(STEMS)}")
    kwargs["stem"] = stem
    return kwargs


# --------------------------------------------------------------------------------------------------
# Files: safetensors with checksums, JSON objects
# --------------------------------------------------------------------------------------------------


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``tensors`` as a safetensors file, atomically, with each tensor's CRC-32 in the metadata.

    The metadata also says ``format: pt``, which ``transformers`` expects.
    """
    st = safetensors_module()
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    sums = json.dumps({key: tensor_crc32(value) for key, value in tensors.items()}, separators=(",", ":"))
    metadata = {"format": "pt", CHECKSUM_METADATA_KEY: sums}
    path = Path(path)
    atomic_write(path, lambda f: f.write(st.save(tensors, metadata=metadata)))
    return path


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file to CPU; its checksums, when it has them, are verified.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``path`` is a folder, or the file is empty, truncated or not safetensors.
        DamagedFileError: a tensor's bytes differ from its stored checksum (a ``ValueError``).
    """
    safetensors_module()
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is a folder, not a safetensors file")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        reason = (str(err).strip().splitlines() or ["no details"])[0][:300]
        raise ValueError(
            f"could not read {path}: it is empty, truncated, or not a safetensors file ({reason}); "
            f"{DAMAGED_HINT}"
        ) from err
    if CHECKSUM_METADATA_KEY in metadata:
        _verify_safetensors(tensors, metadata[CHECKSUM_METADATA_KEY], path)
    return tensors


def _verify_safetensors(tensors: Mapping[str, torch.Tensor], stored: str, path: Path) -> None:
    try:
        expected = json.loads(stored)
    except json.JSONDecodeError:
        expected = None
    if not isinstance(expected, dict) or set(expected) != set(tensors):
        raise DamagedFileError(
            f"{path} is damaged: its {CHECKSUM_METADATA_KEY!r} metadata does not list its tensors; "
            f"{DAMAGED_HINT}"
        )
    for key, tensor in tensors.items():
        if expected[key] != tensor_crc32(tensor):
            raise DamagedFileError(
                f"{path} is damaged: the bytes of tensor {key!r} differ from the checksum stored when it was "
                f"written; {DAMAGED_HINT}"
            )


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object (a dict), or a one-line ``ValueError`` naming the file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a folder, not UTF-8, not valid JSON (with the line), or not an object; NaN and
            infinities are refused too (they are not JSON, though Python writes them).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    if not path.is_file():
        raise ValueError(f"{path} is a folder, not a JSON file")

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{path} holds {name}, which is not a JSON number")

    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse_constant)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text file ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not a {type(data).__name__}")
    return data
