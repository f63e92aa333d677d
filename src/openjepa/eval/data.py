"""The labelled images an evaluation runs on, and how raw images become an encoder's input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from openjepa.data.datasets import build_dataset, in_memory_tensors
from openjepa.data.transforms import normalization_stats, normalize, resize, to_float


@dataclass
class EvalData:
    """Labelled train/test images as uint8 tensors (N, C, H, W), plus how to preprocess them."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int


def load_eval_data(
    dataset: str,
    root: str | None,
    image_size: int,
    channels: int | None = None,
    train_samples: int | None = None,
    test_samples: int | None = None,
    task: str | None = None,
) -> EvalData:
    """Both splits of an in-memory dataset, optionally cut to their first N images.

    ``task`` picks the labels of a dataset with several (shapes: ``count`` or ``distance``). Generated
    datasets (synthetic, shapes) are generated at ``image_size``; the others keep their native size.
    """
    splits = []
    for split, limit in (("train", train_samples), ("test", test_samples)):
        ds = build_dataset(dataset, root, split, channels=channels, image_size=image_size, task=task)
        tensors = in_memory_tensors(ds)
        if tensors is None:
            raise ValueError(
                f"evaluation needs an in-memory labelled dataset; {dataset!r} is not one (use openjepa embed)"
            )
        images, labels = tensors
        if (labels < 0).all():
            raise ValueError(f"dataset {dataset!r} ({split}) has no labels: evaluation needs them")
        splits.append((images[:limit], labels[:limit]))
    mean, std = normalization_stats(dataset, int(splits[0][0].shape[1]))
    return EvalData(*splits[0], *splits[1], mean, std, image_size)


def encoder_input(
    image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable that turns a batch of raw images into an encoder's input: float, resized, normalised."""

    def run(batch: torch.Tensor) -> torch.Tensor:
        x = to_float(batch)
        if x.shape[-2:] != (image_size, image_size):
            x = resize(x, (image_size, image_size))
        return normalize(x, mean, std)

    return run


def eval_preprocess(data: EvalData) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`encoder_input` for the images of ``data``."""
    return encoder_input(data.image_size, data.mean, data.std)
