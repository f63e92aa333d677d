"""Methods and encoders from checkpoints: what evaluation, export, pictures and the Python API load.

encoder = load_encoder("runs/demo")                 # the method's evaluated encoder, eval mode
method = load_model("runs/demo")                    # every network of the run, eval mode

A checkpoint's config says how big the networks are, and a damaged or hostile file can claim anything
(``embed_dim: 1000000`` would ask for terabytes). So nothing is built before the config's sizes have been
checked against the tensors actually stored in the file (:func:`check_encoder_shapes`, and the predictor's
for JEPA methods); an encoder is also checked key by key on the ``meta`` device, which allocates no
weights (:func:`check_fits`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openjepa.config import Config
from openjepa.methods.base import Method, build_method, encoder_attribute, get_method
from openjepa.models.build import build_encoder
from openjepa.models.vit import VIT_SIZES, VisionTransformer
from openjepa.utils.run_folder import checkpoint_config, find_checkpoint, read_checkpoint
from openjepa.utils.state_dict import (
    CheckpointMismatchError,
    load_state_dict_strict,
    nonfinite_names,
    sub_state_dict,
)

#: How :func:`check_encoder_shapes` names each size in its messages, by default the config keys.
CONFIG_SIZE_NAMES = {
    "image_size": "data.image_size",
    "patch_size": "model.patch_size",
    "embed_dim": "model.embed_dim",
    "depth": "model.depth",
    "num_heads": "model.num_heads",
    "in_chans": "data.channels",
    "mlp_hidden_dim": "the MLP width of model.name",
}
_EDITED = "the file is damaged or its config does not belong to its weights"


def load_checkpoint_config(path: str | Path) -> tuple[dict[str, Any], Config]:
    """The checkpoint dict of a file or run folder (in the current layout) and the config it was trained
    with.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the file is unreadable or damaged, or has no valid config (the message names it).
    """
    file = find_checkpoint(path)
    ckpt = read_checkpoint(file)
    return ckpt, checkpoint_config(ckpt, file)


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
        ValueError: the method has no encoder of that role (the message lists its roles), or the
            config's sizes disagree with the stored tensors (nothing is built then).
    """
    file = find_checkpoint(path)
    ckpt, cfg = load_checkpoint_config(file)
    attribute = encoder_attribute(get_method(cfg.method.name), which)
    state = sub_state_dict(_model_state(ckpt, file), attribute)
    in_chans = check_config_shapes(state, cfg, f"checkpoint {file} ({attribute})")
    build = lambda: build_encoder(cfg.model, cfg.data.image_size, in_chans)  # noqa: E731
    name = f"{which or attribute} encoder of {file}"
    check_fits(build, state, name)
    bad = nonfinite_names(list(state.items()))
    if bad:  # an evaluation of such weights would print a number that means nothing
        raise ValueError(
            f"the {name} holds NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); it cannot "
            "be evaluated: use an earlier checkpoint of the run"
        )
    encoder = build()
    load_state_dict_strict(encoder, state, name)
    return encoder.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Method:
    """The whole method (every network, e.g. encoder, predictor and target encoder) of a checkpoint, in
    eval mode.

    Raises:
        ValueError: the config's sizes disagree with the stored tensors (nothing is built then).
    """
    file = find_checkpoint(path)
    ckpt, cfg = load_checkpoint_config(file)
    model = _model_state(ckpt, file)
    method_class = get_method(cfg.method.name)
    in_chans = 0
    for attribute in dict.fromkeys(method_class.encoders.values()):
        in_chans = check_config_shapes(
            sub_state_dict(model, attribute), cfg, f"checkpoint {file} ({attribute})"
        )
    _check_predictor_shapes(model, cfg, f"checkpoint {file} (predictor)")
    # every other config-sized network (a C-JEPA projector) is checked key by key on the meta device
    check_fits(lambda: build_method(cfg, in_chans), model, "model")
    method = build_method(cfg, in_chans)
    load_state_dict_strict(method, model, "model")
    return method.to(device).eval()


# --------------------------------------------------------------------------------------------------
# Sizes checked before anything is built
# --------------------------------------------------------------------------------------------------


def check_config_shapes(state: Mapping[str, Any], cfg: Config, where: str) -> int:
    """:func:`check_encoder_shapes` of an encoder state dict against the sizes ``cfg.model`` builds.

    Returns:
        The encoder's input channels, read from its patch embedding.
    """
    if cfg.model.name not in VIT_SIZES:
        raise ValueError(f"{where}: unknown model.name {cfg.model.name!r}; choose one of {sorted(VIT_SIZES)}")
    size = VIT_SIZES[cfg.model.name]
    embed_dim = cfg.model.embed_dim if cfg.model.embed_dim is not None else size.embed_dim
    return check_encoder_shapes(
        state,
        where=where,
        image_size=cfg.data.image_size,
        patch_size=cfg.model.patch_size,
        embed_dim=embed_dim,
        depth=cfg.model.depth if cfg.model.depth is not None else size.depth,
        num_heads=cfg.model.num_heads if cfg.model.num_heads is not None else size.num_heads,
        in_chans=cfg.data.channels,
        mlp_hidden_dim=int(embed_dim * size.mlp_ratio) if isinstance(embed_dim, int) else None,
    )


def check_encoder_shapes(
    state: Mapping[str, Any],
    *,
    where: str,
    image_size: Any,
    patch_size: Any,
    embed_dim: Any,
    depth: Any,
    num_heads: Any,
    in_chans: Any = None,
    mlp_hidden_dim: Any = None,
    names: Mapping[str, str] = CONFIG_SIZE_NAMES,
) -> int:
    """Check a ``VisionTransformer`` description against the encoder tensors stored for it.

    Every size must be a positive int, the width divisible by the heads, the image by the patch, and each
    size must be the one the stored tensors have: patch embedding ``(D, C, p, p)``, position embedding
    ``(1, (image / p)², D)``, one ``blocks.i.`` group per block, ``qkv`` ``(3D, D)``, ``fc1``
    ``(hidden, D)``. Every tensor must also have the bytes its shape claims (a tensor expanded with zero
    strides could claim any size). Nothing is allocated, so this is safe on any file.

    Args:
        state: The encoder's state dict (openjepa key names, no prefix).
        where: The file (and part of it) for the messages.
        image_size, patch_size, embed_dim, depth, num_heads: The sizes the description claims.
        in_chans: Input channels, or None to take them from the patch embedding.
        mlp_hidden_dim: MLP hidden width, or None to not check it.
        names: What each size is called where it came from (config keys by default).

    Returns:
        The input channels of the stored patch embedding.

    Raises:
        ValueError: an implausible size; ``CheckpointMismatchError`` (a ``ValueError``) where a size
            disagrees with the stored tensors. The message names ``where`` and the key.
    """
    sizes = {"image_size": image_size, "patch_size": patch_size, "embed_dim": embed_dim, "depth": depth}
    sizes |= {"num_heads": num_heads, "in_chans": in_chans, "mlp_hidden_dim": mlp_hidden_dim}
    for key, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}: {names[key]} is {value!r}, expected a positive integer")
    if embed_dim % num_heads:
        raise ValueError(
            f"{where}: {names['embed_dim']}={embed_dim} is not divisible by {names['num_heads']}={num_heads}"
        )
    if image_size % patch_size:
        raise ValueError(
            f"{where}: {names['image_size']}={image_size} is not a multiple of "
            f"{names['patch_size']}={patch_size}"
        )
    check_tensors(state, where)

    def disagree(stored: str, claim: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(f"{where}: {claim} disagrees with the stored {stored}; {_EDITED}")

    proj = _stored_shape(state, "patch_embed.proj.weight", where)
    if len(proj) != 4 or proj[0] != embed_dim:
        raise disagree(f"'patch_embed.proj.weight' {proj}", f"{names['embed_dim']}={embed_dim}")
    if proj[2:] != (patch_size, patch_size):
        raise disagree(f"'patch_embed.proj.weight' {proj}", f"{names['patch_size']}={patch_size}")
    if in_chans is not None and proj[1] != in_chans:
        raise disagree(f"'patch_embed.proj.weight' {proj}", f"{names['in_chans']}={in_chans}")
    pos = _stored_shape(state, "pos_embed", where)
    num_patches = (image_size // patch_size) ** 2
    if pos != (1, num_patches, embed_dim):
        claim = f"{names['image_size']}={image_size} ({num_patches} patches of {patch_size} px)"
        raise disagree(f"'pos_embed' {pos}", claim)
    stored_depth = count_blocks(state, "blocks")
    if stored_depth != depth:
        raise disagree(f"blocks ({stored_depth} found)", f"{names['depth']}={depth}")
    qkv = _stored_shape(state, "blocks.0.attn.qkv.weight", where)
    if qkv != (3 * embed_dim, embed_dim):
        raise disagree(f"'blocks.0.attn.qkv.weight' {qkv}", f"{names['embed_dim']}={embed_dim}")
    fc1 = _stored_shape(state, "blocks.0.mlp.fc1.weight", where)
    if mlp_hidden_dim is not None and fc1 != (mlp_hidden_dim, embed_dim):
        claim = f"{names['mlp_hidden_dim']} ({mlp_hidden_dim})"
        raise disagree(f"'blocks.0.mlp.fc1.weight' {fc1}", claim)
    return int(proj[1])


def check_tensors(state: Mapping[str, Any], where: str) -> None:
    """Every value of ``state`` is a tensor with the bytes its shape claims.

    ``torch.load`` rebuilds a tensor from a storage, a shape and strides; zero strides let a few stored
    bytes pose as a tensor of any shape, and shapes are what the architecture is read from.

    Raises:
        ValueError: naming ``where`` and the first bad key.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{where}: expected a state dict, got a {type(state).__name__}; {_EDITED}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: {key!r} is a {type(value).__name__}, not a tensor; {_EDITED}")
        if value.device.type == "meta" or value.layout != torch.strided:
            continue
        need = value.numel() * value.element_size()
        have = value.untyped_storage().nbytes() - value.storage_offset() * value.element_size()
        if need > have:
            raise ValueError(
                f"{where}: tensor {key!r} has shape {tuple(value.shape)} ({need} bytes) but only {have} "
                f"stored bytes behind it (an expanded or crafted tensor); {_EDITED}"
            )


def count_blocks(state: Mapping[str, Any], prefix: str) -> int:
    """How many ``{prefix}.i.`` groups ``state`` holds, counted as 1 + the largest index (0 if none)."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = [int(m.group(1)) for key in state if (m := pattern.match(key))]
    return max(indices) + 1 if indices else 0


def check_fits(build: Callable[[], nn.Module], state: Mapping[str, Any], name: str) -> None:
    """Strict key and shape check of ``state`` against the module ``build()`` makes, allocating no weights.

    The module is built on the ``meta`` device, so checking a ViT-g costs no memory. Call it only after the
    sizes ``build`` uses were checked (a config claiming 10⁷ blocks would still create 10⁷ modules).

    Raises:
        CheckpointMismatchError: listing missing, unexpected and mis-shaped keys.
    """
    with torch.device("meta"):
        module = build()
    load_state_dict_strict(module, {key: value.to("meta") for key, value in state.items()}, name)


def _model_state(ckpt: Mapping[str, Any], file: Path) -> Mapping[str, Any]:
    model = ckpt.get("model")
    if model is None:
        keys = ", ".join(sorted(map(str, ckpt))[:8]) or "none"
        raise ValueError(
            f"checkpoint {file} has no 'model' entry (its keys: {keys}); it holds no weights to load"
        )
    check_tensors(model, f"checkpoint {file} ('model')")
    return model


def _check_predictor_shapes(model: Mapping[str, Any], cfg: Config, where: str) -> None:
    """For methods with a JEPA predictor (``method.predictor.dim``/``depth``/``heads``): its config sizes
    against the stored ``predictor.`` tensors, before anything is built."""
    predictor = getattr(cfg.method, "predictor", None)
    if not all(hasattr(predictor, key) for key in ("dim", "depth", "heads")):
        return
    state = sub_state_dict(model, "predictor")
    dim, depth, heads = predictor.dim, predictor.depth, predictor.heads  # type: ignore[union-attr]
    if heads is None:
        size = VIT_SIZES[cfg.model.name]
        heads = cfg.model.num_heads if cfg.model.num_heads is not None else size.num_heads
    for key, value in (("dim", dim), ("depth", depth), ("heads", heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: method.predictor.{key} is {value!r}, expected a positive integer")
    if dim % heads:
        raise ValueError(f"{where}: method.predictor.dim={dim} is not divisible by {heads} heads")
    if not state:
        raise CheckpointMismatchError(
            f"{where}: the checkpoint holds no predictor (no 'predictor.embed.weight' nor any other "
            "'predictor.' tensor); load_model needs every network, load_encoder loads an encoder alone"
        )
    embed = _stored_shape(state, "embed.weight", where)
    if len(embed) != 2 or embed[0] != dim:
        raise CheckpointMismatchError(
            f"{where}: method.predictor.dim={dim} disagrees with the stored 'predictor.embed.weight' "
            f"{embed}; {_EDITED}"
        )
    stored_depth = count_blocks(state, "blocks")
    if stored_depth != depth:
        raise CheckpointMismatchError(
            f"{where}: method.predictor.depth={depth} disagrees with the stored predictor blocks "
            f"({stored_depth} found); {_EDITED}"
        )


def _stored_shape(state: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        found = ", ".join(sorted(map(str, state))[:6]) or "nothing"
        raise CheckpointMismatchError(f"{where}: no stored tensor {key!r} (found: {found}); {_EDITED}")
    return tuple(int(n) for n in state[key].shape)
