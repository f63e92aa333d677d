"""Export openjepa encoders for Hugging Face ``transformers`` (``IJepaModel``), and import ``IJepaModel``
checkpoints as openjepa run folders.

Key names, openjepa ``VisionTransformer`` → ``IJepaModel``, in the layout of the converted I-JEPA
checkpoints on the Hugging Face Hub (transformers 4.x loads it as it is; transformers 5 writes the same
layout with ``save_pretrained`` and renames it internally when loading)::

    patch_embed.proj     → embeddings.patch_embeddings.projection
    pos_embed            → embeddings.position_embeddings
    blocks.i.norm1       → encoder.layer.i.layernorm_before
    blocks.i.attn.qkv    → encoder.layer.i.attention.attention.{query, key, value}   (rows split in thirds)
    blocks.i.attn.proj   → encoder.layer.i.attention.output.dense
    blocks.i.norm2       → encoder.layer.i.layernorm_after
    blocks.i.mlp.fc1     → encoder.layer.i.intermediate.dense
    blocks.i.mlp.fc2     → encoder.layer.i.output.dense
    norm                 → layernorm

On the same weights ``IJepaModel`` computes the same function as openjepa's encoder (patch conv plus
position embeddings, no CLS token, pre-norm blocks with exact GELU, a final LayerNorm): its
``last_hidden_state`` is openjepa's tokens. Where they differ:

- its position embeddings are a learnable ``Parameter``; openjepa's are a fixed buffer. Values are copied.
- ``IJepaConfig`` defaults to ``layer_norm_eps=1e-12``; I-JEPA and openjepa use 1e-6, which the export
  writes. Importing a config with another eps warns (openjepa builds 1e-6).
- ``interpolate_pos_encoding=True`` resizes its position embeddings (bicubic) for other image sizes;
  openjepa encodes the size it was built for and refuses others.
- it has an optional pooler (first token → dense → tanh), off by default, that I-JEPA never trained; it
  is not exported, and dropped (with a warning) on import, like a classification head.
- it always embeds every patch; openjepa can encode a subset (the context of a JEPA step).

A Hugging Face checkpoint holds one encoder and no predictor. ``import_hf`` writes it as both encoders
of the run folder and writes no predictor: ``load_encoder``, ``openjepa info`` and ``openjepa eval knn``
work; ``load_model`` reports the missing predictor keys.

The bare export without Hugging Face's key names is :mod:`openjepa.interop.safetensors`.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from openjepa.interop.reference import (
    REFERENCE_METHOD,
    IJepaArchitecture,
    check_state_dict,
    save_imported_run,
)
from openjepa.interop.safetensors import (
    read_json_object,
    read_safetensors,
    safetensors_module,
    save_safetensors,
)
from openjepa.methods.base import get_method
from openjepa.methods.loading import check_encoder_shapes, count_blocks, load_encoder
from openjepa.models.build import build_encoder
from openjepa.models.vit import VisionTransformer
from openjepa.utils.io import atomic_write_text
from openjepa.utils.state_dict import CheckpointMismatchError

__all__ = [
    "export_hf",
    "from_hf_state_dict",
    "hf_architecture",
    "hf_config",
    "hf_key_map",
    "import_hf",
    "to_hf_state_dict",
]

HF_CONFIG_NAME = "config.json"
HF_WEIGHTS_NAME = "model.safetensors"
HF_INDEX_NAME = "model.safetensors.index.json"

_HF_BLOCK_NAMES = (
    ("norm1", "layernorm_before"),
    ("attn.proj", "attention.output.dense"),
    ("norm2", "layernorm_after"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)
_QKV_PARTS = ("query", "key", "value")
_QKV_RE = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_HF_QKV_RE = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")
_HF_BASE_PREFIX = "ijepa."  # IJepaForImageClassification keeps the encoder under this name
_HF_POOLER_PREFIX = "pooler."
_HF_DEFAULT_EPS = 1e-12  # IJepaConfig's default when config.json does not say
_OPENJEPA_EPS = 1e-6
#: config.json keys of the sizes, as :func:`openjepa.methods.loading.check_encoder_shapes` names them.
_HF_SIZE_KEYS = {
    "image_size": "image_size",
    "patch_size": "patch_size",
    "embed_dim": "hidden_size",
    "depth": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "in_chans": "num_channels",
    "mlp_hidden_dim": "intermediate_size",
}


# --------------------------------------------------------------------------------------------------
# Key names and config
# --------------------------------------------------------------------------------------------------


def hf_key_map(depth: int) -> dict[str, str]:
    """openjepa encoder key → ``IJepaModel`` key, for every tensor except the fused ``blocks.i.attn.qkv``."""
    modules = {"patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm"}
    for i in range(depth):
        for ours, theirs in _HF_BLOCK_NAMES:
            modules[f"blocks.{i}.{ours}"] = f"encoder.layer.{i}.{theirs}"
    keys = {"pos_embed": "embeddings.position_embeddings"}
    for ours, theirs in modules.items():
        keys.update({f"{ours}.weight": f"{theirs}.weight", f"{ours}.bias": f"{theirs}.bias"})
    return keys


def to_hf_state_dict(state: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """An openjepa encoder state dict in ``IJepaModel`` key names (qkv split into query, key, value)."""
    keys = hf_key_map(depth)
    out = {}
    for key, value in state.items():
        match = _QKV_RE.match(key)
        if match:
            block, kind = match.groups()
            # Attention reads the qkv output as (B, L, 3, heads, head_dim): rows [q; k; v], D rows each,
            # heads contiguous within each, which is the layout of IJepaModel's separate projections.
            for part, chunk in zip(_QKV_PARTS, value.chunk(3, dim=0), strict=True):  # each (D, D) or (D,)
                out[f"encoder.layer.{block}.attention.attention.{part}.{kind}"] = chunk.clone()
        elif key in keys:
            out[keys[key]] = value
        else:
            raise ValueError(f"no Hugging Face name for encoder key {key!r}")
    return out


def from_hf_state_dict(state: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """An ``IJepaModel`` state dict in openjepa encoder key names (query, key, value fused into qkv).

    Keys with no openjepa name are kept as they are, so a strict load reports them as unexpected.
    """
    inverse = {theirs: ours for ours, theirs in hf_key_map(depth).items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _HF_QKV_RE.match(key)
        if match:
            block, part, kind = match.groups()
            qkv.setdefault(f"blocks.{block}.attn.qkv.{kind}", {})[part] = value
        else:
            out[inverse.get(key, key)] = value
    for key, parts in qkv.items():
        missing = [part for part in _QKV_PARTS if part not in parts]
        if missing:
            raise CheckpointMismatchError(f"the Hugging Face checkpoint lacks the {missing} parts of {key}")
        shapes = {part: tuple(parts[part].shape) for part in _QKV_PARTS}
        if len(set(shapes.values())) != 1:
            raise CheckpointMismatchError(
                f"the query, key and value parts of {key} differ in shape: {shapes}"
            )
        out[key] = torch.cat([parts[part] for part in _QKV_PARTS], dim=0)  # (3D, D) or (3D,)
    return out


def hf_config(encoder: VisionTransformer) -> dict[str, Any]:
    """The ``config.json`` of an ``IJepaModel`` with the architecture of ``encoder``."""
    state = encoder.state_dict()
    height, width = encoder.patch_embed.img_size
    return {
        "architectures": ["IJepaModel"],
        "model_type": "ijepa",
        "hidden_size": encoder.embed_dim,
        "num_hidden_layers": encoder.depth,
        "num_attention_heads": encoder.num_heads,
        "intermediate_size": state["blocks.0.mlp.fc1.weight"].shape[0],
        "hidden_act": "gelu",  # exact (erf) GELU, as nn.GELU()
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": encoder.norm.eps,
        "image_size": height if height == width else [height, width],
        "patch_size": encoder.patch_embed.patch_size,
        "num_channels": encoder.patch_embed.in_chans,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
    }


def hf_architecture(config: Mapping[str, Any]) -> IJepaArchitecture:
    """The architecture described by an ``IJepaModel`` ``config.json``.

    Raises:
        ValueError: If it is not an I-JEPA config, a size is not a positive integer, or it describes
            something openjepa does not build (another activation, no qkv bias, non-square images or
            patches, a width not divisible by the heads).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"an I-JEPA config must be a JSON object, not a {type(config).__name__}")
    if config.get("model_type") != "ijepa":
        raise ValueError(f"not an I-JEPA config: model_type is {config.get('model_type')!r}, not 'ijepa'")
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size")
    missing = [key for key in (*required, "patch_size") if key not in config]
    if missing:
        raise ValueError(f"the I-JEPA config lacks {missing}")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act is {config['hidden_act']!r}; openjepa's MLP uses exact GELU ('gelu')")
    if not config.get("qkv_bias", True):
        raise ValueError("qkv_bias is false; openjepa's encoder always has a qkv bias")
    eps = config.get("layer_norm_eps", _HF_DEFAULT_EPS)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"layer_norm_eps is {eps!r}, expected a positive number")
    if eps != _OPENJEPA_EPS:
        warnings.warn(
            f"layer_norm_eps is {eps}; openjepa builds 1e-6 (I-JEPA's value), so outputs differ slightly",
            stacklevel=2,
        )
    image_size = _square(config["image_size"], "image_size")
    patch_size = _square(config["patch_size"], "patch_size")
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    sizes = {key: _positive_int(config, key) for key in ("hidden_size", "num_hidden_layers")}
    sizes |= {key: _positive_int(config, key) for key in ("num_attention_heads", "intermediate_size")}
    if sizes["hidden_size"] % sizes["num_attention_heads"]:
        raise ValueError(
            f"hidden_size {sizes['hidden_size']} is not divisible by num_attention_heads "
            f"{sizes['num_attention_heads']}"
        )
    return IJepaArchitecture(
        image_size=image_size,
        patch_size=patch_size,
        in_chans=_positive_int({"num_channels": 3, **config}, "num_channels"),
        embed_dim=sizes["hidden_size"],
        depth=sizes["num_hidden_layers"],
        num_heads=sizes["num_attention_heads"],
        mlp_hidden_dim=sizes["intermediate_size"],
    )


def _positive_int(config: Mapping[str, Any], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} is {value!r}; expected a positive integer")
    return value


def _square(value: Any, name: str) -> int:
    if isinstance(value, list) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if isinstance(value, list):
        raise ValueError(f"{name} is {value}; openjepa supports square images and patches only")
    return _positive_int({name: value}, name)


# --------------------------------------------------------------------------------------------------
# Hugging Face export and import
# --------------------------------------------------------------------------------------------------


def export_hf(ckpt_or_run: str | Path, out_dir: str | Path, encoder: str | None = None) -> Path:
    """Write an encoder as a folder that ``transformers.IJepaModel.from_pretrained`` loads.

    The folder gets ``config.json`` and ``model.safetensors`` (existing files of those names are replaced).

    Args:
        ckpt_or_run: An openjepa checkpoint file or run folder.
        out_dir: The folder to write (created if needed).
        encoder: the encoder's role in its method (None: the one it evaluates; I-JEPA: the EMA target).

    Returns:
        ``out_dir``.

    Example:
        >>> export_hf("runs/demo", "hf/demo")
        >>> model = transformers.IJepaModel.from_pretrained("hf/demo")
        >>> tokens = model(pixel_values=images).last_hidden_state  # (B, N, D)
    """
    safetensors_module()
    vit = load_encoder(ckpt_or_run, encoder)
    if vit.patch_embed.stem != "linear":
        raise ValueError(
            f"{ckpt_or_run} was trained with model.stem={vit.patch_embed.stem}, which Hugging Face's "
            "IJepaModel has no layers for; export it with `--format safetensors` instead"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(to_hf_state_dict(vit.state_dict(), vit.depth), out_dir / HF_WEIGHTS_NAME)
    atomic_write_text(out_dir / HF_CONFIG_NAME, json.dumps(hf_config(vit), indent=2) + "\n")
    return out_dir


def import_hf(hf_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert an ``IJepaModel`` folder (``config.json`` + safetensors weights) into an openjepa run folder.

    The encoder becomes both openjepa encoders; there is no predictor (see the module docstring). An
    ``IJepaForImageClassification`` folder works too: its classifier head is dropped with a warning.

    Args:
        hf_dir: A local folder written by ``save_pretrained`` or :func:`export_hf` (download Hub models
            first, e.g. with ``huggingface_hub.snapshot_download``).
        out_dir: The run folder to create; must not hold a checkpoint yet.

    Returns:
        The written checkpoint, ``out_dir/checkpoints/latest.pt``.

    Raises:
        FileNotFoundError: ``hf_dir`` lacks ``config.json`` or the weights.
        ValueError: a file is unreadable or damaged, or ``config.json`` is invalid or disagrees with the
            weights (checked before anything is built); the message names the file and the key.
    """
    hf_dir = Path(hf_dir)
    config_path = hf_dir / HF_CONFIG_NAME
    if not config_path.exists():
        raise FileNotFoundError(f"{hf_dir} has no {HF_CONFIG_NAME}; pass a folder written by save_pretrained")
    config = read_json_object(config_path)
    try:
        arch = hf_architecture(config)
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from None
    hf_state = _encoder_tensors(_read_hf_weights(hf_dir))
    stored_layers = count_blocks(hf_state, "encoder.layer")
    if stored_layers != arch.depth:  # checked first: the key map below has an entry per layer
        raise CheckpointMismatchError(
            f"{config_path}: num_hidden_layers={arch.depth} disagrees with the weights, which hold "
            f"{stored_layers} layers (encoder.layer.N); the folder is damaged or its files do not belong "
            "together"
        )
    state = from_hf_state_dict(hf_state, arch.depth)
    check_encoder_shapes(
        state,
        where=str(config_path),
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        in_chans=arch.in_chans,
        mlp_hidden_dim=arch.mlp_hidden_dim,
        names=_HF_SIZE_KEYS,
    )
    cfg = arch.to_config()
    build = lambda: build_encoder(cfg.model, cfg.data.image_size, arch.in_chans)  # noqa: E731
    check_state_dict(build, state, "encoder (renamed Hugging Face keys)")
    encoders = get_method(REFERENCE_METHOD).encoders.values()
    model = {f"{sub}.{key}": value for sub in encoders for key, value in state.items()}
    imported_from = {
        "format": "transformers-ijepa",
        "path": str(hf_dir),
        "predictor": "none: a Hugging Face I-JEPA checkpoint holds only the encoder",
    }
    return save_imported_run(out_dir, model, arch, imported_from)


def _read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    single, index = hf_dir / HF_WEIGHTS_NAME, hf_dir / HF_INDEX_NAME
    if single.exists():
        return read_safetensors(single)
    if index.exists():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{index}: 'weight_map' must map tensor names to shard file names")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if Path(shard).name != shard:  # a shard must be a file of this folder, not a path elsewhere
                raise ValueError(f"{index}: shard {shard!r} is not a file name in {hf_dir}")
        return {key: value for shard in shards for key, value in read_safetensors(hf_dir / shard).items()}
    raise FileNotFoundError(
        f"{hf_dir} has no {HF_WEIGHTS_NAME} (nor {HF_INDEX_NAME}); openjepa reads safetensors only. Convert "
        "other weights with transformers: IJepaModel.from_pretrained(DIR).save_pretrained(NEW_DIR)"
    )


def _encoder_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's tensors without a wrapper prefix; heads (classifier, pooler) dropped with a warning."""
    if any(key.startswith(_HF_BASE_PREFIX) for key in state):
        kept = {k[len(_HF_BASE_PREFIX) :]: v for k, v in state.items() if k.startswith(_HF_BASE_PREFIX)}
        dropped = [key for key in state if not key.startswith(_HF_BASE_PREFIX)]
    else:
        kept, dropped = dict(state), []
    dropped += [key for key in kept if key.startswith(_HF_POOLER_PREFIX)]
    if dropped:
        warnings.warn(f"ignoring {len(dropped)} tensors outside the encoder: {dropped[:6]}", stacklevel=3)
    return {key: value for key, value in kept.items() if not key.startswith(_HF_POOLER_PREFIX)}
