"""Synthetic labelled images, generated from a seed: for tests and tiny runs without any files."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from openjepa.data.datasets.base import (
    ImageTransform,
    TensorImageDataset,
)


def _smooth_patterns(
    count: int, channels: int, coarse: int, side: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` smooth random patterns (count, C, side, side), each standardised to mean 0 and std 1."""
    grid = torch.randn(count, channels, coarse, coarse, generator=generator)
    patterns = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
    flat = patterns.flatten(1)  # (count, C·side·side)
    flat = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)
    return flat.view(count, channels, side, side)


class SyntheticDataset(TensorImageDataset):
    """Deterministic, cheap, learnable images for tests and smoke runs.

    Each class owns a fixed smooth random pattern (Gaussian noise on a coarse grid, upsampled
    bilinearly, per channel). A sample is its class pattern shifted by a random offset of up to
    ``size // 8`` pixels in each direction, blended with one of 64 class-independent "distractor"
    patterns (weight ``distractor``), scaled by a random contrast factor, plus Gaussian pixel noise.
    With the default ``distractor=0.5``, a 20-NN classifier on raw pixels scores roughly 75-90 % on
    10 classes (chance 10 %), leaving room for learned features to do better; ``distractor=0``
    makes the classes trivially separable.

    The patterns depend only on ``seed``; the samples on ``seed`` and ``split``, so the ``"train"``
    and ``"test"`` splits share classes but hold different samples.

    Attributes:
        images: uint8 tensor (N, C, size, size).
        labels: int64 tensor (N,), balanced over classes, in random order.
        num_classes: ``num_classes``.

    Args:
        num_samples: N.
        channels: C.
        size: image height and width (at least 4).
        num_classes: number of classes.
        seed: seed of the patterns and samples.
        split: ``"train"``, ``"val"`` or ``"test"``.
        distractor: weight in [0, 1) of the class-independent pattern.
        transform: optional per-item callable on the (C, H, W) float image.
    """

    _SPLITS = ("train", "val", "test")
    _NUM_DISTRACTORS = 64

    def __init__(
        self,
        num_samples: int,
        channels: int,
        size: int,
        num_classes: int = 10,
        seed: int = 0,
        split: str = "train",
        distractor: float = 0.5,
        transform: ImageTransform | None = None,
    ) -> None:
        if num_samples < 0 or channels < 1 or size < 4 or num_classes < 1:
            raise ValueError(
                "SyntheticDataset needs num_samples >= 0, channels >= 1, size >= 4, num_classes >= 1; got "
                f"{num_samples}, {channels}, {size}, {num_classes}"
            )
        if split not in self._SPLITS:
            raise ValueError(f"SyntheticDataset split must be one of {self._SPLITS}, got {split!r}")
        if not 0.0 <= distractor < 1.0:
            raise ValueError(f"SyntheticDataset distractor weight must be in [0, 1), got {distractor}")
        shift = max(1, size // 8)
        padded = size + 2 * shift
        coarse = max(2, size // 6)

        pattern_gen = torch.Generator().manual_seed(seed)
        classes = _smooth_patterns(num_classes, channels, coarse, padded, pattern_gen)  # (K, C, P, P)
        distractors = _smooth_patterns(self._NUM_DISTRACTORS, channels, coarse, size, pattern_gen)

        # A separate stream per (seed, split); the 2**32 offset keeps it apart from the pattern streams.
        gen = torch.Generator().manual_seed(2**32 + seed * len(self._SPLITS) + self._SPLITS.index(split))
        labels = torch.arange(num_samples) % num_classes
        labels = labels[torch.randperm(num_samples, generator=gen)]
        which = torch.randint(0, self._NUM_DISTRACTORS, (num_samples,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (num_samples,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (num_samples,), generator=gen)
        contrast = 0.8 + 0.4 * torch.rand(num_samples, 1, 1, 1, generator=gen)
        noise = 0.08 * torch.randn(num_samples, channels, size, size, generator=gen)

        # Crop a size×size window at (dy, dx) from each sample's padded class pattern, by gathering.
        rows = dy[:, None] + torch.arange(size)[None, :]  # (N, size)
        cols = dx[:, None] + torch.arange(size)[None, :]  # (N, size)
        src = classes[labels]  # (N, C, P, P)
        src = src.gather(2, rows[:, None, :, None].expand(-1, channels, -1, padded))  # (N, C, size, P)
        src = src.gather(3, cols[:, None, None, :].expand(-1, channels, size, -1))  # (N, C, size, size)
        signal = (1.0 - distractor) * src + distractor * distractors[which]  # (N, C, size, size)
        images = 0.5 + 0.18 * contrast * signal + noise
        self.images = images.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        self.labels = labels.to(torch.int64)
        self.num_classes = num_classes
        self.transform = transform
