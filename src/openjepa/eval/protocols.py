"""The evaluation protocols behind ``openjepa eval``: kNN, linear probe, fine-tuning, low-shot.

Each protocol evaluates frozen (kNN, linear) or trainable (fine-tune) copies of encoders on an
:class:`~openjepa.eval.knn_eval.EvalData` and returns table rows ``{"name": ..., <metric>: value}``; raw
pixels and a randomly initialised encoder of the same architecture go through the same code as baselines.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openjepa.eval.features import extract_features
from openjepa.eval.finetune import finetune
from openjepa.eval.knn_eval import EvalData, eval_preprocess
from openjepa.eval.linear import DEFAULT_LRS, linear_probe
from openjepa.train.checkpoint import atomic_write

#: Label fractions of the low-shot protocol.
LOWSHOT_FRACTIONS = (0.01, 0.1)


def encoder_features(
    encoder: nn.Module,
    images: torch.Tensor,
    data: EvalData,
    last_k: int = 4,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Average-pooled features ``{"last1": (N, D), "last4": (N, 4D)}`` of one forward pass per batch.

    ``last{k}`` concatenates the last ``k`` blocks (each through the final norm, oldest first), so its last
    ``D`` columns are ``last1``. ``k`` is capped at the encoder's depth.
    """
    blocks = getattr(encoder, "blocks", None)
    if blocks is not None:
        last_k = min(last_k, len(blocks))
    device = torch.device(device)
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    with autocast:
        feats, _ = extract_features(
            encoder,
            images,
            batch_size=batch_size,
            device=device,
            last_k_blocks=last_k,
            preprocess=eval_preprocess(data),
            progress=progress,
        )
    dim = feats.shape[1] // last_k
    out = {"last1": feats[:, -dim:]}
    if last_k > 1:
        out[f"last{last_k}"] = feats
    return out


def pixel_features(images: torch.Tensor, data: EvalData) -> torch.Tensor:
    """Normalised raw pixels, flattened: ``(N, C·H·W)``."""
    return eval_preprocess(data)(images).flatten(1)


def lowshot_indices(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """A fixed, class-balanced subset: ``round(fraction · n_c)`` (at least 1) images of each class ``c``.

    Seeded by ``seed`` alone, so every model of a table is evaluated on the same images.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique(sorted=True):
        members = (labels == c).nonzero().flatten()
        count = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=gen)[:count]])
    return torch.cat(chosen).sort().values


def linear_rows(
    models: Sequence[tuple[str, nn.Module | None]],
    data: EvalData,
    train_index: torch.Tensor | None = None,
    *,
    epochs: int = 50,
    lrs: Sequence[float] = DEFAULT_LRS,
    seed: int = 0,
    feature_kw: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Linear-probe rows; a model ``None`` means raw pixels."""
    feature_kw = dict(feature_kw or {}, progress=progress)
    train_images = data.train_images if train_index is None else data.train_images[train_index]
    train_labels = data.train_labels if train_index is None else data.train_labels[train_index]
    rows = []
    for name, model in models:
        if model is None:
            train_f = {"pixels": pixel_features(train_images, data)}
            test_f = {"pixels": pixel_features(data.test_images, data)}
        else:
            train_f = encoder_features(model, train_images, data, **feature_kw)
            test_f = encoder_features(model, data.test_images, data, **feature_kw)
        res = linear_probe(
            train_f,
            train_labels,
            test_f,
            data.test_labels,
            lrs=lrs,
            epochs=epochs,
            seed=seed,
            progress=progress,
        )
        rows.append(
            {
                "name": name,
                "top1": round(res.test_top1, 2),
                "val_top1": round(res.best["val_top1"], 2),
                "features": res.best["features"],
                "lr": res.best["lr"],
                "batch_norm": res.best["batch_norm"],
                "settings": res.settings,
            }
        )
    return rows


def finetune_rows(
    models: Sequence[tuple[str, nn.Module]],
    data: EvalData,
    train_index: torch.Tensor | None = None,
    *,
    finetune_kw: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fine-tuning rows: each encoder is copied, fine-tuned with its head, and scored once on test."""
    train_images = data.train_images if train_index is None else data.train_images[train_index]
    train_labels = data.train_labels if train_index is None else data.train_labels[train_index]
    rows = []
    for name, model in models:
        res = finetune(
            model,
            train_images,
            train_labels,
            data.test_images,
            data.test_labels,
            preprocess=eval_preprocess(data),
            progress=progress,
            **(finetune_kw or {}),
        )
        settings = {k: v for k, v in res.settings.items() if isinstance(v, (int, float, str, bool, list))}
        rows.append(
            {
                "name": name,
                "top1": round(res.test_top1, 2),
                "train_loss": round(res.train_loss, 4),
                "settings": settings,
            }
        )
    return rows


def write_eval_section(path: str | Path, section: str, result: dict[str, Any]) -> Path:
    """Set ``section`` of the JSON file at ``path`` (other sections are kept), atomically."""
    path = Path(path)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict) and all(isinstance(v, dict) for v in loaded.values()):
            data = loaded  # an older flat layout is replaced rather than merged
    data[section] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))
    return path


def format_rows(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` with a ``name`` column and the given numeric columns (percent)."""
    name_w = max(len("model"), *(len(r["name"]) for r in rows))
    col_w = [max(8, len(c)) for c in columns]
    header = f"{'model':<{name_w}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, col_w, strict=False))
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = []
        for c, w in zip(columns, col_w, strict=False):
            value = r.get(c)
            cells.append(f"{value:>{w - 1}.2f}%" if isinstance(value, (int, float)) else f"{'-':>{w}}")
        lines.append(f"{r['name']:<{name_w}}  " + "  ".join(cells))
    return "\n".join(lines)
