"""Linear probes on frozen, cached features: a grid of heads trained together in one pass.

Each feature set (e.g. the last block's pooled tokens and the last four blocks' concatenated) gets one
linear head per (learning rate, batch norm or not). All heads see the same mini-batches and are trained
at once: their losses are summed, and since no two heads share a parameter, each receives exactly the
gradient it would get alone. AdamW with a cosine schedule; the batch norm is a non-affine ``BatchNorm1d``
in front of the head (standardising the features with batch statistics, running statistics at test time).
With ``whiten``, each feature set also enters the grid PCA-whitened (fitted on the probe's training rows):
a linear head on whitened features can express the same classifiers, but AdamW in a fixed number of epochs
reaches different ones, and the held-out split decides which input serves a model better.

The best head is chosen on a validation split held out from the *training* features; only that head is
then scored on the test set. Test features and labels are not touched until then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from openjepa.eval.data import EvalData
from openjepa.eval.features import encoder_features, pixel_features, whitening
from openjepa.utils.progress import progress as show_progress

DEFAULT_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
#: the whitening regulariser of ``linear_probe(whiten=...)``'s whitened inputs (see ``whitening``)
LINEAR_WHITEN_EPS = 0.01


@dataclass
class ProbeResult:
    """The chosen head and the whole grid.

    Attributes:
        test_top1: test accuracy (percent) of the head with the best validation accuracy.
        best: that head's settings and accuracies ({"features", "lr", "batch_norm", "val_top1"}).
        grid: every head's settings with its validation accuracy.
        settings: the probe's training settings.
    """

    test_top1: float
    best: dict[str, Any]
    grid: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


class _Head(nn.Module):
    def __init__(self, dim: int, num_classes: int, batch_norm: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False) if batch_norm else nn.Identity()
        self.linear = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


def split_train_val(n: int, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, val) index sets over ``range(n)``; val has ``round(n * val_fraction)``."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise ValueError(f"{n} training samples are too few to hold out {val_fraction:.0%} for validation")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _standardise_scale(x: torch.Tensor) -> float:
    """One scalar that brings the features to unit RMS (the lr grid then means the same for any encoder)."""
    rms = x.float().pow(2).mean().sqrt().item()
    return 1.0 / rms if rms > 0 else 1.0


def linear_probe(
    train_features: dict[str, torch.Tensor] | torch.Tensor,
    train_labels: torch.Tensor,
    test_features: dict[str, torch.Tensor] | torch.Tensor,
    test_labels: torch.Tensor,
    *,
    lrs: Sequence[float] = DEFAULT_LRS,
    batch_norm: Sequence[bool] = (False, True),
    whiten: float | None = None,
    epochs: int = 50,
    batch_size: int = 1024,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> ProbeResult:
    """Train a grid of linear heads on frozen features; report the val-chosen head's test accuracy.

    Args:
        train_features: ``(N, D)`` features, or a dict of named feature sets (e.g. ``{"last1": …,
            "last4": …}``) with the same rows; each set gets its own heads.
        train_labels: ``(N,)`` integer labels.
        test_features: the same structure for the test images.
        test_labels: ``(N_test,)`` labels; used only to score the chosen head.
        lrs: AdamW learning rates of the grid.
        batch_norm: which of {without, with} a non-affine batch norm before the head to try.
        whiten: also try every feature set PCA-whitened with this regulariser (``LINEAR_WHITEN_EPS`` is
            the CLI's), the whitening fitted on the training rows of the split; the copies are named
            ``"<set>, whitened"``. None: raw feature sets only.
        epochs: passes over the training features.
        batch_size: features per step.
        weight_decay: AdamW weight decay of the head weights.
        val_fraction: share of the training features held out to pick the best head.
        seed: seeds the split, the shuffling and nothing else (heads start at zero).
        num_classes: inferred from the training labels when None.
        device: where to train.
        progress: show a progress bar over epochs.
    """
    if isinstance(train_features, torch.Tensor):
        train_features = {"features": train_features}
    if isinstance(test_features, torch.Tensor):
        test_features = {"features": test_features}
    if set(train_features) != set(test_features):
        raise ValueError(f"feature sets differ: train {sorted(train_features)}, test {sorted(test_features)}")
    if not lrs or not batch_norm:
        raise ValueError("the grid needs at least one learning rate and one batch_norm choice")
    device = torch.device(device)
    train_labels = torch.as_tensor(train_labels).long()
    test_labels = torch.as_tensor(test_labels).long()
    n = train_labels.shape[0]
    for name, x in train_features.items():
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"train features {name!r} must be ({n}, D), got {tuple(x.shape)}")
    num_classes = num_classes or int(train_labels.max()) + 1
    tr_idx, val_idx = split_train_val(n, val_fraction, seed)

    # Each input of the grid: (feature set, whitening mean and matrix or None), fitted on training rows.
    inputs: dict[str, tuple[str, tuple[torch.Tensor, torch.Tensor] | None]] = {
        name: (name, None) for name in train_features
    }
    if whiten is not None:
        for name, x in train_features.items():
            inputs[f"{name}, whitened"] = (name, whitening(x[tr_idx].float(), whiten))

    def prepare(features: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        source, fitted = inputs[name]
        x = features[source].float()
        return x if fitted is None else (x - fitted[0]) @ fitted[1]

    # Scale each input to unit RMS using training rows only, so one lr grid fits every encoder.
    prepared = {name: prepare(train_features, name) for name in inputs}
    scales = {name: _standardise_scale(x[tr_idx]) for name, x in prepared.items()}
    feats = {name: (x * scales[name]).to(device) for name, x in prepared.items()}
    del prepared
    y = train_labels.to(device)

    grid = [(name, lr, bn) for name in feats for bn in batch_norm for lr in lrs]
    head_list = [_Head(feats[name].shape[1], num_classes, bn) for name, _, bn in grid]
    heads = nn.ModuleList(head_list).to(device)
    groups = []
    for head, (_, lr, _) in zip(head_list, grid, strict=True):
        groups.append({"params": [head.linear.weight], "lr": lr, "base_lr": lr, "weight_decay": weight_decay})
        groups.append({"params": [head.linear.bias], "lr": lr, "base_lr": lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)

    steps_per_epoch = math.ceil(len(tr_idx) / batch_size)
    total = epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(seed + 1)
    bar = show_progress(range(epochs), desc="linear probe", unit="epoch", enabled=progress)
    step = 0
    heads.train()
    for _ in bar:
        order = tr_idx[torch.randperm(len(tr_idx), generator=gen)].to(device)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            if len(rows) < 2:  # batch norm needs two samples
                continue
            scale = 0.5 * (1 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * scale
            loss = sum(
                nn.functional.cross_entropy(head(feats[name][rows]), y[rows])
                for head, (name, _, _) in zip(heads, grid, strict=False)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            optimizer.step()
            step += 1

    heads.eval()

    @torch.no_grad()
    def accuracy(head: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
        correct = 0
        for start in range(0, x.shape[0], 8192):
            logits = head(x[start : start + 8192].to(device))
            correct += int((logits.argmax(1).cpu() == labels[start : start + 8192]).sum())
        return 100.0 * correct / x.shape[0]

    results: list[dict[str, Any]] = []
    for head, (name, lr, bn) in zip(head_list, grid, strict=True):
        val = accuracy(head, feats[name][val_idx.to(device)], train_labels[val_idx])
        results.append({"features": name, "lr": lr, "batch_norm": bn, "val_top1": val})
    best_i = max(range(len(results)), key=lambda i: results[i]["val_top1"])  # first of ties: lowest lr
    best_name = results[best_i]["features"]
    test_x = prepare(test_features, best_name) * scales[best_name]
    test_top1 = accuracy(head_list[best_i], test_x, test_labels)
    settings = {
        "lrs": list(lrs),
        "batch_norm": list(batch_norm),
        "whiten": whiten,
        "epochs": epochs,
        "batch_size": batch_size,
        "weight_decay": weight_decay,
        "val_fraction": val_fraction,
        "optimizer": "AdamW, cosine schedule",
        "train_samples": len(tr_idx),
        "val_samples": len(val_idx),
        "test_samples": int(test_labels.shape[0]),
    }
    return ProbeResult(test_top1, dict(results[best_i]), results, settings)


def linear_rows(
    models: Sequence[tuple[str, nn.Module | None]],
    data: EvalData,
    train_index: torch.Tensor | None = None,
    *,
    epochs: int = 50,
    lrs: Sequence[float] = DEFAULT_LRS,
    whiten: float | None = None,
    seed: int = 0,
    feature_kw: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Linear-probe rows; a model ``None`` means raw pixels; ``whiten``: see :func:`linear_probe`."""
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
            whiten=whiten,
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
