"""Online monitoring during pretraining: kNN on a fixed held-out subset and collapse metrics.

The monitor draws two fixed, disjoint subsets of the *training* split once: a labelled memory bank (the
first ``train_samples`` images) and queries (the last ``val_samples`` images). Every few epochs the target
encoder embeds both (average-pooled tokens), and the monitor reports the queries' kNN accuracy against the
bank, plus the collapse metrics of the query embeddings (see :mod:`openjepa.diagnostics.collapse`). The
test split is never used, so choosing the "best" checkpoint by this kNN does not peek at test data.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from openjepa.diagnostics.collapse import collapse_metrics, collapse_warnings
from openjepa.eval.features import extract_features
from openjepa.eval.knn import knn_classify
from openjepa.eval.knn_eval import encoder_input


def _images_and_labels(dataset: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        return images[indices], labels[indices].long()
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


class OnlineMonitor:
    """kNN accuracy and collapse metrics of an encoder on a fixed subset of the training split.

    Args:
        dataset: the training dataset (``.images``/``.labels`` tensors, or items ``(image, label)``).
        image_size: side the encoder expects; images are resized to it.
        mean, std: normalisation of the encoder's inputs.
        train_samples: size of the labelled memory bank (the first images).
        val_samples: number of query images (the last images; disjoint from the bank).
        k: neighbours of the kNN vote.
        temperature: kNN vote temperature.
        batch_size: images per forward pass.
        device: where the encoder runs.
        amp_dtype: autocast dtype for the forward passes, or None.
    """

    def __init__(
        self,
        dataset: Any,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train_samples: int = 5000,
        val_samples: int = 1000,
        k: int = 20,
        temperature: float = 0.07,
        batch_size: int = 512,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        n = len(dataset)
        if n < 4:
            raise ValueError(f"the online monitor needs at least 4 training images, the dataset has {n}")
        if train_samples + val_samples > n:  # shrink both, keeping their ratio
            scale = n / (train_samples + val_samples)
            train_samples = max(2, int(train_samples * scale))
            val_samples = max(2, n - train_samples)
        self.bank_images, self.bank_labels = _images_and_labels(dataset, torch.arange(train_samples))
        self.query_images, self.query_labels = _images_and_labels(dataset, torch.arange(n - val_samples, n))
        self.has_labels = bool((self.bank_labels >= 0).all() and (self.query_labels >= 0).all())
        self.preprocess = encoder_input(image_size, mean, std)
        self.k, self.temperature, self.batch_size = k, temperature, batch_size
        self.device, self.amp_dtype = torch.device(device), amp_dtype

    def _embed(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            feats, _ = extract_features(
                encoder,
                images,
                batch_size=self.batch_size,
                device=self.device,
                preprocess=self.preprocess,
                progress=False,
            )
        return feats

    def __call__(self, encoder: nn.Module) -> dict[str, Any]:
        """``{"knn_top1" (if labelled), "feature_std", "rankme", "mean_cosine", "collapse"}`` and
        ``"collapse_reasons"`` (a list of strings, empty when healthy)."""
        queries = self._embed(encoder, self.query_images)
        out: dict[str, Any] = {}
        if self.has_labels:
            bank = self._embed(encoder, self.bank_images)
            acc = knn_classify(
                bank, self.bank_labels, queries, self.query_labels, k=self.k, temperature=self.temperature
            )
            out["knn_top1"] = acc[self.k]
        out.update(collapse_metrics(queries))
        reasons = collapse_warnings(out)
        out["collapse"] = bool(reasons)
        out["collapse_reasons"] = reasons
        return out
