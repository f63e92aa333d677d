"""Import checkpoints of the reference I-JEPA code as openjepa run folders.

A reference checkpoint (the released ``.pth.tar`` files) is a dict with three state dicts, ``encoder``
(the context encoder), ``predictor`` and ``target_encoder`` (the EMA encoder), whose keys carry the
``module.`` prefix of DistributedDataParallel, plus ``opt``, ``scaler``, ``epoch``, ``loss``,
``batch_size``, ``world_size`` and ``lr``.

Key names. The encoders' keys already coincide with openjepa's ``VisionTransformer`` (``patch_embed.proj``,
``pos_embed``, ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``): only the
DDP prefix is removed. The predictor's keys carry a ``predictor_`` prefix that openjepa's ``Predictor``
does not (``mask_token`` is the same in both)::

    predictor_embed       → embed
    predictor_pos_embed   → pos_embed
    predictor_blocks.i.*  → blocks.i.*
    predictor_norm        → norm
    predictor_proj        → proj

Both code bases store their fixed sin-cos position embeddings in the state dict, so the stored values are
loaded as they are.

Architecture. Everything except the number of attention heads is read from tensor shapes: width and input
channels from the patch-embedding conv ``(D, C, p, p)``, patch size from its kernel, image size from the
number of positions (a square grid of ``(image / p)²``), depth from the block indices, MLP width from
``fc1``; predictor width and depth likewise. No shape depends on the head count (``qkv`` is ``(3D, D)``
whatever it is), so heads come from the standard size table (width 1280 → 16 heads for ViT-H, 1408 → 16
for ViT-g, …) or must be given. The predictor uses the encoder's head count, as the reference does.

Not kept: the optimizer and grad-scaler states. An imported run folder is for evaluation and loading
(``openjepa.load_encoder``, ``openjepa.load_model``, ``openjepa info``, ``openjepa eval knn``); it cannot
resume pretraining.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openjepa.config import Config, from_dict, save_config, to_dict
from openjepa.methods.base import build_method, get_method
from openjepa.methods.loading import check_fits, check_tensors
from openjepa.models.vit import VIT_SIZES
from openjepa.utils.io import UnsafePickleError, load_torch_file
from openjepa.utils.run_folder import CHECKPOINT_VERSION, CONFIG_NAME, CheckpointManager
from openjepa.utils.state_dict import strip_wrapper_prefixes

__all__ = [
    "REFERENCE_PREDICTOR_RENAMES",
    "IJepaArchitecture",
    "UnsafePickleError",
    "check_state_dict",
    "convert_reference",
    "import_reference",
    "infer_architecture",
    "load_reference_checkpoint",
    "rename_predictor_keys",
    "save_imported_run",
    "size_name",
]

REFERENCE_PREDICTOR_RENAMES: tuple[tuple[str, str], ...] = (
    ("predictor_embed", "embed"),
    ("predictor_pos_embed", "pos_embed"),
    ("predictor_blocks", "blocks"),
    ("predictor_norm", "norm"),
    ("predictor_proj", "proj"),
)
_SUB_MODELS = ("encoder", "predictor", "target_encoder")
_METADATA_KEYS = ("epoch", "loss", "batch_size", "world_size", "lr")
_HEADS_BY_WIDTH = {size.embed_dim: size.num_heads for size in VIT_SIZES.values()}
#: The openjepa method whose networks the reference code trains.
REFERENCE_METHOD = "ijepa"
_TRUST_HINT = (
    "If you trust the file's source, pass --trust-pickle (command line) or trust_pickle=True (Python)."
)


@dataclass(frozen=True)
class IJepaArchitecture:
    """The shape of an I-JEPA encoder (and predictor), as read from weights or a foreign config.

    Attributes:
        image_size: side of the square input images in pixels.
        patch_size: patch side in pixels.
        in_chans: image channels.
        embed_dim: encoder width D.
        depth: encoder blocks.
        num_heads: attention heads (encoder and predictor).
        mlp_hidden_dim: hidden width of the encoder MLPs.
        pred_dim: predictor width, or None when there is no predictor.
        pred_depth: predictor blocks, or None when there is no predictor.
    """

    image_size: int
    patch_size: int
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    pred_dim: int | None = None
    pred_depth: int | None = None

    def to_config(self, out_dir: str | Path | None = None) -> Config:
        """The openjepa ``Config`` that builds this architecture, with ``run.out_dir`` if given.

        The model is named after the standard size it matches (e.g. ``vit_huge``); other sizes are a
        named size with ``model.embed_dim`` / ``depth`` / ``num_heads`` overrides. The data section says
        ``folder`` (an image folder such as ImageNet's); pass ``--data`` / ``--root`` when evaluating.

        Raises:
            ValueError: If the MLP width is not one openjepa builds (4 × D, or 48/11 × D for ViT-g).
        """
        name = size_name(self.embed_dim, self.mlp_hidden_dim)
        size = VIT_SIZES[name]
        model: dict[str, Any] = {"name": name, "patch_size": self.patch_size}
        for key in ("embed_dim", "depth", "num_heads"):
            if getattr(self, key) != getattr(size, key):
                model[key] = getattr(self, key)
        method: dict[str, Any] = {"name": REFERENCE_METHOD}
        if self.pred_dim is not None:
            method["predictor"] = {"dim": self.pred_dim, "depth": self.pred_depth}
        data = {"dataset": "folder", "image_size": self.image_size, "channels": self.in_chans}
        run = {} if out_dir is None else {"out_dir": str(out_dir)}
        return from_dict({"method": method, "model": model, "data": data, "run": run}, training=False)


# --------------------------------------------------------------------------------------------------
# Loading the file
# --------------------------------------------------------------------------------------------------


def load_reference_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """Read a reference checkpoint file with ``torch.load(weights_only=True)``.

    Zip-format files (everything ``torch.save`` wrote since PyTorch 1.6) are memory-mapped, so a ViT-H file
    with its optimizer state (roughly 10 GB) is not read into memory as a whole.

    Args:
        path: The ``.pth.tar`` file.
        trust_pickle: If the file holds arbitrary Python objects, unpickle it anyway (with a warning).
            Unpickling runs code from the file: only for files from a source you trust.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        UnsafePickleError: If the file needs arbitrary unpickling and ``trust_pickle`` is False.
        ValueError: If the file is not readable by ``torch.load`` or does not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint not found: {path} is not a file")
    return load_torch_file(path, trust_pickle=trust_pickle, mmap=True, hint=_TRUST_HINT)


# --------------------------------------------------------------------------------------------------
# Key names and architecture
# --------------------------------------------------------------------------------------------------


def rename_predictor_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """Reference predictor keys → openjepa ``Predictor`` keys (see ``REFERENCE_PREDICTOR_RENAMES``).

    Keys that match no rename are kept, so a strict load reports them as unexpected.
    """
    renamed = {}
    for key, value in state.items():
        for old, new in REFERENCE_PREDICTOR_RENAMES:
            if key == old or key.startswith(old + "."):
                key = new + key[len(old) :]
                break
        renamed[key] = value
    return renamed


def infer_architecture(
    encoder: Mapping[str, Any], predictor: Mapping[str, Any] | None = None, num_heads: int | None = None
) -> IJepaArchitecture:
    """Read the architecture from the shapes of reference-format state dicts.

    Args:
        encoder: Encoder state dict (reference key names, no ``module.`` prefix); values are tensors or
            shapes (any tensor device works, ``meta`` included).
        predictor: Predictor state dict in reference key names, or None.
        num_heads: Attention heads; None looks the width up in the standard sizes (tiny … giant).

    Raises:
        ValueError: If a needed key is missing, shapes disagree, or the head count is unknown.

    Example:
        >>> shapes = {"patch_embed.proj.weight": (1280, 3, 14, 14), "pos_embed": (1, 256, 1280), ...}
        >>> arch = infer_architecture(shapes)  # the released ViT-H/14
        >>> arch.image_size, arch.patch_size, arch.embed_dim, arch.depth, arch.num_heads
        (224, 14, 1280, 32, 16)
    """
    enc = {key: _shape(value) for key, value in encoder.items()}
    embed_dim, in_chans, patch_h, patch_w = _get(enc, "patch_embed.proj.weight", "encoder", ndim=4)
    if min(embed_dim, in_chans, patch_h, patch_w) < 1:
        raise ValueError(
            f"encoder 'patch_embed.proj.weight' has shape {enc['patch_embed.proj.weight']}, with an empty "
            "dimension"
        )
    if patch_h != patch_w:
        raise ValueError(f"encoder patches are {patch_h}x{patch_w}; openjepa supports square patches only")
    num_positions = _get(enc, "pos_embed", "encoder", ndim=3, last=embed_dim)[1]
    grid = _square_side(num_positions, "encoder pos_embed")
    depth = _count_blocks(enc, "blocks", "encoder")
    mlp_hidden_dim = _get(enc, "blocks.0.mlp.fc1.weight", "encoder", ndim=2, last=embed_dim)[0]
    heads = _heads(embed_dim, num_heads)

    pred_dim = pred_depth = None
    if predictor is not None:
        pred = {key: _shape(value) for key, value in predictor.items()}
        pred_dim = _get(pred, "predictor_embed.weight", "predictor", ndim=2, last=embed_dim)[0]
        pred_positions = _get(pred, "predictor_pos_embed", "predictor", ndim=3, last=pred_dim)[1]
        if pred_positions != num_positions:
            raise ValueError(
                f"predictor has {pred_positions} positions but the encoder {num_positions}; "
                "they must come from the same checkpoint"
            )
        pred_depth = _count_blocks(pred, "predictor_blocks", "predictor")
        pred_hidden = _get(pred, "predictor_blocks.0.mlp.fc1.weight", "predictor", ndim=2, last=pred_dim)[0]
        if pred_hidden != 4 * pred_dim:
            raise ValueError(
                f"predictor MLP width {pred_hidden} is not 4 × its width {pred_dim}; openjepa's predictor "
                "uses MLP ratio 4 like the reference"
            )
        if pred_dim % heads:
            raise ValueError(f"predictor width {pred_dim} is not divisible by {heads} heads")

    return IJepaArchitecture(
        image_size=grid * patch_h,
        patch_size=patch_h,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
        mlp_hidden_dim=mlp_hidden_dim,
        pred_dim=pred_dim,
        pred_depth=pred_depth,
    )


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in (value.shape if hasattr(value, "shape") else value))


def _get(
    shapes: dict[str, tuple[int, ...]], key: str, where: str, ndim: int, last: int | None = None
) -> tuple[int, ...]:
    """The shape of ``key``, checked to have ``ndim`` dims and (for weights) input width ``last``."""
    if key not in shapes:
        found = ", ".join(sorted(shapes)[:8]) or "nothing"
        raise ValueError(
            f"the {where} state dict has no {key!r}, so it is not in the reference I-JEPA layout "
            f"(its keys start: {found})"
        )
    shape = shapes[key]
    if len(shape) != ndim or (last is not None and shape[-1] != last):
        want = f"{ndim} dims" + (f" ending in {last}" if last is not None else "")
        raise ValueError(f"{where} {key!r} has shape {shape}, expected {want}")
    return shape


def _square_side(count: int, what: str) -> int:
    side = round(count**0.5)
    if side * side != count:
        raise ValueError(f"{what} has {count} positions, not a square grid; openjepa needs square images")
    return side


def _count_blocks(shapes: Mapping[str, Any], prefix: str, where: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = {int(m.group(1)) for key in shapes if (m := pattern.match(key))}
    if not indices:
        raise ValueError(f"the {where} state dict has no '{prefix}.N.' keys")
    gaps = sorted(set(range(max(indices) + 1)) - indices)
    if gaps:
        raise ValueError(f"the {where} state dict lacks {prefix} {gaps} (has up to {max(indices)})")
    return len(indices)


def _heads(embed_dim: int, num_heads: int | None) -> int:
    if num_heads is None:
        if embed_dim not in _HEADS_BY_WIDTH:
            known = ", ".join(f"{w} → {h}" for w, h in sorted(_HEADS_BY_WIDTH.items()))
            raise ValueError(
                f"cannot tell the number of attention heads of a {embed_dim}-wide encoder (no tensor shape "
                f"depends on it; standard widths: {known}); pass num_heads (--num-heads)"
            )
        num_heads = _HEADS_BY_WIDTH[embed_dim]
    if num_heads < 1 or embed_dim % num_heads:
        raise ValueError(f"encoder width {embed_dim} is not divisible by {num_heads} heads")
    return num_heads


def size_name(embed_dim: int, mlp_hidden_dim: int) -> str:
    """The named size (``VIT_SIZES``) to build a ``embed_dim``-wide encoder with this MLP width from.

    The size of that width if its MLP ratio fits (``vit_giant`` for 1408 and 6144), else the first size
    whose ratio does (``vit_tiny``, ratio 4, for other widths), to be combined with width overrides.

    Raises:
        ValueError: If no named size's MLP ratio gives ``mlp_hidden_dim``.
    """
    fits = [name for name, size in VIT_SIZES.items() if int(embed_dim * size.mlp_ratio) == mlp_hidden_dim]
    if not fits:
        raise ValueError(
            f"MLP width {mlp_hidden_dim} of a {embed_dim}-wide encoder is neither 4 × nor 48/11 × the width; "
            "openjepa builds only those MLP ratios"
        )
    same_width = [name for name in fits if VIT_SIZES[name].embed_dim == embed_dim]
    return (same_width or fits)[0]


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


def check_state_dict(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], name: str) -> None:
    """Strict key and shape check of ``state`` against the module ``build()`` makes, allocating no weights.

    The module is built on the ``meta`` device, so checking a ViT-g costs no memory (see
    :func:`openjepa.methods.loading.check_fits`).

    Raises:
        CheckpointMismatchError: Listing missing, unexpected and mis-shaped keys.
    """
    check_fits(build, state, name)


def convert_reference(
    raw: Mapping[str, Any], encoder: str = "target", num_heads: int | None = None
) -> tuple[dict[str, torch.Tensor], IJepaArchitecture]:
    """Turn a loaded reference checkpoint into an openjepa model state dict.

    Args:
        raw: The reference checkpoint dict (``encoder``, ``predictor``, ``target_encoder``, …).
        encoder: Which reference encoder becomes openjepa's ``target_encoder``, the one that
            ``load_encoder`` and ``eval knn`` use: ``"target"`` (the EMA encoder, evaluated in the paper)
            or ``"context"``. openjepa's ``encoder`` is always the reference's context encoder.
        num_heads: Attention heads (None: from the standard size of the width).

    Returns:
        The state dict of the openjepa method ``REFERENCE_METHOD`` (keys ``encoder.``, ``predictor.``,
        ``target_encoder.``) and the architecture.

    Raises:
        ValueError: If an entry is missing or not a state dict, or the architecture cannot be read.
        CheckpointMismatchError: If keys or shapes do not match the openjepa model of that architecture.
    """
    roles = get_method(REFERENCE_METHOD).encoders
    if encoder not in roles:
        raise ValueError(f"encoder must be one of {tuple(roles)}, got {encoder!r}")
    missing = [key for key in _SUB_MODELS if key not in raw]
    if missing:
        raise ValueError(
            f"not a reference I-JEPA checkpoint: it has no {missing} entries (it has {sorted(map(str, raw))})"
        )
    context, predictor, target = (strip_wrapper_prefixes(_state_dict(raw, key)) for key in _SUB_MODELS)
    evaluated = target if encoder == "target" else context
    arch = infer_architecture(evaluated, predictor, num_heads)
    state = {f"{roles['context']}.{key}": value for key, value in context.items()}
    state.update({f"predictor.{key}": value for key, value in rename_predictor_keys(predictor).items()})
    state.update({f"{roles['target']}.{key}": value for key, value in evaluated.items()})
    cfg = arch.to_config()
    check_state_dict(lambda: build_method(cfg, arch.in_chans), state, "I-JEPA model (renamed reference keys)")
    return state, arch


def _state_dict(raw: Mapping[str, Any], key: str) -> Mapping[str, torch.Tensor]:
    state = raw[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"reference entry {key!r} is a {type(state).__name__}, expected a state dict")
    bad = [name for name, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(f"reference entry {key!r} holds non-tensor values at {bad[:5]}")
    check_tensors(state, f"reference entry {key!r}")  # shapes become the architecture: they must be real
    return state


def save_imported_run(
    out_dir: str | Path,
    state: dict[str, torch.Tensor],
    arch: IJepaArchitecture,
    imported_from: dict[str, Any],
    epoch: float = 0.0,
) -> Path:
    """Write an imported model as an openjepa run folder: ``checkpoints/latest.pt`` and ``config.yaml``.

    The checkpoint has the keys the trainer writes that evaluation reads (``version``, ``method``,
    ``step`` (0: foreign checkpoints do not record steps), ``epoch``, ``model``, ``config``) plus
    ``imported_from``, a dict of plain values saying where it came from.

    Raises:
        FileExistsError: If ``out_dir`` already holds a checkpoint (nothing is overwritten).
    """
    out_dir = Path(out_dir)
    manager = CheckpointManager(out_dir)
    if manager.latest_path() is not None:
        raise FileExistsError(
            f"{out_dir} already holds a checkpoint ({manager.latest_path()}); choose another output folder"
        )
    cfg = arch.to_config(out_dir)
    checkpoint = {
        "version": CHECKPOINT_VERSION,
        "method": cfg.method.name,
        "step": 0,
        "epoch": float(epoch),
        "model": state,
        "config": to_dict(cfg),
        "imported_from": imported_from,
    }
    path = manager.save(checkpoint, step=0)
    save_config(cfg, out_dir / CONFIG_NAME)
    return path


def import_reference(
    path: str | Path,
    out_dir: str | Path,
    encoder: str = "target",
    trust_pickle: bool = False,
    num_heads: int | None = None,
) -> Path:
    """Convert a reference I-JEPA checkpoint into an openjepa run folder.

    Args:
        path: The reference checkpoint (``.pth.tar``).
        out_dir: The run folder to create; must not hold a checkpoint yet.
        encoder: ``"target"`` (default) or ``"context"``: which reference encoder ``load_encoder`` and
            ``openjepa eval knn`` will use (see :func:`convert_reference`).
        trust_pickle: Allow arbitrary unpickling of a file that needs it (runs code from the file).
        num_heads: Attention heads, needed only for widths outside the standard sizes.

    Returns:
        The written checkpoint, ``out_dir/checkpoints/latest.pt``.

    Example:
        >>> import_reference("IN1K-vit.h.14-300e.pth.tar", "runs/ijepa-h14")
        >>> encoder = openjepa.load_encoder("runs/ijepa-h14")  # the EMA target encoder
    """
    raw = load_reference_checkpoint(path, trust_pickle)
    state, arch = convert_reference(raw, encoder, num_heads)
    imported_from: dict[str, Any] = {
        "format": "ijepa-reference",
        "path": str(path),
        "evaluated_encoder": encoder,
    }
    for key in _METADATA_KEYS:
        value = _plain_number(raw.get(key))
        if value is not None:
            imported_from[key] = value
    return save_imported_run(out_dir, state, arch, imported_from, epoch=imported_from.get("epoch", 0.0))


def _plain_number(value: Any) -> int | float | None:
    """An ``int`` or ``float`` for numbers (also NumPy scalars and one-element tensors), else None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)
